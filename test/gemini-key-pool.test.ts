import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import { GoogleGenAI } from '@google/genai'
import { buildGateway, expectedStreamBody, listenOnLoopback, postStream, startEmulator } from './support/gateway.js'
import { answerFor } from '../emulator/server.js'
import { geminiKeysOf } from '../standalone/upstream.js'
import { ConfigError } from '../standalone/config-error.js'

const PACE = { chunkCount: 2, defaultMaxTokens: 6 }
const QUOTA_EXHAUSTED = (retryDelay: string): unknown => ({
  error: {
    code: 429,
    message: 'You exceeded your current quota, please check your plan and billing details.',
    status: 'RESOURCE_EXHAUSTED',
    details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay }]
  }
})

async function pooledGateway (t: Test, emulatorUrl: string, apiKeys: Array<string | { name: string, key: string }>, retry = {}): Promise<{ url: string, logs: () => Array<Record<string, unknown>>, logText: () => string }> {
  const lines: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(chunk.toString()); done() } })
  const app = await buildGateway(t, emulatorUrl, { gemini: { apiKey: 'unused', apiKeys, baseUrl: emulatorUrl }, stream: { retry } }, { logger: { level: 'info', stream } })
  return { url: await listenOnLoopback(app), logs: () => lines.map(line => JSON.parse(line) as Record<string, unknown>), logText: () => lines.join('') }
}

function metricValue (text: string, series: string): number | undefined {
  const line = text.split('\n').find(candidate => candidate.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

const keysSeen = (emulator: { requests: Array<{ headers: Record<string, unknown> }> }): unknown[] => emulator.requests.map(request => request.headers['x-goog-api-key'])

t.test('a key out of quota rests for Gemini\'s RetryInfo delay while the call moves to the next key at once', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await pooledGateway(t, emulator.url, ['key-alpha', 'key-beta'], { baseDelayMs: 5000 })
  emulator.addFault({ kind: 'http-error', status: 429, body: QUOTA_EXHAUSTED('1s') }, { match: 'first' })
  const started = performance.now()
  const first = await postStream(url, { prompt: 'first' })
  t.equal(first.status, 200)
  const answer = answerFor('first', undefined, PACE)
  t.equal(await first.text(), expectedStreamBody(answer.deltas, answer), 'the client sees one whole answer')
  t.ok(performance.now() - started < 1000, 'without waiting out the delay or the back-off')
  t.same(keysSeen(emulator), ['key-alpha', 'key-beta'])

  for (const prompt of ['second', 'third']) await (await postStream(url, { prompt })).text()
  t.same(keysSeen(emulator).slice(2), ['key-beta', 'key-beta'], 'the resting key is passed over')
  let metrics = await (await fetch(`${url}/api/metrics`)).text()
  t.equal(metricValue(metrics, 'amrikyy_upstream_key_state{key="1"}'), 1, 'key 1 resting')
  t.equal(metricValue(metrics, 'amrikyy_upstream_key_state{key="2"}'), 0, 'key 2 serving')
  t.equal(metricValue(metrics, 'amrikyy_upstream_errors_total{status="429",key="1"}'), 1, 'the attempt is counted with its key')

  await new Promise(resolve => setTimeout(resolve, 1100))
  for (const prompt of ['fourth', 'fifth']) await (await postStream(url, { prompt })).text()
  t.same(keysSeen(emulator).slice(4).sort(), ['key-alpha', 'key-beta'], 'after the delay both keys serve again')
  metrics = await (await fetch(`${url}/api/metrics`)).text()
  t.equal(metricValue(metrics, 'amrikyy_upstream_key_state{key="1"}'), 0)
})

t.test('a key Gemini no longer accepts is taken out and logged once, by position and name, never by value', async t => {
  const emulator = await startEmulator(t, { ...PACE, apiKey: 'key-good' })
  const { url, logs, logText } = await pooledGateway(t, emulator.url, [{ name: 'old-project', key: 'key-revoked' }, { name: 'main', key: 'key-good' }])
  for (const prompt of ['one', 'two', 'three']) {
    const response = await postStream(url, { prompt })
    t.equal(response.status, 200, prompt)
    await response.text()
  }
  t.same(keysSeen(emulator), ['key-revoked', 'key-good', 'key-good', 'key-good'], 'tried once, then never again')
  const out = logs().filter(line => line.msg === 'Gemini refused this key; it is out of the pool until the gateway restarts')
  t.equal(out.length, 1)
  t.match(out[0], { level: 50, geminiKey: 'old-project', position: 1, upstreamStatus: 400 })
  t.notOk(logText().includes('key-revoked') || logText().includes('key-good'), 'no key value in any log line')
  const metrics = await (await fetch(`${url}/api/metrics`)).text()
  t.equal(metricValue(metrics, 'amrikyy_upstream_key_state{key="old-project"}'), 2)
  t.equal(metricValue(metrics, 'amrikyy_upstream_key_state{key="main"}'), 0)
  t.notOk(metrics.includes('key-revoked') || metrics.includes('key-good'), 'no key value in the metrics')

  // The passthrough and @google/genai go through the same pool.
  const google = new GoogleGenAI({ apiKey: 'test-user-key-0123456789', httpOptions: { baseUrl: `${url}/gemini` } })
  const answer = await google.models.generateContent({ model: 'gemini-2.0-flash', contents: 'hi' })
  t.ok((answer.text ?? '').length > 0)
  t.equal(keysSeen(emulator).at(-1), 'key-good')
})

t.test('when every key is out of quota the stream fails within the retry budget, and nothing is sent while they rest', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await pooledGateway(t, emulator.url, ['key-alpha', 'key-beta'], { attempts: 3, baseDelayMs: 10, maxTotalWaitMs: 50 })
  emulator.addFault({ kind: 'http-error', status: 429, body: QUOTA_EXHAUSTED('30s') }, { match: 'exhausted', times: 2 })
  const response = await postStream(url, { prompt: 'exhausted' })
  t.equal(response.status, 500)
  t.match(await response.text(), /"error":"Failed to start stream"/)
  t.same(keysSeen(emulator), ['key-alpha', 'key-beta'], 'each key tried once; the 30 s rest passes the wait budget, so no third try')

  const rested = await postStream(url, { prompt: 'while resting' })
  t.equal(rested.status, 500)
  t.match(await rested.text(), /Every Gemini key is out of quota; retry later/)
  t.equal(emulator.requests.length, 2, 'with both keys resting nothing is sent')
})

t.test('a request error is never retried on another key', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await pooledGateway(t, emulator.url, ['key-alpha', 'key-beta'])
  emulator.addFault({ kind: 'http-error', status: 400, body: { error: { code: 400, message: 'Invalid value at generation_config', status: 'INVALID_ARGUMENT' } } }, { match: 'bad request', times: 5 })
  const refused = await postStream(url, { prompt: 'bad request' })
  t.equal(refused.status, 500)
  await refused.text()
  t.equal(emulator.requests.length, 1, 'tried exactly once')
})

t.test('GEMINI_API_KEYS and GEMINI_API_KEYS_FILE list keys, named or by position, and say where a list is wrong without quoting it', async t => {
  t.same(geminiKeysOf('AIzaOne, AIzaTwo', 'GEMINI_API_KEYS'), ['AIzaOne', 'AIzaTwo'])
  t.same(geminiKeysOf('# pool\nmain=AIzaOne\n\nspare=AIzaTwo\n', 'file'), [{ name: 'main', key: 'AIzaOne' }, { name: 'spare', key: 'AIzaTwo' }])
  t.throws(() => geminiKeysOf('a=AIzaOne,a=AIzaTwo', 'GEMINI_API_KEYS'), new ConfigError('GEMINI_API_KEYS: key 2 has the name of an earlier key'))
  t.throws(() => geminiKeysOf('AIzaOne,AIzaOne', 'GEMINI_API_KEYS'), new ConfigError('GEMINI_API_KEYS: the same key is listed twice'))
})
