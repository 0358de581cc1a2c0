import t from 'tap'
import { answerFor } from '../emulator/server.js'
import { GatewayLifecycle } from '../plugins/lifecycle.js'
import {
  USER_KEY, expectedStreamBody, openStream, parseEvents, postStream, startEmulator, startGateway, within
} from './support/gateway.js'
import { Exposition } from './support/prometheus.js'

const PACE = { chunkCount: 5, defaultMaxTokens: 20 }
const NO_RETRY = { attempts: 1 }

async function scrape (url: string): Promise<Exposition> {
  return new Exposition(await (await fetch(`${url}/api/metrics`)).text())
}

function errorEvent (error: string, recoverable: boolean): string {
  return `data: ${JSON.stringify({ error, recoverable })}\n\n`
}

t.test('timeouts abort the upstream, answer with a recoverable error and count a failure', async t => {
  t.test('first chunk', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { heartbeatMs: 0, retry: NO_RETRY, timeouts: { firstChunkMs: 200 } } })
    emulator.addFault({ kind: 'stall-headers' })
    const response = await postStream(url, { prompt: 'p' })
    t.equal(response.status, 500)
    t.equal(await response.text(), '{"error":"Failed to start stream","message":"Gemini sent no answer within 0.2 s"}')
    await within(1000, emulator.requests[0]!.closed, 'upstream closed')
    t.equal(emulator.requests[0]?.clientClosedEarly, true)
    const metrics = await scrape(url)
    t.equal(metrics.value('amrikyy_stream_sessions_failed_total'), 1)
    t.equal(metrics.value('amrikyy_upstream_errors_total', { status: 'timeout' }), 1)
    t.equal(metrics.value('amrikyy_active_streams'), 0)
  })

  t.test('idle between chunks', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { heartbeatMs: 0, retry: NO_RETRY, timeouts: { idleMs: 200 } } })
    emulator.addFault({ kind: 'stall', afterChunks: 2 })
    const body = await (await postStream(url, { prompt: 'p' })).text()
    const deltas = answerFor('p', undefined, PACE).deltas
    t.equal(body, `data: ${JSON.stringify({ chunk: deltas[0], index: 1 })}\n\ndata: ${JSON.stringify({ chunk: deltas[1], index: 2 })}\n\n` +
      errorEvent('Gemini went silent for 0.2 s', true))
    await within(1000, emulator.requests[0]!.closed, 'upstream closed')
    t.equal(emulator.requests[0]?.clientClosedEarly, true)
    t.equal((await scrape(url)).value('amrikyy_stream_sessions_failed_total'), 1)
  })

  t.test('whole stream', async t => {
    const emulator = await startEmulator(t, { chunkCount: 20, chunkDelayMs: 100, defaultMaxTokens: 40 })
    const { url } = await startGateway(t, emulator, { stream: { heartbeatMs: 0, retry: NO_RETRY, timeouts: { totalMs: 450 } } })
    const events = parseEvents(await (await postStream(url, { prompt: 'p' })).text())
    t.ok(events.length > 1 && events.length < 20, `cut short after ${events.length - 1} chunks`)
    t.same(events.at(-1), { error: 'Gemini did not finish the answer within 0.5 s', recoverable: true })
    await within(1000, emulator.requests[0]!.closed, 'upstream closed')
    t.equal(emulator.requests[0]?.clientClosedEarly, true)
  })
})

t.test('heartbeats keep a quiet stream alive without disturbing data-only clients', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, { stream: { heartbeatMs: 100 } })
  emulator.addFault({ kind: 'stall-headers', ms: 450 })
  const stream = await openStream(url, { prompt: 'slow start' })
  t.equal(stream.response.statusCode, 200, 'headers went out before the first token')
  t.equal(stream.response.headers['content-type'], 'text/event-stream')
  const body = await stream.waitFor('"complete":true')
  t.match(body, /^(: ping\n\n){3,}data: /, 'pings while the upstream is silent')
  const answer = answerFor('slow start', undefined, PACE)
  t.equal(body.replaceAll(': ping\n\n', ''), expectedStreamBody(answer.deltas, answer), 'the data events are untouched')
})

t.test('upstream retries', async t => {
  const retry = { attempts: 3, baseDelayMs: 60, maxDelayMs: 1000, maxTotalWaitMs: 2000 }
  const streamCalls = (emulator: Awaited<ReturnType<typeof startEmulator>>): typeof emulator.requests =>
    emulator.requests.filter(request => request.rpc === 'streamGenerateContent')

  t.test('transient failures before the first chunk are retried with growing, jittered delays', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({ kind: 'http-error', status: 503 })
    emulator.addFault({ kind: 'drop', afterChunks: 0 })
    const body = await (await postStream(url, { prompt: 'p' })).text()
    const answer = answerFor('p', undefined, PACE)
    t.equal(body, expectedStreamBody(answer.deltas, answer))
    const calls = streamCalls(emulator)
    t.equal(calls.length, 3)
    const gaps = calls.slice(1).map((call, i) => call.startedAt - calls[i]!.startedAt)
    t.ok(gaps[0]! >= 30, `first back-off ${gaps[0]} ms is at least half of 60 ms`)
    t.ok(gaps[1]! >= 60, `second back-off ${gaps[1]} ms is at least half of 120 ms`)
    const metrics = await scrape(url)
    t.equal(metrics.value('amrikyy_upstream_errors_total', { status: '503' }), 1)
    t.equal(metrics.value('amrikyy_upstream_errors_total', { status: 'network' }), 1)
    t.equal(metrics.value('amrikyy_stream_sessions_completed_total'), 1)
  })

  t.test('Gemini\'s RetryInfo delay is honoured', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({
      kind: 'http-error',
      status: 429,
      body: { error: { code: 429, message: 'Quota exceeded', status: 'RESOURCE_EXHAUSTED', details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '0.4s' }] } }
    })
    t.equal((await postStream(url, { prompt: 'p' })).status, 200)
    const calls = streamCalls(emulator)
    t.equal(calls.length, 2)
    t.ok(calls[1]!.startedAt - calls[0]!.startedAt >= 400, 'waited as long as Gemini asked')
  })

  t.test('a Retry-After header is honoured', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({ kind: 'http-error', status: 503, headers: { 'retry-after': '1' } })
    t.equal((await postStream(url, { prompt: 'p' })).status, 200)
    const calls = streamCalls(emulator)
    t.equal(calls.length, 2)
    t.ok(calls[1]!.startedAt - calls[0]!.startedAt >= 1000, 'waited the second Gemini asked for')
  })

  t.test('a Retry-After beyond the wait budget fails at once', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({
      kind: 'http-error',
      status: 429,
      body: { error: { code: 429, message: 'Quota exceeded', status: 'RESOURCE_EXHAUSTED', details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '30s' }] } }
    })
    const response = await postStream(url, { prompt: 'p' })
    t.equal(response.status, 500)
    t.equal(await response.text(), '{"error":"Failed to start stream","message":"Quota exceeded"}')
    t.equal(streamCalls(emulator).length, 1)
  })

  t.test('attempts are bounded and the last failure is the contract\'s 500', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({ kind: 'http-error', status: 502 }, { times: Infinity })
    const response = await postStream(url, { prompt: 'p' })
    t.equal(response.status, 500)
    t.match(await response.json(), { error: 'Failed to start stream' })
    t.equal(streamCalls(emulator).length, 3)
  })

  t.test('request errors are not retried', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({ kind: 'http-error', status: 400 }, { times: Infinity })
    t.equal((await postStream(url, { prompt: 'p' })).status, 500)
    t.equal(streamCalls(emulator).length, 1)
  })

  t.test('never after the first chunk', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 503, message: 'overloaded' })
    const events = parseEvents(await (await postStream(url, { prompt: 'p' })).text())
    t.same(events.at(-1), { error: 'overloaded', recoverable: true })
    t.equal(events.length, 3)
    t.equal(streamCalls(emulator).length, 1)
  })
})

t.test('malformed upstream answers become a correct error or completion', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, { stream: { retry: NO_RETRY } })
  const answer = answerFor('p', undefined, PACE)

  emulator.addFault({ kind: 'done-sentinel' })
  const sentinel = parseEvents(await (await postStream(url, { prompt: 'p' })).text())
  t.same(sentinel.at(-1), { error: 'Gemini sent a malformed stream', recoverable: true })
  t.equal(sentinel.length, answer.deltas.length + 1)

  emulator.addFault({ kind: 'non-text-part' })
  t.equal(await (await postStream(url, { prompt: 'p' })).text(), expectedStreamBody(answer.deltas, answer), 'a function-call part adds no chunk')
})

t.test('draining refuses new streams, lets open ones finish and cuts the rest at the deadline', async t => {
  const emulator = await startEmulator(t, { chunkCount: 6, chunkDelayMs: 60, defaultMaxTokens: 12 })
  const lifecycle = new GatewayLifecycle()
  const { url } = await startGateway(t, emulator, { lifecycle })

  const finishing = await openStream(url, { prompt: 'finishes in time' })
  emulator.addFault({ kind: 'stall', afterChunks: 1 }, { match: 'stuck' })
  const stuck = await openStream(url, { prompt: 'stuck' })
  await stuck.waitFor('"index":1}')

  const drained = lifecycle.drain(800)
  const refused = await postStream(url, { prompt: 'too late' })
  t.equal(refused.status, 503)
  t.equal(await refused.text(), '{"error":"Service Unavailable","message":"The gateway is shutting down; retry the request"}')

  t.same(await drained, { finished: 1, interrupted: 1 })
  t.match(await finishing.waitFor('"complete":true'), /"complete":true/)
  const cut = await stuck.waitFor('"recoverable"')
  t.same(parseEvents(cut).at(-1), { error: 'The gateway is shutting down; retry the request', recoverable: true })
  const stuckUpstream = emulator.requests.find(request => request.prompt === 'stuck')
  await within(1000, stuckUpstream!.closed, 'stuck upstream closed')
  t.equal(stuckUpstream?.clientClosedEarly, true)
  t.equal(emulator.openStreams(), 0)
  const metrics = await scrape(url)
  t.equal(metrics.value('amrikyy_stream_sessions_completed_total'), 1)
  t.equal(metrics.value('amrikyy_stream_sessions_failed_total'), 1)
  t.equal(metrics.value('amrikyy_active_streams'), 0)
})

t.test('request ids are accepted when well-formed, generated otherwise, and returned everywhere', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const streamed = await postStream(url, { prompt: 'p' }, { 'x-api-key': USER_KEY, 'x-request-id': 'trace-42.a:b' })
  t.equal(streamed.headers.get('x-request-id'), 'trace-42.a:b')
  await streamed.text()
  const rejected = await postStream(url, { prompt: 'p' }, { 'x-request-id': 'x'.repeat(200) })
  t.equal(rejected.status, 401)
  t.match(rejected.headers.get('x-request-id'), /^[0-9a-f-]{36}$/, 'an over-long id is replaced by a UUID')
  const invalid = await postStream(url, { prompt: '' })
  t.equal(invalid.status, 400)
  t.match(invalid.headers.get('x-request-id'), /^[0-9a-f-]{36}$/)
})
