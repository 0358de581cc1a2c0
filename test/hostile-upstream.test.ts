// A hostile or broken upstream (issue 12, items 5 and 6): error bodies that never end or name internal
// hosts, keys echoed back in every encoding, one event without end, an answer without end. Each case
// runs through both Gemini clients over real sockets, with the emulator as the upstream.

import t, { type Test } from 'tap'
import fc from 'fast-check'
import { answerFor, type GeminiEmulator } from '../emulator/server.js'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { createRestGeminiClient } from '../gemini/rest-client.js'
import { SseSplitter } from '../gemini/sse-splitter.js'
import { createSdkGeminiClient } from '../gemini/sdk-client.js'
import { UpstreamError } from '../gemini/upstream-error.js'
import type { GeminiClientOptions } from '../gemini/types.js'
import type { GatewayOptions } from '../app.js'
import { startScriptedServer } from './support/scripted-server.js'
import { buildGateway, chunkEvent, errorEvent, listenOnLoopback, postStream, startEmulator, within } from './support/gateway.js'
import { Exposition } from './support/prometheus.js'

const PACE = { chunkCount: 4, defaultMaxTokens: 12 }
/** Characters a URL-encoding, a case change or base64 all alter. */
const UPSTREAM_KEY = 'Upstream+Secret/Key=0123abc'
const KEY_FORMS = [
  UPSTREAM_KEY,
  UPSTREAM_KEY.toUpperCase(),
  UPSTREAM_KEY.toLowerCase(),
  encodeURIComponent(UPSTREAM_KEY),
  encodeURIComponent(UPSTREAM_KEY).toLowerCase(),
  Buffer.from(UPSTREAM_KEY).toString('base64'),
  Buffer.from(UPSTREAM_KEY).toString('base64url')
]
const DEFAULT_EVENT_CAP = 8 * 1024 * 1024
/** No log line carries more than this; anything from upstream in them is cut well below. */
const MAX_LOG_LINE = 4096

interface Gateway { url: string, logs: string[] }

interface Overrides { gemini?: Partial<GeminiClientOptions>, stream?: GatewayOptions['stream'] }

async function gateway (t: Test, emulator: GeminiEmulator, client: 'rest' | 'sdk', overrides: Overrides = {}): Promise<Gateway> {
  const logs: string[] = []
  const app = await buildGateway(t, emulator.url, {
    gemini: { apiKey: UPSTREAM_KEY, baseUrl: emulator.url, client, ...overrides.gemini },
    stream: { heartbeatMs: 0, retry: { attempts: 3, baseDelayMs: 0, maxDelayMs: 0 }, ...overrides.stream }
  }, { logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } } })
  return { url: await listenOnLoopback(app), logs }
}

async function scrape (url: string): Promise<Exposition> {
  return new Exposition(await (await fetch(`${url}/api/metrics`)).text())
}

/** Every upstream request of the test ended, and ended because the gateway let go of it. */
async function upstreamsClosedByGateway (t: Test, emulator: GeminiEmulator, count: number): Promise<void> {
  t.equal(emulator.requests.length, count, `${count} upstream requests`)
  for (const request of emulator.requests) await within(5000, request.closed, 'the upstream request to close')
  t.same(emulator.requests.map(r => ({ finished: r.finished, clientClosedEarly: r.clientClosedEarly })),
    emulator.requests.map(() => ({ finished: false, clientClosedEarly: true })), 'the gateway closed every upstream socket')
}

function checkLogs (t: Test, logs: string[]): void {
  t.ok(logs.length > 0, 'the gateway logged')
  t.same(logs.filter(line => line.length > MAX_LOG_LINE).map(line => line.length), [], 'no log line is long')
  for (const form of KEY_FORMS) t.same(logs.filter(line => line.includes(form)), [], `no log line holds the key as ${form}`)
}

for (const client of ['rest', 'sdk'] as const) {
  t.test(`${client}: error bodies are capped, and only Google's error shape is passed on`, async t => {
    t.test('a 64 MiB HTML page naming internal hosts becomes a generic message; the body is cut, not drained, on every try', async t => {
      const emulator = await startEmulator(t, PACE)
      const { url, logs } = await gateway(t, emulator, client)
      const page = `<html><body>502 Bad Gateway from edge-proxy-7.internal.corp:8443 (upstream 10.2.3.4) for key ${KEY_FORMS.join(' ')}`
      emulator.addFault({ kind: 'huge-error', status: 502, prefix: page, bytes: 64 * 1024 * 1024 }, { times: 3 })
      const response = await within(20_000, postStream(url, { prompt: 'p' }), 'the answer')
      t.equal(response.status, 500)
      t.equal(await response.text(), '{"error":"Failed to start stream","message":"Gemini answered with status 502"}')
      await upstreamsClosedByGateway(t, emulator, 3)
      t.equal((await scrape(url)).value('amrikyy_upstream_errors_total', { status: '502' }), 3)
      checkLogs(t, logs)
    })

    t.test('text, non-Google JSON and broken JSON get the generic message; a Google message is kept', async t => {
      const emulator = await startEmulator(t, PACE)
      const { url, logs } = await gateway(t, emulator, client, { stream: { retry: { attempts: 1 } } })
      const cases: Array<[string, object, string]> = [
        ['text', { status: 503, body: 'upstream connect error to 10.0.0.7:443', contentType: 'text/plain' }, 'Gemini answered with status 503'],
        ['not Google', { status: 502, body: { error: 'no healthy upstream', host: 'gemini-egress.internal' } }, 'Gemini answered with status 502'],
        ['broken', { status: 500, body: '{"error":{"code":500,"message":"cut', contentType: 'application/json' }, 'Gemini answered with status 500'],
        ['Google', { status: 404, body: { error: { code: 404, message: 'models/x is not found', status: 'NOT_FOUND' } } }, 'models/x is not found']
      ]
      for (const [name, fault, message] of cases) {
        emulator.addFault({ kind: 'http-error', ...fault } as { kind: 'http-error', status: number }, { match: name })
        const response = await postStream(url, { prompt: name })
        t.equal(await response.text(), JSON.stringify({ error: 'Failed to start stream', message }), name)
      }
      checkLogs(t, logs)
    })

    t.test('the key is redacted in every form, and a long Google message is cut', async t => {
      const emulator = await startEmulator(t, PACE)
      const { url, logs } = await gateway(t, emulator, client, { stream: { retry: { attempts: 1 } } })
      const message = `API key not valid: ${KEY_FORMS.join(', ')}; also AIzaSyD-0123456789abcdefghijklmnopqrstu.`
      emulator.addFault({ kind: 'http-error', status: 400, body: { error: { code: 400, message, status: 'INVALID_ARGUMENT' } } }, { match: 'key' })
      const keyed = await postStream(url, { prompt: 'key' })
      t.equal(await keyed.text(), JSON.stringify({
        error: 'Failed to start stream',
        message: `API key not valid: ${KEY_FORMS.map(() => '[redacted]').join(', ')}; also [redacted].`
      }))

      emulator.addFault({ kind: 'http-error', status: 429, body: { error: { code: 429, message: 'q'.repeat(10_000), status: 'RESOURCE_EXHAUSTED' } } }, { match: 'long' })
      const long = await postStream(url, { prompt: 'long' })
      t.equal(await long.text(), JSON.stringify({ error: 'Failed to start stream', message: `${'q'.repeat(2048)}…` }))
      checkLogs(t, logs)
    })
  })

  t.test(`${client}: one huge event or an endless answer ends the stream, counted as too_large, upstream closed`, async t => {
    t.test('an event that never ends, before any chunk: the contract\'s 500', async t => {
      const emulator = await startEmulator(t, PACE)
      const { url } = await gateway(t, emulator, client)
      emulator.addFault({ kind: 'huge-event', afterChunks: 0 })
      const response = await within(20_000, postStream(url, { prompt: 'p' }), 'the answer')
      t.equal(response.status, 500)
      t.equal(await response.text(), JSON.stringify({ error: 'Failed to start stream', message: `Gemini sent an event larger than ${DEFAULT_EVENT_CAP} characters` }))
      await upstreamsClosedByGateway(t, emulator, 1)
      t.equal((await scrape(url)).value('amrikyy_upstream_errors_total', { status: 'too_large' }), 1)
    })

    t.test('a 20 MiB event after two chunks: the error event, not retried', async t => {
      const emulator = await startEmulator(t, PACE)
      const { url } = await gateway(t, emulator, client)
      emulator.addFault({ kind: 'huge-event', afterChunks: 2, chars: 20 * 1024 * 1024 })
      const body = await within(20_000, postStream(url, { prompt: 'p' }).then(async r => await r.text()), 'the answer')
      const deltas = answerFor('p', undefined, PACE).deltas
      t.equal(body, chunkEvent(deltas[0]!, 1) + chunkEvent(deltas[1]!, 2) + errorEvent(`Gemini sent an event larger than ${DEFAULT_EVENT_CAP} characters`, false))
      await upstreamsClosedByGateway(t, emulator, 1)
      const metrics = await scrape(url)
      t.equal(metrics.value('amrikyy_upstream_errors_total', { status: 'too_large' }), 1)
      t.equal(metrics.value('amrikyy_stream_sessions_failed_total'), 1)
    })

    t.test('an event under a configured cap passes whole', async t => {
      const emulator = await startEmulator(t, PACE)
      // Kept below 16 KiB: a chunk event larger than the response's high-water mark stalls the relay today (its drain wait).
      const { url } = await gateway(t, emulator, client, { gemini: { apiKey: UPSTREAM_KEY, maxEventChars: 12_000 } })
      emulator.addFault({ kind: 'huge-event', afterChunks: 1, chars: 10_000 })
      const body = await postStream(url, { prompt: 'p' }).then(async r => await r.text())
      t.ok(body.includes(chunkEvent('x'.repeat(10_000), 2)), 'the big chunk went through')
      t.match(body, /"complete":true,"totalChunks":5,/)
    })

    t.test('an answer without end stops at the answer cap, and the healthy upstream is aborted', async t => {
      const emulator = await startEmulator(t, { ...PACE, chunkDelayMs: 1 })
      const cap = 64 * 1024
      const { url } = await gateway(t, emulator, client, { stream: { maxAnswerChars: cap } })
      emulator.addFault({ kind: 'endless', chunkChars: 4096 })
      const body = await within(20_000, postStream(url, { prompt: 'p' }).then(async r => await r.text()), 'the answer')
      const sixteen = Array.from({ length: 16 }, (_, i) => chunkEvent('endless '.repeat(512), i + 1)).join('')
      t.equal(body, sixteen + errorEvent(`Gemini's answer grew past ${cap} characters`, false), 'sixteen chunks fit, the seventeenth does not')
      await upstreamsClosedByGateway(t, emulator, 1)
      t.equal((await scrape(url)).value('amrikyy_upstream_errors_total', { status: 'too_large' }), 1)
    })
  })
}

t.test('finish and block reasons that are not Gemini enum names reach no client or log as sent', async t => {
  const reason = `<script>${UPSTREAM_KEY}</script>`.repeat(2000)
  const upstream = await startScriptedServer(t, (request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    const blocked = request.url?.includes('blocked') === true
    const event = blocked
      ? { promptFeedback: { blockReason: reason }, usageMetadata: { promptTokenCount: 1, totalTokenCount: 1 } }
      : { candidates: [{ content: { parts: [{ text: 'hi' }], role: 'model' }, finishReason: reason, index: 0 }], usageMetadata: { promptTokenCount: 1, candidatesTokenCount: 1, totalTokenCount: 2 } }
    response.end(`data: ${JSON.stringify(event)}\r\n\r\n`)
  })
  for (const client of ['rest', 'sdk'] as const) {
    const logs: string[] = []
    const app = await buildGateway(t, upstream, { gemini: { apiKey: UPSTREAM_KEY, baseUrl: upstream, client }, stream: { heartbeatMs: 0 } },
      { logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } } })
    const url = await listenOnLoopback(app)
    t.equal(await (await postStream(url, { prompt: 'p' })).text(), chunkEvent('hi', 1) + errorEvent('Gemini stopped generating: OTHER', false), `${client}: finish reason`)
    t.equal(await (await postStream(url, { prompt: 'p', model: 'blocked' })).text(),
      JSON.stringify({ error: 'Failed to start stream', message: 'Gemini blocked the prompt: OTHER' }), `${client}: block reason`)
    checkLogs(t, logs)
  }
})

t.test('a token count that never ends is read up to the cap and refused the same by both clients', async t => {
  const closedEarly: boolean[] = []
  const server = createServer((request, response: ServerResponse) => {
    request.resume()
    response.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' })
    response.write('{"totalTokens": 4, "padding": "')
    const filler = ' '.repeat(64 * 1024)
    const more = (): void => { while (!response.destroyed && response.write(filler)) { /* fill until the socket refuses more */ } }
    response.on('drain', more)
    response.on('close', () => { closedEarly.push(!response.writableFinished) })
    more()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const rest = createRestGeminiClient({ apiKey: UPSTREAM_KEY, baseUrl })
  t.teardown(async () => { await rest.close() })
  const outcomes: unknown[] = []
  for (const client of [rest, createSdkGeminiClient({ apiKey: UPSTREAM_KEY, baseUrl })]) {
    const error = await within(10_000, client.countTokens('gemini-2.0-flash', 'four words right here', new AbortController().signal).then(() => undefined, (e: unknown) => e), 'the count')
    outcomes.push(error instanceof UpstreamError ? { message: error.message, recoverable: error.recoverable } : error)
  }
  t.same(outcomes, [{ message: 'Gemini sent a malformed stream', recoverable: true }, { message: 'Gemini sent a malformed stream', recoverable: true }])
  const deadline = Date.now() + 5000
  while (closedEarly.length < 2 && Date.now() < deadline) await sleep(10)
  t.same(closedEarly, [true, true], 'both clients closed the connection instead of draining it')
})

t.test('the SSE splitter does work linear in the text it is given', async t => {
  t.test('a 20 MiB event in 64 KiB reads is searched once, and refused at the cap', async t => {
    const piece = 'x'.repeat(64 * 1024)
    const uncapped = new SseSplitter()
    let pushed = 0
    let pushes = 0
    const push = (splitter: SseSplitter, text: string): string[] => { pushed += text.length; pushes++; return splitter.push(text) }
    push(uncapped, 'data: ')
    for (let i = 0; i < 320; i++) t.same(push(uncapped, piece), [])
    t.same(push(uncapped, '\r\n\r\n').map(p => p.length), [20 * 1024 * 1024], 'the whole event, once its delimiter came')
    t.ok(uncapped.scannedChars <= pushed + 3 * pushes, `searched ${uncapped.scannedChars} characters for ${pushed} pushed in ${pushes} pushes`)

    const capped = new SseSplitter(DEFAULT_EVENT_CAP)
    let reads = 0
    while (!capped.overLimit && reads < 400) { capped.push(piece); reads++ }
    t.equal(reads, DEFAULT_EVENT_CAP / piece.length + 1, 'refused on the first read past the cap')
    t.same(capped.push('\n\ndata: {}\n\n'), [], 'nothing more is split once refused')
  })

  t.test('for any cut of any framing, the same events, with work bounded by the text plus 3 a push', async t => {
    t.doesNotThrow(() => fc.assert(fc.property(
      fc.array(fc.tuple(fc.string({ maxLength: 40 }).map(s => s.replace(/[\r\n]/g, '')), fc.constantFrom('\n\n', '\r\r', '\r\n\r\n')), { minLength: 1, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      (events, cuts) => {
        const text = events.map(([payload, delimiter]) => `data: ${payload}${delimiter}`).join('')
        const points = [...new Set(cuts.map(c => c % (text.length + 1)))].sort((a, b) => a - b)
        const splitter = new SseSplitter()
        const got: string[] = []
        let from = 0
        let pushes = 0
        for (const point of [...points, text.length]) {
          got.push(...splitter.push(text.slice(from, point)))
          pushes++
          from = point
        }
        return JSON.stringify(got) === JSON.stringify(events.map(([payload]) => payload.trim())) &&
          splitter.scannedChars <= text.length + 3 * pushes && !splitter.hasUnterminatedEvent
      }
    ), { numRuns: 500 }), 'same events and bounded work for every cut')
  })
})
