// Differential test: the direct REST client against the @google/genai reference client. The same
// prompts and the same emulator faults go through both; the emulator must record the same requests,
// and the callers must see the same deltas, usage, errors and cancellations.

import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import fc from 'fast-check'
import { answerFor, type Fault, type GeminiEmulator, type RecordedRequest } from '../emulator/server.js'
import { createRestGeminiClient, retryAfterMs, type RestGeminiClient } from '../gemini/rest-client.js'
import { SseSplitter } from '../gemini/sse-splitter.js'
import { createSdkGeminiClient } from '../gemini/sdk-client.js'
import type { ContentTurn, GeminiClient, GenerationDelta, GenerationRequest } from '../gemini/types.js'
import { UpstreamError } from '../gemini/upstream-error.js'
import { startEmulator, waitUntil, within } from './support/gateway.js'

const API_KEY = 'differential-secret-key'
const PACE = { chunkCount: 6, defaultMaxTokens: 30 }

interface Outcome {
  deltas: GenerationDelta[]
  error?: Record<string, unknown>
}

/** Every field the gateway reads from an UpstreamError (all its own fields but the cause). */
function errorShape (error: unknown): Record<string, unknown> {
  if (!(error instanceof UpstreamError)) return { notAnUpstreamError: String(error) }
  const fields: Record<string, unknown> = { name: error.name, message: error.message }
  for (const [key, value] of Object.entries(error)) if (key !== 'cause') fields[key] = value
  return fields
}

async function collect (client: GeminiClient, request: GenerationRequest, signal = new AbortController().signal): Promise<Outcome> {
  const deltas: GenerationDelta[] = []
  try {
    const iterator = await client.streamGenerate(request, signal)
    for (;;) {
      const result = await within(5000, iterator.next(), 'the next delta')
      if (result.done === true) break
      deltas.push(result.value)
    }
    return { deltas }
  } catch (error) {
    return { deltas, error: errorShape(error) }
  }
}

interface Clients { sdk: GeminiClient, rest: RestGeminiClient }

function clientsFor (t: Test, baseUrl: string): Clients {
  const rest = createRestGeminiClient({ apiKey: API_KEY, baseUrl })
  t.teardown(async () => { await rest.close() })
  return { sdk: createSdkGeminiClient({ apiKey: API_KEY, baseUrl }), rest }
}

/** What must be equal on the wire; user-agent style headers and the transport's own headers differ by design. */
function wireView (request: RecordedRequest | undefined): unknown {
  if (request === undefined) return undefined
  return {
    method: request.method,
    path: request.path,
    // JSON.parse keeps key order, so this compares the bodies as sent, key order included.
    body: JSON.stringify(request.body),
    contentType: request.headers['content-type'],
    apiKey: request.headers['x-goog-api-key'],
    serverTimeout: request.headers['x-server-timeout']
  }
}

/** Runs the same call through both clients, one after the other, each facing a fresh copy of `fault`. */
async function differential (t: Test, emulator: GeminiEmulator, clients: Clients, request: GenerationRequest, fault?: Fault): Promise<Outcome> {
  const outcomes: Outcome[] = []
  const recorded: RecordedRequest[] = []
  for (const name of ['sdk', 'rest'] as const) {
    if (fault !== undefined) emulator.addFault(fault, { match: request.prompt })
    const before = emulator.requests.length
    outcomes.push(await collect(clients[name], request))
    await emulator.waitForRequests(before + 1)
    const rec = emulator.requests[before]!
    await within(5000, rec.closed, 'the upstream request to close')
    recorded.push(rec)
  }
  t.same(outcomes[1], outcomes[0], 'same deltas, usage and error')
  t.same(wireView(recorded[1]), wireView(recorded[0]), 'same request on the wire')
  t.equal(recorded[1]!.clientClosedEarly, recorded[0]!.clientClosedEarly, 'same cancellation seen upstream')
  t.match(String(recorded[1]!.headers['user-agent']), /^amrikyy-gateway-rest\/\S+ gl-node\/v\d+/)
  return outcomes[0]!
}

t.test('same requests and answers without faults', async t => {
  const emulator = await startEmulator(t, PACE)
  const clients = clientsFor(t, emulator.url)

  const plain = await differential(t, emulator, clients, { model: 'gemini-2.0-flash-exp', prompt: 'Why is the sky blue?' })
  const answer = answerFor('Why is the sky blue?', undefined, PACE)
  t.same(plain.deltas.map(d => d.text), answer.deltas, 'the answer, delta by delta')
  t.same(plain.deltas.at(-1)?.usage, { promptTokens: 5, completionTokens: 30, totalTokens: 35 })
  t.equal(plain.deltas.at(-1)?.finishReason, 'STOP')
  t.equal(emulator.requests[0]?.path, '/v1/models/gemini-2.0-flash-exp:streamGenerateContent?alt=sse')
  t.equal(JSON.stringify(emulator.requests[0]?.body), '{"contents":[{"parts":[{"text":"Why is the sky blue?"}],"role":"user"}],"generationConfig":{}}')

  const options = { maxOutputTokens: 12, topK: 3, temperature: 0.4, topP: 0.9 }
  const limited = await differential(t, emulator, clients, { model: 'gemini-2.5-flash', prompt: 'Tell me about \u00e9t\u00e9 \ud83d\ude80 "quotes"', options })
  t.equal(limited.deltas.at(-1)?.finishReason, 'MAX_TOKENS')
  t.equal(JSON.stringify((emulator.requests.at(-1)?.body as { generationConfig: unknown }).generationConfig),
    '{"temperature":0.4,"topP":0.9,"topK":3,"maxOutputTokens":12}', 'the SDK\'s field order')

  await differential(t, emulator, clients, { model: 'models/gemini-2.5-pro', prompt: 'prefixed model name' })
  t.equal(emulator.requests.at(-1)?.path, '/v1/models/gemini-2.5-pro:streamGenerateContent?alt=sse')

  const conversation = {
    model: 'gemini-2.5-flash',
    prompt: 'and now?',
    system: 'Answer like a pirate',
    history: [{ role: 'user' as const, text: 'hi' }, { role: 'model' as const, text: 'ahoy' }],
    options: { temperature: 0.5, maxOutputTokens: 20, stopSequences: ['END'], seed: 7, presencePenalty: 0.5, frequencyPenalty: -0.5, responseMimeType: 'text/plain' as const }
  }
  await differential(t, emulator, clients, conversation)
  t.equal(JSON.stringify(emulator.requests.at(-1)?.body),
    '{"contents":[{"parts":[{"text":"hi"}],"role":"user"},{"parts":[{"text":"ahoy"}],"role":"model"},{"parts":[{"text":"and now?"}],"role":"user"}],' +
    '"systemInstruction":{"parts":[{"text":"Answer like a pirate"}],"role":"user"},' +
    '"generationConfig":{"temperature":0.5,"maxOutputTokens":20,"stopSequences":["END"],"presencePenalty":0.5,"frequencyPenalty":-0.5,"seed":7,"responseMimeType":"text/plain"}}',
    'a conversation, as the SDK sends it')

  await differential(t, emulator, clients, {
    model: 'gemini-2.5-flash',
    prompt: 'a JSON answer, thinking',
    options: {
      responseMimeType: 'application/json',
      responseSchema: { type: 'object', properties: { answer: { type: 'string' } }, required: ['answer'] },
      thinking: { budget: 128, includeThoughts: true },
      safetySettings: [{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_ONLY_HIGH' }, { category: 'HARM_CATEGORY_DANGEROUS_CONTENT', threshold: 'OFF' }]
    }
  })
  t.equal(JSON.stringify(emulator.requests.at(-1)?.body),
    '{"contents":[{"parts":[{"text":"a JSON answer, thinking"}],"role":"user"}],' +
    '"safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_ONLY_HIGH"},{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","threshold":"OFF"}],' +
    '"generationConfig":{"responseMimeType":"application/json","responseJsonSchema":{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"]},' +
    '"thinkingConfig":{"thinkingBudget":128,"includeThoughts":true}}}',
    'JSON mode, thinking and safety settings, as the SDK sends them')

  const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='
  const attachments = [{ mimeType: 'image/png' as const, data: png }, { mimeType: 'application/pdf' as const, data: 'JVBERi0xLjQK' }]
  const withFiles = await differential(t, emulator, clients, { model: 'gemini-2.5-flash', prompt: 'describe these', attachments })
  t.equal(JSON.stringify(emulator.requests.at(-1)?.body),
    `{"contents":[{"parts":[{"text":"describe these"},{"inlineData":{"mimeType":"image/png","data":"${png}"}},{"inlineData":{"mimeType":"application/pdf","data":"JVBERi0xLjQK"}}],"role":"user"}],"generationConfig":{}}`,
    'attachments after the prompt, as the SDK sends inlineData parts')
  t.equal(withFiles.deltas.at(-1)?.usage?.promptTokens, 2 + 258 + 258, 'the image and the one-page PDF counted')
  await differential(t, emulator, clients, { model: 'gemini-2.5-flash', prompt: 'and this?', history: [{ role: 'user', text: 'hi' }, { role: 'model', text: 'ahoy' }], attachments: attachments.slice(0, 1) })
  t.match(JSON.stringify(emulator.requests.at(-1)?.body), /^\{"contents":\[\{"parts":\[\{"text":"hi"\}\],"role":"user"\},\{"parts":\[\{"text":"ahoy"\}\],"role":"model"\},\{"parts":\[\{"text":"and this\?"\},\{"inlineData":/, 'only the new user turn carries them')
})

t.test('same requests and answers with tools, a tool choice and a whole conversation of calls, answers and files', async t => {
  const emulator = await startEmulator(t, PACE)
  const clients = clientsFor(t, emulator.url)
  const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='
  const weatherSchema = { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } }, required: ['city'] }
  const contents: ContentTurn[] = [
    { role: 'user', text: 'what is in this picture, and the weather there?', attachments: [{ mimeType: 'image/png', data: png }] },
    {
      role: 'model',
      text: 'Let me check.',
      functionCalls: [
        { id: 'call_1', name: 'get_weather', args: { city: 'Paris', unit: 'celsius' }, thoughtSignature: 'c2lnbmVkIGNhbGw=' },
        { name: 'getStockPrice', args: {} }
      ]
    },
    {
      role: 'user',
      text: '',
      functionResponses: [{ id: 'call_1', name: 'get_weather', response: { temperature: 21, sky: 'clear' } }, { name: 'getStockPrice', response: { price: 12.5 } }]
    },
    { role: 'model', text: 'It is 21 degrees and clear.' },
    { role: 'user', text: 'and tomorrow?' }
  ]
  const request: GenerationRequest = {
    model: 'gemini-2.5-flash',
    prompt: '',
    system: 'Use the tools',
    contents,
    tools: [
      { name: 'get_weather', description: 'Weather for a city', parameters: weatherSchema },
      { name: 'getStockPrice' }
    ],
    toolChoice: { mode: 'ANY', allowedFunctionNames: ['get_weather'] },
    options: { temperature: 0.2, safetySettings: [{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_ONLY_HIGH' }] }
  }
  const outcome = await differential(t, emulator, clients, request)
  t.equal(JSON.stringify(emulator.requests.at(-1)?.body),
    '{"contents":[' +
    `{"parts":[{"text":"what is in this picture, and the weather there?"},{"inlineData":{"mimeType":"image/png","data":"${png}"}}],"role":"user"},` +
    '{"parts":[{"text":"Let me check."},{"functionCall":{"args":{"city":"Paris","unit":"celsius"},"id":"call_1","name":"get_weather"},"thoughtSignature":"c2lnbmVkIGNhbGw="},' +
    '{"functionCall":{"args":{},"name":"getStockPrice"}}],"role":"model"},' +
    '{"parts":[{"functionResponse":{"id":"call_1","name":"get_weather","response":{"temperature":21,"sky":"clear"}}},{"functionResponse":{"name":"getStockPrice","response":{"price":12.5}}}],"role":"user"},' +
    '{"parts":[{"text":"It is 21 degrees and clear."}],"role":"model"},{"parts":[{"text":"and tomorrow?"}],"role":"user"}],' +
    '"systemInstruction":{"parts":[{"text":"Use the tools"}],"role":"user"},' +
    '"safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_ONLY_HIGH"}],' +
    `"tools":[{"functionDeclarations":[{"name":"get_weather","description":"Weather for a city","parametersJsonSchema":${JSON.stringify(weatherSchema)}},{"name":"getStockPrice"}]}],` +
    '"toolConfig":{"functionCallingConfig":{"allowedFunctionNames":["get_weather"],"mode":"ANY"}},' +
    '"generationConfig":{"temperature":0.2}}',
    'tools and toolConfig after safetySettings, each part\'s fields in the SDK\'s order, the signature on its part')
  t.match(outcome.deltas, [{ text: '', finishReason: 'STOP', functionCalls: [{ name: 'get_weather', args: { city: String } }] }], 'ANY calls the allowed function')

  const asked = await differential(t, emulator, clients, { ...request, tools: request.tools!.slice(1), toolChoice: { mode: 'NONE' } })
  t.equal(asked.deltas.flatMap(delta => delta.functionCalls ?? []).length, 0, 'NONE answers in text')
  t.match(JSON.stringify(emulator.requests.at(-1)?.body), /"tools":\[\{"functionDeclarations":\[\{"name":"getStockPrice"\}\]\}\],"toolConfig":\{"functionCallingConfig":\{"mode":"NONE"\}\},"generationConfig"/)

  const signal = new AbortController().signal
  const counts: number[] = []
  for (const name of ['sdk', 'rest'] as const) counts.push(await clients[name].countTokens('gemini-2.5-flash', contents, signal))
  t.equal(counts[1], counts[0], 'the same count for the conversation')
  t.same(wireView(emulator.requests.at(-1)), wireView(emulator.requests.at(-2)), 'the same conversation counted on the wire')
})

t.test('same errors and deltas for every upstream fault', async t => {
  const emulator = await startEmulator(t, PACE)
  const clients = clientsFor(t, emulator.url)
  const faults: Array<[string, Fault, (outcome: Outcome) => void]> = [
    ['429 before the stream', { kind: 'http-error', status: 429 }, o => t.match(o.error, { status: 429, recoverable: true })],
    ['400 with details', { kind: 'http-error', status: 400, body: { error: { code: 400, message: `bad key ${API_KEY}`, status: 'INVALID_ARGUMENT' } } },
      o => t.match(o.error, { status: 400, recoverable: false, message: 'bad key [redacted]' })],
    ['503 as text/plain (only Google\'s JSON shape is passed on)', { kind: 'http-error', status: 503, body: 'upstream overloaded', contentType: 'text/plain' },
      o => t.match(o.error, { status: 503, message: 'Gemini answered with status 503', retryable: true })],
    ['JSON error body that is not JSON', { kind: 'http-error', status: 500, body: 'not json', contentType: 'application/json' },
      o => t.match(o.error, { status: 500, message: 'Gemini answered with status 500', retryable: true })],
    ['HTML 502 page without end (read up to the cap, then the socket is closed)', { kind: 'huge-error', status: 502, prefix: '<html>proxy.internal' },
      o => t.match(o.error, { status: 502, message: 'Gemini answered with status 502' })],
    ['event without end after 2 chunks', { kind: 'huge-event', afterChunks: 2 },
      o => t.match(o, { deltas: { length: 2 }, error: { message: 'Gemini sent an event larger than 8388608 characters', code: 'too_large', recoverable: false } })],
    ['302 without Location (not an error status)', { kind: 'http-error', status: 302, body: 'moved', contentType: 'text/plain' },
      o => t.match(o.error, { status: undefined, recoverable: false, message: 'Gemini request failed' })],
    ['304 with an empty JSON body', { kind: 'http-error', status: 304, body: '' }, o => t.match(o.error, { status: undefined, message: 'Gemini request failed' })],
    ['error event after 2 chunks', { kind: 'stream-error', afterChunks: 2, code: 500 }, o => t.match(o, { deltas: { length: 2 }, error: { status: 500, recoverable: true } })],
    ['error event first', { kind: 'stream-error', afterChunks: 0, code: 429 }, o => t.match(o, { deltas: [], error: { status: 429 } })],
    ['error event with a non-error code', { kind: 'stream-error', afterChunks: 1, code: 200 }, o => t.match(o, { deltas: { length: 2 }, error: undefined })],
    ['socket drop after 3 chunks', { kind: 'drop', afterChunks: 3 }, o => t.match(o, { deltas: { length: 3 }, error: { code: 'network', message: 'Connection to Gemini failed', recoverable: true } })],
    ['socket drop before any chunk', { kind: 'drop', afterChunks: 0 }, o => t.match(o.error, { message: 'Connection to Gemini failed' })],
    ['malformed JSON event', { kind: 'malformed-json', afterChunks: 2 }, o => t.match(o, { deltas: { length: 2 }, error: { code: 'malformed', message: 'Gemini sent a malformed stream' } })],
    ['unterminated last event', { kind: 'unterminated', afterChunks: 3 }, o => t.match(o, { deltas: { length: 3 }, error: { code: 'malformed', message: 'Gemini sent a malformed stream' } })],
    ['[DONE] sentinel', { kind: 'done-sentinel' }, o => t.match(o, { deltas: { length: 6 }, error: { code: 'malformed', message: 'Gemini sent a malformed stream' } })],
    ['no usage', { kind: 'no-usage' }, o => t.equal(o.deltas.at(-1)?.usage, undefined)],
    ['blocked prompt', { kind: 'blocked' }, o => t.match(o.deltas, [{ text: '', blockReason: 'SAFETY' }])],
    ['non-text part', { kind: 'non-text-part' }, o => t.equal(o.deltas.length, 7)],
    ['empty 200', { kind: 'empty-200' }, o => t.same(o, { deltas: [] })]
  ]
  for (const [name, fault, check] of faults) {
    await t.test(name, async t => {
      const outcome = await differential(t, emulator, clients, { model: 'gemini-2.0-flash-exp', prompt: `fault: ${name}` }, fault)
      check(outcome)
    })
  }
})

t.test('same cancellation: an abort mid-stream closes the upstream connection', async t => {
  const emulator = await startEmulator(t, PACE)
  const clients = clientsFor(t, emulator.url)
  const results: Array<{ error: Outcome['error'], clientClosedEarly: boolean, chunksSent: number }> = []
  for (const name of ['sdk', 'rest'] as const) {
    emulator.addFault({ kind: 'stall', afterChunks: 2 }, { match: name })
    const controller = new AbortController()
    const iterator = await clients[name].streamGenerate({ model: 'gemini-2.0-flash-exp', prompt: `cancel ${name}` }, controller.signal)
    await iterator.next()
    await iterator.next()
    const pending = iterator.next()
    controller.abort()
    const error = await within(5000, pending.then(() => undefined, errorShape), 'the aborted read to settle')
    const rec = emulator.requests.at(-1)!
    await within(5000, rec.closed, 'the upstream to see the close')
    results.push({ error, clientClosedEarly: rec.clientClosedEarly, chunksSent: rec.chunksSent })
  }
  t.same(results[1], results[0])
  t.match(results[0], { error: { code: 'aborted', recoverable: true }, clientClosedEarly: true, chunksSent: 2 })
})

t.test('same cancellation before the response headers, and with a signal already aborted', async t => {
  const emulator = await startEmulator(t, PACE)
  const clients = clientsFor(t, emulator.url)
  const results: unknown[] = []
  for (const name of ['sdk', 'rest'] as const) {
    emulator.addFault({ kind: 'stall-headers' }, { match: name })
    const controller = new AbortController()
    const before = emulator.requests.length
    const started = clients[name].streamGenerate({ model: 'gemini-2.0-flash-exp', prompt: `headers ${name}` }, controller.signal)
    await emulator.waitForRequests(before + 1)
    controller.abort()
    const error = await within(5000, started.then(() => undefined, errorShape), 'the aborted call to settle')
    const rec = emulator.requests.at(-1)!
    await within(5000, rec.closed, 'the upstream to see the close')

    const preAborted = AbortSignal.abort()
    const count = emulator.requests.length
    const early = await clients[name].streamGenerate({ model: 'gemini-2.0-flash-exp', prompt: 'never sent' }, preAborted).then(() => undefined, errorShape)
    results.push({ error, clientClosedEarly: rec.clientClosedEarly, early, sentAfterAbort: emulator.requests.length - count })
  }
  t.same(results[1], results[0])
  t.match(results[0], { error: { code: 'aborted' }, clientClosedEarly: true, early: { code: 'aborted' }, sentAfterAbort: 0 })
})

t.test('same countTokens requests and results, and same client-side model checks', async t => {
  const emulator = await startEmulator(t, PACE)
  const clients = clientsFor(t, emulator.url)
  const signal = new AbortController().signal
  const counts: number[] = []
  for (const name of ['sdk', 'rest'] as const) counts.push(await clients[name].countTokens('gemini-2.0-flash-exp', 'four words right here', signal))
  t.same(counts, [4, 4])
  t.same(wireView(emulator.requests[1]), wireView(emulator.requests[0]))
  t.equal(emulator.requests[1]?.path, '/v1/models/gemini-2.0-flash-exp:countTokens')

  const turns = [{ role: 'user' as const, text: 'one two' }, { role: 'model' as const, text: 'three' }]
  const before = emulator.requests.length
  const turnCounts: number[] = []
  for (const name of ['sdk', 'rest'] as const) turnCounts.push(await clients[name].countTokens('gemini-2.0-flash-exp', turns, signal))
  t.equal(turnCounts[1], turnCounts[0], 'the same count for turns')
  t.same(wireView(emulator.requests[before + 1]), wireView(emulator.requests[before]), 'the same turns on the wire')
  t.equal(JSON.stringify(emulator.requests[before]?.body), '{"contents":[{"parts":[{"text":"one two"}],"role":"user"},{"parts":[{"text":"three"}],"role":"model"}]}')

  const withFile = [{ role: 'user' as const, text: 'one two', attachments: [{ mimeType: 'image/png' as const, data: 'iVBORw0KGgo=' }] }]
  const fileCounts: number[] = []
  for (const name of ['sdk', 'rest'] as const) fileCounts.push(await clients[name].countTokens('gemini-2.0-flash-exp', withFile, signal))
  t.same(fileCounts, [2 + 258, 2 + 258], 'the same count with a file')
  t.same(wireView(emulator.requests.at(-1)), wireView(emulator.requests.at(-2)), 'the same file on the wire')

  const invalid: unknown[] = []
  for (const name of ['sdk', 'rest'] as const) {
    invalid.push(await collect(clients[name], { model: '../escape', prompt: 'x' }))
    invalid.push(await clients[name].countTokens('a?b', 'x', signal).then(() => undefined, errorShape))
  }
  t.same(invalid.slice(2), invalid.slice(0, 2))
  t.match(invalid[0], { deltas: [], error: { message: 'Gemini request failed', recoverable: false } })
  t.equal(emulator.requests.length, 6, 'invalid model names never reach the wire')
})

t.test('same error when nothing listens at the base URL', async t => {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>(resolve => server.close(() => resolve()))
  const clients = clientsFor(t, `http://127.0.0.1:${port}`)
  const request = { model: 'gemini-2.0-flash-exp', prompt: 'anyone there?' }
  const outcomes = [await collect(clients.sdk, request), await collect(clients.rest, request)]
  t.same(outcomes[1], outcomes[0])
  t.match(outcomes[0], { deltas: [], error: { code: 'network', message: 'Connection to Gemini failed', recoverable: true } })
})

/** A server that answers every request with `body` written in pieces of `size` bytes. */
async function startScriptedServer (t: Test, body: Buffer, size: number): Promise<string> {
  const server = createServer((_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    let offset = 0
    const writeNext = (): void => {
      if (offset >= body.length) { res.end(); return }
      res.write(body.subarray(offset, offset + size))
      offset += size
      setTimeout(writeNext, 1)
    }
    writeNext()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

t.test('same deltas from a body split into 7-byte writes, with every framing the SDK accepts', async t => {
  const event = (text: string, last = false): string => JSON.stringify({
    candidates: [{ content: { parts: [{ text }], role: 'model' }, ...(last ? { finishReason: 'STOP' } : {}), index: 0 }],
    ...(last ? { usageMetadata: { promptTokenCount: 2, candidatesTokenCount: 5, totalTokenCount: 7 } } : {})
  })
  const body = Buffer.from(
    `data: ${event('caf\u00e9 ')}\r\n\r\n` +
    ': a comment line\n\n' +
    `data:${event('\ud83d\ude80 rocket ')}\n\n` +
    `event: ignored\ndata: ${event('dropped by the SDK')}\n\n` +
    `data: ${event('line\nbreak ')}\r\r` +
    `   data: ${event('Z\u00fcrich', true)}   \r\n\r\n`, 'utf8')
  const url = await startScriptedServer(t, body, 7)
  const clients = clientsFor(t, url)
  const request = { model: 'gemini-2.0-flash-exp', prompt: 'scripted' }
  const outcomes = [await collect(clients.sdk, request), await collect(clients.rest, request)]
  t.same(outcomes[1], outcomes[0])
  t.same(outcomes[0]?.deltas.map(d => d.text), ['caf\u00e9 ', '\ud83d\ude80 rocket ', 'line\nbreak ', 'Z\u00fcrich'])
})

t.test('the SSE splitter gives the same events however the text is cut', async t => {
  const events = ['{"a":1}', '{"b":"x\\ny"}', '{"c":"\u00e9\ud83d\ude80"}', '{"d":4}']
  const delimiters = ['\n\n', '\r\r', '\r\n\r\n']
  t.doesNotThrow(() => fc.assert(fc.property(
    fc.array(fc.constantFrom(...delimiters), { minLength: events.length, maxLength: events.length }),
    fc.array(fc.nat(), { maxLength: 12 }),
    (chosen, cuts) => {
      const text = events.map((e, i) => `data: ${e}${chosen[i]!}`).join('')
      const points = [...new Set(cuts.map(c => c % (text.length + 1)))].sort((a, b) => a - b)
      const splitter = new SseSplitter()
      const got: string[] = []
      let from = 0
      for (const point of [...points, text.length]) {
        got.push(...splitter.push(text.slice(from, point)))
        from = point
      }
      return JSON.stringify(got) === JSON.stringify(events) && !splitter.hasUnterminatedEvent
    }
  )), 'every cut of the text gave the same events')
  const splitter = new SseSplitter()
  t.same(splitter.push('data: {"x":1}\r\n\r\ndata: {"y"'), ['{"x":1}'])
  t.equal(splitter.hasUnterminatedEvent, true, 'a partial event waits for its delimiter')
})

t.test('the emulator sees the REST client reuse its keep-alive connections', async t => {
  const emulator = await startEmulator(t, PACE)
  const { rest } = clientsFor(t, emulator.url)
  for (let i = 0; i < 3; i++) await collect(rest, { model: 'gemini-2.0-flash-exp', prompt: `sequential ${i}` })
  await waitUntil(() => emulator.requests.every(r => r.finished), 2000, 'all streams to finish')
  t.equal(emulator.requests.length, 3)
  t.ok(emulator.requests.every(r => r.finished && !r.clientClosedEarly))
})

t.test('Retry-After is read in seconds or as an HTTP date', async t => {
  const now = Date.parse('2026-11-29T10:00:00Z')
  t.equal(retryAfterMs('7', now), 7000)
  t.equal(retryAfterMs(['2'], now), 2000)
  t.equal(retryAfterMs('Sun, 29 Nov 2026 10:00:30 GMT', now), 30_000)
  t.equal(retryAfterMs('Sun, 29 Nov 2026 09:59:00 GMT', now), 0, 'a date in the past means now')
  t.equal(retryAfterMs('soon', now), undefined)
  t.equal(retryAfterMs(undefined, now), undefined)
})
