import t from 'tap'
import OpenAI from 'openai'
import { sha256Hex } from '../plugins/auth.js'
import { fallbackMap } from '../relay/settings.js'
import { loadEnv } from '../standalone/env.js'
import { parseEvents, postStream, startEmulator, startGateway, USER_KEY, waitUntil } from './support/gateway.js'

const PACE = { chunkCount: 2, defaultMaxTokens: 6 }
// A conversation request (it has a system instruction), whose completion event names the model that answered.
const ask = (model: string, options: Record<string, unknown> = {}): unknown => ({ prompt: 'hello', system: 'Be brief.', model, options })
const modelsCalled = (emulator: { requests: Array<{ model: string | undefined }> }): unknown[] => emulator.requests.map(request => request.model)

async function lastEvent (response: Response): Promise<Record<string, unknown>> {
  return parseEvents(await response.text()).at(-1) as Record<string, unknown>
}

t.test('a model that fails before its first chunk falls back along its chain at once, and the completion names who answered', async t => {
  const emulator = await startEmulator(t, { ...PACE, models: { 'gemini-2.5-pro': { unavailable: true }, 'gemini-2.5-flash': { quota: 0 } } })
  const { url } = await startGateway(t, emulator, { stream: { fallbacks: [['gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.0-flash']], retry: { baseDelayMs: 5000 } } })
  const started = performance.now()
  const response = await postStream(url, ask('gemini-2.5-pro'))
  t.equal(response.status, 200)
  t.match(await lastEvent(response), { complete: true, model: 'gemini-2.0-flash' })
  t.ok(performance.now() - started < 2000, 'no back-off between the models')
  t.same(modelsCalled(emulator), ['gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.0-flash'])
  const metrics = await (await fetch(`${url}/api/metrics`)).text()
  t.match(metrics, 'amrikyy_model_fallbacks_total{from="gemini-2.5-pro",to="gemini-2.5-flash"} 1\n')
  t.match(metrics, 'amrikyy_model_fallbacks_total{from="gemini-2.5-flash",to="gemini-2.0-flash"} 1\n')
  t.match(metrics, 'amrikyy_upstream_errors_total{status="503"} 1\n')
  t.match(metrics, 'amrikyy_upstream_errors_total{status="429"} 1\n')

  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: USER_KEY, maxRetries: 0 })
  const completion = await openai.chat.completions.create({ model: 'gemini-2.5-pro', messages: [{ role: 'user', content: 'hi' }] })
  t.ok((completion.choices[0]?.message.content ?? '').length > 0, 'the OpenAI route falls back too')
  t.same(modelsCalled(emulator).slice(3), ['gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.0-flash'])
})

t.test('nothing falls back after a chunk, on a request error, for a request that opts out, or to a model the key may not use', async t => {
  const emulator = await startEmulator(t, { ...PACE, models: { 'gemini-2.5-pro': { failAfterChunks: 1 } } })
  const keyEntries = [{ name: 'pro-only', sha256: sha256Hex('pro-only-key-0123456789'), role: 'user' as const, policy: { models: ['gemini-2.5-pro', 'gemini-2.0-flash-exp'] } }]
  const { url } = await startGateway(t, emulator, { keyEntries, stream: { fallbacks: [['gemini-2.5-pro', 'gemini-2.5-flash'], ['gemini-2.0-flash-exp', 'gemini-2.0-flash']], retry: { attempts: 3, baseDelayMs: 1, maxTotalWaitMs: 100 } } })

  const broken = await postStream(url, ask('gemini-2.5-pro'))
  t.equal(broken.status, 200)
  const events = parseEvents(await broken.text())
  t.equal(events.length, 2, 'one chunk, then the error event')
  t.match(events[1], { error: /./ })
  t.same(modelsCalled(emulator), ['gemini-2.5-pro'], 'after a chunk reached the client, no other model is tried')

  emulator.reset()
  emulator.addFault({ kind: 'http-error', status: 400, body: { error: { code: 400, message: 'Invalid value at generation_config', status: 'INVALID_ARGUMENT' } } }, { match: 'hello' })
  const invalid = await postStream(url, ask('gemini-2.0-flash-exp'))
  t.equal(invalid.status, 500)
  await invalid.text()
  t.same(modelsCalled(emulator), ['gemini-2.0-flash-exp'], 'a request error is tried exactly once')

  emulator.reset()
  emulator.setModel('gemini-2.0-flash-exp', { unavailable: true })
  const optedOut = await postStream(url, ask('gemini-2.0-flash-exp', { fallback: false }))
  t.equal(optedOut.status, 500)
  await optedOut.text()
  t.same(modelsCalled(emulator), ['gemini-2.0-flash-exp', 'gemini-2.0-flash-exp', 'gemini-2.0-flash-exp'], 'opted out: the same model, retried as before')

  emulator.reset()
  emulator.setModel('gemini-2.0-flash-exp', { unavailable: true })
  const narrow = await postStream(url, ask('gemini-2.0-flash-exp'), { 'x-api-key': 'pro-only-key-0123456789' })
  t.equal(narrow.status, 500)
  await narrow.text()
  t.notOk(modelsCalled(emulator).includes('gemini-2.0-flash'), 'a key is never answered by a model its policy does not allow')

  emulator.reset()
  emulator.setModel('gemini-2.0-flash-exp', { unavailable: true })
  const passthrough = await fetch(`${url}/gemini/v1beta/models/gemini-2.0-flash-exp:streamGenerateContent?alt=sse`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-goog-api-key': USER_KEY },
    body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] })
  })
  await passthrough.text()
  t.notOk(modelsCalled(emulator).includes('gemini-2.0-flash'), 'the Gemini passthrough stays on the model its caller named')
})

t.test('a model that sends nothing within the first-chunk timeout falls back; without a fallback the timeout ends the stream as before', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, { stream: { fallbacks: [['gemini-2.5-pro', 'gemini-2.5-flash']], timeouts: { firstChunkMs: 300 } } })
  emulator.addFault({ kind: 'stall-headers', ms: 10_000 }, { match: 'hello', times: 1 })
  const started = performance.now()
  const response = await postStream(url, ask('gemini-2.5-pro'))
  t.equal(response.status, 200)
  t.match(await lastEvent(response), { complete: true, model: 'gemini-2.5-flash' })
  t.ok(performance.now() - started < 2000, `answered by the fallback soon after the timeout (${Math.round(performance.now() - started)} ms)`)
  t.same(modelsCalled(emulator), ['gemini-2.5-pro', 'gemini-2.5-flash'])
  await waitUntil(() => emulator.openStreams() === 0, 2000, 'the stalled call is aborted')
  const metrics = await (await fetch(`${url}/api/metrics`)).text()
  t.match(metrics, 'amrikyy_upstream_errors_total{status="timeout"} 1\n')

  emulator.addFault({ kind: 'stall-headers', ms: 10_000 }, { match: 'hello', times: 1 })
  const alone = await postStream(url, ask('gemini-2.0-flash'))
  t.equal(alone.status, 500)
  t.match(await alone.text(), /Gemini sent no answer within 0.3 s/)
  t.same(modelsCalled(emulator).slice(2), ['gemini-2.0-flash'], 'a model without a fallback is not tried again')
})

t.test('retries and fallbacks share one bound on attempts', async t => {
  const emulator = await startEmulator(t, { ...PACE, models: { 'gemini-2.5-pro': { unavailable: true }, 'gemini-2.5-flash': { unavailable: true } } })
  const { url } = await startGateway(t, emulator, { stream: { fallbacks: [['gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.0-flash']], retry: { attempts: 2 } } })
  const response = await postStream(url, ask('gemini-2.5-pro'))
  t.equal(response.status, 500)
  t.match(await response.text(), /The model is overloaded/)
  t.same(modelsCalled(emulator), ['gemini-2.5-pro', 'gemini-2.5-flash'], 'two attempts in all, the third model never tried')
})

t.test('MODEL_FALLBACKS is read as chains and checked', async t => {
  t.same([...fallbackMap([['a', 'b', 'c'], ['d', 'c']])], [['a', 'b'], ['b', 'c'], ['d', 'c']])
  t.throws(() => fallbackMap([['a', 'b'], ['a', 'c']]), /gives a two fallbacks \(b and c\)/)
  t.throws(() => fallbackMap([['a', 'b', 'a']]), /comes back to a/)
  t.throws(() => fallbackMap([['a']]), /two or more model ids/)
  t.throws(() => loadEnv({ MODEL_FALLBACKS: 'gemini-2.5-pro' }), /MODEL_FALLBACKS must be comma-separated chains/)
  t.doesNotThrow(() => loadEnv({ MODEL_FALLBACKS: 'gemini-2.5-pro>gemini-2.5-flash>gemini-2.5-flash-lite,gemini-2.0-flash-exp>gemini-2.0-flash' }))
})
