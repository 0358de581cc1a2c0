// The Gemini emulator, driven by the real @google/genai SDK and raw HTTP over loopback sockets.

import t from 'tap'
import { Agent, request as httpRequest } from 'node:http'
import { ApiError, GoogleGenAI, Type, type GenerateContentResponse } from '@google/genai'
import {
  GeminiEmulator,
  answerFor,
  conversationOf,
  countTokens,
  type EmulatorOptions,
  type RecordedRequest
} from '../emulator/server.js'

const MODEL = 'gemini-2.0-flash'
const PACE = { chunkCount: 8, defaultMaxTokens: 64 }

async function startEmulator (t: { teardown: (fn: () => unknown) => void }, options: EmulatorOptions = {}): Promise<GeminiEmulator> {
  const emulator = await GeminiEmulator.start({ recordRequests: 10_000, ...options })
  t.teardown(() => emulator.close())
  return emulator
}

function sdk (emulator: GeminiEmulator, apiVersion?: string): GoogleGenAI {
  return new GoogleGenAI({ apiKey: 'k', ...(apiVersion ? { apiVersion } : {}), httpOptions: { baseUrl: emulator.url } })
}

/** Text of a chunk's first part, without the SDK's .text getter (which warns on non-text parts). */
function partText (chunk: GenerateContentResponse): string | undefined {
  return chunk.candidates?.[0]?.content?.parts?.[0]?.text
}

async function collect (stream: AsyncGenerator<GenerateContentResponse>): Promise<{ chunks: GenerateContentResponse[]; error: unknown }> {
  const chunks: GenerateContentResponse[] = []
  try {
    for await (const chunk of stream) chunks.push(chunk)
  } catch (error) {
    return { chunks, error }
  }
  return { chunks, error: undefined }
}

async function streamOf (emulator: GeminiEmulator, prompt: string): Promise<{ chunks: GenerateContentResponse[]; error: unknown }> {
  return await collect(await sdk(emulator).models.generateContentStream({ model: MODEL, contents: prompt }))
}

/** Rejects when the promise does not settle within ms. */
async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

async function rawPost (emulator: GeminiEmulator, path: string, body: string, headers: Record<string, string> = { 'x-goog-api-key': 'k' }): Promise<Response> {
  return await fetch(emulator.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
}

const userPrompt = (text: string): string => JSON.stringify({ contents: [{ parts: [{ text }], role: 'user' }] })

t.test('answerFor is deterministic, word-counted and carries framing-hostile characters', async t => {
  const a = answerFor('Why is the sky blue?', undefined, PACE)
  const text = a.deltas.join('')
  t.equal(a.deltas.length, 8)
  t.equal(a.promptTokens, 5)
  t.equal(a.completionTokens, 64)
  t.equal(text.split(/\s+/).length, 64)
  t.equal(a.finishReason, 'STOP')
  t.strictSame(answerFor('Why is the sky blue?', undefined, PACE), a, 'same inputs, same answer')
  t.not(answerFor('Why is the sea blue?', undefined, PACE).deltas.join(''), text, 'different prompt, different text')
  t.not(answerFor('Why is the sky blue?', { temperature: 0.5 }, PACE).deltas.join(''), text, 'temperature changes the text')
  t.ok(text.includes('\n'), 'a newline')
  t.ok(text.includes('\n\n'), 'a blank line (an SSE delimiter if a gateway forgets to escape)')
  t.ok(text.includes('"'), 'a double quote')
  t.ok(text.includes('\\'), 'a backslash')
  t.ok(/[^\p{ASCII}]/u.test(text), 'non-ASCII')
  t.ok(/\p{Extended_Pictographic}/u.test(text), 'an emoji')
  t.equal(text.trim(), text, 'no leading or trailing whitespace')
  for (const delta of a.deltas.slice(1)) t.match(delta, /^\s+\S/, 'each later delta starts with the separator before its first word')

  const five = answerFor('hi', { maxOutputTokens: 5 }, PACE)
  t.equal(five.deltas.length, 5, 'fewer words than chunkCount: one word per event')
  t.equal(five.deltas.join('').split(/\s+/).length, 5)
  t.equal(five.completionTokens, 5)
  t.equal(five.finishReason, 'MAX_TOKENS')
  for (const ch of ['"', '\n', '\\']) t.ok(five.deltas.join('').includes(ch), `a 5-word answer still has ${JSON.stringify(ch)}`)

  const capped = answerFor('hi', { maxOutputTokens: 10_000 }, { chunkCount: 3, defaultMaxTokens: 64 })
  t.equal(capped.completionTokens, 4096)
  t.equal(capped.deltas.join('').split(/\s+/).length, 4096)
  t.strictSame(capped.deltas.map(d => d.trim().split(/\s+/).length), [1366, 1365, 1365])
  t.equal(capped.finishReason, 'STOP', 'the 4096 cap is not maxOutputTokens')

  t.equal(countTokens(''), 0)
  t.equal(countTokens('   '), 1, 'a non-empty prompt is at least one token')
  t.equal(countTokens(' one  two\nthree\t'), 3)
})

t.test('SDK stream, default apiVersion (v1) and v1beta: deltas, finishReason, cumulative usage', async t => {
  const emulator = await startEmulator(t)
  for (const apiVersion of [undefined, 'v1beta']) {
    const prompt = `Why is the sky blue? (${apiVersion ?? 'default'})`
    const expected = answerFor(prompt, undefined, PACE)
    const { chunks, error } = await collect(await sdk(emulator, apiVersion).models.generateContentStream({ model: MODEL, contents: prompt }))
    t.equal(error, undefined)
    t.strictSame(chunks.map(c => c.text), expected.deltas, 'each chunk is one delta')
    t.strictSame(chunks.map(c => c.candidates?.[0]?.finishReason), [...Array(7).fill(undefined), 'STOP'])
    t.strictSame(chunks.map(c => c.candidates?.[0]?.content?.role), Array(8).fill('model'))
    t.strictSame(chunks.map(c => c.candidates?.[0]?.index), Array(8).fill(0))
    const last = chunks.at(-1)!
    t.strictSame({ ...last.usageMetadata }, { promptTokenCount: 6, candidatesTokenCount: 64, totalTokenCount: 70 })
    t.strictSame(chunks.map(c => c.usageMetadata?.candidatesTokenCount), [8, 16, 24, 32, 40, 48, 56, 64])
    t.equal(new Set(chunks.map(c => c.responseId)).size, 1, 'one responseId')
    t.match(last.responseId, /^[A-Za-z0-9_-]{22}$/)
    t.strictSame(chunks.map(c => c.modelVersion), Array(8).fill(MODEL))
    t.equal(last.sdkHttpResponse?.headers?.['content-type'], 'text/event-stream')
  }
  t.strictSame(emulator.requests.map(r => r.path), [
    `/v1/models/${MODEL}:streamGenerateContent?alt=sse`,
    `/v1beta/models/${MODEL}:streamGenerateContent?alt=sse`
  ])
  t.strictSame(emulator.requests.map(r => [r.rpc, r.model, r.apiVersion, r.status, r.finished, r.clientClosedEarly, r.chunksSent]), [
    ['streamGenerateContent', MODEL, 'v1', 200, true, false, 8],
    ['streamGenerateContent', MODEL, 'v1beta', 200, true, false, 8]
  ])
  const first = emulator.requests[0]!
  t.equal(first.headers['x-goog-api-key'], 'k')
  t.equal(first.headers['user-agent'], `google-genai-sdk/3.3.0 gl-node/${process.version}`)
  t.equal(first.prompt, 'Why is the sky blue? (default)')
  t.strictSame(first.body, { contents: [{ parts: [{ text: 'Why is the sky blue? (default)' }], role: 'user' }] })
  t.equal(emulator.openStreams(), 0)
})

t.test('raw HTTP shows the exact SSE framing', async t => {
  const emulator = await startEmulator(t)
  const res = await rawPost(emulator, '/v1beta/models/models/gemini-2.0-flash:streamGenerateContent', userPrompt('frame me'))
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'text/event-stream')
  const body = await res.text()
  const expected = answerFor('frame me', undefined, PACE)
  t.ok(body.endsWith('}\r\n\r\n'))
  t.notMatch(body, /\[DONE\]|^event:/m)
  const events = body.split('\r\n\r\n')
  t.equal(events.pop(), '', 'nothing after the last delimiter')
  t.equal(events.length, 8)
  const parsed = events.map(e => {
    t.match(e, /^data: \{[^\r\n]*\}$/, 'one single-line data: field per event')
    return JSON.parse(e.slice('data: '.length)) as { responseId: string }
  })
  const responseId = parsed[0]!.responseId
  t.strictSame(parsed[0], {
    candidates: [{ content: { parts: [{ text: expected.deltas[0] }], role: 'model' }, index: 0 }],
    usageMetadata: { promptTokenCount: 2, candidatesTokenCount: 8, totalTokenCount: 10 },
    modelVersion: 'gemini-2.0-flash',
    responseId
  })
  t.strictSame(parsed[7], {
    candidates: [{ content: { parts: [{ text: expected.deltas[7] }], role: 'model' }, finishReason: 'STOP', index: 0 }],
    usageMetadata: { promptTokenCount: 2, candidatesTokenCount: 64, totalTokenCount: 66 },
    modelVersion: 'gemini-2.0-flash',
    responseId
  })
  t.equal(emulator.requests[0]!.model, 'gemini-2.0-flash', 'a doubled models/ prefix is tolerated')
})

t.test('determinism and generationConfig through the SDK', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const textOf = async (contents: string, config?: Record<string, unknown>): Promise<{ text: string; last: GenerateContentResponse }> => {
    const { chunks, error } = await collect(await ai.models.generateContentStream({ model: MODEL, contents, ...(config ? { config } : {}) }))
    t.equal(error, undefined)
    return { text: chunks.map(c => c.text).join(''), last: chunks.at(-1)! }
  }
  const a1 = await textOf('same prompt')
  const a2 = await textOf('same prompt')
  const b = await textOf('other prompt')
  t.equal(a1.text, a2.text)
  t.not(a1.text, b.text)

  const config = { temperature: 0.2, topP: 0.9, topK: 40, maxOutputTokens: 5, systemInstruction: 'Be terse.' }
  const short = await textOf('count to five', config)
  t.equal(short.text, answerFor({ system: 'Be terse.', turns: [{ role: 'user', text: 'count to five' }] }, config, PACE).deltas.join(''))
  t.equal(short.text.split(/\s+/).length, 5)
  t.equal(short.last.candidates?.[0]?.finishReason, 'MAX_TOKENS')
  t.strictSame({ ...short.last.usageMetadata }, { promptTokenCount: 5, candidatesTokenCount: 5, totalTokenCount: 10 }, 'the system instruction counts')
  t.strictSame(emulator.requests[3]!.body, {
    contents: [{ parts: [{ text: 'count to five' }], role: 'user' }],
    systemInstruction: { parts: [{ text: 'Be terse.' }], role: 'user' },
    generationConfig: { temperature: 0.2, topP: 0.9, topK: 40, maxOutputTokens: 5 }
  })
})

t.test('multi-turn: the record joins every text part, the answer and the prompt tokens follow every turn', async t => {
  const emulator = await startEmulator(t)
  const contents = [
    { role: 'user', parts: [{ text: 'first question' }] },
    { role: 'model', parts: [{ text: 'an answer' }] },
    { role: 'user', parts: [{ text: 'second' }, { text: 'part' }] }
  ]
  const { chunks } = await collect(await sdk(emulator).models.generateContentStream({ model: `models/${MODEL}`, contents }))
  t.equal(emulator.requests[0]!.prompt, 'first question\nan answer\nsecond\npart')
  t.equal(emulator.requests[0]!.model, MODEL)
  const conversation = conversationOf(emulator.requests[0]!.body)
  t.strictSame(conversation, { turns: [{ role: 'user', text: 'first question' }, { role: 'model', text: 'an answer' }, { role: 'user', text: 'second\npart' }] })
  t.equal(chunks.map(c => c.text).join(''), answerFor(conversation, undefined, PACE).deltas.join(''))
  t.not(chunks.map(c => c.text).join(''), answerFor('second\npart', undefined, PACE).deltas.join(''), 'the earlier turns change the answer')
  t.equal(chunks.at(-1)!.usageMetadata?.promptTokenCount, 6)
})

t.test('generateContent, countTokens and models.list through the SDK', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const res = await ai.models.generateContent({ model: MODEL, contents: 'unary please', config: { maxOutputTokens: 12 } })
  const expected = answerFor('unary please', { maxOutputTokens: 12 }, PACE)
  t.equal(res.text, expected.deltas.join(''))
  t.equal(res.candidates?.[0]?.finishReason, 'MAX_TOKENS')
  t.strictSame({ ...res.usageMetadata }, { promptTokenCount: 2, candidatesTokenCount: 12, totalTokenCount: 14 })
  t.equal(res.modelVersion, MODEL)

  const count = await ai.models.countTokens({ model: MODEL, contents: 'one two three four' })
  t.equal(count.totalTokens, 4)

  const pager = await ai.models.list({ config: { pageSize: 3 } })
  const names: string[] = []
  for await (const m of pager) names.push(m.name ?? '')
  t.strictSame(names, ['models/gemini-2.5-pro', 'models/gemini-2.5-flash', 'models/gemini-2.0-flash', 'models/gemini-2.0-flash-exp', 'models/gemini-2.0-flash-lite'])
  t.strictSame(pager.page.map(m => m.supportedActions), [['generateContent', 'countTokens'], ['generateContent', 'countTokens']])

  t.strictSame(emulator.requests.map(r => [r.method, r.path, r.rpc, r.status]), [
    ['POST', `/v1/models/${MODEL}:generateContent`, 'generateContent', 200],
    ['POST', `/v1/models/${MODEL}:countTokens`, 'countTokens', 200],
    ['GET', '/v1/models?pageSize=3', 'list', 200],
    ['GET', '/v1/models?pageSize=3&pageToken=page-3', 'list', 200]
  ])
  t.strictSame(emulator.requests[1]!.body, { contents: [{ parts: [{ text: 'one two three four' }], role: 'user' }] })
})

t.test('Google-style errors: unknown path, bad JSON, missing and wrong API key', async t => {
  const emulator = await startEmulator(t, { apiKey: 'right' })
  const notFound = await rawPost(emulator, '/v1beta/nothing/here', '{}', { 'x-goog-api-key': 'right' })
  t.equal(notFound.status, 404)
  t.equal(notFound.headers.get('content-type'), 'application/json; charset=UTF-8')
  t.strictSame(await notFound.json(), { error: { code: 404, message: 'Method or path not found: POST /v1beta/nothing/here', status: 'NOT_FOUND' } })

  const badJson = await rawPost(emulator, `/v1beta/models/${MODEL}:streamGenerateContent`, '{"contents": [', { 'x-goog-api-key': 'right' })
  t.equal(badJson.status, 400)
  t.match(await badJson.json(), { error: { code: 400, status: 'INVALID_ARGUMENT', message: /^Invalid JSON payload received\./ } })

  const noContents = await rawPost(emulator, `/v1beta/models/${MODEL}:generateContent`, '{}', { 'x-goog-api-key': 'right' })
  t.strictSame(await noContents.json(), { error: { code: 400, message: '* GenerateContentRequest.contents: contents is not specified', status: 'INVALID_ARGUMENT' } })

  const noKey = await rawPost(emulator, `/v1beta/models/${MODEL}:streamGenerateContent`, userPrompt('x'), {})
  t.equal(noKey.status, 403)
  t.match(await noKey.json(), { error: { code: 403, status: 'PERMISSION_DENIED' } })

  const wrong = await sdk(emulator).models.generateContentStream({ model: MODEL, contents: 'x' }).then(() => undefined, (e: unknown) => e)
  t.ok(wrong instanceof ApiError)
  t.equal((wrong as ApiError).status, 400)
  t.match(JSON.parse((wrong as ApiError).message), {
    error: { code: 400, status: 'INVALID_ARGUMENT', message: 'API key not valid. Please pass a valid API key.', details: [{ reason: 'API_KEY_INVALID' }] }
  })

  const ok = await new GoogleGenAI({ apiKey: 'right', httpOptions: { baseUrl: emulator.url } }).models.countTokens({ model: MODEL, contents: 'a b' })
  t.equal(ok.totalTokens, 2)
  t.strictSame(emulator.requests.map(r => r.status), [404, 400, 400, 403, 400, 200])
})

t.test('faults as the SDK sees them', async t => {
  const emulator = await startEmulator(t)
  const full = (prompt: string): string[] => answerFor(prompt, undefined, PACE).deltas

  t.test('http-error: the await rejects with ApiError', async t => {
    emulator.addFault({ kind: 'http-error', status: 429 })
    const err = await sdk(emulator).models.generateContentStream({ model: MODEL, contents: 'p' }).then(() => undefined, (e: unknown) => e)
    t.ok(err instanceof ApiError)
    t.equal((err as ApiError).status, 429)
    t.strictSame(JSON.parse((err as ApiError).message), { error: { code: 429, message: 'Resource has been exhausted (e.g. check quota).', status: 'RESOURCE_EXHAUSTED' } })
    t.equal(emulator.requests.at(-1)!.status, 429)

    emulator.addFault({ kind: 'http-error', status: 503, body: 'upstream overloaded', contentType: 'text/plain', headers: { 'retry-after': '7' } })
    const raw = await rawPost(emulator, `/v1beta/models/${MODEL}:streamGenerateContent`, userPrompt('p'))
    t.equal(raw.status, 503)
    t.equal(raw.headers.get('retry-after'), '7')
    t.equal(await raw.text(), 'upstream overloaded')
  })

  t.test('stream-error after 2 chunks: 2 chunks then ApiError', async t => {
    emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 500 })
    const { chunks, error } = await streamOf(emulator, 'p')
    t.strictSame(chunks.map(c => c.text), full('p').slice(0, 2))
    t.ok(error instanceof ApiError)
    t.equal((error as ApiError).status, 500)
    const body = '{"error":{"code":500,"message":"An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting","status":"INTERNAL"}}'
    t.equal((error as ApiError).message, `got status: INTERNAL. ${body}`)
    t.equal(emulator.requests.at(-1)!.chunksSent, 2)
  })

  t.test('drop after 2 chunks: TypeError terminated', async t => {
    emulator.addFault({ kind: 'drop', afterChunks: 2 })
    const before = emulator.requests.length
    const { chunks, error } = await streamOf(emulator, 'p')
    t.strictSame(chunks.map(c => c.text), full('p').slice(0, 2))
    t.ok(error instanceof TypeError)
    t.equal((error as Error).message, 'terminated')
    const rec = emulator.requests.at(-1)!
    await rec.closed
    t.strictSame([rec.finished, rec.clientClosedEarly, rec.chunksSent], [false, false, 2])
    t.equal(emulator.requests.length, before + 1, 'no continuation hop (no continuationToken is ever sent)')
  })

  t.test('drop after 0 chunks: headers went out, so still terminated', async t => {
    emulator.addFault({ kind: 'drop', afterChunks: 0 })
    const { chunks, error } = await streamOf(emulator, 'p')
    t.equal(chunks.length, 0)
    t.equal((error as Error).message, 'terminated')
  })

  t.test('malformed-json: SyntaxError after the good chunks', async t => {
    emulator.addFault({ kind: 'malformed-json', afterChunks: 3 })
    const { chunks, error } = await streamOf(emulator, 'p')
    t.equal(chunks.length, 3)
    t.ok(error instanceof SyntaxError)
  })

  t.test('unterminated: Incomplete JSON segment', async t => {
    emulator.addFault({ kind: 'unterminated', afterChunks: 1 })
    const { chunks, error } = await streamOf(emulator, 'p')
    t.strictSame(chunks.map(c => c.text), full('p').slice(0, 1))
    t.equal((error as Error).message, 'Incomplete JSON segment at the end')
  })

  t.test('done-sentinel: every chunk, then SyntaxError', async t => {
    emulator.addFault({ kind: 'done-sentinel' })
    const { chunks, error } = await streamOf(emulator, 'p')
    t.strictSame(chunks.map(c => c.text), full('p'))
    t.ok(error instanceof SyntaxError)
    t.match((error as Error).message, /\[DONE\]/)
  })

  t.test('blocked: one chunk with promptFeedback and no text', async t => {
    emulator.addFault({ kind: 'blocked' })
    const { chunks, error } = await streamOf(emulator, 'bad words here')
    t.equal(error, undefined)
    t.equal(chunks.length, 1)
    t.equal(chunks[0]!.promptFeedback?.blockReason, 'SAFETY')
    t.equal(chunks[0]!.candidates, undefined)
    t.equal(chunks[0]!.text, undefined)
    t.strictSame({ ...chunks[0]!.usageMetadata }, { promptTokenCount: 3, totalTokenCount: 3 })
  })

  t.test('no-usage: the whole text, no usageMetadata anywhere', async t => {
    emulator.addFault({ kind: 'no-usage' })
    const { chunks, error } = await streamOf(emulator, 'p')
    t.equal(error, undefined)
    t.strictSame(chunks.map(c => c.text), full('p'))
    t.strictSame(chunks.map(c => c.usageMetadata), Array(8).fill(undefined))
  })

  t.test('non-text-part: a functionCall event among the text events', async t => {
    emulator.addFault({ kind: 'non-text-part' })
    const { chunks, error } = await streamOf(emulator, 'p')
    t.equal(error, undefined)
    t.equal(chunks.length, 9)
    t.strictSame(chunks[1]!.functionCalls, [{ name: 'lookup', args: {} }])
    t.strictSame(chunks.filter((_c, i) => i !== 1).map(partText), full('p'))
    t.equal(chunks[8]!.candidates?.[0]?.finishReason, 'STOP')
  })

  t.test('empty-200: zero chunks, no error', async t => {
    emulator.addFault({ kind: 'empty-200' })
    const { chunks, error } = await streamOf(emulator, 'p')
    t.equal(error, undefined)
    t.equal(chunks.length, 0)
    t.equal(emulator.requests.at(-1)!.status, 200)
  })

  t.test('unary generateContent: http-error and stream-error become ApiErrors, blocked has promptFeedback', async t => {
    const ai = sdk(emulator)
    emulator.addFault({ kind: 'http-error', status: 500 })
    emulator.addFault({ kind: 'stream-error', afterChunks: 1, code: 503 })
    emulator.addFault({ kind: 'blocked' })
    for (const status of [500, 503]) {
      const err = await ai.models.generateContent({ model: MODEL, contents: 'u' }).then(() => undefined, (e: unknown) => e)
      t.equal((err as ApiError).status, status)
    }
    const blocked = await ai.models.generateContent({ model: MODEL, contents: 'u' })
    t.equal(blocked.promptFeedback?.blockReason, 'SAFETY')
    t.equal(blocked.text, undefined)
  })

  t.test('every applied fault is recorded', async t => {
    t.strictSame(emulator.requests.map(r => r.fault?.kind), [
      'http-error', 'http-error', 'stream-error', 'drop', 'drop', 'malformed-json', 'unterminated', 'done-sentinel',
      'blocked', 'no-usage', 'non-text-part', 'empty-200', 'http-error', 'stream-error', 'blocked'
    ])
  })
})

t.test('addFault: match, times, FIFO order, rpc, clearFaults', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const status = async (prompt: string, rpc: 'stream' | 'unary' = 'stream'): Promise<number> => {
    try {
      if (rpc === 'unary') await ai.models.generateContent({ model: MODEL, contents: prompt })
      else await collect(await ai.models.generateContentStream({ model: MODEL, contents: prompt }))
      return 200
    } catch (e) {
      return (e as ApiError).status
    }
  }
  emulator.addFault({ kind: 'http-error', status: 500 }, { match: 'boom', times: 2 })
  emulator.addFault({ kind: 'http-error', status: 429 }, { match: /^rate/ })
  emulator.addFault({ kind: 'http-error', status: 503 })
  t.equal(await status('no match'), 503, 'the first matching entry in FIFO order: the catch-all')
  t.equal(await status('a boom b'), 500)
  t.equal(await status('rate limited'), 429)
  t.equal(await status('rate limited'), 200, 'times defaults to 1')
  t.equal(await status('boom again'), 500)
  t.equal(await status('boom third'), 200, 'times: 2 is used up')

  emulator.addFault({ kind: 'http-error', status: 400 }, { times: Infinity, rpc: 'generateContent' })
  t.equal(await status('x'), 200, 'a generateContent-only fault leaves streams alone')
  t.equal(await status('x', 'unary'), 400)
  t.equal(await status('y', 'unary'), 400)
  t.equal(await status('z', 'unary'), 400, 'Infinity never runs out')
  emulator.clearFaults()
  t.equal(await status('z', 'unary'), 200)
  t.throws(() => emulator.addFault({ kind: 'drop', afterChunks: -1 }), /afterChunks must be an integer >= 0/)
  t.throws(() => emulator.addFault({ kind: 'blocked' }, { times: 0 }), /times must be a positive integer or Infinity/)

  emulator.reset()
  t.equal(emulator.requests.length, 0)
  await emulator.waitForRequests(0)
  await t.rejects(emulator.waitForRequests(1, 50), /waitForRequests: 0 of 1 requests after 50 ms/)
})

t.test('cancellation: abort after the first chunk closes the upstream request', async t => {
  const emulator = await startEmulator(t, { chunkDelayMs: 100 })
  const controller = new AbortController()
  const stream = await sdk(emulator).models.generateContentStream({ model: MODEL, contents: 'cancel me', config: { abortSignal: controller.signal } })
  const first = await stream.next()
  t.equal(first.done, false)
  t.equal(emulator.openStreams(), 1)
  const abortedAt = performance.now()
  controller.abort()
  const next = await within(stream.next().then(() => undefined, (e: unknown) => e), 1000, 'next() after abort')
  t.equal((next as Error).name, 'AbortError')
  const rec = emulator.requests[0]!
  await within(rec.closed, 1000, 'recorded closed')
  t.ok(rec.endedAt! - abortedAt < 1000)
  t.strictSame([rec.clientClosedEarly, rec.finished, rec.status], [true, false, 200])
  t.ok(rec.chunksSent >= 1 && rec.chunksSent < 8, `stopped early (${rec.chunksSent} chunks)`)
  t.equal(emulator.openStreams(), 0)
  const sent = rec.chunksSent
  await new Promise(resolve => setTimeout(resolve, 250))
  t.equal(rec.chunksSent, sent, 'nothing more is generated after the client left')
})

t.test('stall-headers then abort: closed early, no status', async t => {
  const emulator = await startEmulator(t)
  emulator.addFault({ kind: 'stall-headers' })
  const controller = new AbortController()
  const pending = sdk(emulator).models.generateContentStream({ model: MODEL, contents: 'wait', config: { abortSignal: controller.signal } })
  const settled = pending.then(() => undefined, (e: unknown) => e)
  await emulator.waitForRequests(1)
  t.equal(emulator.openStreams(), 1)
  controller.abort()
  t.equal(((await within(settled, 1000, 'the await')) as Error).name, 'AbortError')
  const rec = emulator.requests[0]!
  await within(rec.closed, 1000, 'recorded closed')
  t.strictSame([rec.clientClosedEarly, rec.finished, rec.status, rec.chunksSent], [true, false, undefined, 0])
  t.equal(emulator.openStreams(), 0)

  emulator.addFault({ kind: 'stall-headers', ms: 120 })
  const started = performance.now()
  const { chunks } = await streamOf(emulator, 'p')
  t.ok(performance.now() - started >= 110, 'headers held back for ms')
  t.equal(chunks.length, 8)
})

t.test('stall: pauses after afterChunks until releaseStalls, then completes', async t => {
  const emulator = await startEmulator(t)
  emulator.addFault({ kind: 'stall', afterChunks: 2 })
  const stream = await sdk(emulator).models.generateContentStream({ model: MODEL, contents: 'stall me' })
  const texts: string[] = []
  texts.push((await stream.next()).value!.text!)
  texts.push((await stream.next()).value!.text!)
  const third = stream.next()
  const early = await Promise.race([third.then(() => 'chunk'), new Promise(resolve => setTimeout(resolve, 150, 'stalled'))])
  t.equal(early, 'stalled')
  t.equal(emulator.requests[0]!.chunksSent, 2)
  emulator.releaseStalls()
  texts.push((await third).value!.text!)
  for await (const chunk of stream) texts.push(chunk.text!)
  t.strictSame(texts, answerFor('stall me', undefined, PACE).deltas)
  await emulator.requests[0]!.closed
  t.strictSame([emulator.requests[0]!.finished, emulator.requests[0]!.chunksSent], [true, 8])

  emulator.addFault({ kind: 'stall', afterChunks: 0, ms: 120 })
  const started = performance.now()
  const { chunks } = await streamOf(emulator, 'p')
  t.ok(performance.now() - started >= 110)
  t.equal(chunks.length, 8)
})

t.test('pace: chunkCount and chunkDelayMs, setPace and reset', async t => {
  const emulator = await startEmulator(t, { chunkCount: 3, chunkDelayMs: 0, defaultMaxTokens: 10 })
  t.equal((await streamOf(emulator, 'p')).chunks.length, 3)
  emulator.setPace({ chunkCount: 5, chunkDelayMs: 30 })
  const started = performance.now()
  const { chunks } = await streamOf(emulator, 'p')
  t.strictSame(chunks.map(c => c.text), answerFor('p', undefined, { chunkCount: 5, defaultMaxTokens: 10 }).deltas)
  t.ok(performance.now() - started >= 4 * 30 - 5, '4 delays between 5 events')
  emulator.reset()
  t.equal((await streamOf(emulator, 'p')).chunks.length, 3)
  t.throws(() => emulator.setPace({ chunkCount: 0 }), /chunkCount must be a positive integer/)
})

t.test('keep-alive: several requests over one socket', async t => {
  const emulator = await startEmulator(t)
  for (const prompt of ['one', 'two', 'three']) {
    const { chunks, error } = await streamOf(emulator, prompt)
    t.equal(error, undefined)
    t.equal(chunks.map(c => c.text).join(''), answerFor(prompt, undefined, PACE).deltas.join(''))
  }
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const localPorts: number[] = []
  for (const prompt of ['a', 'b', 'c']) {
    const body = await new Promise<string>((resolve, reject) => {
      const req = httpRequest(`${emulator.url}/v1/models/gemini-2.0-flash:streamGenerateContent?alt=sse`, {
        method: 'POST', agent, headers: { 'X-Goog-Api-Key': 'k', 'content-type': 'application/json' }
      }, res => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => { text += d })
        res.on('end', () => resolve(text))
      })
      req.on('error', reject)
      req.end(userPrompt(prompt), () => localPorts.push(req.socket?.localPort ?? -1))
    })
    t.equal(body.split('\r\n\r\n').length, 9)
  }
  t.equal(new Set(localPorts).size, 1, 'one socket for all three requests')
  t.equal(emulator.requests.slice(-3).every(r => r.headers['x-goog-api-key'] === 'k'), true, 'header names are case-insensitive')
})

t.test('X-Server-Timeout ends a request with DEADLINE_EXCEEDED', async t => {
  const emulator = await startEmulator(t, { chunkDelayMs: 100 })
  emulator.addFault({ kind: 'stall-headers' })
  const before = await rawPost(emulator, `/v1beta/models/${MODEL}:streamGenerateContent`, userPrompt('p'), { 'x-goog-api-key': 'k', 'X-Server-Timeout': '0.1' })
  t.equal(before.status, 504)
  t.strictSame(await before.json(), { error: { code: 504, message: 'Deadline expired before operation could complete.', status: 'DEADLINE_EXCEEDED' } })

  const during = await rawPost(emulator, `/v1beta/models/${MODEL}:streamGenerateContent`, userPrompt('p'), { 'x-goog-api-key': 'k', 'X-Server-Timeout': '0.25' })
  t.equal(during.status, 200)
  const events = (await during.text()).split('\r\n\r\n')
  t.equal(events.pop(), '')
  t.equal(events.pop(), 'data: {"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}}')
  const rec = emulator.requests[1]!
  t.ok(rec.chunksSent >= 1 && rec.chunksSent < 8, `cut short after ${rec.chunksSent} events (about 3 at 0, 100, 200 ms)`)
  t.strictSame(events.map(e => (JSON.parse(e.slice('data: '.length)) as GenerateContentResponse).candidates?.[0]?.content?.parts?.[0]?.text),
    answerFor('p', undefined, PACE).deltas.slice(0, rec.chunksSent))
  t.equal(rec.finished, true, 'the emulator ended the body itself')
})

t.test('close() ends stalled streams so nothing hangs', async t => {
  const emulator = await GeminiEmulator.start({ recordRequests: 1 })
  emulator.addFault({ kind: 'stall', afterChunks: 1 })
  const stream = await sdk(emulator).models.generateContentStream({ model: MODEL, contents: 'p' })
  t.equal((await stream.next()).done, false)
  const rest = collect(stream)
  await within(emulator.close(), 1000, 'close()')
  const { error } = await within(rest, 1000, 'the client stream')
  t.equal((error as Error).message, 'terminated')
  const rec: RecordedRequest = emulator.requests[0]!
  await within(rec.closed, 100, 'closed')
  t.equal(rec.finished, false)
  t.equal(emulator.openStreams(), 0)
})

t.test('start() validates options', async t => {
  await t.rejects(GeminiEmulator.start({ chunkCount: 0 }), /GeminiEmulator: chunkCount must be a positive integer, got 0/)
  await t.rejects(GeminiEmulator.start({ port: 70000 }), /port must be an integer from 0 to 65535/)
  await t.rejects(GeminiEmulator.start({ defaultMaxTokens: 5000 }), /defaultMaxTokens must be an integer from 1 to 4096/)
  await t.rejects(GeminiEmulator.start({ recordRequests: -1 }), /recordRequests must be a non-negative integer, got -1/)
})

t.test('recording is off unless asked for, and bounded when on', async t => {
  const ask = async (emulator: GeminiEmulator, n: number): Promise<void> => {
    for (let i = 0; i < n; i++) await sdk(emulator).models.generateContent({ model: MODEL, contents: `q${i}` })
  }
  const silent = await GeminiEmulator.start()
  t.teardown(async () => { await silent.close() })
  await ask(silent, 3)
  await silent.waitForRequests(3)
  t.strictSame(silent.requests, [], 'a default emulator keeps no history')

  const bounded = await GeminiEmulator.start({ recordRequests: 2 })
  t.teardown(async () => { await bounded.close() })
  await ask(bounded, 5)
  await bounded.waitForRequests(5)
  t.strictSame(bounded.requests.map(r => [r.id, r.prompt]), [[4, 'q3'], [5, 'q4']], 'only the newest two, oldest dropped first')
})

/** The 400 an SDK call got, as Google's error body. */
async function refusal (promise: Promise<unknown>): Promise<unknown> {
  const error = await promise.then(() => undefined, (e: unknown) => e)
  if (!(error instanceof ApiError)) throw new Error(`expected an ApiError, got ${String(error)}`)
  return { status: error.status, body: JSON.parse(error.message) as unknown }
}

const invalid = (message: string): unknown => ({ status: 400, body: { error: { code: 400, message, status: 'INVALID_ARGUMENT' } } })

t.test('systemInstruction: accepted with or without a role, it seeds the answer and counts as prompt tokens', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const plain = answerFor('name a colour', undefined, PACE)
  const res = await ai.models.generateContent({ model: MODEL, contents: 'name a colour', config: { systemInstruction: 'Answer in French.' } })
  const expected = answerFor({ system: 'Answer in French.', turns: [{ role: 'user', text: 'name a colour' }] }, undefined, PACE)
  t.equal(res.text, expected.deltas.join(''))
  t.not(res.text, plain.deltas.join(''), 'the system instruction changes the answer')
  t.strictSame({ ...res.usageMetadata }, { promptTokenCount: 6, candidatesTokenCount: 64, totalTokenCount: 70 })
  t.strictSame(emulator.requests[0]!.body, {
    contents: [{ parts: [{ text: 'name a colour' }], role: 'user' }],
    systemInstruction: { parts: [{ text: 'Answer in French.' }], role: 'user' },
    generationConfig: {}
  })
  t.equal(emulator.requests[0]!.prompt, 'name a colour', 'the record (and fault matching) sees the turns only')

  const parts = { parts: [{ text: 'sys A' }, { text: 'sys B' }] }
  const { chunks } = await collect(await ai.models.generateContentStream({ model: MODEL, contents: 'hi', config: { systemInstruction: parts } }))
  t.strictSame(emulator.requests[1]!.body, { contents: [{ parts: [{ text: 'hi' }], role: 'user' }], systemInstruction: parts, generationConfig: {} })
  t.strictSame(conversationOf(emulator.requests[1]!.body), { system: 'sys A\nsys B', turns: [{ role: 'user', text: 'hi' }] })
  t.strictSame(chunks.map(c => c.text), answerFor({ system: 'sys A\nsys B', turns: [{ role: 'user', text: 'hi' }] }, undefined, PACE).deltas)
  t.equal(chunks.at(-1)!.usageMetadata?.promptTokenCount, 5)

  const path = `/v1beta/models/${MODEL}:generateContent`
  const empty = await rawPost(emulator, path, JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }], systemInstruction: { parts: [] } }))
  t.strictSame([empty.status, await empty.json()], [400, { error: { code: 400, message: '* GenerateContentRequest.system_instruction.parts: contents.parts must not be empty.', status: 'INVALID_ARGUMENT' } }])
  const notObject = await rawPost(emulator, path, JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }], systemInstruction: 'be brief' }))
  t.equal(notObject.status, 400)
})

t.test('multi-turn contents: earlier turns seed the answer, every turn counts, bad orders are refused', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const turn = (role: string, text: string): { role: string; parts: { text: string }[] } => ({ role, parts: [{ text }] })
  const history = [turn('user', 'What is the capital of France?'), turn('model', 'Paris.'), turn('user', 'And of Italy?')]

  const single = await ai.models.generateContent({ model: MODEL, contents: [{ parts: [{ text: 'And of Italy?' }] }] })
  t.equal(single.text, answerFor('And of Italy?', undefined, PACE).deltas.join(''), 'one turn without a role: today\'s answer, byte for byte')
  t.strictSame(answerFor({ turns: [{ role: 'user', text: 'And of Italy?' }] }, undefined, PACE), answerFor('And of Italy?', undefined, PACE))

  const stream = await collect(await ai.models.generateContentStream({
    model: MODEL, contents: history, config: { systemInstruction: 'You are terse.', stopSequences: ['END', '\n\n'] }
  }))
  // What @google/genai 3.3.0 puts on the wire, byte for byte, for a REST client to match.
  t.equal(JSON.stringify(emulator.requests[1]!.body), '{"contents":[{"parts":[{"text":"What is the capital of France?"}],"role":"user"},' +
    '{"parts":[{"text":"Paris."}],"role":"model"},{"parts":[{"text":"And of Italy?"}],"role":"user"}],' +
    '"systemInstruction":{"parts":[{"text":"You are terse."}],"role":"user"},"generationConfig":{"stopSequences":["END","\\n\\n"]}}')
  const conversation = conversationOf(emulator.requests[1]!.body)
  const expected = answerFor(conversation, { stopSequences: ['END', '\n\n'] }, PACE)
  t.strictSame(stream.chunks.map(c => c.text), expected.deltas)
  t.equal(stream.chunks.at(-1)!.usageMetadata?.promptTokenCount, 3 + 6 + 1 + 3, 'the system instruction and all three turns')
  t.not(answerFor(conversation, undefined, PACE).deltas.join(''), single.text, 'the earlier turns change the answer')

  const chat = ai.chats.create({ model: MODEL, history: history.slice(0, 2) })
  const reply = await chat.sendMessage({ message: 'And of Italy?' })
  t.equal(reply.text, answerFor({ turns: conversation.turns }, undefined, PACE).deltas.join(''), 'a chat sends its history as earlier turns')

  const modelFirst = await ai.models.generateContent({ model: MODEL, contents: [turn('model', 'Hello, how can I help?'), turn('user', 'hi')] })
  t.ok(modelFirst.text, 'a conversation may open with the model')

  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: [turn('user', 'a'), turn('user', 'b')] })),
    invalid('Please ensure that multiturn requests alternate between user and model.'))
  t.strictSame(await refusal(ai.models.generateContentStream({ model: MODEL, contents: [turn('user', 'a'), turn('model', 'b'), turn('model', 'c'), turn('user', 'd')] })),
    invalid('Please ensure that multiturn requests alternate between user and model.'))
  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: history.slice(0, 2) })),
    invalid('Please ensure that multiturn requests ends with a user role or a function response.'))
  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: [turn('assistant', 'a'), turn('user', 'b')] })),
    invalid('Please use a valid role: user, model.'))
  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: [turn('model', 'a'), { role: 'user', parts: [] }] })),
    invalid('* GenerateContentRequest.contents[1].parts: contents.parts must not be empty.'))
})

t.test('generationConfig: stop sequences end the text, across chunk boundaries, with STOP', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const prompt = 'tell me about rivers'
  const full = answerFor(prompt, { maxOutputTokens: 40 }, PACE)
  // A sequence that straddles the boundary between the third and the fourth delta.
  const straddling = full.deltas[2]!.slice(-2) + full.deltas[3]!.slice(0, 3)
  const text = full.deltas.join('')
  const cut = text.indexOf(straddling)
  t.ok(cut > 0 && cut < full.deltas.slice(0, 3).join('').length, 'the sequence starts in the third delta')

  const { chunks } = await collect(await ai.models.generateContentStream({
    model: MODEL, contents: prompt, config: { maxOutputTokens: 40, stopSequences: ['never-in-the-text', straddling] }
  }))
  t.equal(chunks.map(c => c.text ?? '').join(''), text.slice(0, cut), 'the text stops right before the sequence')
  t.equal(chunks.length, 3, 'nothing is sent after the cut')
  t.strictSame(chunks.map(c => c.candidates?.[0]?.finishReason), [undefined, undefined, 'STOP'], 'STOP, not MAX_TOKENS')
  const words = text.slice(0, cut).split(/\s+/).filter(w => w !== '').length
  t.equal(chunks.at(-1)!.usageMetadata?.candidatesTokenCount, words)

  const unary = await ai.models.generateContent({ model: MODEL, contents: prompt, config: { maxOutputTokens: 40, stopSequences: [straddling] } })
  t.equal(unary.text, text.slice(0, cut))
  t.equal(unary.candidates?.[0]?.finishReason, 'STOP')
  t.equal(unary.usageMetadata?.candidatesTokenCount, words)

  const earliest = answerFor(prompt, { maxOutputTokens: 40, stopSequences: [full.deltas[3]!.trim().split(/\s+/)[0]!, '"'] }, PACE)
  t.equal(earliest.deltas.join(''), text.slice(0, text.indexOf('"')), 'the earliest of the sequences wins')
  const absent = answerFor(prompt, { maxOutputTokens: 40, stopSequences: ['zzz'] }, PACE)
  t.strictSame(absent, full, 'a sequence that never occurs changes nothing, MAX_TOKENS included')
  const atStart = answerFor(prompt, { maxOutputTokens: 40, stopSequences: [text.slice(0, 4)] }, PACE)
  t.strictSame([atStart.deltas, atStart.completionTokens, atStart.finishReason], [[''], 0, 'STOP'], 'a stop at the very start leaves one empty delta')

  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: prompt, config: { stopSequences: ['a', 'b', 'c', 'd', 'e', 'f'] } })),
    invalid('* GenerateContentRequest.generation_config.stop_sequences: the number of stop_sequences must not exceed 5'))
  const five = await ai.models.generateContent({ model: MODEL, contents: prompt, config: { stopSequences: ['a1', 'b1', 'c1', 'd1', 'e1'] } })
  t.ok(five.text, 'five are allowed')
  const path = `/v1beta/models/${MODEL}:generateContent`
  const notList = await rawPost(emulator, path, JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }], generationConfig: { stopSequences: 'END' } }))
  t.equal(notList.status, 400)
  const notString = await rawPost(emulator, path, JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }], generationConfig: { stopSequences: [1] } }))
  t.equal(notString.status, 400)
})

t.test('generationConfig: seed and penalties are checked and do not change the answer', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const plain = answerFor('seeded', undefined, PACE).deltas.join('')
  const res = await ai.models.generateContent({ model: MODEL, contents: 'seeded', config: { seed: 42, presencePenalty: -2, frequencyPenalty: 1.99 } })
  t.equal(res.text, plain)
  t.strictSame((emulator.requests[0]!.body as { generationConfig: unknown }).generationConfig, { presencePenalty: -2, frequencyPenalty: 1.99, seed: 42 })

  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: 'x', config: { presencePenalty: 2 } })),
    invalid('presence_penalty must be in the range [-2.0, 2.0)'), '2.0 itself is out of range')
  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: 'x', config: { frequencyPenalty: -2.5 } })),
    invalid('frequency_penalty must be in the range [-2.0, 2.0)'))
  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: 'x', config: { seed: 1.5 } })),
    invalid("Invalid value at 'generation_config.seed' (TYPE_INT32), 1.5"))
  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: 'x', config: { seed: 2 ** 31 } })),
    invalid("Invalid value at 'generation_config.seed' (TYPE_INT32), 2147483648"))
  const negative = await ai.models.generateContent({ model: MODEL, contents: 'x', config: { seed: -(2 ** 31) } })
  t.ok(negative.text, 'the whole int32 range')
  const raw = await rawPost(emulator, `/v1beta/models/${MODEL}:generateContent`, JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }], generationConfig: { presencePenalty: 'high' } }))
  t.strictSame(await raw.json(), { error: { code: 400, message: 'Invalid value at \'generation_config.presence_penalty\', "high"', status: 'INVALID_ARGUMENT' } })
})

t.test('generationConfig: responseMimeType', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const plain = answerFor('json please', undefined, PACE)
  const { chunks } = await collect(await ai.models.generateContentStream({ model: MODEL, contents: 'json please', config: { responseMimeType: 'application/json' } }))
  const json = chunks.map(c => c.text).join('')
  t.equal(JSON.parse(json), plain.deltas.join(''), 'application/json: the answer as one JSON string')
  t.equal(chunks.length, 8)
  t.notOk(chunks.slice(0, -1).some(c => { try { JSON.parse(c.text ?? ''); return true } catch { return false } }), 'only the whole text is JSON')
  t.strictSame(chunks.map(c => c.text), answerFor('json please', { responseMimeType: 'application/json' }, PACE).deltas)

  const unary = await ai.models.generateContent({ model: MODEL, contents: 'json please', config: { responseMimeType: 'application/json', maxOutputTokens: 7 } })
  t.equal(JSON.parse(unary.text ?? ''), answerFor('json please', { maxOutputTokens: 7 }, PACE).deltas.join(''))

  const enumConfig = { responseMimeType: 'text/x.enum', responseSchema: { type: Type.STRING, enum: ['red', 'green', 'blue'] } }
  const picked = await ai.models.generateContent({ model: MODEL, contents: 'pick a colour', config: enumConfig })
  t.ok(['red', 'green', 'blue'].includes(picked.text ?? ''), `text/x.enum: one of the values (${String(picked.text)})`)
  t.equal(picked.usageMetadata?.candidatesTokenCount, 1)
  t.equal(picked.text, answerFor('pick a colour', enumConfig, PACE).deltas.join(''))

  for (const mime of ['text/plain', 'application/xml', 'application/yaml']) {
    const res = await ai.models.generateContent({ model: MODEL, contents: 'json please', config: { responseMimeType: mime } })
    t.equal(res.text, plain.deltas.join(''), `${mime}: the plain answer`)
  }
  const allowed = '* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`.'
  t.strictSame(await refusal(ai.models.generateContent({ model: MODEL, contents: 'x', config: { responseMimeType: 'image/png' } })), invalid(allowed))
})

t.test('countTokens counts the system instruction and every turn, as promptTokenCount does', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const contents = [
    { role: 'user', parts: [{ text: 'What is the capital of France?' }] },
    { role: 'model', parts: [{ text: 'Paris.' }] },
    { role: 'user', parts: [{ text: 'And of Italy?' }] }
  ]
  const systemInstruction = { parts: [{ text: 'You are terse.' }] }
  const generated = await ai.models.generateContent({ model: MODEL, contents, config: { systemInstruction } })
  t.equal(generated.usageMetadata?.promptTokenCount, 13)

  const sdkCount = await ai.models.countTokens({ model: MODEL, contents })
  t.equal(sdkCount.totalTokens, 10, 'the SDK counts the turns (it refuses a systemInstruction client-side in this mode)')
  const path = `/v1beta/models/${MODEL}:countTokens`
  const nested = await rawPost(emulator, path, JSON.stringify({ generateContentRequest: { model: `models/${MODEL}`, contents, systemInstruction } }))
  t.strictSame(await nested.json(), { totalTokens: 13, promptTokensDetails: [{ modality: 'TEXT', tokenCount: 13 }] }, 'generateContentRequest: the same count as promptTokenCount')
  const history = await rawPost(emulator, path, JSON.stringify({ contents: contents.slice(0, 2) }))
  t.equal(((await history.json()) as { totalTokens: number }).totalTokens, 7, 'a history ending with the model can be counted')
  const topLevel = await rawPost(emulator, path, JSON.stringify({ contents, systemInstruction }))
  t.strictSame([topLevel.status, await topLevel.json()], [400, { error: { code: 400, message: 'Invalid JSON payload received. Unknown name "systemInstruction": Cannot find field.', status: 'INVALID_ARGUMENT' } }])
  const badNested = await rawPost(emulator, path, JSON.stringify({ generateContentRequest: { contents, systemInstruction: { parts: [] } } }))
  t.equal(badNested.status, 400)
})

const THINKER = 'gemini-2.5-flash'

/** Each event's usage adds up: total = prompt + candidates + thoughts (absent counts being 0). */
function usageAddsUp (chunks: GenerateContentResponse[]): boolean {
  return chunks.every(c => {
    const u = c.usageMetadata
    return u !== undefined && u.totalTokenCount === (u.promptTokenCount ?? 0) + (u.candidatesTokenCount ?? 0) + (u.thoughtsTokenCount ?? 0)
  })
}

t.test('thinking with includeThoughts: thought parts first, then the same answer, usage with running thought totals', async t => {
  const emulator = await startEmulator(t)
  const prompt = 'Why is the sky blue?'
  const expected = answerFor(prompt, undefined, PACE)
  const config = { thinkingConfig: { includeThoughts: true } }
  const { chunks, error } = await collect(await sdk(emulator).models.generateContentStream({ model: THINKER, contents: prompt, config }))
  t.equal(error, undefined)
  t.equal(chunks.length, 2 + 8, 'a quarter of chunkCount carries the thoughts, then the answer events')
  const thoughtChunks = chunks.slice(0, 2)
  t.ok(thoughtChunks.every(c => c.candidates?.[0]?.content?.parts?.every(p => p.thought === true) === true))
  t.strictSame(thoughtChunks.map(c => c.text), [undefined, undefined], 'the SDK leaves thought parts out of .text')
  const thoughtText = thoughtChunks.map(partText).join('')
  t.match(thoughtText, /^\*\*Considering the request\*\*\n\nThe user asks: "Why is the sky blue\?" /)
  t.strictSame(chunks.slice(2).map(c => c.text), expected.deltas, 'the answer is the one without thinking')
  t.ok(chunks.slice(2).every(c => c.candidates?.[0]?.content?.parts?.every(p => p.thought === undefined) === true))
  const thoughts = countTokens(thoughtText)
  t.equal(thoughts, 44, 'dynamic: 24 + 4 per prompt token')
  t.strictSame(chunks.map(c => c.usageMetadata?.thoughtsTokenCount), [22, 44, ...Array(8).fill(44)], 'a running total, complete before the answer')
  t.strictSame(chunks.map(c => c.usageMetadata?.candidatesTokenCount), [undefined, undefined, 8, 16, 24, 32, 40, 48, 56, 64])
  t.ok(usageAddsUp(chunks), 'totalTokenCount = prompt + candidates + thoughts on every event')
  t.strictSame({ ...chunks.at(-1)!.usageMetadata }, { promptTokenCount: 5, candidatesTokenCount: 64, totalTokenCount: 113, thoughtsTokenCount: 44 })
  t.strictSame(chunks.map(c => c.candidates?.[0]?.finishReason), [...Array(9).fill(undefined), 'STOP'])
  t.strictSame(new Set(chunks.map(c => c.modelVersion)), new Set([THINKER]))

  const again = await collect(await sdk(emulator).models.generateContentStream({ model: THINKER, contents: prompt, config }))
  t.equal(again.chunks.slice(0, 2).map(partText).join(''), thoughtText, 'the thoughts are deterministic')
  t.strictSame(emulator.requests[0]?.body, { contents: [{ parts: [{ text: prompt }], role: 'user' }], generationConfig: { thinkingConfig: { includeThoughts: true } } })

  const raw = await rawPost(emulator, `/v1beta/models/${THINKER}:streamGenerateContent?alt=sse`, JSON.stringify({
    contents: [{ parts: [{ text: prompt }], role: 'user' }], generationConfig: { thinkingConfig: { includeThoughts: true } }
  }))
  const events = (await raw.text()).split('\r\n\r\n').filter(e => e !== '').map(e => JSON.parse(e.slice('data: '.length)) as Record<string, unknown>)
  const { responseId } = events[0] as { responseId: string }
  t.strictSame(events[0], {
    candidates: [{ content: { parts: [{ text: thoughtText.slice(0, thoughtChunks.map(partText)[0]!.length), thought: true }], role: 'model' }, index: 0 }],
    usageMetadata: { promptTokenCount: 5, totalTokenCount: 27, thoughtsTokenCount: 22 },
    modelVersion: THINKER,
    responseId
  }, 'the first thought event on the wire')
  t.strictSame(events[2], {
    candidates: [{ content: { parts: [{ text: expected.deltas[0] }], role: 'model' }, index: 0 }],
    usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 8, totalTokenCount: 57, thoughtsTokenCount: 44 },
    modelVersion: THINKER,
    responseId
  }, 'the first answer event on the wire')
})

t.test('thinking without includeThoughts: no thought parts, the thought tokens still reported; a budget bounds them', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const prompt = 'Why is the sky blue?'
  const expected = answerFor(prompt, undefined, PACE)
  const dynamic = await collect(await ai.models.generateContentStream({ model: THINKER, contents: prompt, config: { thinkingConfig: { thinkingBudget: -1 } } }))
  t.strictSame(dynamic.chunks.map(c => c.text), expected.deltas)
  t.ok(dynamic.chunks.every(c => c.candidates?.[0]?.content?.parts?.length === 1 && c.candidates[0].content.parts[0]?.thought === undefined))
  t.strictSame(dynamic.chunks.map(c => c.usageMetadata?.thoughtsTokenCount), Array(8).fill(44))
  t.ok(usageAddsUp(dynamic.chunks))

  const bounded = await collect(await ai.models.generateContentStream({ model: 'gemini-2.5-pro', contents: prompt, config: { thinkingConfig: { thinkingBudget: 128, includeThoughts: true } } }))
  t.equal(bounded.chunks.at(-1)?.usageMetadata?.thoughtsTokenCount, 44, 'a budget above the dynamic amount changes nothing')
  const small = await collect(await ai.models.generateContentStream({ model: THINKER, contents: prompt, config: { thinkingConfig: { thinkingBudget: 10, includeThoughts: true } } }))
  t.equal(small.chunks.at(-1)?.usageMetadata?.thoughtsTokenCount, 10, 'a positive budget bounds the thought tokens')
  t.equal(countTokens(small.chunks.filter(c => c.candidates?.[0]?.content?.parts?.[0]?.thought === true).map(partText).join('')), 10)

  const unary = await ai.models.generateContent({ model: THINKER, contents: prompt, config: { thinkingConfig: { thinkingBudget: 10, includeThoughts: true } } })
  const parts = unary.candidates?.[0]?.content?.parts ?? []
  t.strictSame(parts.map(p => p.thought), [true, undefined], 'unary: one thought part, then the answer')
  t.equal(unary.text, expected.deltas.join(''))
  t.strictSame({ ...unary.usageMetadata }, { promptTokenCount: 5, candidatesTokenCount: 64, totalTokenCount: 79, thoughtsTokenCount: 10 })

  const off = await collect(await ai.models.generateContentStream({ model: THINKER, contents: prompt, config: { thinkingConfig: { thinkingBudget: 0, includeThoughts: true } } }))
  t.strictSame(off.chunks.map(c => c.text), expected.deltas)
  t.strictSame({ ...off.chunks.at(-1)!.usageMetadata }, { promptTokenCount: 5, candidatesTokenCount: 64, totalTokenCount: 69 }, 'budget 0 turns Flash thinking off')
})

t.test('thinking by default: only with thinkByDefault, only on thinking models', async t => {
  const prompt = 'Why is the sky blue?'
  const plain = await startEmulator(t)
  const faithful = await startEmulator(t, { thinkByDefault: true, extraModels: ['gemini-2.5-flash-lite'] })
  const last = async (emulator: GeminiEmulator, model: string): Promise<unknown> =>
    ({ ...(await collect(await sdk(emulator).models.generateContentStream({ model, contents: prompt }))).chunks.at(-1)!.usageMetadata })
  t.strictSame(await last(plain, THINKER), { promptTokenCount: 5, candidatesTokenCount: 64, totalTokenCount: 69 }, 'off by default: the answers stay as they were')
  t.strictSame(await last(faithful, THINKER), { promptTokenCount: 5, candidatesTokenCount: 64, totalTokenCount: 113, thoughtsTokenCount: 44 })
  t.strictSame(await last(faithful, 'gemini-2.5-pro'), { promptTokenCount: 5, candidatesTokenCount: 64, totalTokenCount: 113, thoughtsTokenCount: 44 })
  t.strictSame(await last(faithful, 'gemini-2.5-flash-lite'), { promptTokenCount: 5, candidatesTokenCount: 64, totalTokenCount: 69 }, 'Flash-Lite does not think unless asked')
  t.strictSame(await last(faithful, MODEL), { promptTokenCount: 5, candidatesTokenCount: 64, totalTokenCount: 69 }, '2.0 does not think')
  await t.rejects(GeminiEmulator.start({ thinkByDefault: 'yes' as unknown as boolean }), /thinkByDefault must be a boolean/)
})

t.test('thinkingConfig refusals: 2.0 with a budget, Pro with budget 0, a budget out of range or not an integer', async t => {
  const emulator = await startEmulator(t, { extraModels: ['m'] })
  const ai = sdk(emulator)
  const ask = (model: string, thinkingConfig: Record<string, unknown>): Promise<unknown> =>
    refusal(ai.models.generateContent({ model, contents: 'x', config: { thinkingConfig } }))
  const notSupported = 'Unable to submit request because thinking is not supported by this model. Learn more: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini'
  t.strictSame(await ask(MODEL, { thinkingBudget: 500, includeThoughts: true }), invalid(notSupported))
  t.strictSame(await ask('gemini-2.0-flash-lite', { thinkingBudget: -1 }), invalid(notSupported))
  t.strictSame(await ask('gemini-2.5-pro', { thinkingBudget: 0 }), invalid('Budget 0 is invalid. This model only works in thinking mode.'))
  t.strictSame(await ask('gemini-2.5-pro', { thinkingBudget: 64 }), invalid('The thinking budget (64) is invalid. Please choose a value between 128 and 32768.'))
  t.strictSame(await ask(THINKER, { thinkingBudget: 24577 }), invalid('The thinking budget (24577) is invalid. Please choose a value between 1 and 24576.'))
  t.strictSame(await ask(THINKER, { thinkingBudget: 1.5 }), invalid("Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32), 1.5"))
  t.strictSame(await ask(THINKER, { includeThoughts: 'yes' }), invalid("Invalid value at 'generation_config.thinking_config.include_thoughts' (TYPE_BOOL), \"yes\""))
  t.equal(emulator.requests.filter(r => r.status === 400).length, 7)

  const zero = await ai.models.generateContent({ model: MODEL, contents: 'x', config: { thinkingConfig: { thinkingBudget: 0 } } })
  t.strictSame({ ...zero.usageMetadata }, { promptTokenCount: 1, candidatesTokenCount: 64, totalTokenCount: 65 }, '2.0 accepts budget 0')
  const unknown = await ai.models.generateContent({ model: 'm', contents: 'x', config: { thinkingConfig: { includeThoughts: true } } })
  t.equal(unknown.usageMetadata?.thoughtsTokenCount, undefined, 'includeThoughts alone is accepted and ignored where thinking is not supported')
})

t.test('modelVersion is the model id of the path, without the models/ prefix', async t => {
  const emulator = await startEmulator(t, { extraModels: ['tunedModels/mine'] })
  const ai = sdk(emulator)
  for (const [model, version] of [[THINKER, THINKER], ['models/gemini-2.5-pro', 'gemini-2.5-pro'], ['tunedModels/mine', 'tunedModels/mine']]) {
    const stream = await collect(await ai.models.generateContentStream({ model: model!, contents: 'v' }))
    t.strictSame(new Set(stream.chunks.map(c => c.modelVersion)), new Set([version]), `stream ${model!}`)
    t.equal((await ai.models.generateContent({ model: model!, contents: 'v' })).modelVersion, version, `unary ${model!}`)
  }
})

t.test('safety triggers: [[unsafe]] stops after the first chunk with SAFETY, [[blocked-prompt]] blocks the prompt', async t => {
  const emulator = await startEmulator(t)
  const ai = sdk(emulator)
  const ratings = [
    { category: 'HARM_CATEGORY_SEXUALLY_EXPLICIT', probability: 'NEGLIGIBLE' },
    { category: 'HARM_CATEGORY_HATE_SPEECH', probability: 'NEGLIGIBLE' },
    { category: 'HARM_CATEGORY_HARASSMENT', probability: 'NEGLIGIBLE' },
    { category: 'HARM_CATEGORY_DANGEROUS_CONTENT', probability: 'HIGH', blocked: true }
  ]
  const unsafe = 'Tell me [[unsafe]] things'
  const full = answerFor(unsafe, undefined, PACE)
  const stream = await collect(await ai.models.generateContentStream({ model: MODEL, contents: unsafe }))
  t.equal(stream.error, undefined)
  t.equal(stream.chunks.length, 1)
  const candidate = stream.chunks[0]!.candidates![0]!
  t.equal(stream.chunks[0]!.text, full.deltas[0])
  t.equal(candidate.finishReason, 'SAFETY')
  t.strictSame(candidate.safetyRatings, ratings)
  t.strictSame({ ...stream.chunks[0]!.usageMetadata }, { promptTokenCount: 4, candidatesTokenCount: 8, totalTokenCount: 12 })
  const unary = await ai.models.generateContent({ model: MODEL, contents: unsafe })
  t.equal(unary.text, full.deltas[0])
  t.equal(unary.candidates?.[0]?.finishReason, 'SAFETY')
  t.strictSame(unary.candidates?.[0]?.safetyRatings, ratings)
  t.equal(emulator.requests[0]?.fault, undefined, 'a trigger is no fault')

  const thinking = await collect(await ai.models.generateContentStream({ model: THINKER, contents: unsafe, config: { thinkingConfig: { includeThoughts: true } } }))
  t.strictSame(thinking.chunks.map(c => c.candidates?.[0]?.finishReason), [undefined, undefined, 'SAFETY'], 'the thoughts, then the one answer chunk')

  const blocked = 'Please [[blocked-prompt]] now'
  const blockedStream = await collect(await ai.models.generateContentStream({ model: MODEL, contents: blocked }))
  t.equal(blockedStream.chunks.length, 1)
  t.equal(blockedStream.chunks[0]!.candidates, undefined)
  t.strictSame(blockedStream.chunks[0]!.promptFeedback, { blockReason: 'SAFETY', safetyRatings: ratings })
  t.strictSame({ ...blockedStream.chunks[0]!.usageMetadata }, { promptTokenCount: 3, totalTokenCount: 3 })
  const blockedUnary = await ai.models.generateContent({ model: MODEL, contents: blocked })
  t.equal(blockedUnary.promptFeedback?.blockReason, 'SAFETY')
  t.equal(blockedUnary.text, undefined)

  emulator.addFault({ kind: 'drop', afterChunks: 0 }, { match: 'blocked-prompt' })
  const dropped = await collect(await ai.models.generateContentStream({ model: MODEL, contents: blocked }))
  t.ok(dropped.error instanceof Error, 'a drawn fault wins over the trigger')
})
