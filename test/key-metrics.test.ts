// The per-key metrics say which key spent what: every outcome of every API under the key's name (never the key),
// the tokens each stream reported, refusals of its budget, and a bounded number of key label values.

import t from 'tap'
import Fastify from 'fastify'
import OpenAI from 'openai'
import { GoogleGenAI } from '@google/genai'
import { answerFor } from '../emulator/server.js'
import { sha256Hex, type ApiKeyEntry } from '../plugins/auth.js'
import metricsPlugin from '../plugins/metrics.js'
import type { KeyPolicy } from '../schemas/key-policy.js'
import { ADMIN_KEY, USER_KEY, openStream, parseEvents, postStream, startEmulator, startGateway, within } from './support/gateway.js'
import { Exposition, promtoolCheck } from './support/prometheus.js'

const rateLimit = { max: 100_000 }
/** Four chunks of two words: a stream cut after its first chunk has been charged its prompt and 2 answer tokens. */
const PACE = { chunkCount: 4, defaultMaxTokens: 8 }
const key = (name: string): string => `${name}-key-0123456789abcdef`
function entry (name: string, policy: KeyPolicy = {}): ApiKeyEntry {
  return { name, sha256: sha256Hex(key(name)), role: 'user', policy }
}
/** The label an API_KEYS key streams under: a name derived from its hash, never the key. */
const derivedName = (raw: string): string => `key-${sha256Hex(raw).slice(0, 12)}`

interface Spent { prompt: number, completion: number, thoughts: number }

/**
 * Streams once on `name`'s budget of one token a minute, which admits a first stream whatever it reserves, and
 * waits until its tokens are charged: every later stream of the key is refused. Returns the usage it reported.
 */
async function spendBudget (url: string, name: string): Promise<{ promptTokens: number, completionTokens: number }> {
  const events = parseEvents(await (await postStream(url, { prompt: 'hello' }, { 'x-api-key': key(name) })).text())
  const deadline = Date.now() + 3000
  for (;;) {
    const usage = await (await fetch(`${url}/api/usage`, { headers: { 'x-api-key': key(name) } })).json() as { tokensPerMinute: { reserved: number } }
    if (usage.tokensPerMinute.reserved === 0) break
    if (Date.now() > deadline) throw new Error(`the stream of ${name} was not charged`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  return (events.at(-1) as { usage: { promptTokens: number, completionTokens: number } }).usage
}

async function scrape (url: string): Promise<{ text: string, exposition: Exposition }> {
  const text = await (await fetch(`${url}/api/metrics`)).text()
  return { text, exposition: new Exposition(text) }
}

/** Every sample of one key metric, as `label value` pairs of its other label, so a test sees exactly what is there. */
function samplesOf (exposition: Exposition, name: string, keyName: string, other: 'type' | 'outcome'): Record<string, number> {
  return Object.fromEntries(exposition.samples
    .filter(sample => sample.name === name && sample.labels.key === keyName)
    .map(sample => [sample.labels[other] ?? '', sample.value]))
}

function keysIn (exposition: Exposition): string[] {
  return [...new Set(exposition.samples.filter(sample => sample.name.startsWith('amrikyy_key_') && sample.labels.key !== undefined).map(sample => sample.labels.key ?? ''))].sort()
}

t.test('every outcome on every API is counted under the key\'s name, with the tokens the streams reported', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, {
    rateLimit,
    keyEntries: [entry('team'), entry('capped', { tokensPerMinute: 1 })]
  })
  const headers = { 'x-api-key': key('team') }
  const spent: Spent = { prompt: 0, completion: 0, thoughts: 0 }
  const add = (prompt: number, completion: number, thoughts = 0): void => {
    spent.prompt += prompt
    spent.completion += completion
    spent.thoughts += thoughts
  }

  // /api/stream, the contract's format and a thinking conversation.
  const plain = parseEvents(await (await postStream(url, { prompt: 'hello' }, headers)).text()).at(-1) as { complete: boolean, usage: { promptTokens: number, completionTokens: number } }
  t.equal(plain.complete, true)
  add(plain.usage.promptTokens, plain.usage.completionTokens)
  const thinking = parseEvents(await (await postStream(url, { prompt: 'Why is the sky blue?', model: 'gemini-2.5-flash', options: { thinking: { includeThoughts: true } } }, headers)).text())
    .at(-1) as { usage: { promptTokens: number, completionTokens: number, thoughtsTokens: number } }
  t.ok(thinking.usage.thoughtsTokens > 0, 'the thinking model reported thoughts')
  add(thinking.usage.promptTokens, thinking.usage.completionTokens, thinking.usage.thoughtsTokens)

  // The OpenAI-compatible route, streamed with its usage chunk.
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key('team'), maxRetries: 0 })
  let chatUsage: OpenAI.CompletionUsage | undefined
  for await (const chunk of await openai.chat.completions.create({ model: 'gemini-2.0-flash', messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true } })) {
    chatUsage = chunk.usage ?? chatUsage
  }
  t.ok(chatUsage !== undefined, 'the OpenAI stream reported its usage')
  add(chatUsage?.prompt_tokens ?? NaN, chatUsage?.completion_tokens ?? NaN)

  // The Gemini passthrough: streamGenerateContent and generateContent.
  const google = new GoogleGenAI({ apiKey: key('team'), httpOptions: { baseUrl: `${url}/gemini` } })
  let streamedUsage
  for await (const chunk of await google.models.generateContentStream({ model: 'gemini-2.0-flash', contents: 'hi there' })) streamedUsage = chunk.usageMetadata ?? streamedUsage
  t.equal(streamedUsage?.thoughtsTokenCount, undefined, 'gemini-2.0-flash does not think')
  add(streamedUsage?.promptTokenCount ?? NaN, streamedUsage?.candidatesTokenCount ?? NaN)
  const unary = (await google.models.generateContent({ model: 'gemini-2.0-flash', contents: 'once more' })).usageMetadata
  add(unary?.promptTokenCount ?? NaN, unary?.candidatesTokenCount ?? NaN)

  // Failed after two chunks: Gemini had reported the whole prompt and the 4 answer tokens of two chunks.
  emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 500 }, { match: 'fails mid stream' })
  t.match(await (await postStream(url, { prompt: 'fails mid stream' }, headers)).text(), /"error"/)
  add(answerFor('fails mid stream', undefined, PACE).promptTokens, 4)
  // Failed before any chunk, every retry too: no usage, one failed request.
  emulator.addFault({ kind: 'http-error', status: 503 }, { match: 'fails at once', times: Infinity })
  t.equal((await postStream(url, { prompt: 'fails at once' }, headers)).status, 500)

  // Cancelled after the first chunk.
  emulator.addFault({ kind: 'stall', afterChunks: 1 }, { match: 'leaves early' })
  const leaving = await openStream(url, { prompt: 'leaves early' }, key('team'))
  await within(5000, leaving.waitFor('"index":1}'), 'first chunk')
  leaving.disconnect()
  await within(5000, emulator.requests.at(-1)!.closed, 'upstream closed after the disconnect')
  add(answerFor('leaves early', undefined, PACE).promptTokens, 2)

  // Refused by the key budgets, on two APIs, once the key's first stream spent its minute.
  const admitted = await spendBudget(url, 'capped')
  t.equal((await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('capped') })).status, 429)
  const cappedChat = new OpenAI({ baseURL: `${url}/v1`, apiKey: key('capped'), maxRetries: 0 })
  t.ok(await cappedChat.chat.completions.create({ model: 'gemini-2.0-flash', messages: [{ role: 'user', content: 'hi' }] }).catch((error: unknown) => error) instanceof OpenAI.RateLimitError)

  // The cancelled stream is recorded once the gateway sees the client gone, which may come just after the upstream close.
  let metrics = await scrape(url)
  for (let tries = 0; samplesOf(metrics.exposition, 'amrikyy_key_requests_total', 'team', 'outcome').cancelled === undefined && tries < 100; tries++) {
    await new Promise(resolve => setTimeout(resolve, 20))
    metrics = await scrape(url)
  }
  const { text, exposition } = metrics

  t.same(samplesOf(exposition, 'amrikyy_key_requests_total', 'team', 'outcome'), { completed: 5, failed: 2, cancelled: 1 })
  t.same(samplesOf(exposition, 'amrikyy_key_tokens_total', 'team', 'type'), spent, 'the tokens every stream reported, thoughts only where reported')
  t.ok(spent.thoughts < spent.completion, 'thoughts are a part of completion')
  t.same(samplesOf(exposition, 'amrikyy_key_requests_total', 'capped', 'outcome'), { completed: 1, refused: 2 })
  t.same(samplesOf(exposition, 'amrikyy_key_tokens_total', 'capped', 'type'), { prompt: admitted.promptTokens, completion: admitted.completionTokens }, 'a refused stream spent nothing')
  t.same(keysIn(exposition), ['capped', 'team'], 'no other key label')
  t.equal(exposition.value('amrikyy_rate_limited_total'), 2, 'a budget refusal is still a 429 like any other')
  t.equal(exposition.value('amrikyy_stream_tokens_total', { type: 'prompt' }), spent.prompt + admitted.promptTokens, 'the per-key tokens add up to the stream tokens')

  for (const secret of [key('team'), key('capped'), USER_KEY, ADMIN_KEY, sha256Hex(key('team')), sha256Hex(key('capped'))]) {
    t.notOk(text.includes(secret), 'no key or key hash in the metrics text')
  }
  const verdict = await promtoolCheck(text)
  if (verdict !== undefined) t.notOk(verdict.parseError, 'promtool parses the scrape', { output: verdict.output })
  for (const name of ['amrikyy_key_tokens_total', 'amrikyy_key_requests_total']) {
    t.ok(verdict === undefined || !verdict.lintProblems.some(line => line.includes(name)), `promtool finds nothing to say about ${name}`)
  }
  t.match(text, /# HELP amrikyy_key_tokens_total .*thoughts.*part of completion/, 'the help text says thoughts are part of completion')
})

t.test('the key label is bounded: past maxKeys keys are counted as other, and the keys file\'s names keep theirs', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 4 })
  const second = 'second-raw-key-0123456789'
  const { url } = await startGateway(t, emulator, {
    rateLimit,
    apiKeys: [USER_KEY, second],
    keyEntries: [entry('named'), entry('named-capped', { tokensPerMinute: 1 })],
    metrics: { maxKeys: 1 }
  })
  const usageOf = async (apiKey: string): Promise<{ promptTokens: number, completionTokens: number }> => {
    const events = parseEvents(await (await postStream(url, { prompt: 'hello' }, { 'x-api-key': apiKey })).text())
    return (events.at(-1) as { usage: { promptTokens: number, completionTokens: number } }).usage
  }
  const first = await usageOf(USER_KEY)
  const over = await usageOf(second)
  const overAgain = await usageOf(second)
  const named = await usageOf(key('named'))
  const cappedUsage = await spendBudget(url, 'named-capped')
  t.equal((await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('named-capped') })).status, 429)

  const { text, exposition } = await scrape(url)
  t.same(keysIn(exposition), [derivedName(USER_KEY), 'named', 'named-capped', 'other'].sort(), 'the one free slot went to the first key; the keys file\'s names take none')
  t.same(samplesOf(exposition, 'amrikyy_key_requests_total', derivedName(USER_KEY), 'outcome'), { completed: 1 })
  t.same(samplesOf(exposition, 'amrikyy_key_tokens_total', derivedName(USER_KEY), 'type'), { prompt: first.promptTokens, completion: first.completionTokens })
  t.same(samplesOf(exposition, 'amrikyy_key_requests_total', 'other', 'outcome'), { completed: 2 }, 'the second key is counted as other')
  t.same(samplesOf(exposition, 'amrikyy_key_tokens_total', 'other', 'type'), { prompt: over.promptTokens + overAgain.promptTokens, completion: over.completionTokens + overAgain.completionTokens })
  t.same(samplesOf(exposition, 'amrikyy_key_requests_total', 'named', 'outcome'), { completed: 1 })
  t.same(samplesOf(exposition, 'amrikyy_key_tokens_total', 'named', 'type'), { prompt: named.promptTokens, completion: named.completionTokens })
  t.same(samplesOf(exposition, 'amrikyy_key_requests_total', 'named-capped', 'outcome'), { completed: 1, refused: 1 })
  t.same(samplesOf(exposition, 'amrikyy_key_tokens_total', 'named-capped', 'type'), { prompt: cappedUsage.promptTokens, completion: cappedUsage.completionTokens })
  for (const secret of [USER_KEY, second, key('named'), sha256Hex(USER_KEY), sha256Hex(second)]) t.notOk(text.includes(secret), 'no key or key hash in the metrics text')
})

t.test('a host\'s own keys option replaces the keys file\'s names as the reserved labels', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 4 })
  const { url } = await startGateway(t, emulator, {
    rateLimit,
    keyEntries: [entry('first'), entry('second'), entry('kept')],
    metrics: { maxKeys: 1, keys: ['kept'] }
  })
  for (const name of ['first', 'second', 'kept']) await (await postStream(url, { prompt: 'hello' }, { 'x-api-key': key(name) })).text()
  const { exposition } = await scrape(url)
  t.same(keysIn(exposition), ['first', 'kept', 'other'])
})

t.test('the metrics plugin checks maxKeys and keys, and leaves a stream without a key out of the per-key metrics', async t => {
  for (const [options, message] of [
    [{ maxKeys: 0 }, 'metrics: option "maxKeys" must be a positive integer'],
    [{ maxKeys: 1.5 }, 'metrics: option "maxKeys" must be a positive integer'],
    [{ keys: ['a', ''] }, 'metrics: option "keys" must be an array of non-empty strings'],
    [{ keys: 'a' }, 'metrics: option "keys" must be an array of non-empty strings']
  ] as const) {
    const app = Fastify()
    t.teardown(async () => { await app.close() })
    // @ts-expect-error the wrong types are the point
    await t.rejects(app.register(metricsPlugin, { endpoint: null, defaultMetrics: false, routeMetrics: false, ...options }).ready(), { message })
  }

  const app = Fastify()
  t.teardown(async () => { await app.close() })
  await app.register(metricsPlugin, { endpoint: null, defaultMetrics: false, routeMetrics: false })
  await app.ready()
  const metrics = app.amrikyy?.metrics
  if (metrics === undefined) throw new Error('the metrics plugin provides its service')
  metrics.beginStream({ model: 'gemini-2.0-flash' }).end('completed', { promptTokens: 3, completionTokens: 5, totalTokens: 8 })
  const keyed = metrics.beginStream({ model: 'gemini-2.0-flash', key: 'k' })
  keyed.end('completed', { promptTokens: 1, completionTokens: 2, totalTokens: 3 })
  keyed.end('failed', { promptTokens: 1, completionTokens: 2, totalTokens: 3 })
  const exposition = new Exposition(await metrics.registry.metrics())
  t.same(keysIn(exposition), ['k'], 'the unkeyed stream is in the stream metrics only')
  t.same(samplesOf(exposition, 'amrikyy_key_requests_total', 'k', 'outcome'), { completed: 1 }, 'a recorder counts its first end only')
  t.same(samplesOf(exposition, 'amrikyy_key_tokens_total', 'k', 'type'), { prompt: 1, completion: 2 }, 'no thoughts sample when none were reported')
  t.equal(exposition.value('amrikyy_stream_tokens_total', { type: 'prompt' }), 4)
})
