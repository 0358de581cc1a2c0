// The Gemini passthrough (/gemini) driven by clients nobody here wrote: @google/genai and the Vercel AI SDK's
// Google provider, given only the gateway's URL and a gateway key; and byte for byte against the emulator itself.

import t, { type Test } from 'tap'
import { ApiError, GoogleGenAI, type GenerateContentResponse } from '@google/genai'
import { streamText } from 'ai'
import { createGoogleGenerativeAI } from '@ai-sdk/google'
import { BLOCKED_PROMPT_TRIGGER, type GeminiEmulator } from '../emulator/server.js'
import { GatewayLifecycle } from '../plugins/lifecycle.js'
import { Exposition } from './support/prometheus.js'
import { startServerProcess } from './support/server-process.js'
import Fastify from 'fastify'
import streamGateway from '../app.js'
import { listenOnLoopback, startEmulator, startGateway, USER_KEY, waitUntil } from './support/gateway.js'

const UPSTREAM_KEY = 'upstream-secret-key'
const MODEL = 'gemini-2.5-flash'
const PACE = { chunkCount: 4, defaultMaxTokens: 16 }
/** One id for every answer, so that a relayed answer can equal a direct one byte for byte. */
const RESPONSE_ID = 'eR_taspov_goeBo1kd7pcQ'

/** The emulator answers only the gateway's own key, so a caller's key reaching it would fail the test. */
async function setUp (t: Test, overrides: Parameters<typeof startGateway>[2] = {}): Promise<{ emulator: GeminiEmulator, url: string }> {
  const emulator = await startEmulator(t, { ...PACE, apiKey: UPSTREAM_KEY, responseId: RESPONSE_ID })
  const { url } = await startGateway(t, emulator, overrides)
  return { emulator, url }
}

function sdkAt (baseUrl: string, apiKey: string): GoogleGenAI {
  return new GoogleGenAI({ apiKey, httpOptions: { baseUrl } })
}

/** A chunk as the SDK gives it, without the HTTP response the SDK attaches (its headers differ by hop). */
function withoutResponse (chunk: GenerateContentResponse): unknown {
  const { sdkHttpResponse: _, ...rest } = JSON.parse(JSON.stringify(chunk)) as Record<string, unknown>
  return rest
}

const THINKING_REQUEST = {
  contents: [{ role: 'user', parts: [{ text: 'Why is the sky blue?' }] }],
  generationConfig: { thinkingConfig: { thinkingBudget: 256, includeThoughts: true } }
}

t.test('a raw stream through the gateway is the emulator\'s stream byte for byte', async t => {
  const { emulator, url } = await setUp(t)
  const path = `/v1beta/models/${MODEL}:streamGenerateContent?alt=sse`
  const body = JSON.stringify(THINKING_REQUEST)
  const direct = await fetch(`${emulator.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': UPSTREAM_KEY }, body })
  const relayed = await fetch(`${url}/gemini${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': USER_KEY }, body })
  t.equal(relayed.status, 200)
  t.equal(relayed.headers.get('content-type'), 'text/event-stream')
  const expected = await direct.text()
  t.match(expected, /"thought":true/, 'the stream has thought parts')
  t.equal(await relayed.text(), expected)
  const forwarded = emulator.requests.at(-1)!
  t.equal(forwarded.headers['x-goog-api-key'], UPSTREAM_KEY, 'the gateway\'s key went upstream')
  t.equal(JSON.stringify(forwarded.body), body, 'the body as the caller wrote it')
  t.equal(forwarded.apiVersion, 'v1beta')
})

t.test('@google/genai: streams, whole answers, token counts and the model list equal the emulator\'s', async t => {
  const { emulator, url } = await setUp(t)
  const direct = sdkAt(emulator.url, UPSTREAM_KEY)
  const gateway = sdkAt(`${url}/gemini`, USER_KEY)
  const ask = { model: MODEL, contents: 'Why is the sky blue?', config: { thinkingConfig: { thinkingBudget: 256, includeThoughts: true } } }
  const streamed = async (client: GoogleGenAI): Promise<unknown[]> => {
    const chunks: unknown[] = []
    for await (const chunk of await client.models.generateContentStream(ask)) chunks.push(withoutResponse(chunk))
    return chunks
  }
  const expected = await streamed(direct)
  t.ok(expected.length > 2)
  t.same(await streamed(gateway), expected, 'the same chunks, thoughts included')
  t.same(withoutResponse(await gateway.models.generateContent(ask)), withoutResponse(await direct.models.generateContent(ask)))
  const counted = async (client: GoogleGenAI): Promise<unknown> => JSON.parse(JSON.stringify({ ...await client.models.countTokens({ model: MODEL, contents: 'Why is the sky blue?' }), sdkHttpResponse: undefined }))
  t.same(await counted(gateway), await counted(direct))
  t.match(await counted(gateway), { totalTokens: Number })
  const names = async (client: GoogleGenAI): Promise<string[]> => {
    const listed: string[] = []
    for await (const model of await client.models.list({ config: { pageSize: 2 } })) listed.push(model.name ?? '')
    return listed
  }
  const all = await names(direct)
  t.ok(all.length > 2, 'more than one page')
  t.same(await names(gateway), all)
  t.same(withoutResponse(await gateway.models.get({ model: MODEL }) as GenerateContentResponse), withoutResponse(await direct.models.get({ model: MODEL }) as GenerateContentResponse))
  t.ok(emulator.requests.every(request => request.headers['x-goog-api-key'] === UPSTREAM_KEY), 'no caller key ever reached Gemini')
})

t.test('@google/genai: an abortSignal abort closes the upstream call within a second', async t => {
  const emulator = await startEmulator(t, { chunkCount: 50, chunkDelayMs: 40, defaultMaxTokens: 200, apiKey: UPSTREAM_KEY })
  const { url } = await startGateway(t, emulator)
  const abort = new AbortController()
  const stream = await sdkAt(`${url}/gemini`, USER_KEY).models.generateContentStream({ model: MODEL, contents: 'a long answer', config: { abortSignal: abort.signal } })
  let seen = 0
  await (async () => {
    for await (const chunk of stream) {
      if (chunk.text !== undefined) seen++
      if (seen === 3) abort.abort()
    }
  })().catch(() => {})
  t.equal(seen, 3)
  const aborted = performance.now()
  await waitUntil(() => emulator.openStreams() === 0, 1000, 'the upstream stream to close')
  t.ok(performance.now() - aborted < 1000)
})

t.test('the gateway\'s refusals are Google\'s errors, which the SDK raises as ApiError', async t => {
  const { emulator, url } = await setUp(t, { rateLimit: { max: 3 }, models: { allowedModels: ['gemini-2.5-*'] }, defaultModel: MODEL })
  const refusal = async (client: GoogleGenAI, model = MODEL): Promise<unknown> => await client.models.generateContent({ model, contents: 'hi' }).then(() => undefined, (error: unknown) => error)
  const forbidden = await refusal(sdkAt(`${url}/gemini`, 'not-a-key'))
  t.ok(forbidden instanceof ApiError)
  t.match(forbidden, { status: 403, message: /Forbidden: Invalid API key/ })
  const missing = await fetch(`${url}/gemini/v1beta/models/${MODEL}:generateContent`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(missing.status, 401)
  t.same(await missing.json(), { error: { code: 401, message: 'Unauthorized: API key is missing.', status: 'UNAUTHENTICATED' } })
  t.match(await refusal(sdkAt(`${url}/gemini`, USER_KEY), 'gemini-2.0-flash'), { status: 403, message: /Model not allowed: gemini-2.0-flash/ })
  const post = async (path: string, body: string): Promise<Response> => await fetch(`${url}/gemini${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': USER_KEY }, body })
  const unknownMethod = await post(`/v1beta/models/${MODEL}:fooBar`, '{}')
  t.equal(unknownMethod.status, 404)
  t.same(await unknownMethod.json(), { error: { code: 404, message: 'Requested entity was not found.', status: 'NOT_FOUND' } })
  const malformed = await post(`/v1beta/models/${MODEL}:generateContent`, '{"contents":')
  t.equal(malformed.status, 400)
  t.same(await malformed.json(), { error: { code: 400, message: 'Invalid JSON payload received. Unexpected token.', status: 'INVALID_ARGUMENT' } })
  const limited = await refusal(sdkAt(`${url}/gemini`, USER_KEY))
  t.ok(limited instanceof ApiError)
  t.match(limited, { status: 429, message: /Too Many Requests/ })
  t.equal(emulator.requests.filter(request => request.rpc !== undefined).length, 0, 'no refused call reached Gemini')
  const wrongVerb = await fetch(`${url}/gemini/v1beta/models/${MODEL}:generateContent`, { method: 'DELETE', headers: { 'x-goog-api-key': USER_KEY } })
  t.equal(wrongVerb.status, 404)
  t.match(await wrongVerb.json(), { error: { status: 'NOT_FOUND' } })
})

t.test('Gemini\'s own errors and blocked prompts come back as Gemini sent them', async t => {
  const { emulator, url } = await setUp(t)
  const post = async (path: string, body: unknown, apiKey = UPSTREAM_KEY, base = emulator.url): Promise<{ status: number, body: string }> => {
    const response = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': apiKey }, body: JSON.stringify(body) })
    return { status: response.status, body: await response.text() }
  }
  const unknownModel = '/v1beta/models/gemini-0-none:generateContent'
  t.same(await post(unknownModel, { contents: [{ parts: [{ text: 'hi' }] }] }, USER_KEY, `${url}/gemini`), await post(unknownModel, { contents: [{ parts: [{ text: 'hi' }] }] }), 'a 404 for an unknown model')
  const badBody = `/v1beta/models/${MODEL}:streamGenerateContent?alt=sse`
  t.same(await post(badBody, { contents: [] }, USER_KEY, `${url}/gemini`), await post(badBody, { contents: [] }), 'a 400 before the stream')
  const blocked = { contents: [{ parts: [{ text: `please ${BLOCKED_PROMPT_TRIGGER}` }] }] }
  t.same(await post(badBody, blocked, USER_KEY, `${url}/gemini`), await post(badBody, blocked), 'a blocked prompt\'s promptFeedback event')
})

t.test('the query\'s key authenticates and never goes upstream; api="gemini" metrics count the calls', async t => {
  const { emulator, url } = await setUp(t)
  const listed = await fetch(`${url}/gemini/v1/models?key=${USER_KEY}&pageSize=2`)
  t.equal(listed.status, 200)
  t.equal((await listed.json() as { models: unknown[] }).models.length, 2)
  t.equal(emulator.requests.at(-1)!.path, '/v1/models?pageSize=2', 'only the list\'s own parameters went upstream')
  const body = JSON.stringify({ contents: [{ parts: [{ text: 'hi' }] }] })
  await (await fetch(`${url}/gemini/v1/models/${MODEL}:streamGenerateContent?alt=sse`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body })).text()
  await (await fetch(`${url}/gemini/v1/models/${MODEL}:generateContent`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': USER_KEY }, body })).text()
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.equal(scrape.sample('amrikyy_gemini_calls_total', { method: 'models.list', status: '200' }), 1)
  t.equal(scrape.sample('amrikyy_gemini_calls_total', { method: 'streamGenerateContent', status: '200' }), 1)
  t.equal(scrape.sample('amrikyy_gemini_calls_total', { method: 'generateContent', status: '200' }), 1)
  t.equal(scrape.sample('amrikyy_stream_sessions_completed_total', { api: 'gemini', agent: 'unknown', model: MODEL }), 2, 'the stream and the whole answer, each once')
  t.ok((scrape.sample('amrikyy_stream_tokens_total', { api: 'gemini', agent: 'unknown', model: MODEL, type: 'completion' }) ?? 0) > 0, 'tokens from Gemini\'s usage')
  t.equal(scrape.sample('amrikyy_active_streams', { api: 'gemini', agent: 'unknown', model: MODEL }), 0)
})

t.test('Vercel AI SDK: the Google provider streams text through the gateway', async t => {
  const { emulator, url } = await setUp(t)
  const google = createGoogleGenerativeAI({ baseURL: `${url}/gemini/v1beta`, apiKey: USER_KEY })
  const direct = createGoogleGenerativeAI({ baseURL: `${emulator.url}/v1beta`, apiKey: UPSTREAM_KEY })
  const text = async (provider: typeof google): Promise<string> => {
    const parts: string[] = []
    for await (const part of streamText({ model: provider(MODEL), prompt: 'Tell me about rivers', maxRetries: 0 }).textStream) parts.push(part)
    return parts.join('')
  }
  const expected = await text(direct)
  t.ok(expected.length > 0)
  t.equal(await text(google), expected)
})

t.test('a stream the gateway ends after its first event ends with Google\'s error event; Gemini\'s own error event is relayed', async t => {
  const { emulator, url } = await setUp(t, { stream: { retry: { attempts: 1 } } })
  const path = `/v1beta/models/${MODEL}:streamGenerateContent?alt=sse`
  const body = JSON.stringify({ contents: [{ parts: [{ text: 'hi' }] }] })
  const direct = async (): Promise<string> => await (await fetch(`${emulator.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': UPSTREAM_KEY }, body })).text()
  const relayed = async (): Promise<string> => await (await fetch(`${url}/gemini${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': USER_KEY }, body })).text()
  const events = (await direct()).split('\r\n\r\n').filter(event => event !== '')
  emulator.addFault({ kind: 'drop', afterChunks: 2 })
  t.equal(await relayed(), `${events.slice(0, 2).map(event => `${event}\r\n\r\n`).join('')}data: {"error":{"code":502,"message":"Connection to Gemini failed","status":"UNAVAILABLE"}}\r\n\r\n`)
  emulator.addFault({ kind: 'stream-error', afterChunks: 1, code: 503, message: 'The model is overloaded.', status: 'UNAVAILABLE' }, { times: 2 })
  t.equal(await relayed(), await direct(), 'Gemini\'s error event as Gemini sent it')
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.equal(scrape.sample('amrikyy_stream_sessions_failed_total', { api: 'gemini', agent: 'unknown', model: MODEL }), 2)
})

t.test('a draining gateway and a rate-limited key refuse in Google\'s shape, with retry-after', async t => {
  const lifecycle = new GatewayLifecycle()
  const { url } = await setUp(t, { lifecycle, rateLimit: { max: 1 } })
  const post = async (): Promise<Response> => await fetch(`${url}/gemini/v1/models/${MODEL}:countTokens`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': USER_KEY }, body: '{"contents":[{"parts":[{"text":"hi"}]}]}' })
  t.equal((await post()).status, 200)
  const limited = await post()
  t.equal(limited.status, 429)
  t.ok(Number(limited.headers.get('retry-after')) > 0)
  t.same(await limited.json(), { error: { code: 429, message: 'Too Many Requests: You have exceeded the request limit. Please try again later.', status: 'RESOURCE_EXHAUSTED' } })
  void lifecycle.drain(100)
  const draining = await post()
  t.equal(draining.status, 503)
  t.same(await draining.json(), { error: { code: 503, message: 'Service Unavailable: The gateway is shutting down; retry the request', status: 'UNAVAILABLE' } })
})

t.test('with the SDK Gemini client the passthrough answers 501, as it cannot forward', async t => {
  const emulator = await startEmulator(t, { ...PACE, apiKey: UPSTREAM_KEY })
  const { url } = await startGateway(t, emulator, { gemini: { apiKey: UPSTREAM_KEY, baseUrl: emulator.url, client: 'sdk' } })
  const response = await fetch(`${url}/gemini/v1/models/${MODEL}:streamGenerateContent?alt=sse`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': USER_KEY }, body: '{"contents":[{"parts":[{"text":"hi"}]}]}' })
  t.equal(response.status, 501)
  t.match(await response.json(), { error: { code: 501, status: 'UNIMPLEMENTED' } })
  t.equal(emulator.requests.length, 0)
})

t.test('the standalone server never logs a key sent in the query', async t => {
  const server = await startServerProcess(t, { NODE_ENV: 'development', GEMINI_API_KEY: undefined })
  const secret = 'query-borne-secret-key'
  await (await fetch(`${server.url}/gemini/v1/models?key=${secret}`)).text()
  await (await fetch(`${server.url}/gemini/v1/models?pageSize=1&key=${USER_KEY}`)).text()
  await waitUntil(() => server.output().includes('"statusCode":200'), 5000, 'the request log lines')
  t.notOk(server.output().includes(secret), 'an unknown key stays out of the log')
  t.notOk(server.output().includes(USER_KEY), 'a known key stays out of the log')
  t.match(server.output(), /gemini\/v1\/models\?pageSize=1&key=\[redacted\]/)
})

t.test('under a host\'s prefix the passthrough moves with the gateway', async t => {
  const emulator = await startEmulator(t, { ...PACE, apiKey: UPSTREAM_KEY, responseId: RESPONSE_ID })
  const host = Fastify({ logger: false, forceCloseConnections: true })
  await host.register(streamGateway, { prefix: '/ai', apiKeys: [USER_KEY], gemini: { apiKey: UPSTREAM_KEY, baseUrl: emulator.url } })
  t.teardown(async () => { await host.close() })
  const url = await listenOnLoopback(host)
  const ask = { model: MODEL, contents: 'hi' }
  const relayed = await sdkAt(`${url}/ai/gemini`, USER_KEY).models.generateContent(ask)
  t.same(withoutResponse(relayed), withoutResponse(await sdkAt(emulator.url, UPSTREAM_KEY).models.generateContent(ask)))
  t.equal((await fetch(`${url}/gemini/v1/models`, { headers: { 'x-goog-api-key': USER_KEY } })).status, 404, 'nothing outside the prefix')
})
