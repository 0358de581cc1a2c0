import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import streamGateway from '../app.js'
import { answerFor } from '../emulator/server.js'
import { sha256Hex } from '../plugins/auth.js'
import { parseTimeWindow, rateLimitKey, type RateLimitOptions } from '../plugins/rate-limit.js'
import { ADMIN_KEY, USER_KEY, buildGateway, expectedStreamBody, startEmulator, startGateway } from './support/gateway.js'
import { REDIS_SKIP, redisNamespace } from './support/redis.js'

const OTHER_USER_KEY = 'test-other-user-key-9876543210'
const TOO_MANY_REQUESTS = '{"error":"Too Many Requests","message":"You have exceeded the request limit. Please try again later."}'
const PROMPT_REQUIRED = '{"error":"Prompt is required"}'
const UNAUTHORIZED = '{"error":"Unauthorized: API key is missing."}'
const FORBIDDEN = '{"error":"Forbidden: Invalid API key."}'
// Nothing listens there: the requests below never reach the handler's upstream call.
const NO_UPSTREAM = 'http://127.0.0.1:9'

/**
 * An empty body passes the rate limiter (an onRequest hook) and stops at validation with 400, so "let through"
 * is a 400 and no upstream is involved.
 */
async function post (app: FastifyInstance, apiKey?: string): Promise<LightMyRequestResponse> {
  return await app.inject({
    method: 'POST',
    url: '/api/stream',
    headers: { 'content-type': 'application/json', ...(apiKey === undefined ? {} : { 'x-api-key': apiKey }) },
    payload: '{}'
  })
}

function limitHeaders (response: LightMyRequestResponse): Record<string, unknown> {
  const { headers } = response
  return {
    limit: headers['x-ratelimit-limit'],
    remaining: headers['x-ratelimit-remaining'],
    reset: headers['x-ratelimit-reset'],
    retryAfter: headers['retry-after']
  }
}

async function scrape (app: FastifyInstance, name: string): Promise<number | undefined> {
  const text = (await app.inject('/api/metrics')).body
  const line = text.split('\n').find(candidate => candidate.startsWith(`${name} `))
  return line === undefined ? undefined : Number(line.slice(name.length + 1))
}

interface StoreCase {
  name: string
  skip: string | false
  /** Rate-limit options naming this store; `label` keeps each test's Redis keys apart. */
  options: (t: Test, label: string) => Promise<RateLimitOptions>
}

const stores: StoreCase[] = [
  { name: 'in-process memory', skip: false, options: async () => ({}) },
  {
    name: 'Redis',
    skip: REDIS_SKIP,
    options: async (t, label) => {
      const { url, nameSpace } = await redisNamespace(t, label)
      return { redis: url, nameSpace }
    }
  }
]

for (const store of stores) {
  t.test(`limits counted in ${store.name}`, { skip: store.skip }, async t => {
    t.test('the 429 body is exact and every answer carries the limit headers', async t => {
      const app = await buildGateway(t, NO_UPSTREAM, { rateLimit: { ...await store.options(t, 'exact'), max: 3 } })
      const allowed = [await post(app, USER_KEY), await post(app, USER_KEY), await post(app, USER_KEY)]
      t.same(allowed.map(response => [response.statusCode, response.body]), Array(3).fill([400, PROMPT_REQUIRED]))
      t.same(allowed.map(response => response.headers['x-ratelimit-remaining']), ['2', '1', '0'])
      t.same(limitHeaders(allowed[0]!), { limit: '3', remaining: '2', reset: '900', retryAfter: undefined }, 'a fresh window resets in 15 minutes')

      const refused = await post(app, USER_KEY)
      t.equal(refused.statusCode, 429)
      t.equal(refused.body, TOO_MANY_REQUESTS, 'byte for byte')
      t.equal(refused.headers['content-type'], 'application/json; charset=utf-8')
      const reset = Number(refused.headers['x-ratelimit-reset'])
      t.ok(reset >= 1 && reset <= 900, `reset ${reset} is within the window`)
      t.same(limitHeaders(refused), { limit: '3', remaining: '0', reset: String(reset), retryAfter: String(reset) })
      t.equal(await scrape(app, 'amrikyy_rate_limited_total'), 1)
      t.equal((await post(app, USER_KEY)).statusCode, 429, 'still refused')
      t.equal(await scrape(app, 'amrikyy_rate_limited_total'), 2)
      t.equal(await scrape(app, 'amrikyy_rate_limit_store_errors_total'), 0)
    })

    t.test('user and admin keys have their own limits', async t => {
      const app = await buildGateway(t, NO_UPSTREAM, { rateLimit: { ...await store.options(t, 'roles'), max: 3, adminMax: 5 } })
      const user: number[] = []
      const admin: number[] = []
      for (let i = 0; i < 6; i++) {
        user.push((await post(app, USER_KEY)).statusCode)
        admin.push((await post(app, ADMIN_KEY)).statusCode)
      }
      t.same(user, [400, 400, 400, 429, 429, 429])
      t.same(admin, [400, 400, 400, 400, 400, 429])
      t.equal((await post(app, ADMIN_KEY)).headers['x-ratelimit-limit'], '5')
    })

    t.test("one key's exhaustion leaves every other budget alone", async t => {
      const app = await buildGateway(t, NO_UPSTREAM, {
        apiKeys: [USER_KEY, OTHER_USER_KEY],
        rateLimit: { ...await store.options(t, 'isolation'), max: 2 }
      })
      for (let i = 0; i < 4; i++) await post(app, USER_KEY)
      t.equal((await post(app, USER_KEY)).statusCode, 429)
      const other = await post(app, OTHER_USER_KEY)
      t.same([other.statusCode, limitHeaders(other)], [400, { limit: '2', remaining: '1', reset: '900', retryAfter: undefined }])
      const anonymous = await post(app)
      t.same([anonymous.statusCode, anonymous.headers['x-ratelimit-remaining']], [401, '1'], 'nor the client address budget')
    })

    t.test('requests without a valid key are throttled by client address, apart from the keys', async t => {
      const app = await buildGateway(t, NO_UPSTREAM, { rateLimit: { ...await store.options(t, 'address'), max: 3 } })
      const answers = [await post(app), await post(app, 'not-a-key'), await post(app)]
      t.same(answers.map(response => [response.statusCode, response.body, response.headers['x-ratelimit-remaining']]), [
        [401, UNAUTHORIZED, '2'],
        [403, FORBIDDEN, '1'],
        [401, UNAUTHORIZED, '0']
      ], 'missing and invalid keys spend the same address budget')
      for (const apiKey of [undefined, 'not-a-key', 'another-guess']) {
        const refused = await post(app, apiKey)
        t.same([refused.statusCode, refused.body], [429, TOO_MANY_REQUESTS], `${apiKey ?? 'no key'} after the flood`)
      }
      const keyed = await post(app, USER_KEY)
      t.same([keyed.statusCode, keyed.headers['x-ratelimit-remaining']], [400, '2'], 'a valid key from the same address still has its whole budget')
    })
  })
}

t.test('in memory, the counter starts again exactly when the window ends', async t => {
  // The store's clock, moved by hand: the window is crossed to the millisecond, without waiting for it.
  let clock = 1_000_000
  const app = await buildGateway(t, NO_UPSTREAM, { rateLimit: { max: 2, timeWindow: '1 second', now: () => clock } })
  t.same([(await post(app, USER_KEY)).statusCode, (await post(app, USER_KEY)).statusCode], [400, 400])
  const refused = await post(app, USER_KEY)
  t.same([refused.statusCode, refused.headers['retry-after']], [429, '1'])
  clock += 999
  const last = await post(app, USER_KEY)
  t.same([last.statusCode, limitHeaders(last)], [429, { limit: '2', remaining: '0', reset: '1', retryAfter: '1' }], 'one millisecond before the end: refused')
  clock += 1
  const again = await post(app, USER_KEY)
  t.same([again.statusCode, limitHeaders(again)], [400, { limit: '2', remaining: '1', reset: '1', retryAfter: undefined }], 'at the end: a fresh window')
})

t.test("in Redis, the window is the counter's expiry", { skip: REDIS_SKIP }, async t => {
  const { url, nameSpace, redis } = await redisNamespace(t, 'window')
  const counter = `${nameSpace}key:key-${sha256Hex(USER_KEY).slice(0, 12)}`
  const app = await buildGateway(t, NO_UPSTREAM, { rateLimit: { redis: url, nameSpace, max: 2, timeWindow: '1 second' } })
  t.same([(await post(app, USER_KEY)).statusCode, (await post(app, USER_KEY)).statusCode], [400, 400])
  const ttl = await redis.pttl(counter)
  t.ok(ttl > 0 && ttl <= 1000, `the counter expires with the window (pttl ${ttl})`)
  // Redis keeps time itself: the test moves the counter's expiry instead of waiting for it.
  await redis.pexpire(counter, 1500)
  const refused = await post(app, USER_KEY)
  t.same([refused.statusCode, limitHeaders(refused)], [429, { limit: '2', remaining: '0', reset: '2', retryAfter: '2' }], 'refused until the counter expires, and told when')
  await redis.pexpire(counter, 0)
  const again = await post(app, USER_KEY)
  t.same([again.statusCode, limitHeaders(again)], [400, { limit: '2', remaining: '1', reset: '1', retryAfter: undefined }], 'once it expired: a fresh window')
})

t.test('a streamed 200 carries the limit headers, and the next request over the limit gets the exact 429 bytes', async t => {
  const pace = { chunkCount: 3, defaultMaxTokens: 20 }
  const emulator = await startEmulator(t, { ...pace, chunkDelayMs: 5 })
  const { url } = await startGateway(t, emulator, { rateLimit: { max: 1 } })
  const request = { prompt: 'Write a haiku about AI', agent: 'poet' }
  const response = await fetch(`${url}/api/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY },
    body: JSON.stringify(request)
  })
  t.equal(response.status, 200)
  t.equal(response.headers.get('content-type'), 'text/event-stream')
  t.same([response.headers.get('x-ratelimit-limit'), response.headers.get('x-ratelimit-remaining'), response.headers.get('x-ratelimit-reset')], ['1', '0', '900'])
  const answer = answerFor(request.prompt, undefined, pace)
  t.equal(await response.text(), expectedStreamBody(answer.deltas, answer))

  const refused = await fetch(`${url}/api/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY },
    body: JSON.stringify(request)
  })
  t.equal(refused.status, 429)
  t.equal(Buffer.from(await refused.arrayBuffer()).toString('latin1'), TOO_MANY_REQUESTS, 'byte for byte over the wire')
  t.same([refused.headers.get('x-ratelimit-limit'), refused.headers.get('x-ratelimit-remaining'), refused.headers.get('retry-after') === refused.headers.get('x-ratelimit-reset')], ['1', '0', true])
  t.equal(emulator.requests.length, 1, 'the refused request never reached Gemini')
})

t.test('rateLimit: false turns limiting off', async t => {
  const app = await buildGateway(t, NO_UPSTREAM, { rateLimit: false })
  const response = await post(app, USER_KEY)
  t.same([response.statusCode, response.headers['x-ratelimit-limit']], [400, undefined])
})

t.test('the defaults are 100 per 15 minutes for users and 1000 for admins', async t => {
  const app = await buildGateway(t, NO_UPSTREAM)
  t.same(limitHeaders(await post(app, USER_KEY)), { limit: '100', remaining: '99', reset: '900', retryAfter: undefined })
  t.same(limitHeaders(await post(app, ADMIN_KEY)), { limit: '1000', remaining: '999', reset: '900', retryAfter: undefined })
})

t.test('counter keys are the caller id or the client address, never the raw key', async t => {
  const request = (caller: { id: string, role: 'user' | 'admin' } | null, ip = '127.0.0.1'): Parameters<typeof rateLimitKey>[0] =>
    ({ amrikyy: { caller, authFailure: null }, ip }) as unknown as Parameters<typeof rateLimitKey>[0]
  t.equal(rateLimitKey(request({ id: 'alice', role: 'admin' })), 'key:alice')
  t.equal(rateLimitKey(request({ id: `key-${sha256Hex(USER_KEY).slice(0, 12)}`, role: 'user' })), `key:key-${sha256Hex(USER_KEY).slice(0, 12)}`)
  t.equal(rateLimitKey(request(null, '203.0.113.7')), 'ip:203.0.113.7')
  t.equal(rateLimitKey(request(null, '2001:db8:1:2:3:4:5:6')), rateLimitKey(request(null, '2001:db8:1:2:ffff:4:5:6')), 'an IPv6 client is one /64')
  t.not(rateLimitKey(request(null, '2001:db8:1:2:3:4:5:6')), rateLimitKey(request(null, '2001:db8:1:3:3:4:5:6')))
})

t.test('options are checked up front, naming the option', async t => {
  const cases: Array<[RateLimitOptions, RegExp]> = [
    [{ max: 0 }, /option "max" must be a positive integer/],
    [{ adminMax: 1.5 }, /option "adminMax" must be a positive integer/],
    [{ timeWindow: 'fortnight' }, /option "timeWindow" must be milliseconds or a duration/],
    [{ timeWindow: -5 }, /option "timeWindow" must be a positive integer/],
    [{ redis: 'http://127.0.0.1:6379' }, /option "redis" must be a redis:\/\/ or rediss:\/\/ URL or an ioredis client/],
    [{ onRedisError: 'maybe' as 'open' }, /option "onRedisError" must be "open" or "closed"/],
    [{ nameSpace: '' }, /option "nameSpace" must be a non-empty string/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify({ logger: false })
    await t.rejects(async () => {
      await app.register(streamGateway, { apiKeys: [USER_KEY], gemini: { apiKey: 'unused', baseUrl: NO_UPSTREAM }, rateLimit: options })
    }, message, JSON.stringify(options))
    await app.close()
  }
})

t.test('time windows', async t => {
  t.equal(parseTimeWindow('15 minutes'), 900_000)
  t.equal(parseTimeWindow('1 second'), 1000)
  t.equal(parseTimeWindow('2h'), 7_200_000)
  t.equal(parseTimeWindow('1.5 s'), 1500)
  t.equal(parseTimeWindow('250'), 250, 'a bare number is milliseconds')
  t.equal(parseTimeWindow(60_000), 60_000)
  const spellings: Array<[string, number]> = [
    ['1 minute', 60_000], ['10 minutes', 600_000], ['2 m', 120_000], ['3 mins', 180_000], ['1 min', 60_000],
    ['5 ms', 5], ['1 millisecond', 1], ['20 milliseconds', 20],
    ['1 s', 1000], ['2 sec', 2000], ['2 secs', 2000], ['30 seconds', 30_000],
    ['1 h', 3_600_000], ['1 hour', 3_600_000], ['2 hours', 7_200_000],
    ['1 d', 86_400_000], ['1 day', 86_400_000], ['2 days', 172_800_000],
    ['15minutes', 900_000], [' 15 minutes ', 900_000], ['0.5 s', 500]
  ]
  for (const [spelling, ms] of spellings) t.equal(parseTimeWindow(spelling), ms, spelling)
  t.throws(() => parseTimeWindow('0.4 ms'), /timeWindow/, 'less than a millisecond')
  t.throws(() => parseTimeWindow('-5 s'), /timeWindow/)
  t.throws(() => parseTimeWindow(''), /timeWindow/)
  t.throws(() => parseTimeWindow('0 s'), /timeWindow/)
  t.throws(() => parseTimeWindow('15 fortnights'), /timeWindow/)
})
