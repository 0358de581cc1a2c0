import type { AddressInfo } from 'node:net'
import t from 'tap'
import { answerFor } from '../emulator/server.js'
import Fastify from 'fastify'
import { buildGateway, listenOnLoopback, openStream, postAndHangUp, postStream, startEmulator, startGateway, waitUntil, within } from './support/gateway.js'
import { Exposition, promtoolCheck } from './support/prometheus.js'
import metricsPlugin, { GEMINI_MODELS } from '../plugins/metrics.js'

const PACE = { chunkCount: 5, defaultMaxTokens: 20 }
/** The samples of every per-stream metric: each one carries the `api` label. */
const STREAM_SAMPLE_NAMES = [
  'amrikyy_stream_chunks_sent_total',
  'amrikyy_stream_sessions_completed_total',
  'amrikyy_stream_sessions_failed_total',
  'amrikyy_stream_sessions_cancelled_total',
  'amrikyy_active_streams',
  'amrikyy_stream_duration_seconds_bucket',
  'amrikyy_stream_duration_seconds_count',
  'amrikyy_stream_time_to_first_chunk_seconds_bucket',
  'amrikyy_stream_time_to_first_chunk_seconds_count',
  'amrikyy_stream_tokens_total'
]
const MODEL = 'gemini-2.0-flash-exp'

t.test('every stream lands in exactly one outcome and the scrape says so exactly', async t => {
  const emulator = await startEmulator(t, PACE)
  // Seven keyed requests fit the budget; the two after them are refused.
  const { url } = await startGateway(t, emulator, { stream: { retry: { attempts: 1 } }, rateLimit: { max: 7 } })
  const labels = { api: 'stream', agent: 'mix', model: MODEL }

  const completedPrompts = ['one two three', 'four five', 'six']
  for (const prompt of completedPrompts) {
    const body = await (await postStream(url, { prompt, agent: 'mix' })).text()
    t.match(body, /"complete":true/)
  }

  emulator.addFault({ kind: 'http-error', status: 503 })
  t.equal((await postStream(url, { prompt: 'fails before headers', agent: 'mix' })).status, 500)

  emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 500 })
  t.match(await (await postStream(url, { prompt: 'fails mid stream', agent: 'mix' })).text(), /"recoverable":true/)

  emulator.addFault({ kind: 'stall-headers' })
  await postAndHangUp(url, { prompt: 'leaves before the first chunk', agent: 'mix' }, emulator.waitForRequests(emulator.requests.length + 1))
  await within(1000, emulator.requests.at(-1)!.closed, 'upstream closed')

  emulator.addFault({ kind: 'stall', afterChunks: 1 })
  const leaving = await openStream(url, { prompt: 'leaves after the first chunk', agent: 'mix' })
  await leaving.waitFor('"index":1}')
  leaving.disconnect()
  await within(1000, emulator.requests.at(-1)!.closed, 'upstream closed')
  await waitUntil(() => emulator.openStreams() === 0, 1000, 'emulator idle')

  for (const prompt of ['over the limit', 'still over']) t.equal((await postStream(url, { prompt, agent: 'mix' })).status, 429)
  t.equal((await postStream(url, { prompt: 'no key', agent: 'mix' }, {})).status, 401)

  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())

  t.equal(scrape.value('amrikyy_stream_sessions_completed_total', labels), 3)
  t.match(scrape.text, /^amrikyy_stream_sessions_completed_total\{api="stream",agent="mix",model="gemini-2\.0-flash-exp"\} 3$/m, 'api is the first label')
  for (const name of STREAM_SAMPLE_NAMES) t.same(new Set(scrape.labelSets(name).map(set => set.api)), new Set(['stream']), `${name}: every /api/stream series is api="stream"`)
  t.equal(scrape.value('amrikyy_stream_sessions_failed_total', labels), 2)
  t.equal(scrape.value('amrikyy_stream_sessions_cancelled_total', labels), 2)
  t.equal(scrape.value('amrikyy_active_streams', labels), 0)
  t.equal(scrape.value('amrikyy_stream_chunks_sent_total', labels), 3 * 5 + 2 + 1)
  t.equal(scrape.value('amrikyy_stream_duration_seconds_count', { ...labels, outcome: 'completed' }), 3)
  t.equal(scrape.value('amrikyy_stream_duration_seconds_count', { ...labels, outcome: 'failed' }), 2)
  t.equal(scrape.value('amrikyy_stream_duration_seconds_count', { ...labels, outcome: 'cancelled' }), 2)
  t.equal(scrape.value('amrikyy_stream_time_to_first_chunk_seconds_count', labels), 5, 'once per stream that sent a chunk')
  // Every stream Gemini answered pays its last running total: the completed ones, and the two cut after some chunks.
  const billedPrompts = [...completedPrompts, 'fails mid stream', 'leaves after the first chunk']
  const promptTokens = billedPrompts.map(prompt => answerFor(prompt, undefined, PACE).promptTokens).reduce((a, b) => a + b)
  t.equal(scrape.value('amrikyy_stream_tokens_total', { ...labels, type: 'prompt' }), promptTokens)
  const tokensPerChunk = PACE.defaultMaxTokens / PACE.chunkCount
  t.equal(scrape.value('amrikyy_stream_tokens_total', { ...labels, type: 'completion' }), 3 * 20 + 2 * tokensPerChunk + 1 * tokensPerChunk)
  t.equal(scrape.value('amrikyy_upstream_errors_total', { status: '503' }), 1)
  t.equal(scrape.value('amrikyy_upstream_errors_total', { status: '500' }), 1)
  t.equal(scrape.value('amrikyy_rate_limited_total'), 2)
  t.equal(scrape.value('amrikyy_auth_failures_total', { reason: 'missing' }), 1)
  t.equal(scrape.value('amrikyy_auth_failures_total', { reason: 'invalid' }), 0)
  t.equal(emulator.requests.length, 7, 'refused requests never reach Gemini')
  t.equal(scrape.value('http_request_duration_seconds_count', { route: '/api/stream' }), 0, 'streams are not timed as one request')
  t.ok(scrape.families().has('process_cpu_seconds_total'), 'Node process metrics are exported')
})

t.test('a recorder begun for another API labels every per-stream metric with it, apart from /api/stream', async t => {
  // The OpenAI-compatible and Gemini routes are not written yet: their recorders are begun on the metrics service directly.
  const app = Fastify({ logger: false })
  await app.register(metricsPlugin, { defaultMetrics: false, routeMetrics: false })
  t.teardown(async () => { await app.close() })
  const url = await listenOnLoopback(app)
  const metrics = app.amrikyy?.metrics
  if (metrics === undefined) throw new Error('the metrics plugin provides no metrics service')

  const openai = metrics.beginStream({ api: 'openai', agent: 'poet', model: 'gemini-2.5-flash' })
  for (let i = 0; i < 3; i++) openai.chunkSent()
  openai.end('completed', { promptTokens: 7, completionTokens: 11, totalTokens: 18 })
  const gemini = metrics.beginStream({ api: 'gemini', agent: 'poet', model: 'gemini-2.5-flash' })
  gemini.chunkSent()
  gemini.end('cancelled', { promptTokens: 2, completionTokens: 1, totalTokens: 3 })
  const stream = metrics.beginStream({ agent: 'poet', model: 'gemini-2.5-flash' })
  stream.end('failed')
  // Still in flight at the scrape.
  metrics.beginStream({ api: 'openai', agent: 'poet', model: 'gemini-2.5-flash' })

  const response = await fetch(`${url}/api/metrics`)
  t.equal(response.status, 200)
  const text = await response.text()
  const scrape = new Exposition(text)
  const openaiLabels = { api: 'openai', agent: 'poet', model: 'gemini-2.5-flash' }
  const geminiLabels = { ...openaiLabels, api: 'gemini' }
  const streamLabels = { ...openaiLabels, api: 'stream' }
  t.match(text, /^amrikyy_stream_chunks_sent_total\{api="openai",agent="poet",model="gemini-2\.5-flash"\} 3$/m)
  t.equal(scrape.sample('amrikyy_stream_sessions_completed_total', openaiLabels), 1)
  t.equal(scrape.sample('amrikyy_active_streams', openaiLabels), 1, 'the open openai stream, and only it')
  t.equal(scrape.sample('amrikyy_stream_duration_seconds_count', { ...openaiLabels, outcome: 'completed' }), 1)
  t.equal(scrape.sample('amrikyy_stream_time_to_first_chunk_seconds_count', openaiLabels), 1)
  t.equal(scrape.sample('amrikyy_stream_tokens_total', { ...openaiLabels, type: 'prompt' }), 7)
  t.equal(scrape.sample('amrikyy_stream_tokens_total', { ...openaiLabels, type: 'completion' }), 11)
  t.equal(scrape.sample('amrikyy_stream_sessions_cancelled_total', geminiLabels), 1)
  t.equal(scrape.sample('amrikyy_stream_chunks_sent_total', geminiLabels), 1)
  t.equal(scrape.sample('amrikyy_stream_tokens_total', { ...geminiLabels, type: 'prompt' }), 2)
  t.equal(scrape.sample('amrikyy_stream_sessions_failed_total', streamLabels), 1, 'a recorder given no api is api="stream"')
  t.equal(scrape.sample('amrikyy_active_streams', streamLabels), 0)
  t.equal(scrape.value('amrikyy_stream_sessions_completed_total', { api: 'stream' }), 0, 'the openai completion is not counted as /api/stream')
  for (const name of STREAM_SAMPLE_NAMES) {
    t.ok(scrape.labelSets(name).every(labels => ['stream', 'openai', 'gemini'].includes(labels.api ?? '')), `${name}: every series names its api`)
  }
  const check = await promtoolCheck(text)
  t.test('promtool check metrics', { skip: check === undefined ? 'promtool is not installed (Debian package prometheus; .ci/run installs it)' : false }, async t => {
    t.equal(check?.parseError, false, check?.output ?? '')
    t.same(check?.lintProblems.filter(problem => problem.includes('amrikyy_')), [])
  })
})

t.test('the exposition is valid Prometheus text', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  await (await postStream(url, { prompt: 'p', agent: 'valid' })).text()
  emulator.addFault({ kind: 'http-error', status: 429 })
  await (await postStream(url, { prompt: 'p' })).text()
  const response = await fetch(`${url}/api/metrics`)
  t.equal(response.status, 200)
  t.match(response.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  const text = await response.text()
  t.doesNotThrow(() => new Exposition(text))
  const check = await promtoolCheck(text)
  t.test('promtool check metrics', { skip: check === undefined ? 'promtool is not installed (Debian package prometheus; .ci/run installs it)' : false }, async t => {
    t.equal(check?.parseError, false, check?.output ?? '')
    // The client library's own Node metrics break a naming lint (nodejs_active_handles_total is a gauge); ours must not.
    t.same(check?.lintProblems.filter(problem => problem.includes('amrikyy_')), [])
  })
})

t.test('label cardinality stays bounded under a flood of 10,000 agent names', async t => {
  // Nothing listens upstream: every stream fails at once, which still records its labels, and keeps the flood fast.
  const app = await buildGateway(t, 'http://127.0.0.1:9', { metrics: { maxAgents: 5 }, rateLimit: false, stream: { retry: { attempts: 1 } } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < 10_000) {
      const agent = `agent-${next++}`
      const response = await postStream(url, { prompt: 'p', agent })
      if (response.status !== 500) throw new Error(`unexpected status ${response.status}`)
      await response.text()
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  const agents = scrape.labelSets('amrikyy_stream_sessions_failed_total').map(labels => labels.agent)
  t.equal(agents.length, 6, 'five names kept, the rest counted as other')
  t.ok(agents.includes('other'))
  t.equal(scrape.value('amrikyy_stream_sessions_failed_total'), 10_000)
  t.equal(scrape.value('amrikyy_stream_sessions_failed_total', { agent: 'other' }), 9_995)
  t.equal(scrape.value('amrikyy_active_streams'), 0)
  for (const name of ['amrikyy_stream_sessions_failed_total', 'amrikyy_active_streams', 'amrikyy_stream_duration_seconds_count']) {
    t.equal(scrape.labelSets(name).length, 6, name)
  }
})

t.test('agent names past the bound are counted as other over the wire', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 1 })
  const { url } = await startGateway(t, emulator, { metrics: { maxAgents: 2 } })
  for (const agent of ['a1', 'a2', 'a3', 'a4']) await (await postStream(url, { prompt: 'p', agent })).text()
  await (await postStream(url, { prompt: 'p' })).text()
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.same(scrape.labelSets('amrikyy_stream_sessions_completed_total').map(labels => labels.agent).sort(), ['a1', 'a2', 'other'])
  t.equal(scrape.value('amrikyy_stream_sessions_completed_total', { agent: 'other' }), 3, 'a3, a4 and the agent-less request')
})

t.test('METRICS_TOKEN protects the endpoint', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, { metrics: { bearerToken: 's3cret-token' } })
  const anonymous = await fetch(`${url}/api/metrics`)
  t.equal(anonymous.status, 401)
  t.equal(await anonymous.text(), '{"error":"Unauthorized: metrics token is missing or invalid."}')
  t.equal((await fetch(`${url}/api/metrics`, { headers: { authorization: 'Bearer wrong' } })).status, 401)
  const allowed = await fetch(`${url}/api/metrics`, { headers: { authorization: 'Bearer s3cret-token' } })
  t.equal(allowed.status, 200)
  const scrape = new Exposition(await allowed.text())
  t.equal(scrape.sample('amrikyy_active_streams'), undefined, 'no stream has run, so the gauge has no series yet')
  t.match(scrape.text, /^# TYPE amrikyy_active_streams gauge$/m)
})

t.test('made-up model names are counted as other and never push a real model out of its label', async t => {
  // More made-up names than the old 20 first-come slots, which this emulator serves like a permissive proxy.
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 1, extraModels: Array.from({ length: 25 }, (_, i) => `junk-model-${i}`) })
  const { url } = await startGateway(t, emulator, { rateLimit: false, stream: { retry: { attempts: 1 } } })
  for (let i = 0; i < 25; i++) {
    t.match(await (await postStream(url, { prompt: 'p', agent: 'junk', model: `junk-model-${i}` })).text(), /"complete":true/)
  }
  for (const model of ['gemini-2.5-flash', 'models/gemini-2.5-pro', undefined]) {
    t.match(await (await postStream(url, { prompt: 'p', agent: 'real', ...(model === undefined ? {} : { model }) })).text(), /"complete":true/)
  }
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  const completed = 'amrikyy_stream_sessions_completed_total'
  const series = Object.fromEntries(scrape.labelSets(completed).map(labels => [`${labels.agent ?? ''}/${labels.model ?? ''}`, scrape.value(completed, labels)]))
  t.same(series, { 'junk/other': 25, 'real/gemini-2.5-flash': 1, 'real/gemini-2.5-pro': 1, 'real/gemini-2.0-flash-exp': 1 })
})

t.test('the models option replaces the known list; the default model is always labelled', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 1 })
  const { url } = await startGateway(t, emulator, { defaultModel: 'gemini-2.0-flash', metrics: { models: ['gemini-2.5-flash'] }, rateLimit: false })
  for (const model of ['gemini-2.5-flash', 'gemini-2.5-pro', undefined]) {
    t.match(await (await postStream(url, { prompt: 'p', agent: 'a', ...(model === undefined ? {} : { model }) })).text(), /"complete":true/)
  }
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.same(scrape.labelSets('amrikyy_stream_sessions_completed_total').map(labels => labels.model).sort(), ['gemini-2.0-flash', 'gemini-2.5-flash', 'other'])
  t.equal(scrape.value('amrikyy_stream_sessions_completed_total', { model: 'other' }), 1, 'gemini-2.5-pro is not on the list')
})

t.test('configured agents keep their label however many made-up agents came first', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 1 })
  const { url } = await startGateway(t, emulator, { metrics: { maxAgents: 2, agents: ['poet', 'coder'] }, rateLimit: false })
  for (const agent of ['junk-1', 'junk-2', 'junk-3', 'junk-4', 'poet', 'coder', 'poet']) {
    t.match(await (await postStream(url, { prompt: 'p', agent })).text(), /"complete":true/)
  }
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  const byAgent = Object.fromEntries(scrape.labelSets('amrikyy_stream_sessions_completed_total')
    .map(labels => [labels.agent ?? '', scrape.value('amrikyy_stream_sessions_completed_total', { agent: labels.agent ?? '' })]))
  t.same(byAgent, { 'junk-1': 1, 'junk-2': 1, other: 2, poet: 2, coder: 1 })
})

t.test('GEMINI_MODELS is the model list the emulator serves', async t => {
  const emulator = await startEmulator(t)
  const listed = await (await fetch(`${emulator.url}/v1beta/models?key=k&pageSize=1000`)).json() as { models: Array<{ name: string }> }
  t.same(listed.models.map(model => model.name.replace(/^models\//, '')), GEMINI_MODELS)
})

t.test('metrics options name what is wrong', async t => {
  await t.rejects(buildGateway(t, 'http://127.0.0.1:9', { metrics: { models: ['ok', ''] } }), { message: 'metrics: option "models" must be an array of non-empty strings' })
  await t.rejects(buildGateway(t, 'http://127.0.0.1:9', { metrics: { agents: [''] } }), { message: 'metrics: option "agents" must be an array of non-empty strings' })
})
