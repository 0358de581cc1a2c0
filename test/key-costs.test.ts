import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import OpenAI from 'openai'
import { sha256Hex, type ApiKeyEntry } from '../plugins/auth.js'
import type { KeyPolicy } from '../schemas/key-policy.js'
import { createPrices } from '../plugins/prices.js'
import { loadPrices } from '../standalone/prices.js'
import { ConfigError } from '../standalone/config-error.js'
import { buildGateway, postStream, startEmulator, startGateway } from './support/gateway.js'
import { REDIS_SKIP, redisNamespace } from './support/redis.js'

const TOO_MANY = '{"error":"Too Many Requests","message":"You have exceeded the request limit. Please try again later."}'
const key = (name: string): string => `${name}-key-0123456789abcdef`
const entry = (name: string, policy: KeyPolicy): ApiKeyEntry => ({ name, sha256: sha256Hex(key(name)), role: 'user', policy })
const CLOCK = Date.UTC(2026, 11, 3, 22, 0, 0)

t.test('with a price table each key\'s streams are priced in amrikyy_cost_usd_total{key,model}; a model without a price is not', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 10 })
  const { url } = await startGateway(t, emulator, {
    keyEntries: [entry('team', {})],
    prices: { 'gemini-2.0-flash-exp': { prompt: 1, completion: 2 }, 'gemini-2.5-*': { prompt: 0.3, completion: 2.5, cached: 0.075 } }
  })
  for (const model of ['gemini-2.0-flash-exp', 'gemini-2.5-flash', 'gemini-2.0-flash']) {
    const response = await postStream(url, { prompt: 'hello', model }, { 'x-api-key': key('team') })
    t.match(await response.text(), '"usage":{"promptTokens":1,"completionTokens":10,"totalTokens":11}')
  }
  const metrics = await (await fetch(`${url}/api/metrics`)).text()
  const costs = metrics.split('\n').filter(line => line.startsWith('amrikyy_cost_usd_total{'))
  t.same(costs.map(line => [line.slice(0, line.lastIndexOf(' ')), Number(line.slice(line.lastIndexOf(' ') + 1))]), [
    ['amrikyy_cost_usd_total{key="team",model="gemini-2.0-flash-exp"}', (1 * 1 + 10 * 2) / 1e6],
    ['amrikyy_cost_usd_total{key="team",model="gemini-2.5-flash"}', (1 * 0.3 + 10 * 2.5) / 1e6]
  ], 'a pattern prices every model it matches; gemini-2.0-flash has no price and no series')
  t.equal(createPrices({ m: { prompt: 1, completion: 2, cached: 0.5 } }).costOf('m', { promptTokens: 10, completionTokens: 0, cachedTokens: 4 }), (6 * 1 + 4 * 0.5) / 1e6, 'cached prompt tokens at their own price')

  const plain = await startGateway(t, emulator, { keyEntries: [entry('team', {})] })
  await (await postStream(plain.url, { prompt: 'hello' }, { 'x-api-key': key('team') })).text()
  t.notMatch(await (await fetch(`${plain.url}/api/metrics`)).text(), /amrikyy_cost_usd_total/, 'without a price table nothing pretends to know prices')
})

t.test('usdPerDay is enforced like the token budgets, in each API\'s shape, and /api/usage shows it in dollars', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 50 })
  // A dollar a token keeps the arithmetic plain: each stream reserves 7 + 10 = $17 and is charged 1 + 10 = $11.
  const { url } = await startGateway(t, emulator, {
    keyEntries: [entry('spender', { usdPerDay: 40, maxOutputTokens: 10 })],
    prices: { 'gemini-2.0-flash-exp': { prompt: 1e6, completion: 1e6 }, 'gemini-2.0-flash': { prompt: 1e6, completion: 1e6 } },
    budgets: { now: () => CLOCK },
    rateLimit: { max: 1000 }
  })
  const headers = { 'x-api-key': key('spender') }
  for (let i = 0; i < 3; i++) {
    const response = await postStream(url, { prompt: 'hello' }, headers)
    t.equal(response.status, 200, `stream ${i + 1}: $${11 * i} + $17 fits $40`)
    await response.text()
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const refused = await postStream(url, { prompt: 'hello' }, headers)
  t.equal(refused.status, 429, '$33 + $17 would pass $40')
  t.equal(await refused.text(), TOO_MANY)
  t.equal(refused.headers.get('retry-after'), String(2 * 3600), 'until midnight UTC')
  const usage = await (await fetch(`${url}/api/usage`, { headers })).json() as Record<string, unknown>
  t.same(usage.usdPerDay, { limit: 40, used: 33, reserved: 0, remaining: 7, resetSeconds: 7200 })

  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key('spender'), maxRetries: 0 })
  const error = await openai.chat.completions.create({ model: 'gemini-2.0-flash', messages: [{ role: 'user', content: 'hi' }] }).catch((error: unknown) => error)
  t.ok(error instanceof OpenAI.RateLimitError)
  t.match((error as InstanceType<typeof OpenAI.RateLimitError>).error, { type: 'rate_limit_error', code: 'insufficient_quota', message: 'Spending limit exceeded: this API key may spend $40 per day (UTC); retry after 7200 s' })

  const unpriced = await postStream(url, { prompt: 'hello', model: 'gemini-2.5-pro' }, headers)
  t.equal(unpriced.status, 400)
  t.equal(await unpriced.text(), '{"error":"No price is known for model gemini-2.5-pro, and this API key has a spending limit (usdPerDay)"}')
  t.equal(emulator.requests.length, 3, 'no refused stream reached Gemini')
})

t.test('a usdPerDay without a price table stops the start; MODEL_PRICES and MODEL_PRICES_FILE are checked', async t => {
  const emulator = await startEmulator(t)
  await t.rejects(buildGateway(t, emulator.url, { keyEntries: [entry('spender', { usdPerDay: 5 })] }), /spender has a usdPerDay, which needs a price table/)
  t.same(await loadPrices({}), undefined)
  t.same(await loadPrices({ MODEL_PRICES: '{"gemini-2.5-flash":{"prompt":0.3,"completion":2.5}}' }), { 'gemini-2.5-flash': { prompt: 0.3, completion: 2.5 } })
  const dir = await mkdtemp(join(tmpdir(), 'prices-'))
  const file = join(dir, 'prices.json')
  await writeFile(file, '{"gemini-2.5-*":{"prompt":0.3,"completion":2.5,"cached":0.075}}')
  t.same(await loadPrices({ MODEL_PRICES_FILE: file }), { 'gemini-2.5-*': { prompt: 0.3, completion: 2.5, cached: 0.075 } })
  const cases: Array<[Record<string, string>, string]> = [
    [{ MODEL_PRICES: 'not json' }, 'MODEL_PRICES: is not valid JSON'],
    [{ MODEL_PRICES: '{"gemini 2.5":{"prompt":1,"completion":1}}' }, 'MODEL_PRICES: "gemini 2.5" is not a model name or * pattern'],
    [{ MODEL_PRICES: '{"m":{"prompt":-1,"completion":1}}' }, 'MODEL_PRICES: "prompt" of m must be a number >= 0 (US dollars per million tokens)'],
    [{ MODEL_PRICES: '{"m":{"prompt":1,"completion":1,"output":2}}' }, 'MODEL_PRICES: the price of m must be an object of "prompt", "completion" and optionally "cached"'],
    [{ MODEL_PRICES_FILE: join(dir, 'missing.json') }, `MODEL_PRICES_FILE ${join(dir, 'missing.json')}: cannot be read (ENOENT)`],
    [{ MODEL_PRICES: '{}', MODEL_PRICES_FILE: file }, 'MODEL_PRICES and MODEL_PRICES_FILE are both set: give the price table once']
  ]
  for (const [env, message] of cases) await t.rejects(loadPrices(env), new ConfigError(message), message)
})

t.test('with Redis, two instances spend one usdPerDay', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 50 })
  const { url: redis, nameSpace } = await redisNamespace(t, 'costs')
  const options = {
    keyEntries: [entry('spender', { usdPerDay: 40, maxOutputTokens: 10 })],
    prices: { 'gemini-2.0-flash-exp': { prompt: 1e6, completion: 1e6 } },
    budgets: { redis, nameSpace, now: () => CLOCK }
  }
  const one = await startGateway(t, emulator, options)
  const two = await startGateway(t, emulator, options)
  const headers = { 'x-api-key': key('spender') }
  const statuses: number[] = []
  for (const url of [one.url, two.url, one.url, two.url]) {
    const response = await postStream(url, { prompt: 'hello' }, headers)
    statuses.push(response.status)
    await response.text()
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.same(statuses, [200, 200, 200, 429], '$11 a stream charged across both, the fourth refused')
  const usage = await (await fetch(`${two.url}/api/usage`, { headers })).json() as Record<string, unknown>
  t.same(usage.usdPerDay, { limit: 40, used: 33, reserved: 0, remaining: 7, resetSeconds: 7200 })
})
