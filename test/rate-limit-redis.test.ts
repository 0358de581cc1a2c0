import { once } from 'node:events'
import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import streamGateway, { type GatewayOptions } from '../app.js'
import { answerFor } from '../emulator/server.js'
import { ADMIN_KEY, USER_KEY, buildGateway, expectedStreamBody, listenOnLoopback, postStream, startEmulator, within } from './support/gateway.js'
import { REDIS_SKIP, redisNamespace } from './support/redis.js'
import { startTcpServer } from './support/tcp-server.js'
import { sha256Hex } from '../plugins/auth.js'

const NO_UPSTREAM = 'http://127.0.0.1:9'
// Port 1 refuses every connection at once: Redis "down" as a crashed or absent server looks.
const CLOSED_PORT_REDIS = 'redis://127.0.0.1:1'
const SERVICE_UNAVAILABLE = '{"error":"Service Unavailable","message":"Rate limiting is unavailable; try again later."}'
// Generous: the bound only proves that nothing waits on an unreachable Redis; its settings answer in about 1 s at worst.
const NO_HANG_MS = 5000
const PACE = { chunkCount: 2, defaultMaxTokens: 20 }

async function postEmpty (app: FastifyInstance, apiKey: string): Promise<{ status: number, remaining: string | undefined }> {
  const response = await app.inject({ method: 'POST', url: '/api/stream', headers: { 'content-type': 'application/json', 'x-api-key': apiKey }, payload: '{}' })
  return { status: response.statusCode, remaining: response.headers['x-ratelimit-remaining'] as string | undefined }
}

interface LoggedGateway {
  app: FastifyInstance
  url: string
  /** Every log line written so far, as parsed JSON. */
  logs: Array<Record<string, unknown>>
  /** Every log line written so far, as written. */
  logText: () => string
}

/** The gateway on a real port with its log captured, so a test can read what an operator would see. */
async function startLoggedGateway (t: Test, upstreamUrl: string, overrides: Partial<GatewayOptions>): Promise<LoggedGateway> {
  const lines: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(chunk.toString()); done() } })
  const app = await buildGateway(t, upstreamUrl, overrides, { logger: { level: 'info', stream } })
  const url = await listenOnLoopback(app)
  return {
    app,
    url,
    get logs () { return lines.map(line => JSON.parse(line) as Record<string, unknown>) },
    logText: () => lines.join('')
  }
}

async function scrape (url: string, name: string): Promise<number | undefined> {
  const text = await (await fetch(`${url}/api/metrics`)).text()
  const line = text.split('\n').find(candidate => candidate.startsWith(`${name} `))
  return line === undefined ? undefined : Number(line.slice(name.length + 1))
}

/** A TCP server that accepts connections and never says a word: a Redis that hangs rather than refuses. */
async function startSilentServer (t: Test): Promise<string> {
  return `redis://127.0.0.1:${await startTcpServer(t, () => {})}`
}

t.test('two instances sharing one Redis enforce one limit per key, not one each', { skip: REDIS_SKIP }, async t => {
  const { url, nameSpace, keys, redis } = await redisNamespace(t, 'shared')
  const rateLimit = { redis: url, nameSpace, max: 4, adminMax: 6 }
  const first = await buildGateway(t, NO_UPSTREAM, { rateLimit })
  const second = await buildGateway(t, NO_UPSTREAM, { rateLimit })

  const user = [
    await postEmpty(first, USER_KEY), await postEmpty(second, USER_KEY), await postEmpty(first, USER_KEY), await postEmpty(second, USER_KEY),
    await postEmpty(first, USER_KEY), await postEmpty(second, USER_KEY)
  ]
  t.same(user, [
    { status: 400, remaining: '3' }, { status: 400, remaining: '2' }, { status: 400, remaining: '1' }, { status: 400, remaining: '0' },
    { status: 429, remaining: '0' }, { status: 429, remaining: '0' }
  ], 'a limit of 4 is 4 across both instances')

  const admin: number[] = []
  for (let i = 0; i < 4; i++) admin.push((await postEmpty(first, ADMIN_KEY)).status, (await postEmpty(second, ADMIN_KEY)).status)
  t.same(admin, [400, 400, 400, 400, 400, 400, 429, 429], 'the admin limit of 6 is shared the same way')

  // Counters are named by the key's hash prefix, never the key itself.
  const userCounter = `${nameSpace}key:key-${sha256Hex(USER_KEY).slice(0, 12)}`
  const adminCounter = `${nameSpace}key:key-${sha256Hex(ADMIN_KEY).slice(0, 12)}`
  t.same(await keys(), [userCounter, adminCounter].sort())
  t.same([await redis.get(userCounter), await redis.get(adminCounter)], ['6', '8'], 'every request was counted once, in one place')
  const ttl = await redis.pttl(userCounter)
  t.ok(ttl > 0 && ttl <= 900_000, `the counter expires with the window (pttl ${ttl})`)
  for (const key of await keys()) {
    t.notOk(key.includes(USER_KEY) || key.includes(ADMIN_KEY), `${key} holds no raw key`)
  }
})

t.test('a caller-owned ioredis client is used as given and left open when the app closes', { skip: REDIS_SKIP }, async t => {
  const { url, nameSpace, keys } = await redisNamespace(t, 'owned')
  const client = new Redis(url, { enableOfflineQueue: false, commandTimeout: 1000 })
  t.teardown(() => { client.disconnect() })
  await once(client, 'ready')
  const app = Fastify({ logger: false })
  await app.register(streamGateway, { apiKeys: [USER_KEY], gemini: { apiKey: 'unused', baseUrl: NO_UPSTREAM }, rateLimit: { redis: client, nameSpace, max: 1 } })
  await app.ready()
  t.same([await postEmpty(app, USER_KEY), await postEmpty(app, USER_KEY)], [{ status: 400, remaining: '0' }, { status: 429, remaining: '0' }])
  await app.close()
  t.equal(client.status, 'ready')
  t.same(await keys(), [`${nameSpace}key:key-${sha256Hex(USER_KEY).slice(0, 12)}`])
})

t.test('a counter left without an expiry gets one instead of counting forever', { skip: REDIS_SKIP }, async t => {
  const { url, nameSpace, redis } = await redisNamespace(t, 'expiry')
  const counter = `${nameSpace}key:key-${sha256Hex(USER_KEY).slice(0, 12)}`
  await redis.set(counter, '1')
  const app = await buildGateway(t, NO_UPSTREAM, { rateLimit: { redis: url, nameSpace, max: 5, timeWindow: '1 minute' } })
  t.same(await postEmpty(app, USER_KEY), { status: 400, remaining: '3' })
  const ttl = await redis.pttl(counter)
  t.ok(ttl > 0 && ttl <= 60_000, `pttl ${ttl}`)
})

t.test('Redis down, failing open (the default): requests are served, each failure is logged and counted', async t => {
  const emulator = await startEmulator(t, PACE)
  const gateway = await startLoggedGateway(t, emulator.url, { rateLimit: { redis: CLOSED_PORT_REDIS, max: 1 } })
  const prompt = 'Write a haiku about AI'
  const answer = answerFor(prompt, undefined, PACE)
  for (let i = 0; i < 3; i++) {
    const response = await within(NO_HANG_MS, postStream(gateway.url, { prompt }), `stream ${i + 1} with Redis down`)
    t.equal(response.status, 200, `stream ${i + 1} is served although the limit is 1`)
    t.equal(await response.text(), expectedStreamBody(answer.deltas, answer))
  }
  t.equal(emulator.requests.length, 3)
  t.equal(await scrape(gateway.url, 'amrikyy_rate_limit_store_errors_total'), 3)
  t.equal(await scrape(gateway.url, 'amrikyy_rate_limited_total'), 0)

  const warnings = gateway.logs.filter(line => line.level === 40 && String(line.msg).startsWith('rate limit: '))
  t.ok(warnings.some(line => line.msg === 'rate limit: a request could not be counted in Redis; requests pass unlimited until it answers'),
    'a failed check is logged as a warning saying what happens')
  t.ok(warnings.some(line => line.msg === 'rate limit: Redis is unreachable; requests pass unlimited until it answers' &&
    line.reason === 'connect ECONNREFUSED 127.0.0.1:1'), 'so is the connection failure, with its reason')
  t.notOk(gateway.logText().includes(USER_KEY), 'the API key never reaches the log')
})

t.test('Redis down, failing closed: 503 with an exact body, at once, and Gemini is never called', async t => {
  const emulator = await startEmulator(t, PACE)
  const gateway = await startLoggedGateway(t, emulator.url, { rateLimit: { redis: CLOSED_PORT_REDIS, onRedisError: 'closed' } })
  for (const apiKey of [USER_KEY, ADMIN_KEY]) {
    const response = await within(NO_HANG_MS, postStream(gateway.url, { prompt: 'p' }, { 'x-api-key': apiKey }), 'an answer with Redis down')
    t.equal(response.status, 503)
    t.equal(response.headers.get('content-type'), 'application/json; charset=utf-8')
    t.equal(await response.text(), SERVICE_UNAVAILABLE)
  }
  const anonymous = await within(NO_HANG_MS, postStream(gateway.url, { prompt: 'p' }, {}), 'an answer without a key')
  t.same([anonymous.status, await anonymous.text()], [503, SERVICE_UNAVAILABLE], 'requests without a key are refused the same way')
  t.equal(emulator.requests.length, 0)
  t.equal(await scrape(gateway.url, 'amrikyy_rate_limit_store_errors_total'), 3)
  t.ok(gateway.logs.some(line => line.level === 40 && line.msg === 'rate limit: a request could not be counted in Redis; requests are refused with 503 until it answers'))
  t.notOk(gateway.logs.some(line => line.msg === 'unhandled error'), 'the 503 is an answer, not an unhandled error')
})

t.test('a Redis that accepts connections and never answers does not hold requests either', async t => {
  const silentRedis = await startSilentServer(t)
  for (const onRedisError of ['open', 'closed'] as const) {
    const app = await within(NO_HANG_MS, buildGateway(t, NO_UPSTREAM, { rateLimit: { redis: silentRedis, onRedisError } }), `start, failing ${onRedisError}`)
    const answer = await within(NO_HANG_MS, postEmpty(app, USER_KEY), `an answer, failing ${onRedisError}`)
    t.equal(answer.status, onRedisError === 'open' ? 400 : 503, `failing ${onRedisError}`)
  }
})
