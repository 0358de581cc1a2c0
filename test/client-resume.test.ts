// The client module resumes a dropped resumable stream (issue 19, item 5): a real TCP proxy between the
// client and a real gateway cuts the connection mid-stream, and the caller still sees one whole answer.
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { answerFor, type GeminiEmulator } from '../emulator/server.js'
import { StreamError, streamPrompt } from '../client/index.js'
import { USER_KEY, startEmulator, startGateway, within } from './support/gateway.js'
import { REDIS_SKIP, redisNamespace } from './support/redis.js'
import { closedPortUrl } from '../scripts/shared/ports.js'
import { startCuttingProxy } from './support/cutting-proxy.js'
import { collect, collectUntilError } from './support/prompt-stream.js'

// Slow enough that a cut after a few chunks lands mid-answer, with more than enough chunks left.
const PACE = { chunkCount: 10, chunkDelayMs: 40, defaultMaxTokens: 40 }
// Quick reconnections keep the tests short; the defaults are the same code with longer waits.
const QUICK = { baseDelayMs: 20 }

function generateCalls (emulator: GeminiEmulator, prompt: string): number {
  return emulator.requests.filter(request => request.rpc === 'streamGenerateContent' && request.prompt === prompt).length
}

function headerOf (response: string, name: string): string | undefined {
  const head = response.slice(0, response.indexOf('\r\n\r\n'))
  return new RegExp(`^${name}: *(.*)$`, 'im').exec(head)?.[1]?.trim()
}

t.test('a stream cut mid-answer by a proxy resumes: one uninterrupted stream of chunks, one generation upstream', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const prompt = 'Tell me about resumable streams'
  const answer = answerFor(prompt, undefined, PACE)
  t.ok(answer.deltas.length >= 6, `the answer has ${answer.deltas.length} chunks, enough to cut after 3`)

  const direct = streamPrompt({ baseUrl: url, apiKey: USER_KEY, prompt })
  const uninterrupted = await collect(direct)
  const uninterruptedCompletion = await direct.completion
  t.equal(direct.streamId, undefined, 'a plain stream has no stream id')

  const proxy = await startCuttingProxy(t, connection => ({ target: url, cutAfterChunks: connection === 0 ? 3 : undefined }))
  const callsBefore = generateCalls(emulator, prompt)
  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt, resumable: true })
  const chunks = await within(10_000, collect(stream), 'the resumed stream')
  const completion = await stream.completion

  t.same(chunks, uninterrupted, 'the same chunks as the uninterrupted stream, in order')
  t.same(chunks.map(chunk => chunk.index), answer.deltas.map((_delta, i) => i + 1), 'indexes 1..N, each once')
  t.equal(chunks.map(chunk => chunk.chunk).join(''), uninterruptedCompletion.fullText)
  t.equal(completion.fullText, uninterruptedCompletion.fullText)
  t.equal(completion.totalChunks, uninterruptedCompletion.totalChunks)
  t.equal(generateCalls(emulator, prompt) - callsBefore, 1, 'Gemini generated the answer once')

  const [first, resumed, ...more] = proxy.connections
  t.same(more, [], 'one cut, one resume')
  t.equal(first?.cut, true, 'the proxy did cut the first connection')
  t.ok(first?.request.endsWith(`{"prompt":${JSON.stringify(prompt)},"resumable":true}`), 'the opt-in is in the body, after the fields the contract had')
  const streamId = headerOf(first?.response ?? '', 'x-stream-id')
  t.match(streamId, /^[0-9a-f-]{36}$/, 'the gateway named the stream')
  t.equal(stream.streamId, streamId, 'and the client exposes that id')
  t.same(proxy.requestLines(), ['POST /api/stream HTTP/1.1', `GET /api/stream/${streamId} HTTP/1.1`])
  t.equal(headerOf(resumed?.request ?? '', 'last-event-id'), `${streamId}:3`, 'the resume asked for the events after the third, the last one whole')
})

t.test('with the events in Redis, the resume lands on another instance and the answer is still whole', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, PACE)
  const { url: redisUrl, nameSpace } = await redisNamespace(t, 'client-resume')
  const shared = { resumable: { redis: redisUrl, nameSpace } }
  const { url: first } = await startGateway(t, emulator, shared)
  const { url: second } = await startGateway(t, emulator, shared)
  const prompt = 'move me to another instance'
  const answer = answerFor(prompt, undefined, PACE)
  // As a load balancer would after the first instance went away: the resume goes to the other one.
  const proxy = await startCuttingProxy(t, connection => connection === 0 ? { target: first, cutAfterChunks: 3 } : { target: second })

  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt, resumable: true, resume: QUICK })
  const chunks = await within(10_000, collect(stream), 'the stream resumed on the second instance')
  t.same(chunks, answer.deltas.map((chunk, i) => ({ chunk, index: i + 1 })))
  t.equal((await stream.completion).fullText, answer.deltas.join(''))
  t.equal(proxy.requestLines().length, 2)
  t.equal(generateCalls(emulator, prompt), 1, 'generated once, by the first instance')
})

t.test('each resume that brings events earns a fresh set of tries: a stream cut again and again still completes', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const prompt = 'cut me often'
  const answer = answerFor(prompt, undefined, PACE)
  const proxy = await startCuttingProxy(t, () => ({ target: url, cutAfterChunks: 2 }))

  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt, resumable: true, resume: { attempts: 1, ...QUICK } })
  const chunks = await within(10_000, collect(stream), 'the stream cut every two chunks')
  t.same(chunks.map(chunk => chunk.chunk), answer.deltas)
  t.same(chunks.map(chunk => chunk.index), answer.deltas.map((_delta, i) => i + 1))
  t.equal((await stream.completion).fullText, answer.deltas.join(''))
  t.ok(proxy.connections.filter(connection => connection.cut).length >= 3, `cut ${proxy.connections.filter(connection => connection.cut).length} times, with one try allowed in a row`)
  t.equal(generateCalls(emulator, prompt), 1)
})

t.test('a resume refused with 404 (the gateway came back without the stream) fails as truncated, naming the 404', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  // A restarted gateway: same keys, a fresh memory, so the stream id means nothing to it.
  const { url: restarted } = await startGateway(t, emulator)
  const proxy = await startCuttingProxy(t, connection => connection === 0 ? { target: url, cutAfterChunks: 3 } : { target: restarted })

  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt: 'forget me', resumable: true, resume: QUICK })
  const { chunks, error } = await within(10_000, collectUntilError(stream), 'the failed resume')
  t.equal(chunks.length, 3, 'the chunks read before the cut were handed out')
  t.ok(error instanceof StreamError, String(error))
  t.equal((error as StreamError).kind, 'truncated')
  t.equal((error as StreamError).recoverable, true, 'sending the prompt again may work')
  t.equal((error as StreamError).status, 404)
  t.match((error as StreamError).message, /^The connection to the gateway broke and the stream could not be resumed: HTTP 404/)
  await t.rejects(stream.completion, error as StreamError, 'completion rejects with the same error')
  t.equal(proxy.requestLines().length, 2, 'a 404 is not tried again')
})

t.test('a gateway that makes every stream resumable is resumed without the client asking', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, { resumable: { byDefault: true } })
  const prompt = 'resumable by default'
  const answer = answerFor(prompt, undefined, PACE)
  const proxy = await startCuttingProxy(t, connection => ({ target: url, cutAfterChunks: connection === 0 ? 3 : undefined }))

  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt, resume: QUICK })
  t.same((await within(10_000, collect(stream), 'the resumed stream')).map(chunk => chunk.chunk), answer.deltas)
  t.ok(proxy.connections[0]?.request.endsWith(`{"prompt":${JSON.stringify(prompt)}}`), 'the client did not ask')
  t.match(stream.streamId, /^[0-9a-f-]{36}$/)
  t.equal(proxy.requestLines().length, 2)
  t.equal(generateCalls(emulator, prompt), 1)
})

t.test('a resume from before the events the gateway still keeps is refused with 410, and the error says so', async t => {
  const emulator = await startEmulator(t, PACE)
  // Two events kept: by the time the client comes back, the one after its last is long gone.
  const { url } = await startGateway(t, emulator, { resumable: { maxEvents: 2 } })
  const proxy = await startCuttingProxy(t, connection => ({ target: url, cutAfterChunks: connection === 0 ? 3 : undefined }))

  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt: 'too late', resumable: true, resume: { baseDelayMs: 300 } })
  const { chunks, error } = await within(10_000, collectUntilError(stream), 'the refused resume')
  t.equal(chunks.length, 3)
  t.ok(error instanceof StreamError, String(error))
  t.equal((error as StreamError).kind, 'truncated')
  t.equal((error as StreamError).status, 410)
  t.match((error as StreamError).message, /^The connection to the gateway broke and the stream could not be resumed: HTTP 410/)
  t.equal(proxy.requestLines().length, 2, 'a 410 is not tried again')
})

t.test('resume: false fails at the cut exactly as without resuming, with no second request', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const proxy = await startCuttingProxy(t, () => ({ target: url, cutAfterChunks: 3 }))

  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt: 'no second chances', resumable: true, resume: false })
  const { chunks, error } = await within(10_000, collectUntilError(stream), 'the cut stream failing')
  t.equal(chunks.length, 3)
  t.ok(error instanceof StreamError, String(error))
  t.equal((error as StreamError).kind, 'truncated')
  t.equal((error as StreamError).message, 'The connection to the gateway broke before the stream completed')
  t.match(stream.streamId, /^[0-9a-f-]{36}$/, 'the stream was resumable all the same')
  await sleep(300)
  t.same(proxy.requestLines(), ['POST /api/stream HTTP/1.1'], 'no resume was sent')
})

t.test('without resumable nothing changes: no opt-in in the body, no stream id, a cut fails as before', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const proxy = await startCuttingProxy(t, () => ({ target: url, cutAfterChunks: 3 }))

  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt: 'plain as before', resumable: false, resume: QUICK })
  const { chunks, error } = await within(10_000, collectUntilError(stream), 'the cut stream failing')
  t.equal(chunks.length, 3)
  t.equal((error as StreamError).kind, 'truncated')
  t.equal((error as StreamError).message, 'The connection to the gateway broke before the stream completed')
  t.equal(stream.streamId, undefined)
  t.ok(proxy.connections[0]?.request.endsWith('{"prompt":"plain as before"}'), '"resumable": false is not sent')
  t.equal(headerOf(proxy.connections[0]?.response ?? '', 'x-stream-id'), undefined)
  await sleep(300)
  t.equal(proxy.requestLines().length, 1, 'nothing to resume, so no resume')
})

t.test('reconnections are bounded: tries that fail to connect count, and the last failure is named', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const closedPort = await closedPortUrl()
  const proxy = await startCuttingProxy(t, connection => connection === 0 ? { target: url, cutAfterChunks: 3 } : { target: closedPort })

  const started = Date.now()
  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt: 'nobody home', resumable: true, resume: { attempts: 3, baseDelayMs: 50, maxDelayMs: 100 } })
  const error = await within(10_000, stream.completion.catch((rejection: unknown) => rejection), 'the stream giving up')
  t.ok(error instanceof StreamError, String(error))
  t.equal((error as StreamError).kind, 'truncated')
  t.match((error as StreamError).message, /^The connection to the gateway broke and the stream could not be resumed: could not reach the gateway at http:\/\/127\.0\.0\.1:\d+\/api\/stream\/[0-9a-f-]{36}: /)
  t.equal(proxy.connections.length, 4, 'the stream, then three tries')
  t.ok(Date.now() - started >= 50 + 100 + 100, 'waiting 50 ms, then twice that, capped at 100 ms')
})

t.test('aborting while the client waits to reconnect rejects at once, without a resume', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const proxy = await startCuttingProxy(t, () => ({ target: url, cutAfterChunks: 3 }))
  const controller = new AbortController()
  const reason = new Error('user pressed stop')

  const stream = streamPrompt({ baseUrl: proxy.url, apiKey: USER_KEY, prompt: 'stop while waiting', resumable: true, resume: { baseDelayMs: 60_000 }, signal: controller.signal })
  const iteration = collectUntilError(stream)
  await proxy.whenCut()
  await sleep(100)
  const abortedAt = Date.now()
  controller.abort(reason)
  const { error } = await within(1000, iteration, 'the iteration rejecting')
  t.equal(error, reason, 'iteration throws the abort reason')
  await t.rejects(stream.completion, reason)
  t.ok(Date.now() - abortedAt < 500, 'no waiting out the backoff')
  t.equal(proxy.requestLines().length, 1, 'no resume after the abort')
})
