import t from 'tap'
import { answerFor, type Fault } from '../emulator/server.js'
import {
  chunkEvents, errorEvent, expectedStreamBody, openStream, parseEvents, postAndHangUp, postStream,
  startEmulator, startGateway, waitUntil, within
} from './support/gateway.js'
import { Exposition, streamMetrics } from './support/prometheus.js'

const PACE = { chunkCount: 5, defaultMaxTokens: 20 }

async function scrape (url: string): Promise<Exposition> {
  return new Exposition(await (await fetch(`${url}/api/metrics`)).text())
}

/** Gemini fails before the gateway sent anything: the contract's 500, Gemini's message with secrets redacted. */
const BEFORE_FIRST_CHUNK: ReadonlyArray<{ name: string, fault: Fault, message: string, upstreamErrors: Record<string, number> }> = [
  {
    name: 'a 429 passes Gemini\'s message on',
    fault: { kind: 'http-error', status: 429, body: { error: { code: 429, message: 'Resource has been exhausted (e.g. check quota).', status: 'RESOURCE_EXHAUSTED' } } },
    message: 'Resource has been exhausted (e.g. check quota).',
    upstreamErrors: { 429: 1 }
  },
  {
    name: 'a message quoting the upstream key has it redacted',
    fault: { kind: 'http-error', status: 400, body: { error: { code: 400, message: 'API key upstream-secret-key not valid', status: 'INVALID_ARGUMENT' } } },
    message: 'API key [redacted] not valid',
    upstreamErrors: { 400: 1 }
  },
  {
    name: 'an error event before the first chunk',
    fault: { kind: 'stream-error', afterChunks: 0, code: 503, message: 'The model is overloaded.' },
    message: 'The model is overloaded.',
    upstreamErrors: { 503: 1 }
  },
  { name: 'a blocked prompt', fault: { kind: 'blocked' }, message: 'Gemini blocked the prompt: SAFETY', upstreamErrors: {} },
  { name: 'an empty 200', fault: { kind: 'empty-200' }, message: 'Gemini ended the stream before the answer was complete', upstreamErrors: {} },
  { name: 'a dropped connection', fault: { kind: 'drop', afterChunks: 0 }, message: 'Connection to Gemini failed', upstreamErrors: { network: 1 } }
]

/** Gemini fails after two chunks went out: the two chunk events, then one error event. */
const AFTER_FIRST_CHUNK: ReadonlyArray<{ name: string, fault: Fault, error: string, recoverable: boolean, upstreamErrors: Record<string, number> }> = [
  { name: 'a 503 error event is recoverable', fault: { kind: 'stream-error', afterChunks: 2, code: 503, message: 'The model is overloaded.' }, error: 'The model is overloaded.', recoverable: true, upstreamErrors: { 503: 1 } },
  { name: 'a 400 error event is not recoverable', fault: { kind: 'stream-error', afterChunks: 2, code: 400, message: 'Request contains an invalid argument.' }, error: 'Request contains an invalid argument.', recoverable: false, upstreamErrors: { 400: 1 } },
  { name: 'a dropped connection', fault: { kind: 'drop', afterChunks: 2 }, error: 'Connection to Gemini failed', recoverable: true, upstreamErrors: { network: 1 } },
  { name: 'malformed JSON', fault: { kind: 'malformed-json', afterChunks: 2 }, error: 'Gemini sent a malformed stream', recoverable: true, upstreamErrors: { malformed: 1 } },
  { name: 'an unterminated event', fault: { kind: 'unterminated', afterChunks: 2 }, error: 'Gemini sent a malformed stream', recoverable: true, upstreamErrors: { malformed: 1 } }
]

// The whole core path runs through both Gemini clients: the default REST client and the SDK it must match.
for (const client of ['rest', 'sdk'] as const) {
  t.test(`through the ${client} client`, async t => {
    t.test('streams every upstream delta as a chunk event, then one completion event', async t => {
      const emulator = await startEmulator(t, PACE)
      const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client } })
      const prompt = 'Write a haiku about AI'
      const answer = answerFor(prompt, undefined, PACE)

      const response = await postStream(url, { prompt, agent: 'poet' })
      t.equal(response.status, 200)
      t.equal(response.headers.get('content-type'), 'text/event-stream')
      t.equal(response.headers.get('cache-control'), 'no-cache, no-transform')
      t.equal(response.headers.get('connection'), 'keep-alive')
      t.equal(response.headers.get('x-accel-buffering'), 'no')
      const body = await response.text()
      t.equal(answer.deltas.length, 5)
      t.equal(body, expectedStreamBody(answer.deltas, answer))
      t.equal(answer.promptTokens, 5, 'one token per prompt word')

      const events = parseEvents(body)
      t.same(events.at(-1), {
        complete: true,
        totalChunks: 5,
        fullText: answer.deltas.join(''),
        usage: { promptTokens: 5, completionTokens: 20, totalTokens: 25 }
      })
      t.equal(emulator.requests.length, 1)
      t.equal(emulator.requests[0]?.model, 'gemini-2.0-flash-exp', 'default model')
      t.equal(emulator.requests[0]?.headers['x-goog-api-key'], 'upstream-secret-key')
      t.same(streamMetrics(await scrape(url), { api: 'stream', agent: 'poet', model: 'gemini-2.0-flash-exp' }), { completed: 1, active: 0, upstreamErrors: {} })
    })

    t.test('keeps framing intact for text with newlines, quotes and multi-byte characters', async t => {
      const emulator = await startEmulator(t, { chunkCount: 50, defaultMaxTokens: 200 })
      const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client } })
      const answer = answerFor('framing check', undefined, { chunkCount: 50, defaultMaxTokens: 200 })
      const fullText = answer.deltas.join('')
      t.match(fullText, /\n/, 'the emulator answer contains a newline')
      t.match(fullText, /"/)
      t.match(fullText, /[^\p{ASCII}]/u)
      const body = await (await postStream(url, { prompt: 'framing check' })).text()
      const events = parseEvents(body) as Array<{ chunk?: string }>
      t.equal(events.length, answer.deltas.length + 1)
      t.same(events.slice(0, -1).map(event => event.chunk), answer.deltas)
      t.notOk(body.split('\n\n').slice(0, -1).some(block => block.includes('\n')), 'every event is a single line')
    })

    t.test('maps options to generationConfig and honours model', async t => {
      const emulator = await startEmulator(t, PACE)
      const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client } })
      const options = { temperature: 0.2, topP: 0.9, topK: 40, maxOutputTokens: 7 }
      const body = await (await postStream(url, { prompt: 'Tell me a story', model: 'gemini-2.5-flash', options })).text()
      const seen = emulator.requests[0]
      t.equal(seen?.model, 'gemini-2.5-flash')
      t.same((seen?.body as { generationConfig: unknown }).generationConfig, options)
      const answer = answerFor('Tell me a story', options, PACE)
      t.equal(body, expectedStreamBody(answer.deltas, answer))
      t.equal(answer.completionTokens, 7)
    })

    t.test('counts tokens with countTokens when the upstream reports no usage', async t => {
      const emulator = await startEmulator(t, PACE)
      const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client } })
      emulator.addFault({ kind: 'no-usage' })
      const prompt = 'count my tokens please'
      const answer = answerFor(prompt, undefined, PACE)
      const body = await (await postStream(url, { prompt })).text()
      t.equal(body, expectedStreamBody(answer.deltas, { promptTokens: 4, completionTokens: 20 }))
      t.same(emulator.requests.map(r => r.rpc).sort(), ['countTokens', 'countTokens', 'streamGenerateContent'])
      t.same(streamMetrics(await scrape(url)), { completed: 1, active: 0, upstreamErrors: {} })
    })

    t.test('upstream errors before the first chunk answer 500 without leaking secrets', async t => {
      for (const row of BEFORE_FIRST_CHUNK) {
        t.test(row.name, async t => {
          const emulator = await startEmulator(t, PACE)
          // One try only: retries have their own tests.
          const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client }, stream: { retry: { attempts: 1 } } })
          emulator.addFault(row.fault)
          const response = await postStream(url, { prompt: 'p' })
          t.equal(response.status, 500)
          t.equal(response.headers.get('content-type'), 'application/json; charset=utf-8')
          t.equal(await response.text(), JSON.stringify({ error: 'Failed to start stream', message: row.message }))
          t.same(streamMetrics(await scrape(url)), { failed: 1, active: 0, upstreamErrors: row.upstreamErrors })
        })
      }
    })

    t.test('upstream failures after the first chunk end the stream with an error event', async t => {
      const firstTwo = chunkEvents(answerFor('p', undefined, PACE).deltas.slice(0, 2))
      for (const row of AFTER_FIRST_CHUNK) {
        t.test(row.name, async t => {
          const emulator = await startEmulator(t, PACE)
          const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client } })
          emulator.addFault(row.fault)
          const response = await postStream(url, { prompt: 'p' })
          t.equal(response.status, 200)
          t.equal(await response.text(), firstTwo + errorEvent(row.error, row.recoverable))
          t.same(streamMetrics(await scrape(url)), { failed: 1, active: 0, upstreamErrors: row.upstreamErrors })
        })
      }
    })

    t.test('a client disconnect after the first chunk aborts the upstream call', async t => {
      const emulator = await startEmulator(t, { chunkCount: 20, chunkDelayMs: 50, defaultMaxTokens: 40 })
      const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client } })

      const stream = await openStream(url, { prompt: 'a long story' })
      await stream.waitFor('"index":1}')
      const cutAt = performance.now()
      stream.disconnect()
      const upstream = emulator.requests[0]
      await within(1000, upstream!.closed, 'upstream close')
      t.equal(upstream?.clientClosedEarly, true, 'the emulator saw the gateway hang up')
      t.ok(upstream!.endedAt! - cutAt < 1000, 'within a second of the client leaving')
      t.ok(upstream!.chunksSent < 20, 'generation stopped early')
      await waitUntil(() => emulator.openStreams() === 0, 1000, 'emulator idle')
      t.same(streamMetrics(await scrape(url)), { cancelled: 1, active: 0, upstreamErrors: {} })
    })

    t.test('a client disconnect before any chunk aborts the upstream call', async t => {
      const emulator = await startEmulator(t, PACE)
      const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client } })
      // The upstream is still sending no headers.
      emulator.addFault({ kind: 'stall-headers' })
      // Hung up once the call reached Gemini, however loaded the machine is.
      await postAndHangUp(url, { prompt: 'stalled' }, emulator.waitForRequests(1))
      const stalled = emulator.requests[0]
      await within(1000, stalled!.closed, 'stalled upstream close')
      t.equal(stalled?.clientClosedEarly, true)
      await waitUntil(() => emulator.openStreams() === 0, 1000, 'emulator idle')
      t.same(streamMetrics(await scrape(url)), { cancelled: 1, active: 0, upstreamErrors: {} })
    })
  })
}
