import t, { type Test } from 'tap'
import OpenAI from 'openai'
import { GoogleGenAI, ApiError } from '@google/genai'
import { Redis } from 'ioredis'
import { sha256Hex, type ApiKeyEntry } from '../plugins/auth.js'
import type { KeyPolicy } from '../schemas/key-policy.js'
import type { KeyUsageAnswer } from '../schemas/usage.js'
import type { GatewayOptions } from '../app.js'
import type { GeminiEmulator } from '../emulator/server.js'
import { openStream, parseEvents, postStream, startEmulator, startGateway, waitUntil, type OpenStream } from './support/gateway.js'
import { REDIS_SKIP, redisNamespace } from './support/redis.js'

// Polling /api/usage spends the request limit too; these tests are about tokens and streams.
const rateLimit = { max: 100_000 }

const TOO_MANY = '{"error":"Too Many Requests","message":"You have exceeded the request limit. Please try again later."}'
const key = (name: string): string => `${name}-key-0123456789abcdef`
function entry (name: string, policy: KeyPolicy): ApiKeyEntry {
  return { name, sha256: sha256Hex(key(name)), role: 'user', policy }
}

/** A clock the test moves by hand, starting 15 s into a minute. */
function handClock (): { now: () => number, set: (ms: number) => void, start: number } {
  const start = Date.UTC(2026, 11, 3, 10, 0, 15)
  let ms = start
  return { now: () => ms, set: value => { ms = value }, start }
}

// `{"prompt":"hello"}` with the key's maxOutputTokens of 10 reserves ⌈("gemini-2.0-flash-exp" + "hello") / 4 bytes⌉ = 7
// prompt tokens and 10 output tokens; the emulator counts 1 prompt token and answers 10 words.
const RESERVE = 17
const CHARGE = 11

async function usageOf (url: string, name: string): Promise<KeyUsageAnswer> {
  const response = await fetch(`${url}/api/usage`, { headers: { 'x-api-key': key(name) } })
  if (response.status !== 200) throw new Error(`/api/usage answered ${response.status}: ${await response.text()}`)
  return await response.json() as KeyUsageAnswer
}

/** Waits until `open` streams of the key hold a slot and none other a reservation: every stream that ended was charged. */
async function settled (url: string, name: string, open = 0): Promise<KeyUsageAnswer> {
  let usage = await usageOf(url, name)
  const deadline = Date.now() + 3000
  const done = (books: KeyUsageAnswer): boolean => books.concurrentStreams.open <= open && (open > 0 || books.tokensPerMinute.reserved === 0)
  while (!done(usage)) {
    if (Date.now() > deadline) throw new Error(`the streams of ${name} were not settled: ${JSON.stringify(usage)}`)
    await new Promise(resolve => setTimeout(resolve, 10))
    usage = await usageOf(url, name)
  }
  return usage
}

t.test('a token budget admits streams while their reservations fit, charges what Gemini reported, and refuses with the contract\'s 429', async t => {
  const clock = handClock()
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 50 })
  const { url } = await startGateway(t, emulator, { rateLimit, keyEntries: [entry('team', { tokensPerMinute: 50, maxOutputTokens: 10 })], budgets: { now: clock.now } })
  for (let admitted = 0; admitted < 4; admitted++) {
    const response = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('team') })
    t.equal(response.status, 200, `stream ${admitted + 1}`)
    t.equal(response.headers.get('x-ratelimit-limit-tokens'), '50')
    t.equal(response.headers.get('x-ratelimit-remaining-tokens'), String(50 - admitted * CHARGE - RESERVE), 'what is left once this stream\'s reservation is held')
    t.equal(response.headers.get('x-ratelimit-reset-tokens'), '45')
    t.match(await response.text(), `"usage":{"promptTokens":1,"completionTokens":10,"totalTokens":${CHARGE}}`)
    await settled(url, 'team')
  }
  const refused = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('team') })
  t.equal(refused.status, 429, '44 charged + 17 reserved would pass 50')
  t.equal(await refused.text(), TOO_MANY)
  t.equal(refused.headers.get('retry-after'), '45', 'until the minute ends')
  t.equal(refused.headers.get('x-ratelimit-remaining-tokens'), '6')
  t.equal(emulator.requests.length, 4, 'a refused stream never reaches Gemini')

  t.same(await usageOf(url, 'team'), {
    key: 'team',
    policy: { tokensPerMinute: 50, maxOutputTokens: 10 },
    tokensPerMinute: { limit: 50, used: 44, reserved: 0, remaining: 6, resetSeconds: 45 },
    tokensPerDay: { limit: null, used: 44, reserved: 0, remaining: null, resetSeconds: 50385 },
    concurrentStreams: { limit: null, open: 0 }
  }, '/api/usage tells the caller its own books')

  clock.set(clock.start + 45_000)
  const nextMinute = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('team') })
  t.equal(nextMinute.status, 200, 'the next minute has room again')
  t.equal(nextMinute.headers.get('x-ratelimit-remaining-tokens'), String(50 - RESERVE))
  await nextMinute.text()
  const metrics = await (await fetch(`${url}/api/metrics`)).text()
  t.match(metrics, /amrikyy_rate_limited_total 1\n/, 'a budget refusal is a 429 like any other')
})

t.test('the OpenAI and Gemini routes spend the same budget and refuse in their own shapes', async t => {
  const clock = handClock()
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 50 })
  const { url } = await startGateway(t, emulator, { rateLimit, keyEntries: [entry('team', { tokensPerDay: 30, maxOutputTokens: 10 })], budgets: { now: clock.now } })
  const first = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('team') })
  t.equal(first.status, 200)
  await first.text()
  await settled(url, 'team')

  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key('team'), maxRetries: 0 })
  const { data: completion, response } = await openai.chat.completions.create({ model: 'gemini-2.0-flash', messages: [{ role: 'user', content: 'hi' }] }).withResponse()
  t.equal(completion.usage?.total_tokens, 11)
  t.equal(response.headers.get('x-ratelimit-limit-tokens'), '30', 'the budget headers on the OpenAI route too')
  await settled(url, 'team')
  const refused = await openai.chat.completions.create({ model: 'gemini-2.0-flash', messages: [{ role: 'user', content: 'hi' }] }).catch((error: unknown) => error)
  t.ok(refused instanceof OpenAI.RateLimitError, 'the openai SDK raises RateLimitError')
  const error = refused as InstanceType<typeof OpenAI.RateLimitError>
  t.match(error.error, { type: 'rate_limit_error', code: 'rate_limit_exceeded', message: /^Token budget exceeded: this API key may use 30 tokens per day \(UTC\); retry after \d+ s$/ })
  t.equal(error.headers.get('retry-after'), String((Date.UTC(2026, 11, 4) - clock.start) / 1000), 'a day budget has room again at midnight UTC')

  const google = new GoogleGenAI({ apiKey: key('team'), httpOptions: { baseUrl: `${url}/gemini` } })
  const exhausted = await google.models.generateContent({ model: 'gemini-2.0-flash', contents: 'hi' }).catch((error: unknown) => error)
  t.ok(exhausted instanceof ApiError)
  t.equal((exhausted as ApiError).status, 429)
  t.match((exhausted as ApiError).message, /"status":"RESOURCE_EXHAUSTED"/)
  t.match((exhausted as ApiError).message, /Token budget exceeded/)
  t.equal(emulator.requests.length, 2)
  t.match(await usageOf(url, 'team'), { tokensPerDay: { limit: 30, used: 22, reserved: 0, remaining: 8 } })
})

/** Streams the emulator holds after their first chunk until the test releases them. */
async function heldStreams (url: string, emulator: GeminiEmulator, name: string, count: number): Promise<OpenStream[]> {
  emulator.addFault({ kind: 'stall', afterChunks: 1, ms: 60_000 }, { match: 'held', times: count })
  const streams: OpenStream[] = []
  for (let i = 0; i < count; i++) {
    const stream = await openStream(url, { prompt: 'held' }, key(name))
    await stream.waitFor('"index":1')
    streams.push(stream)
  }
  return streams
}

t.test('maxConcurrentStreams refuses the stream past the limit with a 429 that says so, and every outcome frees its slot', async t => {
  const emulator = await startEmulator(t, { chunkCount: 4, defaultMaxTokens: 8 })
  const { url } = await startGateway(t, emulator, { rateLimit, keyEntries: [entry('pair', { maxConcurrentStreams: 2 })] })
  const held = await heldStreams(url, emulator, 'pair', 2)
  const third = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('pair') })
  t.equal(third.status, 429)
  t.equal(await third.text(), '{"error":"Too Many Requests","message":"Too many concurrent streams: this API key may have 2 open at once; retry when one ends."}')
  t.equal(third.headers.get('retry-after'), '1')
  t.equal((await usageOf(url, 'pair')).concurrentStreams.open, 2)

  held[0]!.disconnect()
  await waitUntil(() => emulator.openStreams() === 1, 2000, 'the cancelled stream\'s upstream call ends')
  t.equal((await settled(url, 'pair', 1)).concurrentStreams.open, 1, 'a cancelled stream frees its slot')
  emulator.releaseStalls()
  await held[1]!.waitFor('"complete":true')
  emulator.addFault({ kind: 'http-error', status: 400, body: { error: { code: 400, message: 'bad', status: 'INVALID_ARGUMENT' } } }, { match: 'fails' })
  const failed = await postStream(url, { prompt: 'fails' }, { 'x-api-key': key('pair') })
  t.equal(failed.status, 500, 'a failed stream')
  await failed.text()
  t.equal((await settled(url, 'pair')).concurrentStreams.open, 0, 'completed and failed streams free theirs')
  const again = await heldStreams(url, emulator, 'pair', 2)
  t.equal(again.length, 2, 'both slots can be taken again')
  for (const stream of again) stream.disconnect()
})

t.test('a cancelled stream is charged the tokens Gemini reported before it was cut', async t => {
  const emulator = await startEmulator(t, { chunkCount: 4, defaultMaxTokens: 8 })
  const { url } = await startGateway(t, emulator, { rateLimit, keyEntries: [entry('team', { tokensPerMinute: 1000 })] })
  const [stream] = await heldStreams(url, emulator, 'team', 1)
  const events = parseEvents(stream!.received())
  t.equal(events.length, 1, 'one chunk of four arrived')
  stream!.disconnect()
  const usage = await settled(url, 'team')
  // The emulator's first event reports 1 prompt token and the 2 answer words it carries.
  t.equal(usage.tokensPerMinute.used, 3, 'the last running total Gemini sent')
  const metrics = await (await fetch(`${url}/api/metrics`)).text()
  t.match(metrics, /amrikyy_stream_tokens_total\{api="stream",agent="unknown",model="gemini-2.0-flash-exp",type="prompt"\} 1\n/)
  t.match(metrics, /amrikyy_stream_tokens_total\{api="stream",agent="unknown",model="gemini-2.0-flash-exp",type="completion"\} 2\n/)
})

async function twoInstances (t: Test, emulator: GeminiEmulator, keyEntries: ApiKeyEntry[], extra: Partial<GatewayOptions['budgets']> = {}): Promise<[string, string, string]> {
  const { url: redisUrl, nameSpace } = await redisNamespace(t, 'budgets')
  const options = { rateLimit, keyEntries, budgets: { redis: redisUrl, nameSpace, ...extra } }
  const one = await startGateway(t, emulator, options)
  const two = await startGateway(t, emulator, options)
  return [one.url, two.url, nameSpace]
}

t.test('with Redis, two instances hold one budget within the documented bound, under concurrent streams', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 50, chunkDelayMs: 20 })
  const limit = 120
  const [one, two] = await twoInstances(t, emulator, [entry('shared', { tokensPerMinute: limit, maxOutputTokens: 10 })])
  // 200 one-letter words: the estimate (a token per 4 bytes) counts 105 of the prompt where the emulator counts 200,
  // so every admitted stream goes past its reservation, and the bound is what holds.
  const prompt = Array.from({ length: 200 }, () => 'a').join(' ')
  const reserve = Math.ceil((Buffer.byteLength('gemini-2.0-flash-exp') + Buffer.byteLength(prompt)) / 4) + 10
  const answers = await Promise.all(Array.from({ length: 12 }, async (_, i) => {
    const response = await postStream(i % 2 === 0 ? one : two, { prompt }, { 'x-api-key': key('shared') })
    return { status: response.status, body: await response.text() }
  }))
  const admitted = answers.filter(answer => answer.status === 200)
  const totals = admitted.map(answer => (parseEvents(answer.body).at(-1) as { usage: { totalTokens: number } }).usage.totalTokens)
  t.equal(admitted.length, Math.floor(limit / reserve), `exactly the streams whose reservations fit were admitted (${reserve} each)`)
  t.ok(answers.filter(answer => answer.status === 429).every(answer => answer.body === TOO_MANY), 'the others got the contract\'s 429')
  const usage = await settled(one, 'shared')
  const charged = totals.reduce((sum, total) => sum + total, 0)
  t.equal(usage.tokensPerMinute.used, charged, 'the books hold exactly what Gemini reported, across both instances')
  const bound = limit + totals.reduce((sum, total) => sum + Math.max(0, total - reserve), 0)
  t.ok(charged > limit, `the estimate fell short, so the budget was passed (${charged} of ${limit})`)
  t.ok(charged <= bound, `by no more than the admitted streams' excess over their reservations (${charged} ≤ ${bound})`)
  t.same(await usageOf(two, 'shared'), usage, 'the other instance reads the same books')
})

t.test('with Redis, concurrency slots are shared, and an instance that dies gives its slots back once their lease runs out', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 4, defaultMaxTokens: 8 })
  const { url: redisUrl, nameSpace } = await redisNamespace(t, 'leases')
  const keyEntries = [entry('solo', { maxConcurrentStreams: 1 })]
  // The dying instance's own connection: cutting it is, for Redis, what a crash looks like (no settle, no refresh).
  const doomed = new Redis(redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 0 })
  doomed.on('error', () => {})
  t.teardown(() => { doomed.disconnect() })
  const leaseMs = 600
  const first = await startGateway(t, emulator, { rateLimit, keyEntries, budgets: { redis: doomed, nameSpace, leaseMs } })
  const second = await startGateway(t, emulator, { rateLimit, keyEntries, budgets: { redis: redisUrl, nameSpace, leaseMs } })
  const [held] = await heldStreams(first.url, emulator, 'solo', 1)
  await new Promise(resolve => setTimeout(resolve, leaseMs * 1.5))
  const refused = await postStream(second.url, { prompt: 'hello' }, { 'x-api-key': key('solo') })
  t.equal(refused.status, 429, 'a running stream keeps its lease refreshed past its first term')
  await refused.text()
  doomed.disconnect()
  const cutAt = Date.now()
  let status = 0
  while (status !== 200) {
    const response = await postStream(second.url, { prompt: 'hello' }, { 'x-api-key': key('solo') })
    status = response.status
    await response.text()
    if (Date.now() - cutAt > leaseMs * 4) break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.equal(status, 200, 'the other instance admits a stream once the dead one\'s lease expired')
  t.ok(Date.now() - cutAt >= leaseMs / 3, 'and not before the lease could have run out')
  held!.disconnect()
})

t.test('with Redis unreachable the rate limiter\'s failure policy applies to the budgets: closed answers 503, open streams uncounted', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 8 })
  const keyEntries = [entry('team', { tokensPerMinute: 1000 })]
  // Port 1 refuses every connection at once: a Redis that is down.
  const down = 'redis://127.0.0.1:1'
  const closed = await startGateway(t, emulator, { keyEntries, rateLimit: false, budgets: { redis: down, onRedisError: 'closed' } })
  const refused = await postStream(closed.url, { prompt: 'hello' }, { 'x-api-key': key('team') })
  t.equal(refused.status, 503)
  t.equal(await refused.text(), '{"error":"Service Unavailable","message":"Token budgets are unavailable; try again later."}')
  t.equal(emulator.requests.length, 0, 'failing closed, nothing reaches Gemini')
  t.match(await (await fetch(`${closed.url}/api/metrics`)).text(), /amrikyy_key_budget_store_errors_total [1-9]/)

  const open = await startGateway(t, emulator, { keyEntries, rateLimit: false, budgets: { redis: down, onRedisError: 'open' } })
  const served = await postStream(open.url, { prompt: 'hello' }, { 'x-api-key': key('team') })
  t.equal(served.status, 200, 'failing open, the stream runs uncounted')
  t.equal(served.headers.get('x-ratelimit-limit-tokens'), null, 'with no books to tell, no budget headers')
  await served.text()
  t.equal(emulator.requests.length, 1)
})
