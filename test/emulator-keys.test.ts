// The emulator's keys and models (issue 18, item 5): several keys each with its own quota or refusal, models that
// are overloaded, limited or break their streams, over real HTTP with @google/genai and raw fetch for the bytes.

import t from 'tap'
import { ApiError, GoogleGenAI, type GenerateContentResponse } from '@google/genai'
import { GeminiEmulator, type EmulatorOptions } from '../emulator/server.js'

const FLASH = 'gemini-2.0-flash'
const PRO = 'gemini-2.5-pro'
const BODY = JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hello there' }] }] })

async function startEmulator (t: { teardown: (fn: () => unknown) => void }, options: EmulatorOptions): Promise<GeminiEmulator> {
  const emulator = await GeminiEmulator.start({ responseId: 'fixed-id', chunkCount: 3, defaultMaxTokens: 9, ...options })
  t.teardown(() => emulator.close())
  return emulator
}

function sdk (emulator: GeminiEmulator, apiKey: string): GoogleGenAI {
  return new GoogleGenAI({ apiKey, httpOptions: { baseUrl: emulator.url } })
}

async function post (emulator: GeminiEmulator, key: string, model: string, rpc = 'generateContent', body = BODY): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`${emulator.url}/v1beta/models/${model}:${rpc}`, {
    method: 'POST',
    headers: { 'x-goog-api-key': key, 'content-type': 'application/json' },
    body
  })
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() }
}

async function sdkError (call: Promise<unknown>): Promise<ApiError> {
  try {
    await call
  } catch (error) {
    if (error instanceof ApiError) return error
    throw error
  }
  throw new Error('expected an ApiError')
}

function quotaBody (model: string, quota: number, delay: string): string {
  return JSON.stringify({
    error: {
      code: 429,
      message: 'You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.',
      status: 'RESOURCE_EXHAUSTED',
      details: [
        {
          '@type': 'type.googleapis.com/google.rpc.QuotaFailure',
          violations: [{
            quotaMetric: 'generativelanguage.googleapis.com/generate_content_free_tier_requests',
            quotaId: 'GenerateRequestsPerMinutePerProjectPerModel-FreeTier',
            quotaDimensions: { location: 'global', model },
            quotaValue: String(quota)
          }]
        },
        { '@type': 'type.googleapis.com/google.rpc.Help', links: [{ description: 'Learn more about Gemini API quotas', url: 'https://ai.google.dev/gemini-api/docs/rate-limits' }] },
        { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: delay }
      ]
    }
  })
}

const INVALID_KEY = '{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}},{"@type":"type.googleapis.com/google.rpc.LocalizedMessage","locale":"en-US","message":"API key not valid. Please pass a valid API key."}]}}'
const DENIED = JSON.stringify({
  error: {
    code: 403,
    message: 'Generative Language API has not been used in project 000000000000 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project=000000000000 then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.',
    status: 'PERMISSION_DENIED',
    details: [
      {
        '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
        reason: 'SERVICE_DISABLED',
        domain: 'googleapis.com',
        metadata: { consumer: 'projects/000000000000', service: 'generativelanguage.googleapis.com' }
      },
      {
        '@type': 'type.googleapis.com/google.rpc.Help',
        links: [{ description: 'Google developers console API activation', url: 'https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project=000000000000' }]
      }
    ]
  }
})
const OVERLOADED = '{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}'

t.test('a key past its quota answers the exact 429 with RetryInfo; another key serves; a refill restores it', async t => {
  const emulator = await startEmulator(t, { keys: { a: { quota: 2, retryDelaySeconds: 7 }, b: {} } })
  for (let i = 0; i < 2; i++) t.equal((await post(emulator, 'a', FLASH)).status, 200)
  const refused = await post(emulator, 'a', FLASH)
  t.equal(refused.status, 429)
  t.equal(refused.type, 'application/json; charset=UTF-8')
  t.equal(refused.text, quotaBody(FLASH, 2, '7s'))
  // Every model of the key is refused: the key's quota is the project's.
  t.equal((await post(emulator, 'a', PRO, 'streamGenerateContent?alt=sse')).status, 429)

  const error = await sdkError(sdk(emulator, 'a').models.generateContent({ model: FLASH, contents: 'hello there' }))
  t.equal(error.status, 429)
  t.strictSame(JSON.parse(error.message), JSON.parse(quotaBody(FLASH, 2, '7s')))
  const streamError = await sdkError(sdk(emulator, 'a').models.generateContentStream({ model: FLASH, contents: 'hello there' }))
  t.equal(streamError.status, 429)

  const other = await sdk(emulator, 'b').models.generateContent({ model: FLASH, contents: 'hello there' })
  t.ok(other.text !== undefined && other.text.length > 0)

  emulator.refillQuota('a')
  t.equal((await post(emulator, 'a', FLASH)).status, 200)
  t.equal((await post(emulator, 'a', FLASH)).status, 200)
  t.equal((await post(emulator, 'a', FLASH)).status, 429)
})

t.test('the default RetryInfo delay is 10s; countTokens and models.* use no quota and are not refused', async t => {
  const emulator = await startEmulator(t, { keys: { a: { quota: 0 } } })
  t.equal((await post(emulator, 'a', FLASH)).text, quotaBody(FLASH, 0, '10s'))
  t.equal((await post(emulator, 'a', FLASH, 'countTokens')).status, 200)
  const list = await fetch(`${emulator.url}/v1beta/models`, { headers: { 'x-goog-api-key': 'a' } })
  t.equal(list.status, 200)
  await list.text()
})

t.test('a request refused for quota draws no fault, and a served one still gets its fault', async t => {
  const emulator = await startEmulator(t, { keys: { a: { quota: 1 } }, recordRequests: 10 })
  emulator.addFault({ kind: 'http-error', status: 500 })
  t.equal((await post(emulator, 'a', FLASH)).status, 500)
  t.equal((await post(emulator, 'a', FLASH)).status, 429)
  emulator.refillQuota('a')
  emulator.addFault({ kind: 'http-error', status: 502 })
  emulator.setKey('a', { quota: 0 })
  t.equal((await post(emulator, 'a', FLASH)).status, 429)
  emulator.setKey('a', {})
  t.equal((await post(emulator, 'a', FLASH)).status, 502, 'the fault was kept for the next served request')
})

t.test('a revoked key and a denied key get Google\'s exact bodies; an unknown key is invalid', async t => {
  const emulator = await startEmulator(t, { keys: { good: {}, gone: { revoked: true }, off: { denied: true } } })
  const revoked = await post(emulator, 'gone', FLASH)
  t.equal(revoked.status, 400)
  t.equal(revoked.text, INVALID_KEY)
  const denied = await post(emulator, 'off', FLASH)
  t.equal(denied.status, 403)
  t.equal(denied.type, 'application/json; charset=UTF-8')
  t.equal(denied.text, DENIED)
  t.equal((await post(emulator, 'stranger', FLASH)).text, INVALID_KEY)
  // The key check comes first, on every RPC.
  t.equal((await post(emulator, 'off', FLASH, 'countTokens')).status, 403)
  t.equal((await sdkError(sdk(emulator, 'gone').models.generateContent({ model: FLASH, contents: 'hi' }))).status, 400)
  t.equal((await sdkError(sdk(emulator, 'off').models.generateContentStream({ model: FLASH, contents: 'hi' }))).status, 403)
  t.equal((await post(emulator, 'good', FLASH)).status, 200)

  // Revoked at run time, and a new key accepted at run time.
  emulator.setKey('good', { revoked: true })
  t.equal((await post(emulator, 'good', FLASH)).text, INVALID_KEY)
  emulator.setKey('stranger', {})
  t.equal((await post(emulator, 'stranger', FLASH)).status, 200)
})

t.test('with apiKey and no keys, setKey gives that key a behaviour; with neither, any key has one', async t => {
  const one = await startEmulator(t, { apiKey: 'k1' })
  one.setKey('k1', { quota: 0 })
  t.equal((await post(one, 'k1', FLASH)).status, 429)
  const any = await startEmulator(t, {})
  any.setKey('x', { denied: true })
  t.equal((await post(any, 'x', FLASH)).status, 403)
  t.equal((await post(any, 'y', FLASH)).status, 200)
})

t.test('an unavailable model answers 503 before any byte while another model serves', async t => {
  const emulator = await startEmulator(t, { models: { [PRO]: { unavailable: true } } })
  const stream = await post(emulator, 'k', PRO, 'streamGenerateContent?alt=sse')
  t.equal(stream.status, 503)
  t.equal(stream.type, 'application/json; charset=UTF-8')
  t.equal(stream.text, OVERLOADED)
  const error = await sdkError(sdk(emulator, 'k').models.generateContentStream({ model: PRO, contents: 'hi' }))
  t.equal(error.status, 503)
  t.equal((await post(emulator, 'k', FLASH, 'streamGenerateContent?alt=sse')).status, 200)
  emulator.setModel(PRO, {})
  t.equal((await post(emulator, 'k', PRO)).status, 200)
  emulator.setModel(`models/${FLASH}`, { unavailable: true })
  t.equal((await post(emulator, 'k', FLASH)).status, 503)
})

t.test('a model\'s quota refuses that model only, on every key; a key\'s quota for one model leaves its others', async t => {
  const emulator = await startEmulator(t, {
    models: { [PRO]: { quota: 1, retryDelaySeconds: 30 } },
    keys: { a: {}, b: { models: { [FLASH]: { quota: 0 } } } }
  })
  t.equal((await post(emulator, 'a', PRO)).status, 200)
  const refused = await post(emulator, 'b', PRO)
  t.equal(refused.status, 429)
  t.equal(refused.text, quotaBody(PRO, 1, '30s'))
  t.equal((await post(emulator, 'a', FLASH)).status, 200)

  t.equal((await post(emulator, 'b', FLASH)).text, quotaBody(FLASH, 0, '10s'))
  t.equal((await post(emulator, 'a', FLASH)).status, 200, 'the other key serves the model')
  emulator.refillModelQuota(PRO)
  t.equal((await post(emulator, 'b', PRO)).status, 200)
})

async function collect (stream: AsyncGenerator<GenerateContentResponse>): Promise<{ chunks: number; error: unknown }> {
  let chunks = 0
  try {
    for await (const chunk of stream) if (chunk !== undefined) chunks++
  } catch (error) {
    return { chunks, error }
  }
  return { chunks, error: undefined }
}

t.test('failAfterChunks breaks a stream after N events as the stream-error fault does', async t => {
  const emulator = await startEmulator(t, { models: { [FLASH]: { failAfterChunks: 1 } }, keys: { a: { models: { [PRO]: { failAfterChunks: 2 } } } } })
  const raw = await post(emulator, 'a', FLASH, 'streamGenerateContent?alt=sse')
  t.equal(raw.status, 200)
  const events = raw.text.split('\r\n\r\n').filter(e => e !== '')
  t.equal(events.length, 2)
  t.equal(events[1], 'data: {"error":{"code":500,"message":"An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting","status":"INTERNAL"}}')

  const { chunks, error } = await collect(await sdk(emulator, 'a').models.generateContentStream({ model: PRO, contents: 'hi' }))
  t.equal(chunks, 2)
  t.ok(error instanceof ApiError)
  t.equal((error as ApiError).status, 500)
  // On generateContent the same break is the HTTP error, as for the fault.
  t.equal((await post(emulator, 'a', FLASH)).status, 500)
  // A drawn fault wins over the model's break.
  emulator.addFault({ kind: 'http-error', status: 502 })
  t.equal((await post(emulator, 'a', FLASH, 'streamGenerateContent?alt=sse')).status, 502)
})

t.test('keyUsage counts every request that carried the key, by model; reset forgets it', async t => {
  const emulator = await startEmulator(t, { keys: { a: { quota: 1 }, b: { revoked: true } } })
  await post(emulator, 'a', FLASH)
  await post(emulator, 'a', FLASH)
  await post(emulator, 'a', PRO, 'countTokens')
  await post(emulator, 'b', FLASH)
  await (await fetch(`${emulator.url}/v1beta/models`, { headers: { 'x-goog-api-key': 'a' } })).text()
  t.strictSame(emulator.keyUsage('a'), { requests: 4, byModel: { [FLASH]: 2, [PRO]: 1 } })
  t.strictSame(emulator.keyUsage('b'), { requests: 1, byModel: { [FLASH]: 1 } })
  t.strictSame(emulator.keyUsage('never'), { requests: 0, byModel: {} })
  emulator.reset()
  t.strictSame(emulator.keyUsage('a'), { requests: 0, byModel: {} })
  t.equal((await post(emulator, 'a', FLASH)).status, 200, 'reset restores the start\'s keys, their quotas unused')
})

t.test('bad behaviours are refused up front, naming the option', async t => {
  await t.rejects(GeminiEmulator.start({ keys: { a: { quota: -1 } } }), /keys\["a"\]: quota must be an integer >= 0/)
  await t.rejects(GeminiEmulator.start({ models: { m: { unavailable: 'yes' as unknown as boolean } } }), /models\["m"\]: unavailable must be a boolean/)
  const emulator = await startEmulator(t, {})
  t.throws(() => emulator.setModel(FLASH, { failAfterChunks: 1.5 }), /failAfterChunks must be an integer/)
})

t.test('without the new options the bytes are those of before', async t => {
  const emulator = await startEmulator(t, { apiKey: 'k1' })
  const stream = await post(emulator, 'k1', FLASH, 'streamGenerateContent?alt=sse')
  t.equal(stream.status, 200)
  t.equal(stream.type, 'text/event-stream')
  t.equal(stream.text, 'data: {"candidates":[{"content":{"parts":[{"text":"Writes \\"buffer\\"\\nüber"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":3,"totalTokenCount":5},"modelVersion":"gemini-2.0-flash","responseId":"fixed-id"}\r\n\r\ndata: {"candidates":[{"content":{"parts":[{"text":" water\\\\some next🙂 this"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":6,"totalTokenCount":8},"modelVersion":"gemini-2.0-flash","responseId":"fixed-id"}\r\n\r\ndata: {"candidates":[{"content":{"parts":[{"text":" signal gateway engine."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":9,"totalTokenCount":11},"modelVersion":"gemini-2.0-flash","responseId":"fixed-id"}\r\n\r\n')
  const unary = await post(emulator, 'k1', FLASH)
  t.equal(unary.type, 'application/json; charset=UTF-8')
  t.equal(unary.text, '{"candidates":[{"content":{"parts":[{"text":"Writes \\"buffer\\"\\nüber water\\\\some next🙂 this signal gateway engine."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":9,"totalTokenCount":11},"modelVersion":"gemini-2.0-flash","responseId":"fixed-id"}')
  const wrong = await post(emulator, 'nope', FLASH)
  t.equal(wrong.status, 400)
  t.equal(wrong.text, INVALID_KEY)
})
