// The REST client's passthrough half (issue 16): a caller's call forwarded as written, with only the key
// swapped, and Gemini's answer handed back as Gemini sent it. Every upstream is real: the bundled emulator,
// or a scripted server for what the emulator never sends; each answer is compared with a direct call.

import { createServer } from 'node:net'
import { createServer as createHttpServer, type IncomingHttpHeaders } from 'node:http'
import t, { type Test } from 'tap'
import { BLOCKED_PROMPT_TRIGGER, type GeminiEmulator, type RecordedRequest } from '../emulator/server.js'
import { createRestGeminiClient, type RestGeminiClient } from '../gemini/rest-client.js'
import { createSdkGeminiClient } from '../gemini/sdk-client.js'
import type { ForwardedAnswer, ForwardedCall, GenerationDelta, GeminiClientOptions } from '../gemini/types.js'
import { UpstreamError } from '../gemini/upstream-error.js'
import { startScriptedServer } from './support/scripted-server.js'
import { startEmulator, waitUntil, within } from './support/gateway.js'

const GATEWAY_KEY = 'gateway-gemini-key-0123456789'
/** Fixed, so that two calls with the same request answer the same bytes. */
const RESPONSE_ID = 'fixed-response-id'
const MODEL = 'gemini-2.5-flash'
/** Headers the client and its transport write; anything else would be someone else's. */
const OWN_HEADERS = ['content-type', 'user-agent', 'x-goog-api-client', 'x-goog-api-key', 'host', 'connection', 'content-length', 'transfer-encoding']

/** Spaced, ordered and spelled as no gateway-built body is, so that a rebuilt body would show. */
const generateBody = (text: string, extra = ''): string =>
  `{ "contents" : [ { "parts": [ { "text": ${JSON.stringify(text)} } ], "role": "user" } ]${extra} }`

async function emulatorFor (t: Test): Promise<GeminiEmulator> {
  return await startEmulator(t, { apiKey: GATEWAY_KEY, responseId: RESPONSE_ID, chunkCount: 6 })
}

function clientFor (t: Test, baseUrl: string, options: Partial<GeminiClientOptions> = {}): RestGeminiClient {
  const client = createRestGeminiClient({ apiKey: GATEWAY_KEY, baseUrl, ...options })
  t.teardown(async () => { await client.close() })
  return client
}

function urlOf (base: string, call: ForwardedCall): string {
  const search = new URLSearchParams(call.query ?? {}).toString()
  return `${base}/${call.apiVersion}/${call.path}${search === '' ? '' : `?${search}`}`
}

/** The same call made straight to the upstream, with the gateway's key. */
async function direct (base: string, call: ForwardedCall): Promise<ForwardedAnswer> {
  const response = await fetch(urlOf(base, call), {
    method: call.method,
    headers: { 'content-type': 'application/json', 'x-goog-api-key': GATEWAY_KEY },
    body: call.body ?? null
  })
  return { status: response.status, contentType: response.headers.get('content-type') ?? undefined, body: await response.text() }
}

async function thrown (promise: Promise<unknown>): Promise<UpstreamError> {
  try {
    await promise
  } catch (error) {
    if (error instanceof UpstreamError) return error
    throw error
  }
  throw new Error('expected an UpstreamError, and the call succeeded')
}

function checkOnlyGatewayKey (t: Test, headers: IncomingHttpHeaders | RecordedRequest['headers'], what: string): void {
  t.equal(headers['x-goog-api-key'], GATEWAY_KEY, `${what}: the gateway's key`)
  t.same(Object.keys(headers).filter(name => !OWN_HEADERS.includes(name)), [], `${what}: no header but the client's own`)
}

interface SeenRequest { url: string | undefined, headers: IncomingHttpHeaders, body: string }

/** A loopback server that records each request whole (the scripted server drops bodies) and answers a token count. */
async function startRecorder (t: Test, seen: SeenRequest[]): Promise<string> {
  const server = createHttpServer((request, response) => {
    const pieces: Buffer[] = []
    request.on('data', (piece: Buffer) => pieces.push(piece))
    request.on('end', () => {
      seen.push({ url: request.url, headers: request.headers, body: Buffer.concat(pieces).toString('utf8') })
      response.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' }).end('{"totalTokens": 3}')
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`
}

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise(resolve => server.close(resolve))
  return port
}

t.test('forwarded calls answer what a direct call answers, byte for byte, for v1 and v1beta', async t => {
  const emulator = await emulatorFor(t)
  const client = clientFor(t, emulator.url)
  for (const apiVersion of ['v1', 'v1beta']) {
    const calls: Array<[string, ForwardedCall]> = [
      ['generateContent', { apiVersion, method: 'POST', path: `models/${MODEL}:generateContent`, body: generateBody('Tell me about rivers', ', "generationConfig": { "maxOutputTokens": 12 }') }],
      ['countTokens', { apiVersion, method: 'POST', path: `models/${MODEL}:countTokens`, body: generateBody('How many tokens is this?') }],
      ['models with pageSize', { apiVersion, method: 'GET', path: 'models', query: { pageSize: '2' } }],
      ['models, next page', { apiVersion, method: 'GET', path: 'models', query: { pageSize: '2', pageToken: 'page-2' } }],
      ['models/<id>', { apiVersion, method: 'GET', path: `models/${MODEL}` }],
      ['unknown model: 404', { apiVersion, method: 'POST', path: 'models/no-such-model:generateContent', body: generateBody('Hello') }],
      ['bad body: 400', { apiVersion, method: 'POST', path: `models/${MODEL}:generateContent`, body: '{ "contents": ' }],
      ['bad contents: 400', { apiVersion, method: 'POST', path: `models/${MODEL}:generateContent`, body: '{ "contents": "nope" }' }]
    ]
    for (const [name, call] of calls) {
      const before = emulator.requests.length
      const answer = await client.forward(call, new AbortController().signal)
      await emulator.waitForRequests(before + 1)
      const seen = emulator.requests[before]!
      const expected = await direct(emulator.url, call)
      t.same(answer, expected, `${apiVersion} ${name}: status, content type and body as a direct call's`)
      t.equal(seen.path, urlOf('', call), `${apiVersion} ${name}: the caller's path and query`)
      t.equal(seen.method, call.method, `${apiVersion} ${name}: the caller's method`)
      checkOnlyGatewayKey(t, seen.headers, `${apiVersion} ${name}`)
    }
  }
  const statuses = emulator.requests.map(request => request.status)
  t.ok(statuses.includes(404) && statuses.includes(400) && statuses.includes(200), 'errors were answered and returned, not thrown')
})

t.test('a forwarded body and query reach the upstream as the caller wrote them', async t => {
  const seen: SeenRequest[] = []
  const client = clientFor(t, await startRecorder(t, seen))
  const body = '{"contents":[{"parts":[{"text":"caf\u00e9 \\u00e9"}]}],  "unknownField" : {"kept": [1, 2.50, true]}}\n'
  const call: ForwardedCall = { apiVersion: 'v1alpha', method: 'POST', path: `models/${MODEL}:countTokens`, query: { alt: 'json' }, body }
  const answer = await client.forward(call, new AbortController().signal)
  t.same(answer, { status: 200, contentType: 'application/json; charset=UTF-8', body: '{"totalTokens": 3}' })
  t.equal(seen.length, 1)
  t.equal(seen[0]!.body, body, 'the body byte for byte')
  t.equal(seen[0]!.url, `/v1alpha/models/${MODEL}:countTokens?alt=json`, 'the path and query')
  checkOnlyGatewayKey(t, seen[0]!.headers, 'the request')
})

t.test('a forwarded call that names no Gemini resource, or carries a key, is refused before it is sent', async t => {
  const seen: SeenRequest[] = []
  const client = clientFor(t, await startRecorder(t, seen))
  const refused: Array<[string, ForwardedCall]> = [
    ['an unknown version', { apiVersion: 'v2', method: 'GET', path: 'models' }],
    ['a dot segment', { apiVersion: 'v1', method: 'GET', path: 'models/../../admin' }],
    ['an encoded dot segment', { apiVersion: 'v1', method: 'GET', path: 'models/%2e%2e' }],
    ['a query in the path', { apiVersion: 'v1', method: 'GET', path: 'models?key=x' }],
    ['another resource', { apiVersion: 'v1', method: 'GET', path: 'files' }],
    ['a key in the query', { apiVersion: 'v1', method: 'GET', path: 'models', query: { key: 'caller-key' } }],
    ['a GET with a body', { apiVersion: 'v1', method: 'GET', path: 'models', body: '{}' }]
  ]
  for (const [name, call] of refused) {
    const error = await thrown(client.forward(call, new AbortController().signal))
    t.equal(error.code, 'invalid_request', name)
  }
  t.equal(seen.length, 0, 'nothing was sent')
})

t.test('an abort closes the forwarded call upstream', async t => {
  const emulator = await emulatorFor(t)
  const client = clientFor(t, emulator.url)
  emulator.addFault({ kind: 'stall-headers' }, { match: 'hold this one' })
  const controller = new AbortController()
  const pending = client.forward({ apiVersion: 'v1', method: 'POST', path: `models/${MODEL}:generateContent`, body: generateBody('hold this one') }, controller.signal)
  await emulator.waitForRequests(1)
  controller.abort()
  const error = await thrown(pending)
  t.equal(error.code, 'aborted')
  const request = emulator.requests[0]!
  await within(2000, request.closed, 'the upstream call to close')
  t.ok(request.clientClosedEarly, 'the emulator saw the call go')
  const again = await thrown(client.forward({ apiVersion: 'v1', method: 'GET', path: 'models' }, controller.signal))
  t.equal(again.code, 'aborted', 'an aborted signal sends nothing')
  t.equal(emulator.requests.length, 1)
})

t.test('an answer past maxForwardedBodyBytes is too large and its connection goes', async t => {
  const emulator = await emulatorFor(t)
  const call: ForwardedCall = { apiVersion: 'v1', method: 'GET', path: 'models' }
  const size = Buffer.byteLength((await direct(emulator.url, call)).body)
  const exact = await clientFor(t, emulator.url, { maxForwardedBodyBytes: size }).forward(call, new AbortController().signal)
  t.equal(Buffer.byteLength(exact.body), size, 'an answer of exactly the cap is whole')
  const error = await thrown(clientFor(t, emulator.url, { maxForwardedBodyBytes: size - 1 }).forward(call, new AbortController().signal))
  t.equal(error.code, 'too_large', 'one byte more is too large (by its content-length)')
  t.match(error.message, `larger than ${size - 1} bytes`)

  // Without a content-length, the cap is found while reading: an endless body is never read whole.
  let written = 0
  let closed = false
  const endless = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' })
    response.on('close', () => { closed = true })
    const piece = Buffer.alloc(16 * 1024, 'a')
    const write = (): void => {
      if (response.destroyed) return
      written += piece.length
      if (response.write(piece)) setImmediate(write)
      else response.once('drain', write)
    }
    write()
  })
  const chunked = await thrown(clientFor(t, endless, { maxForwardedBodyBytes: 100_000 }).forward(call, new AbortController().signal))
  t.equal(chunked.code, 'too_large', 'a chunked body past the cap is too large')
  await waitUntil(() => closed, 2000, 'the upstream connection to close')
  t.ok(written < 10 * 1024 * 1024, 'the body was not read to its end')
})

t.test('nothing listening is a network UpstreamError', async t => {
  const client = clientFor(t, `http://127.0.0.1:${await freePort()}`)
  const error = await thrown(client.forward({ apiVersion: 'v1', method: 'GET', path: 'models' }, new AbortController().signal))
  t.equal(error.code, 'network')
  t.ok(error.recoverable)
})

/** A Google error that echoes the gateway's key, as is and base64-encoded, the way a key error can. */
const ECHOING_ERROR = JSON.stringify({
  error: {
    code: 400,
    message: `API key not valid: ${GATEWAY_KEY}. Please pass a valid API key.`,
    status: 'INVALID_ARGUMENT',
    details: [
      { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com', metadata: { service: 'generativelanguage.googleapis.com', key: Buffer.from(GATEWAY_KEY).toString('base64') } },
      { '@type': 'type.googleapis.com/google.rpc.LocalizedMessage', locale: 'en-US', message: 'API key not valid. Please pass a valid API key.' }
    ]
  }
})
const REDACTED_ERROR = ECHOING_ERROR.replace(GATEWAY_KEY, '[redacted]').replace(Buffer.from(GATEWAY_KEY).toString('base64'), '[redacted]')

t.test('a Gemini error body that echoes the gateway key comes back redacted, on forward and on a forwarded stream', async t => {
  const base = await startScriptedServer(t, (_request, response) => {
    response.writeHead(400, { 'content-type': 'application/json; charset=UTF-8' }).end(ECHOING_ERROR)
  })
  t.not(REDACTED_ERROR, ECHOING_ERROR)
  t.notMatch(REDACTED_ERROR, GATEWAY_KEY)
  const client = clientFor(t, base)
  const answer = await client.forward({ apiVersion: 'v1beta', method: 'POST', path: `models/${MODEL}:generateContent`, body: generateBody('hi') }, new AbortController().signal)
  t.same(answer, { status: 400, contentType: 'application/json; charset=UTF-8', body: REDACTED_ERROR })

  const error = await thrown(client.streamGenerate({ model: MODEL, prompt: '', forwarded: { apiVersion: 'v1beta', body: generateBody('hi') } }, new AbortController().signal))
  t.equal(error.code, 'http_status')
  t.equal(error.status, 400)
  t.same(error.googleError, JSON.parse(REDACTED_ERROR), "Google's body with every detail, key-redacted")
  t.notMatch(JSON.stringify(error.googleError), GATEWAY_KEY)
  t.notMatch(error.message, GATEWAY_KEY)
})

/** The stream a direct call gets, as raw text. */
async function directStream (base: string, apiVersion: string, model: string, body: string): Promise<{ status: number, text: string }> {
  const response = await fetch(`${base}/${apiVersion}/models/${model}:streamGenerateContent?alt=sse`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-goog-api-key': GATEWAY_KEY },
    body
  })
  return { status: response.status, text: await response.text() }
}

async function collect (client: RestGeminiClient, model: string, apiVersion: string, body: string, signal = new AbortController().signal): Promise<{ deltas: GenerationDelta[], error?: UpstreamError }> {
  const deltas: GenerationDelta[] = []
  try {
    const iterator = await client.streamGenerate({ model, prompt: '', forwarded: { apiVersion, body } }, signal)
    for (;;) {
      const result = await within(5000, iterator.next(), 'the next delta')
      if (result.done === true) return { deltas }
      deltas.push(result.value)
    }
  } catch (error) {
    if (!(error instanceof UpstreamError)) throw error
    return { deltas, error }
  }
}

const relayed = (deltas: GenerationDelta[]): string => deltas.map(delta => `data: ${delta.event ?? '(no event)'}\r\n\r\n`).join('')

t.test("a forwarded stream's events are the emulator's stream byte for byte", async t => {
  const emulator = await emulatorFor(t)
  const client = clientFor(t, emulator.url)
  const cases: Array<[string, string, string, (t: Test, deltas: GenerationDelta[]) => void]> = [
    ['plain text', 'v1beta', generateBody('Write a line about the sea', ', "generationConfig": {"maxOutputTokens": 20}'), (t, deltas) => {
      t.ok(deltas.every(delta => delta.text !== ''), 'every event is text')
      t.equal(deltas.at(-1)?.finishReason, 'MAX_TOKENS', 'the last event stops at maxOutputTokens')
    }],
    ['a thinking model with thoughts', 'v1', generateBody('Think about prime numbers', ', "generationConfig": {"thinkingConfig": {"includeThoughts": true}}'), (t, deltas) => {
      t.ok(deltas[0]?.thought !== undefined && deltas[0].text === '', 'the stream opens with a thought event')
      t.ok(deltas.at(-1)?.usage?.thoughtsTokens !== undefined, 'usage counts the thoughts')
    }],
    ['function calls', 'v1beta', generateBody('What is the weather in Paris?', ', "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "weather of a city", "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}], "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}'), (t, deltas) => {
      t.equal(deltas.length, 1, 'the call comes whole, in one event')
      t.equal(deltas[0]?.functionCalls?.[0]?.name, 'get_weather')
    }],
    ['a blocked prompt', 'v1', generateBody(`Say something ${BLOCKED_PROMPT_TRIGGER}`), (t, deltas) => {
      t.equal(deltas.length, 1, 'one promptFeedback event without candidates')
      t.equal(deltas[0]?.blockReason, 'SAFETY')
      t.equal(deltas[0]?.text, '')
    }]
  ]
  for (const [name, apiVersion, body, check] of cases) {
    const before = emulator.requests.length
    const { deltas, error } = await collect(client, MODEL, apiVersion, body)
    t.equal(error, undefined, `${name}: no error`)
    const raw = await directStream(emulator.url, apiVersion, MODEL, body)
    t.equal(raw.status, 200)
    t.equal(relayed(deltas), raw.text, `${name}: the events joined are the raw stream`)
    t.equal(deltas.length, raw.text.split('\r\n\r\n').length - 1, `${name}: one delta an event`)
    check(t, deltas)
    const seen = emulator.requests[before]!
    t.equal(seen.path, `/${apiVersion}/models/${MODEL}:streamGenerateContent?alt=sse`, `${name}: the caller's version`)
    t.same(seen.body, JSON.parse(body), `${name}: the caller's body`)
    checkOnlyGatewayKey(t, seen.headers, name)
  }
})

t.test('a usage-only event and a promptFeedback-only event each yield a delta of their own', async t => {
  const events = [
    '{"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}], "modelVersion": "m"}',
    '{"promptFeedback": {"safetyRatings": []}}',
    '{"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1, "totalTokenCount": 5}, "modelVersion": "m"}'
  ]
  const stream = events.map(event => `data: ${event}\r\n\r\n`).join('')
  const base = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    // One write cut inside an event, so the events are found across reads.
    response.write(stream.slice(0, 40))
    setTimeout(() => { response.end(stream.slice(40)) }, 20)
  })
  const { deltas, error } = await collect(clientFor(t, base), MODEL, 'v1beta', generateBody('hi'))
  t.equal(error, undefined)
  t.equal(relayed(deltas), stream, 'every event relayed as sent')
  t.same(deltas.map(delta => delta.text), ['Hi', '', ''])
  t.same(deltas[2]?.usage, { promptTokens: 4, completionTokens: 1, totalTokens: 5 }, 'usage read from the usage-only event')
})

t.test("a forwarded stream's event that echoes the gateway key is relayed redacted", async t => {
  const echoing = `{"candidates": [{"content": {"parts": [{"text": "your key is ${GATEWAY_KEY}"}], "role": "model"}, "index": 0}]}`
  const base = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' }).end(`data: ${echoing}\r\n\r\n`)
  })
  const { deltas, error } = await collect(clientFor(t, base), MODEL, 'v1', generateBody('hi'))
  t.equal(error, undefined)
  t.same(deltas.map(delta => delta.event), [echoing.replace(GATEWAY_KEY, '[redacted]')])
})

t.test('key-shaped text that is not the gateway key is relayed untouched', async t => {
  // Inline image data is base64: a run shaped like some Google key turns up in it by chance.
  const inline = `{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "iVBORw0KAIza${'Q'.repeat(35)}+/="}}], "role": "model"}, "index": 0}]}`
  const base = await startScriptedServer(t, (request, response) => {
    const streaming = request.url?.includes(':streamGenerateContent') === true
    response.writeHead(200, { 'content-type': streaming ? 'text/event-stream' : 'application/json; charset=UTF-8' })
    response.end(streaming ? `data: ${inline}\r\n\r\n` : inline)
  })
  const client = clientFor(t, base)
  const answer = await client.forward({ apiVersion: 'v1', method: 'POST', path: `models/${MODEL}:generateContent`, body: generateBody('draw') }, new AbortController().signal)
  t.equal(answer.body, inline, 'a unary answer')
  const { deltas } = await collect(client, MODEL, 'v1', generateBody('draw'))
  t.same(deltas.map(delta => delta.event), [inline], 'a stream event')
})

t.test('forwarded stream failures carry Google\'s error body', async t => {
  const emulator = await emulatorFor(t)
  const client = clientFor(t, emulator.url)

  const unknown = await collect(client, 'no-such-model', 'v1beta', generateBody('hello'))
  const raw404 = await directStream(emulator.url, 'v1beta', 'no-such-model', generateBody('hello'))
  t.equal(raw404.status, 404)
  t.equal(unknown.error?.code, 'http_status')
  t.equal(unknown.error?.status, 404)
  t.same(unknown.error?.googleError, JSON.parse(raw404.text), 'the 404 body as Gemini sent it')

  emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 503 }, { match: 'fail midway', times: 2 })
  const body = generateBody('fail midway please')
  const midway = await collect(client, MODEL, 'v1', body)
  const rawError = await directStream(emulator.url, 'v1', MODEL, body)
  const rawEvents = rawError.text.split('\r\n\r\n').filter(event => event !== '')
  t.equal(midway.deltas.length, 2, 'the events before the error')
  t.equal(relayed(midway.deltas), rawEvents.slice(0, 2).map(event => `${event}\r\n\r\n`).join(''), 'relayed as sent')
  t.equal(midway.error?.code, 'http_status')
  t.equal(midway.error?.status, 503)
  t.same(midway.error?.googleError, JSON.parse(rawEvents[2]!.slice('data: '.length)), 'the error event as Gemini sent it')
})

t.test('an abort closes a forwarded stream upstream', async t => {
  const emulator = await emulatorFor(t)
  emulator.setPace({ chunkDelayMs: 50 })
  const client = clientFor(t, emulator.url)
  const controller = new AbortController()
  const iterator = await client.streamGenerate({ model: MODEL, prompt: '', forwarded: { apiVersion: 'v1', body: generateBody('a slow answer') } }, controller.signal)
  const first = await iterator.next()
  t.equal(first.done, false)
  t.equal(emulator.openStreams(), 1)
  controller.abort()
  const error = await thrown((async () => { for (;;) if ((await iterator.next()).done === true) return })())
  t.equal(error.code, 'aborted')
  await waitUntil(() => emulator.openStreams() === 0, 2000, 'the upstream stream to close')
  t.ok(emulator.requests[0]?.clientClosedEarly, 'the emulator saw the stream go')
})

t.test('the emulator takes a fixed responseId only in the shape of its own', async t => {
  const emulator = await startEmulator(t, { responseId: RESPONSE_ID })
  const answer = await direct(emulator.url, { apiVersion: 'v1', method: 'POST', path: `models/${MODEL}:generateContent`, body: generateBody('hi') })
  t.equal((JSON.parse(answer.body) as { responseId?: unknown }).responseId, RESPONSE_ID)
  for (const responseId of ['', 'has space', 'x'.repeat(65)]) {
    await t.rejects(startEmulator(t, { responseId }), { name: 'TypeError', message: /responseId must be 1 to 64 base64url characters/ }, JSON.stringify(responseId))
  }
})

t.test('the SDK client refuses a forwarded request before sending anything', async t => {
  const emulator = await emulatorFor(t)
  const sdk = createSdkGeminiClient({ apiKey: GATEWAY_KEY, baseUrl: emulator.url })
  const error = await thrown(sdk.streamGenerate({ model: MODEL, prompt: '', forwarded: { apiVersion: 'v1', body: generateBody('hi') } }, new AbortController().signal))
  t.equal(error.code, 'invalid_request')
  t.equal(sdk.forward, undefined, 'and has no forward')
  t.equal(emulator.requests.length, 0, 'nothing was sent')
})
