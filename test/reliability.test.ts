import t from 'tap'
import { answerFor, type Fault } from '../emulator/server.js'
import { GatewayLifecycle } from '../plugins/lifecycle.js'
import {
  USER_KEY, chunkEvents, errorEvent, expectedStreamBody, openStream, parseEvents, postStream, startEmulator, startGateway, within
} from './support/gateway.js'
import { Exposition, streamMetrics, type StreamMetrics } from './support/prometheus.js'

const PACE = { chunkCount: 5, defaultMaxTokens: 20 }
const NO_RETRY = { attempts: 1 }

async function scrape (url: string): Promise<Exposition> {
  return new Exposition(await (await fetch(`${url}/api/metrics`)).text())
}

/**
 * Each relay timeout, on a real socket with real waits: the answer the client gets, that the upstream
 * call was aborted, no earlier than the timeout allows, and what the metrics count.
 */
const TIMEOUTS: ReadonlyArray<{
  name: string
  pace: { chunkCount: number, chunkDelayMs?: number, defaultMaxTokens: number }
  timeouts: { firstChunkMs?: number, idleMs?: number, totalMs?: number }
  fault?: Fault
  status: number
  /** The exact body, given the chunk events the client received before the cut. */
  body: (deltas: string[]) => string
  /** How many chunk events may arrive before the cut. */
  chunks: { min: number, max: number }
}> = [
  {
    name: 'first chunk: no answer within firstChunkMs is the contract\'s 500',
    pace: PACE,
    timeouts: { firstChunkMs: 200 },
    fault: { kind: 'stall-headers' },
    status: 500,
    body: () => '{"error":"Failed to start stream","message":"Gemini sent no answer within 0.2 s"}',
    chunks: { min: 0, max: 0 }
  },
  {
    name: 'idle: a silence of idleMs between chunks ends the stream with an error event',
    pace: PACE,
    timeouts: { idleMs: 200 },
    fault: { kind: 'stall', afterChunks: 2 },
    status: 200,
    body: deltas => chunkEvents(deltas) + errorEvent('Gemini went silent for 0.2 s', true),
    chunks: { min: 2, max: 2 }
  },
  {
    name: 'total: a steady stream still ends at totalMs',
    pace: { chunkCount: 20, chunkDelayMs: 100, defaultMaxTokens: 40 },
    timeouts: { totalMs: 450 },
    status: 200,
    body: deltas => chunkEvents(deltas) + errorEvent('Gemini did not finish the answer within 0.5 s', true),
    // A chunk every 100 ms for 450 ms; never the whole answer.
    chunks: { min: 1, max: 19 }
  }
]

t.test('timeouts abort the upstream, answer with a recoverable error and count a failure', async t => {
  for (const row of TIMEOUTS) {
    t.test(row.name, async t => {
      const emulator = await startEmulator(t, row.pace)
      const { url } = await startGateway(t, emulator, { stream: { heartbeatMs: 0, retry: NO_RETRY, timeouts: row.timeouts } })
      if (row.fault !== undefined) emulator.addFault(row.fault)
      const sentAt = performance.now()
      const response = await postStream(url, { prompt: 'p' })
      const body = await response.text()
      const elapsedMs = performance.now() - sentAt
      t.equal(response.status, row.status)
      const received = (parseEvents(body) as Array<{ chunk?: string }>).filter(event => event.chunk !== undefined).length
      t.ok(received >= row.chunks.min && received <= row.chunks.max, `${received} chunk events before the cut`)
      t.equal(body, row.body(answerFor('p', undefined, row.pace).deltas.slice(0, received)))
      const limitMs = row.timeouts.firstChunkMs ?? row.timeouts.idleMs ?? row.timeouts.totalMs ?? 0
      t.ok(elapsedMs >= limitMs, `cut after ${elapsedMs.toFixed(0)} ms, not before the ${limitMs} ms timeout`)
      await within(1000, emulator.requests[0]!.closed, 'upstream closed')
      t.equal(emulator.requests[0]?.clientClosedEarly, true, 'the upstream call was aborted')
      t.same(streamMetrics(await scrape(url)), { failed: 1, active: 0, upstreamErrors: { timeout: 1 } })
    })
  }
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
    t.same(streamMetrics(await scrape(url)), { completed: 1, active: 0, upstreamErrors: { 503: 1, network: 1 } })
  })

  t.test('a failure after thought summaries were relayed is not retried: no thought is sent twice', async t => {
    const emulator = await startEmulator(t, { chunkCount: 8, defaultMaxTokens: 20 })
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    // The first of the two thought events arrives, then the connection drops.
    emulator.addFault({ kind: 'drop', afterChunks: 1 })
    const events = parseEvents(await (await postStream(url, { prompt: 'p', model: 'gemini-2.5-flash', options: { thinking: { includeThoughts: true } } })).text())
    t.equal(streamCalls(emulator).length, 1, 'Gemini was asked once')
    t.equal(events.filter(event => typeof event === 'object' && event !== null && 'thought' in event).length, 1, 'the one thought relayed, once')
    t.match(events.at(-1), { error: String, recoverable: true })
  })

  t.test('Gemini\'s RetryInfo delay is honoured', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({
      kind: 'http-error',
      status: 429,
      body: { error: { code: 429, message: 'Quota exceeded', status: 'RESOURCE_EXHAUSTED', details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '0.4s' }] } }
    })
    const response = await postStream(url, { prompt: 'p' })
    t.equal(response.status, 200)
    t.equal(await response.text(), expectedStreamBody(answerFor('p', undefined, PACE).deltas, answerFor('p', undefined, PACE)))
    const calls = streamCalls(emulator)
    t.equal(calls.length, 2)
    t.ok(calls[1]!.startedAt - calls[0]!.startedAt >= 400, 'waited as long as Gemini asked')
    t.same(streamMetrics(await scrape(url)), { completed: 1, active: 0, upstreamErrors: { 429: 1 } })
  })

  t.test('a Retry-After header is honoured', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({ kind: 'http-error', status: 503, headers: { 'retry-after': '1' } })
    const response = await postStream(url, { prompt: 'p' })
    t.equal(response.status, 200)
    t.equal(await response.text(), expectedStreamBody(answerFor('p', undefined, PACE).deltas, answerFor('p', undefined, PACE)))
    const calls = streamCalls(emulator)
    t.equal(calls.length, 2)
    t.ok(calls[1]!.startedAt - calls[0]!.startedAt >= 1000, 'waited the second Gemini asked for')
    t.same(streamMetrics(await scrape(url)), { completed: 1, active: 0, upstreamErrors: { 503: 1 } })
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
    t.same(streamMetrics(await scrape(url)), { failed: 1, active: 0, upstreamErrors: { 429: 1 } })
  })

  t.test('attempts are bounded and the last failure is the contract\'s 500', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({ kind: 'http-error', status: 502 }, { times: Infinity })
    const response = await postStream(url, { prompt: 'p' })
    t.equal(response.status, 500)
    t.equal(await response.text(), '{"error":"Failed to start stream","message":"Bad Gateway"}')
    t.equal(streamCalls(emulator).length, 3)
    t.same(streamMetrics(await scrape(url)), { failed: 1, active: 0, upstreamErrors: { 502: 3 } })
  })

  t.test('request errors are not retried', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({ kind: 'http-error', status: 400 }, { times: Infinity })
    const response = await postStream(url, { prompt: 'p' })
    t.equal(response.status, 500)
    t.equal(await response.text(), '{"error":"Failed to start stream","message":"Request contains an invalid argument."}')
    t.equal(streamCalls(emulator).length, 1)
    t.same(streamMetrics(await scrape(url)), { failed: 1, active: 0, upstreamErrors: { 400: 1 } })
  })

  t.test('never after the first chunk', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { stream: { retry } })
    emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 503, message: 'overloaded' })
    const body = await (await postStream(url, { prompt: 'p' })).text()
    const events = parseEvents(body)
    t.same(events.at(-1), { error: 'overloaded', recoverable: true })
    t.equal(events.length, 3)
    t.equal(body, chunkEvents(answerFor('p', undefined, PACE).deltas.slice(0, 2)) + errorEvent('overloaded', true))
    t.equal(streamCalls(emulator).length, 1)
    t.same(streamMetrics(await scrape(url)), { failed: 1, active: 0, upstreamErrors: { 503: 1 } })
  })
})

t.test('malformed upstream answers become a correct error or completion', async t => {
  const deltas = answerFor('p', undefined, PACE).deltas
  const rows: ReadonlyArray<{ name: string, fault: Fault, body: string, metrics: StreamMetrics }> = [
    {
      name: 'a [DONE] sentinel after the answer is a malformed stream',
      fault: { kind: 'done-sentinel' },
      body: chunkEvents(deltas) + errorEvent('Gemini sent a malformed stream', true),
      metrics: { failed: 1, active: 0, upstreamErrors: { malformed: 1 } }
    },
    {
      name: 'a function-call part adds no chunk',
      fault: { kind: 'non-text-part' },
      body: expectedStreamBody(deltas, answerFor('p', undefined, PACE)),
      metrics: { completed: 1, active: 0, upstreamErrors: {} }
    }
  ]
  for (const row of rows) {
    t.test(row.name, async t => {
      const emulator = await startEmulator(t, PACE)
      const { url } = await startGateway(t, emulator, { stream: { retry: NO_RETRY } })
      emulator.addFault(row.fault)
      const response = await postStream(url, { prompt: 'p' })
      t.equal(response.status, 200)
      t.equal(await response.text(), row.body)
      t.same(streamMetrics(await scrape(url)), row.metrics)
    })
  }
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
  t.same(streamMetrics(await scrape(url)), { completed: 1, failed: 1, active: 0, upstreamErrors: {} })
})

t.test('request ids are accepted when well-formed, generated otherwise, and returned everywhere', async t => {
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
  const rows: ReadonlyArray<{ name: string, body: unknown, headers: Record<string, string>, status: number, requestId: string | RegExp }> = [
    { name: 'a well-formed id is kept on a stream', body: { prompt: 'p' }, headers: { 'x-api-key': USER_KEY, 'x-request-id': 'trace-42.a:b' }, status: 200, requestId: 'trace-42.a:b' },
    { name: 'an over-long id is replaced by a UUID, on a 401 too', body: { prompt: 'p' }, headers: { 'x-request-id': 'x'.repeat(200) }, status: 401, requestId: UUID },
    { name: 'a missing id is generated, on a 400 too', body: { prompt: '' }, headers: { 'x-api-key': USER_KEY }, status: 400, requestId: UUID }
  ]
  for (const row of rows) {
    t.test(row.name, async t => {
      const emulator = await startEmulator(t, PACE)
      const { url } = await startGateway(t, emulator)
      const response = await postStream(url, row.body, row.headers)
      await response.text()
      t.equal(response.status, row.status)
      const id = response.headers.get('x-request-id')
      if (typeof row.requestId === 'string') t.equal(id, row.requestId)
      else t.match(id, row.requestId)
    })
  }
})
