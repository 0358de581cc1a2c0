import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { answerFor, type Conversation } from '../emulator/server.js'
import {
  BadRequestError, ConnectionError, ForbiddenError, GatewayError, RateLimitedError, StreamError,
  StreamStartError, UnauthorizedError, parseRetryAfter, streamPrompt, type ChunkEvent, type PromptStream, type ThoughtEvent
} from '../client/index.js'
import { ADMIN_KEY, USER_KEY, parseEvents, postStream, startEmulator, startGateway, waitUntil, within } from './support/gateway.js'
import { markedBlock } from './support/readme-blocks.js'
import { startScriptedServer } from './support/scripted-server.js'
import { expectedThoughts } from './support/thoughts.js'
import { collect, collectUntilError } from './support/prompt-stream.js'
import { closedPortUrl } from '../scripts/shared/ports.js'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('..', import.meta.url))

const PACE = { chunkCount: 5, defaultMaxTokens: 20 }

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

t.test('a conversation: thoughts reach onThought only, in order and before the answer; the completion says how it ended', async t => {
  const pace = { chunkCount: 8, defaultMaxTokens: 32 }
  const emulator = await startEmulator(t, pace)
  const { url } = await startGateway(t, emulator)
  const history = [{ role: 'user' as const, text: 'Why is the sky blue?' }, { role: 'model' as const, text: 'Sunlight scatters off the air.' }]
  const conversation: Conversation = { system: 'You are a patient physics teacher', turns: [...history, { role: 'user', text: 'And in one sentence?' }] }
  const answer = answerFor(conversation, undefined, pace)
  const thoughts = expectedThoughts(conversation, pace.chunkCount)

  const seen: Array<ThoughtEvent | ChunkEvent> = []
  const stream = streamPrompt({
    baseUrl: url,
    apiKey: USER_KEY,
    prompt: 'And in one sentence?',
    model: 'gemini-2.5-flash',
    system: conversation.system,
    history,
    options: { thinking: { includeThoughts: true } },
    onThought: event => { seen.push(event) }
  })
  for await (const chunk of stream) seen.push(chunk)
  t.ok(thoughts.deltas.length >= 2, 'more than one thought event')
  t.same(seen, [...thoughts.deltas.map(thought => ({ thought })), ...indexed(answer.deltas)], 'every thought, then every chunk: no thought in the text')
  t.same(await stream.completion, {
    complete: true,
    totalChunks: answer.deltas.length,
    fullText: answer.deltas.join(''),
    usage: {
      promptTokens: answer.promptTokens,
      completionTokens: answer.completionTokens + thoughts.tokens,
      totalTokens: answer.promptTokens + answer.completionTokens + thoughts.tokens,
      thoughtsTokens: thoughts.tokens
    },
    finishReason: 'STOP',
    model: 'gemini-2.5-flash'
  })
  t.equal(JSON.stringify(emulator.requests[0]?.body),
    '{"contents":[{"parts":[{"text":"Why is the sky blue?"}],"role":"user"},{"parts":[{"text":"Sunlight scatters off the air."}],"role":"model"},' +
    '{"parts":[{"text":"And in one sentence?"}],"role":"user"}],"systemInstruction":{"parts":[{"text":"You are a patient physics teacher"}],"role":"user"},' +
    '"generationConfig":{"thinkingConfig":{"includeThoughts":true}}}', 'system, history and thinking on the wire to Gemini')
})

t.test('every option of a conversation reaches Gemini as given; a MAX_TOKENS finish is a completion', async t => {
  const pace = { chunkCount: 4, defaultMaxTokens: 12 }
  const emulator = await startEmulator(t, pace)
  const { url } = await startGateway(t, emulator)
  const options = {
    temperature: 0.3,
    maxOutputTokens: 5,
    stopSequences: ['zzz'],
    seed: 42,
    presencePenalty: 0.5,
    frequencyPenalty: -0.5,
    responseMimeType: 'text/plain' as const,
    thinking: { budget: 0 },
    safetySettings: [{ category: 'HARM_CATEGORY_HARASSMENT' as const, threshold: 'BLOCK_ONLY_HIGH' as const }]
  }
  const completion = await streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'short please', model: 'gemini-2.5-flash', options }).completion
  const answer = answerFor('short please', options, pace)
  t.same([completion.fullText, completion.finishReason, completion.model], [answer.deltas.join(''), 'MAX_TOKENS', 'gemini-2.5-flash'])
  t.same(completion.usage, { promptTokens: answer.promptTokens, completionTokens: answer.completionTokens, totalTokens: answer.promptTokens + answer.completionTokens }, 'no thinking, no thoughtsTokens')
  t.equal(JSON.stringify(emulator.requests[0]?.body),
    '{"contents":[{"parts":[{"text":"short please"}],"role":"user"}],"safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_ONLY_HIGH"}],' +
    '"generationConfig":{"temperature":0.3,"maxOutputTokens":5,"stopSequences":["zzz"],"presencePenalty":0.5,"frequencyPenalty":-0.5,"seed":42,' +
    '"responseMimeType":"text/plain","thinkingConfig":{"thinkingBudget":0}}}')

  const responseSchema = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] }
  const json = await streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'a city', options: { responseMimeType: 'application/json', responseSchema } }).completion
  t.match(JSON.parse(json.fullText), { name: String }, 'JSON mode: the answer parses and follows the schema')
  t.same((emulator.requests[1]?.body as { generationConfig: unknown }).generationConfig, { responseMimeType: 'application/json', responseJsonSchema: responseSchema })
})

t.test('attachments are sent in the body as given', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  // A 1x1 transparent PNG.
  const image = { mimeType: 'image/png', data: 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==' }
  const done = await streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt: 'what is this?', attachments: [image] }).completion
  t.ok(done.fullText.length > 0)
  const body = emulator.requests[0]?.body as { contents: Array<{ role: string, parts: unknown[] }> }
  t.same(body.contents, [{ parts: [{ text: 'what is this?' }, { inlineData: image }], role: 'user' }], 'the file reaches Gemini as an inlineData part after the prompt')
})

t.test('an onThought that throws closes the stream and fails it with that error', async t => {
  const emulator = await startEmulator(t, { chunkCount: 30, chunkDelayMs: 50, defaultMaxTokens: 60 })
  const { url } = await startGateway(t, emulator)
  const failure = new Error('the thought display broke')
  const stream = streamPrompt({
    baseUrl: url,
    apiKey: USER_KEY,
    prompt: 'think hard',
    model: 'gemini-2.5-flash',
    options: { thinking: { includeThoughts: true } },
    onThought: () => { throw failure }
  })
  const { chunks, error } = await collectUntilError(stream)
  t.same(chunks, [])
  t.equal(error, failure)
  t.equal(await stream.completion.catch((rejection: unknown) => rejection), failure)
  await within(5000, emulator.requests[0]!.closed, 'the upstream request closing')
  t.equal(emulator.requests[0]!.clientClosedEarly, true, 'the connection was closed through to Gemini')
})

t.test('a SAFETY finish: the text sent, then a StreamError with finishReason and blockedCategories', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const prompt = 'tell me [[unsafe]] things'
  const stream = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt, system: 'be safe' })
  const { chunks, error } = await collectUntilError(stream)
  t.same(chunks, indexed(answerFor({ system: 'be safe', turns: [{ role: 'user', text: prompt }] }, undefined, PACE).deltas.slice(0, 1)))
  t.ok(error instanceof StreamError)
  const safety = error as StreamError
  t.same([safety.kind, safety.recoverable, safety.message, safety.finishReason, safety.blockedCategories],
    ['error-event', false, 'Gemini stopped generating: SAFETY', 'SAFETY', ['HARM_CATEGORY_DANGEROUS_CONTENT']])

  const seedError = await collectUntilError(streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt }))
  t.same([(seedError.error as StreamError).finishReason, (seedError.error as StreamError).blockedCategories], [undefined, undefined], 'a seed request\'s error event has neither')
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

t.test('a completion or error event of the wrong shape is a malformed stream, not trusted', async t => {
  const wrong = [
    '{"complete":true,"totalChunks":"2","fullText":"ab"}', '{"complete":true,"totalChunks":2}', '{"complete":true,"totalChunks":2,"fullText":"ab","usage":{"promptTokens":1}}',
    '{"complete":true,"totalChunks":1,"fullText":"ab","usage":{"promptTokens":1,"completionTokens":2,"totalTokens":3,"thoughtsTokens":"1"}}',
    '{"complete":true,"totalChunks":1,"fullText":"ab","usage":{"promptTokens":1,"completionTokens":2,"totalTokens":3,"cachedTokens":-1}}',
    '{"complete":true,"totalChunks":1,"fullText":"ab","finishReason":1}', '{"complete":true,"totalChunks":1,"fullText":"ab","model":null}',
    '{"error":"Gemini stopped generating: SAFETY","recoverable":false,"finishReason":["SAFETY"]}',
    '{"error":"Gemini stopped generating: SAFETY","recoverable":false,"blockedCategories":"HARM_CATEGORY_HARASSMENT"}',
    '{"error":"Gemini stopped generating: SAFETY","recoverable":false,"blockedCategories":[1]}'
  ]
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
    response.end('data: {"chunk":"ab","index":1}\n\ndata: {"complete":true,"totalChunks":1,"fullText":"ab","usage":{"promptTokens":2,"completionTokens":2,"totalTokens":4,"thoughtsTokens":1,"cachedTokens":1},"finishReason":"STOP","model":"m"}\n\n')
  })
  t.same(await streamPrompt({ baseUrl: scripted, apiKey: USER_KEY, prompt: 'p' }).completion,
    { complete: true, totalChunks: 1, fullText: 'ab', usage: { promptTokens: 2, completionTokens: 2, totalTokens: 4, thoughtsTokens: 1, cachedTokens: 1 }, finishReason: 'STOP', model: 'm' })

  const blocked = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    response.end('data: {"chunk":"ab","index":1}\n\ndata: {"error":"Gemini stopped generating: SAFETY","recoverable":false,"finishReason":"SAFETY","blockedCategories":["HARM_CATEGORY_HARASSMENT","HARM_CATEGORY_HATE_SPEECH"]}\n\n')
  })
  const error = await streamPrompt({ baseUrl: blocked, apiKey: USER_KEY, prompt: 'p' }).completion.catch((rejection: unknown) => rejection) as StreamError
  t.same([error.kind, error.message, error.finishReason, error.blockedCategories], ['error-event', 'Gemini stopped generating: SAFETY', 'SAFETY', ['HARM_CATEGORY_HARASSMENT', 'HARM_CATEGORY_HATE_SPEECH']])
})

t.test('events the client does not know are skipped, thought-like ones included', async t => {
  const scripted = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    response.end('data: {"thought":5}\n\ndata: {"progress":0.5}\n\ndata: [1]\n\ndata: {"thought":"hm"}\n\nevent: other\ndata: {"thought":"not a message event"}\n\n' +
      'data: {"chunk":"ab","index":1}\n\ndata: {"complete":true,"totalChunks":1,"fullText":"ab"}\n\n')
  })
  const thoughts: ThoughtEvent[] = []
  const stream = streamPrompt({ baseUrl: scripted, apiKey: USER_KEY, prompt: 'p', onThought: event => { thoughts.push(event) } })
  t.same(await collect(stream), [{ chunk: 'ab', index: 1 }])
  t.same(thoughts, [{ thought: 'hm' }])
  t.same(await stream.completion, { complete: true, totalChunks: 1, fullText: 'ab' })
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

t.test('the README\'s conversation examples run as written against the gateway', async t => {
  const pace = { chunkCount: 8, defaultMaxTokens: 32 }
  const emulator = await startEmulator(t, pace)
  const { url } = await startGateway(t, emulator)
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
  const dir = await mkdtemp(join(tmpdir(), 'readme-conversation-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  // Installed as a consumer has it: the package's own name resolves to this checkout's build.
  await mkdir(join(dir, 'node_modules'))
  await symlink(ROOT, join(dir, 'node_modules', 'amrikyy-stream-gateway'), 'dir')

  const client = markedBlock(readme, 'conversation')
  t.equal(client.lang, 'js')
  await writeFile(join(dir, 'conversation.mjs'), client.code)
  const ran = await run(process.execPath, [join(dir, 'conversation.mjs')], { cwd: dir, env: { PATH: process.env.PATH ?? '', AMRIKYY_URL: url, AMRIKYY_API_KEY: USER_KEY } })
  const asked = emulator.requests[0]
  const body = asked?.body as { systemInstruction: { parts: Array<{ text: string }> }, contents: Array<{ role: string, parts: Array<{ text: string }> }> }
  const conversation: Conversation = { system: body.systemInstruction.parts[0]!.text, turns: body.contents.map(turn => ({ role: turn.role as 'user' | 'model', text: turn.parts[0]!.text })) }
  t.ok(conversation.turns.length >= 3, 'history before the prompt')
  const answer = answerFor(conversation, undefined, pace)
  const thoughts = expectedThoughts(conversation, pace.chunkCount, { thinkingBudget: 512, includeThoughts: true })
  t.equal(ran.stdout, answer.deltas.join(''), 'stdout: the answer alone')
  t.equal(ran.stderr, `${thoughts.deltas.join('')}\ngemini-2.5-flash STOP: ${thoughts.tokens} of ${answer.completionTokens + thoughts.tokens} completion tokens were thinking\n`, 'stderr: the thoughts, then the completion\'s new fields')

  const curl = markedBlock(readme, 'conversation-curl')
  t.equal(curl.lang, 'sh')
  await writeFile(join(dir, 'conversation.sh'), curl.code.replaceAll('http://localhost:5000', url).replaceAll('YOUR_KEY', USER_KEY))
  const events = parseEvents((await run('bash', [join(dir, 'conversation.sh')])).stdout)
  t.same(JSON.stringify(emulator.requests[1]?.body), JSON.stringify(asked?.body), 'the same request as the client example')
  t.same(events, [
    ...thoughts.deltas.map(thought => ({ thought })),
    ...indexed(answer.deltas),
    {
      complete: true,
      totalChunks: answer.deltas.length,
      fullText: answer.deltas.join(''),
      usage: { promptTokens: answer.promptTokens, completionTokens: answer.completionTokens + thoughts.tokens, totalTokens: answer.promptTokens + answer.completionTokens + thoughts.tokens, thoughtsTokens: thoughts.tokens },
      finishReason: 'STOP',
      model: 'gemini-2.5-flash'
    }
  ], 'curl: the thoughts, the chunks, the completion')
})
