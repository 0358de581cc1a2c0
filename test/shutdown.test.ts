import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { USER_KEY, openStream, parseEvents, postStream, startEmulator, within } from './support/gateway.js'
import { UPSTREAM_KEY, freePort, startServerProcess } from './support/server-process.js'
import { Exposition } from './support/prometheus.js'

t.test('SIGTERM drains: open streams finish or are cut at the deadline, new ones get 503, exit 0', async t => {
  const emulator = await startEmulator(t, { chunkCount: 10, chunkDelayMs: 60, defaultMaxTokens: 20 })
  emulator.addFault({ kind: 'stall', afterChunks: 1 }, { match: 'stuck' })
  const server = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, SHUTDOWN_TIMEOUT_MS: '1500' })

  const probe = await fetch(`${server.url}/health/ready`, { headers: { 'x-request-id': 'probe-1' } })
  t.same(await probe.json(), { status: 'ready', openStreams: 0 })
  t.equal(probe.headers.get('x-request-id'), 'probe-1', 'probes carry the request id too')
  const finishing = await openStream(server.url, { prompt: 'finishes in time' })
  const stuck = await openStream(server.url, { prompt: 'stuck' })
  await Promise.all([finishing.waitFor('"index":1}'), stuck.waitFor('"index":1}')])

  const signalledAt = Date.now()
  server.child.kill('SIGTERM')
  await sleep(100)
  const ready = await fetch(`${server.url}/health/ready`)
  t.equal(ready.status, 503)
  t.same(await ready.json(), { status: 'draining', openStreams: 2 })
  const refused = await postStream(server.url, { prompt: 'too late' })
  t.equal(refused.status, 503)
  t.equal(await refused.text(), '{"error":"Service Unavailable","message":"The gateway is shutting down; retry the request"}')
  t.equal((await fetch(`${server.url}/health/live`)).status, 200, 'still alive while draining')

  t.match(await within(3000, finishing.waitFor('"complete":true'), 'finishing stream'), /"totalChunks":10/)
  const cut = await within(3000, stuck.waitFor('"recoverable"'), 'cut stream')
  t.same(parseEvents(cut).at(-1), { error: 'The gateway is shutting down; retry the request', recoverable: true })
  t.ok(Date.now() - signalledAt >= 1400, 'the stuck stream was given the whole deadline')

  t.equal(await within(5000, server.exited, 'exit'), 0)
  const stuckUpstream = emulator.requests.find(request => request.prompt === 'stuck')
  await within(1000, stuckUpstream!.closed, 'stuck upstream closed')
  t.equal(stuckUpstream?.clientClosedEarly, true)
  t.equal(emulator.openStreams(), 0)
  t.notOk(server.output().includes(USER_KEY), 'client keys never reach the log')
  t.notOk(server.output().includes(UPSTREAM_KEY), 'the Gemini key never reaches the log')
  t.match(server.output(), /"reqId":"[^"]+".*"msg":"stream failed"/, 'the cut stream is logged with its request id')
})

t.test('METRICS_PORT moves the scrape endpoint off the public listener', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 4 })
  const metricsPort = await freePort()
  const server = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, METRICS_PORT: String(metricsPort), METRICS_TOKEN: 'scrape-token' })
  await (await postStream(server.url, { prompt: 'p', agent: 'ops' })).text()
  t.equal((await fetch(`${server.url}/api/metrics`)).status, 404, 'not on the public port')
  const docs = await fetch(`${server.url}/api/docs/json`)
  t.equal(docs.status, 200, 'the standalone server serves its OpenAPI document')
  t.match(await docs.json(), { info: { title: 'Amrikyy stream gateway', version: '0.1.0' }, paths: { '/api/stream': { post: {} } } })
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/api/metrics`)).status, 401, 'the token still applies')
  const scrape = await (await fetch(`http://127.0.0.1:${metricsPort}/api/metrics`, { headers: { authorization: 'Bearer scrape-token' } })).text()
  t.equal(new Exposition(scrape).sample('amrikyy_stream_sessions_completed_total', { api: 'stream', agent: 'ops', model: 'gemini-2.0-flash-exp' }), 1)
  server.child.kill('SIGTERM')
  t.equal(await within(5000, server.exited, 'exit'), 0)
})
