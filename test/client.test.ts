import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { answerFor } from '../emulator/server.js'
import {
  BadRequestError, ConnectionError, ForbiddenError, GatewayError, RateLimitedError, StreamError,
  StreamStartError, UnauthorizedError, parseRetryAfter, streamPrompt, type ChunkEvent, type PromptStream
} from '../client/index.js'
import { ADMIN_KEY, USER_KEY, postStream, startEmulator, startGateway, waitUntil, within } from './support/gateway.js'
import { startScriptedServer } from './support/scripted-server.js'
import { closedPortUrl } from '../scripts/shared/ports.js'

const PACE = { chunkCount: 5, defaultMaxTokens: 20 }

async function collect (stream: PromptStream): Promise<ChunkEvent[]> {
  const chunks: ChunkEvent[] = []
  for await (const chunk of stream) chunks.push(chunk)
  return chunks
}

/** Iterates until the stream throws; returns the chunks read before, and the error. */
async function collectUntilError (stream: PromptStream): Promise<{ chunks: ChunkEvent[], error: unknown }> {
  const chunks: ChunkEvent[] = []
  try {
    for await (const chunk of stream) chunks.push(chunk)
  } catch (error) {
    return { chunks, error }
  }
  throw new Error('the stream ended without an error')
}

function indexed (deltas: readonly string[]): ChunkEvent[] {
  return deltas.map((chunk, i) => ({ chunk, index: i + 1 }))
}

t.test('yields every chunk of the answer, then resolves completion with the final event', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const options = { temperature: 0.2, topP: 0.9, topK: 40, maxOutputTokens: 12 }
  const answer = answerFor('Write a haiku about AI', options, PACE)

  const stream = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'Write a haiku about AI', model: 'gemini-2.5-flash', options, agent: 'poet' })
  t.same(await collect(stream), indexed(answer.deltas))
  t.same(await stream.completion, {
    complete: true,
    totalChunks: answer.deltas.length,
    fullText: answer.deltas.join(''),
    usage: { promptTokens: 5, completionTokens: 12, totalTokens: 17 }
  })
  const seen = emulator.requests[0]
  t.equal(seen?.model, 'gemini-2.5-flash')
  t.same((seen?.body as { generationConfig: unknown }).generationConfig, options)
  t.match(answer.deltas.join(''), /[^\p{ASCII}]/u, 'the answer crosses multi-byte characters')
})

t.test('completion resolves without iterating, and a trailing slash in baseUrl is fine', async t => {
  const emulator = await startEmulator(t, { ...PACE, chunkDelayMs: 5 })
  const { url } = await startGateway(t, emulator)
  const answer = answerFor('only the end', undefined, PACE)
  const completion = await streamPrompt({ baseUrl: `${url}/`, apiKey: ADMIN_KEY, prompt: 'only the end' }).completion
  t.equal(completion.fullText, answer.deltas.join(''))
  t.equal(completion.totalChunks, 5)
})

t.test('each contract error becomes its typed error, from iteration and completion alike', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)

  const expectError = async <E extends GatewayError>(stream: PromptStream, type: new (...args: never[]) => E): Promise<E> => {
    const { chunks, error } = await collectUntilError(stream)
    t.same(chunks, [], 'no chunk before a refusal')
    t.ok(error instanceof type, `${String(error)} is a ${type.name}`)
    t.ok(error instanceof GatewayError)
    await t.rejects(stream.completion, error as Error, 'completion rejects with the very same error')
    t.equal(await stream.completion.catch((rejection: unknown) => rejection), error)
    return error as E
  }

  const badRequest = await expectError(streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: '' }), BadRequestError)
  t.equal(badRequest.status, 400)
  t.equal(badRequest.message, 'Prompt is required')
  t.same(badRequest.body, { error: 'Prompt is required' })

  const unauthorized = await expectError(streamPrompt({ baseUrl: url, prompt: 'no key' }), UnauthorizedError)
  t.equal(unauthorized.status, 401)
  t.equal(unauthorized.message, 'Unauthorized: API key is missing.')

  const forbidden = await expectError(streamPrompt({ baseUrl: url, apiKey: 'not-a-key', prompt: 'bad key' }), ForbiddenError)
  t.equal(forbidden.status, 403)
  t.equal(forbidden.message, 'Forbidden: Invalid API key.')
  t.notMatch(JSON.stringify(forbidden.body), 'not-a-key', 'the key is not echoed')

  // Every attempt fails: the gateway retries a 503 before the first chunk.
  emulator.addFault({ kind: 'http-error', status: 503 }, { match: 'overloaded', times: Infinity })
  const startFailure = await expectError(streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'overloaded' }), StreamStartError)
  t.equal(startFailure.status, 500)
  t.equal(startFailure.message, 'The model is overloaded. Please try again later.')
  t.same(startFailure.body, { error: 'Failed to start stream', message: 'The model is overloaded. Please try again later.' })
  t.ok(emulator.requests.length >= 1 && emulator.requests.every(request => request.prompt === 'overloaded'), 'only the started stream reached Gemini')
})

t.test('an error event after two chunks: the two chunks, then a recoverable StreamError', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 503 })
  const answer = answerFor('fails midway', undefined, PACE)

  const stream = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'fails midway' })
  const { chunks, error } = await collectUntilError(stream)
  t.same(chunks, indexed(answer.deltas.slice(0, 2)))
  t.ok(error instanceof StreamError)
  const streamError = error as StreamError
  t.equal(streamError.kind, 'error-event')
  t.equal(streamError.recoverable, true)
  t.equal(streamError.message, 'The model is overloaded. Please try again later.')
  t.same(streamError.body, { error: 'The model is overloaded. Please try again later.', recoverable: true })
  t.equal(await stream.completion.catch((rejection: unknown) => rejection), error)
})

t.test('429 becomes RateLimitedError with retryAfter from the retry-after header', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, { rateLimit: { max: 1, timeWindow: '1 minute' } })
  await streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'first' }).completion
  const refused = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'second' })
  const error = await refused.completion.catch((rejection: unknown) => rejection)
  t.ok(error instanceof RateLimitedError, String(error))
  const limited = error as RateLimitedError
  t.equal(limited.status, 429)
  // The window is one minute and began with the first request: the wait left is at most that.
  t.ok(limited.retryAfter !== undefined && limited.retryAfter >= 1 && limited.retryAfter <= 60, `retryAfter ${String(limited.retryAfter)}`)
  t.equal(limited.message, 'Too Many Requests: You have exceeded the request limit. Please try again later.')
  t.same(limited.body, { error: 'Too Many Requests', message: 'You have exceeded the request limit. Please try again later.' })

  // The contract's exact 429 with a short wait, from a server that sends only that.
  const scripted = await startScriptedServer(t, (_request, response) => {
    response.writeHead(429, { 'content-type': 'application/json; charset=utf-8', 'retry-after': '7' })
    response.end('{"error":"Too Many Requests","message":"You have exceeded the request limit. Please try again later."}')
  })
  const seven = await streamPrompt({ baseUrl: scripted, apiKey: USER_KEY, prompt: 'p' }).completion.catch((rejection: unknown) => rejection)
  t.ok(seven instanceof RateLimitedError)
  t.equal((seven as RateLimitedError).retryAfter, 7)
})

t.test('a completion event of the wrong shape is a malformed stream, not trusted', async t => {
  const wrong = ['{"complete":true,"totalChunks":"2","fullText":"ab"}', '{"complete":true,"totalChunks":2}', '{"complete":true,"totalChunks":2,"fullText":"ab","usage":{"promptTokens":1}}']
  for (const event of wrong) {
    const scripted = await startScriptedServer(t, (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' })
      response.end(`data: {"chunk":"ab","index":1}\n\ndata: ${event}\n\n`)
    })
    const rejection = await streamPrompt({ baseUrl: scripted, apiKey: USER_KEY, prompt: 'p' }).completion.catch((error: unknown) => error)
    t.ok(rejection instanceof StreamError, event)
    t.equal((rejection as StreamError).kind, 'malformed', event)
  }
  const scripted = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    response.end('data: {"chunk":"ab","index":1}\n\ndata: {"complete":true,"totalChunks":1,"fullText":"ab","usage":{"promptTokens":1,"completionTokens":2,"totalTokens":3,"thoughtsTokens":1},"finishReason":"STOP","model":"m"}\n\n')
  })
  t.same(await streamPrompt({ baseUrl: scripted, apiKey: USER_KEY, prompt: 'p' }).completion,
    { complete: true, totalChunks: 1, fullText: 'ab', usage: { promptTokens: 1, completionTokens: 2, totalTokens: 3, thoughtsTokens: 1 }, finishReason: 'STOP', model: 'm' })
})

t.test('retry-after in seconds or as an HTTP date', async t => {
  const now = Date.parse('2025-01-01T00:00:00Z')
  t.equal(parseRetryAfter('120', now), 120)
  t.equal(parseRetryAfter(' 0 ', now), 0)
  t.equal(parseRetryAfter('Wed, 01 Jan 2025 00:00:30 GMT', now), 30)
  t.equal(parseRetryAfter('Tue, 31 Dec 2024 23:00:00 GMT', now), 0, 'a date in the past means now')
  t.equal(parseRetryAfter('soon', now), undefined)
  t.equal(parseRetryAfter(null, now), undefined)
})

t.test('heartbeat comments and odd write boundaries on a real socket change nothing', async t => {
  const body = ': ping\n\ndata: {"chunk":"Zü' + 'rich 🚀","index":1}\n\n: ping\n\ndata: {"chunk":" done","index":2}\r\n\r\ndata: {"complete":true,"totalChunks":2,"fullText":"Zürich 🚀 done","usage":{"promptTokens":1,"completionTokens":3,"totalTokens":4}}\n\n'
  const bytes = Buffer.from(body)
  const url = await startScriptedServer(t, async (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    // Cut inside the emoji and inside "ü", one write at a time with a pause so each arrives as its own read.
    const emoji = bytes.indexOf(Buffer.from('🚀'))
    const umlaut = bytes.indexOf(Buffer.from('ü'))
    for (const [from, to] of [[0, umlaut + 1], [umlaut + 1, emoji + 2], [emoji + 2, bytes.length - 30], [bytes.length - 30, bytes.length]] as const) {
      response.write(bytes.subarray(from, to))
      await sleep(20)
    }
    response.end()
  })
  const stream = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'p' })
  t.same(await collect(stream), [{ chunk: 'Zürich 🚀', index: 1 }, { chunk: ' done', index: 2 }])
  t.equal((await stream.completion).fullText, 'Zürich 🚀 done')
})

t.test("the gateway's heartbeat comments between chunks are skipped", async t => {
  const pace = { chunkCount: 5, chunkDelayMs: 80, defaultMaxTokens: 20 }
  const emulator = await startEmulator(t, pace)
  const { url } = await startGateway(t, emulator, { stream: { heartbeatMs: 15 } })
  const answer = answerFor('slow and steady', undefined, pace)
  const raw = await (await postStream(url, { prompt: 'slow and steady' })).text()
  t.match(raw, /\n\n: ping\n\n/, 'the gateway did send heartbeats between events')

  const stream = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'slow and steady' })
  t.same(await collect(stream), indexed(answer.deltas))
  t.equal((await stream.completion).fullText, answer.deltas.join(''))
})

t.test('a stream that ends without a completion event is a truncated StreamError', async t => {
  const url = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    response.end('data: {"chunk":"half","index":1}\n\ndata: {"complete":true,"totalChunks":1')
  })
  const stream = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'p' })
  const { chunks, error } = await collectUntilError(stream)
  t.same(chunks, [{ chunk: 'half', index: 1 }])
  t.ok(error instanceof StreamError)
  t.equal((error as StreamError).kind, 'truncated')
  t.equal((error as StreamError).recoverable, true)
  t.equal((error as StreamError).message, 'The stream ended before the completion event')

  const notJson = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    response.end('data: {"chunk":\n\n')
  })
  const malformed = await streamPrompt({ baseUrl: notJson, apiKey: USER_KEY, prompt: 'p' }).completion.catch((rejection: unknown) => rejection)
  t.ok(malformed instanceof StreamError)
  t.equal((malformed as StreamError).kind, 'malformed')
  t.equal((malformed as StreamError).recoverable, false)
})

t.test('an unreachable gateway is a ConnectionError', async t => {
  const closedPort = await closedPortUrl()
  const error = await streamPrompt({ baseUrl: closedPort, apiKey: USER_KEY, prompt: 'p' }).completion.catch((rejection: unknown) => rejection)
  t.ok(error instanceof ConnectionError, String(error))
  t.equal((error as Error).message, `Could not reach the gateway at ${closedPort}/api/stream: connect ECONNREFUSED ${closedPort.replace('http://', '')}`)
})

t.test('aborting the signal mid-stream closes the connection all the way to Gemini', async t => {
  const emulator = await startEmulator(t, { chunkCount: 30, chunkDelayMs: 50, defaultMaxTokens: 60 })
  const { url } = await startGateway(t, emulator)
  const controller = new AbortController()
  const stream = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'stop me', signal: controller.signal })
  const chunks: ChunkEvent[] = []
  const reason = new Error('user pressed stop')
  const iteration = (async () => {
    for await (const chunk of stream) {
      chunks.push(chunk)
      if (chunks.length === 2) controller.abort(reason)
    }
  })()
  await t.rejects(iteration, reason, 'iteration throws the abort reason')
  await t.rejects(stream.completion, reason)
  t.equal(chunks.length, 2, 'no buffered chunk is handed out after the abort')
  const upstream = emulator.requests[0]
  if (upstream === undefined) throw new Error('the emulator saw no request')
  await within(5000, upstream.closed, 'the upstream request closing')
  t.equal(upstream.clientClosedEarly, true, 'Gemini saw the connection close early')
  t.ok(upstream.chunksSent < 30, `Gemini stopped after ${upstream.chunksSent} of 30 events`)
})

t.test('breaking out of the loop closes the connection too', async t => {
  const emulator = await startEmulator(t, { chunkCount: 30, chunkDelayMs: 50, defaultMaxTokens: 60 })
  const { url } = await startGateway(t, emulator)
  const stream = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'enough' })
  for await (const chunk of stream) {
    if (chunk.index === 1) break
  }
  await waitUntil(() => emulator.requests.length === 1, 5000, 'the upstream request')
  await within(5000, emulator.requests[0]!.closed, 'the upstream request closing')
  t.equal(emulator.requests[0]!.clientClosedEarly, true)
  const error = await stream.completion.catch((rejection: unknown) => rejection)
  t.equal((error as Error).name, 'AbortError')
})

t.test('an error nobody observes never becomes an unhandled rejection', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const unhandled: unknown[] = []
  const record = (reason: unknown): void => { unhandled.push(reason) }
  process.on('unhandledRejection', record)
  t.teardown(() => { process.off('unhandledRejection', record) })

  const ignored = streamPrompt({ baseUrl: url, apiKey: 'not-a-key', prompt: 'nobody listens' })
  await sleep(500)
  t.same(unhandled, [])
  await t.rejects(ignored.completion, ForbiddenError, 'the error is still there for whoever asks')
})

t.test('the package exports the client as <package>/client', async t => {
  const specifier = 'amrikyy-stream-gateway/client'
  const exported = await import(specifier) as Record<string, unknown>
  for (const name of ['streamPrompt', 'SseParser', 'GatewayError', 'BadRequestError', 'UnauthorizedError', 'ForbiddenError', 'RateLimitedError', 'StreamStartError', 'StreamError', 'ConnectionError']) {
    t.equal(typeof exported[name], 'function', name)
  }
})
