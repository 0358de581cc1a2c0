// Function calling over the wire (issue 15): the emulator as @google/genai sees it (a call whose args follow
// the declared schema, the modes, the text answer to a functionResponse, Google's 400s), and the gateway's two
// Gemini clients, which send the tools and read the calls back as the same deltas.

import t from 'tap'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { ApiError, FunctionCallingConfigMode, GoogleGenAI, type Content, type FunctionDeclaration as SdkDeclaration, type GenerateContentConfig, type GenerateContentResponse } from '@google/genai'
import type { GeminiEmulator } from '../emulator/server.js'
import { createRestGeminiClient } from '../gemini/rest-client.js'
import { createSdkGeminiClient } from '../gemini/sdk-client.js'
import type { FunctionDeclaration, GeminiClient, GenerationDelta, GenerationRequest } from '../gemini/types.js'
import { UpstreamError } from '../gemini/upstream-error.js'
import { startEmulator, within } from './support/gateway.js'

const PACE = { chunkCount: 4, defaultMaxTokens: 16 }
const API_KEY = 'function-calling-key'
const PLAIN_MODEL = 'gemini-2.0-flash'
const THINKING_MODEL = 'gemini-2.5-flash'

const ajv = new Ajv2020({ allErrors: true, strictTypes: false })

const WEATHER_SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string', minLength: 2 },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
    days: { type: 'integer', minimum: 1, maximum: 7 },
    location: {
      type: 'object',
      properties: { lat: { type: 'number', minimum: -90, maximum: 90 }, lon: { type: 'number', minimum: -180, maximum: 180 } },
      required: ['lat', 'lon'],
      additionalProperties: false
    },
    alerts: { type: 'array', items: { type: 'string', enum: ['storm', 'heat', 'frost'] }, minItems: 1 }
  },
  required: ['city', 'unit', 'location'],
  additionalProperties: false
}
const WEATHER: SdkDeclaration = { name: 'get_weather', description: 'Current weather and forecast for a city', parametersJsonSchema: WEATHER_SCHEMA }
const STOCKS: SdkDeclaration = { name: 'getStockPrice', description: 'Latest price of a share', parametersJsonSchema: { type: 'object', properties: { ticker: { type: 'string' } }, required: ['ticker'] } }
/** Gemini's OpenAPI subset, upper-case types and `nullable`, and its JSON Schema reading. */
const TRAIN_OPENAPI = {
  type: 'OBJECT',
  properties: { from: { type: 'STRING' }, to: { type: 'STRING' }, seats: { type: 'INTEGER', minimum: 1, maximum: 4 }, via: { type: 'STRING', nullable: true } },
  required: ['from', 'to', 'seats']
}
const TRAIN_JSON_SCHEMA = {
  type: 'object',
  properties: { from: { type: 'string' }, to: { type: 'string' }, seats: { type: 'integer', minimum: 1, maximum: 4 }, via: { type: ['string', 'null'] } },
  required: ['from', 'to', 'seats'],
  additionalProperties: false
}
const TRAINS: SdkDeclaration = { name: 'book_train', description: 'Reserve railway seats', parameters: TRAIN_OPENAPI as SdkDeclaration['parameters'] }

/** Enough prompts for every optional property, enum value and length to come up. */
const WEATHER_PROMPTS = Array.from({ length: 12 }, (_, i) => `What is the weather like in city number ${i}?`)

function sdk (emulator: GeminiEmulator): GoogleGenAI {
  return new GoogleGenAI({ apiKey: API_KEY, httpOptions: { baseUrl: emulator.url } })
}

async function chunksOf (emulator: GeminiEmulator, model: string, contents: string | Content[], config: GenerateContentConfig): Promise<GenerateContentResponse[]> {
  const chunks: GenerateContentResponse[] = []
  for await (const chunk of await sdk(emulator).models.generateContentStream({ model, contents, config })) chunks.push(chunk)
  return chunks
}

const textOf = (chunks: GenerateContentResponse[]): string =>
  chunks.map(chunk => (chunk.candidates?.[0]?.content?.parts ?? []).map(part => part.text ?? '').join('')).join('')
const callsOf = (chunks: GenerateContentResponse[]): unknown[] => chunks.flatMap(chunk => chunk.functionCalls ?? [])
const anyMode = (allowedFunctionNames?: string[]): GenerateContentConfig['toolConfig'] =>
  ({ functionCallingConfig: { mode: FunctionCallingConfigMode.ANY, ...(allowedFunctionNames === undefined ? {} : { allowedFunctionNames }) } })

t.test('the emulator, as @google/genai sees it', async t => {
  const emulator = await startEmulator(t, PACE)
  const tools = [{ functionDeclarations: [STOCKS, WEATHER, TRAINS] }]
  const validWeather = ajv.compile(WEATHER_SCHEMA)
  const validTrain = ajv.compile(TRAIN_JSON_SCHEMA)

  await t.test('AUTO calls the declaration the prompt names, once, whole, with args that follow its JSON Schema', async t => {
    const seen = new Set<string>()
    for (const prompt of WEATHER_PROMPTS) {
      const chunks = await chunksOf(emulator, PLAIN_MODEL, prompt, { tools })
      t.equal(chunks.length, 1, 'one event')
      const call = chunks[0]!.functionCalls?.[0]
      t.equal(chunks[0]!.functionCalls?.length, 1)
      t.equal(call?.name, 'get_weather')
      t.ok(validWeather(call?.args), `args valid: ${JSON.stringify(call?.args)} ${ajv.errorsText(validWeather.errors)}`)
      t.equal(chunks[0]!.candidates?.[0]?.finishReason, 'STOP')
      t.equal(chunks[0]!.candidates?.[0]?.content?.role, 'model')
      t.equal(chunks[0]!.candidates?.[0]?.content?.parts?.[0]?.thoughtSignature, undefined, 'a model that does not think signs nothing')
      seen.add(JSON.stringify(call?.args))
    }
    t.ok(seen.size > 1, 'the args depend on the prompt')
    const again = await chunksOf(emulator, PLAIN_MODEL, WEATHER_PROMPTS[0]!, { tools })
    const first = await chunksOf(emulator, PLAIN_MODEL, WEATHER_PROMPTS[0]!, { tools })
    t.same(callsOf(again), callsOf(first), 'the same request, the same call')
  })

  await t.test('the OpenAPI-subset parameters (upper-case types, nullable) are followed too', async t => {
    for (let i = 0; i < 8; i++) {
      const chunks = await chunksOf(emulator, PLAIN_MODEL, `reserve seats on the railway, trip ${i}`, { tools })
      const [call] = callsOf(chunks) as Array<{ name: string, args: unknown }>
      t.equal(call?.name, 'book_train')
      t.ok(validTrain(call?.args), `args valid: ${JSON.stringify(call?.args)} ${ajv.errorsText(validTrain.errors)}`)
    }
  })

  await t.test('usage counts the call as completion tokens', async t => {
    const [chunk] = await chunksOf(emulator, PLAIN_MODEL, 'share price of ACME, latest please', { tools })
    const call = chunk!.functionCalls![0]!
    t.equal(call.name, 'getStockPrice', 'camelCase names are split into words')
    const callWords = `${call.name} ${JSON.stringify(call.args)}`.match(/[\p{L}\p{N}]+/gu)!.length
    t.same(chunk!.usageMetadata, { promptTokenCount: 6, candidatesTokenCount: callWords, totalTokenCount: 6 + callWords })
  })

  await t.test('AUTO answers in text when no declaration shares a word with the prompt; NONE never calls', async t => {
    const unrelated = await chunksOf(emulator, PLAIN_MODEL, 'Tell me a joke', { tools })
    t.same(callsOf(unrelated), [])
    t.ok(textOf(unrelated).length > 0)
    for (const prompt of WEATHER_PROMPTS.slice(0, 4)) {
      const none = await chunksOf(emulator, PLAIN_MODEL, prompt, { tools, toolConfig: { functionCallingConfig: { mode: FunctionCallingConfigMode.NONE } } })
      t.same(callsOf(none), [], 'NONE: text only')
      t.equal(textOf(none), textOf(await chunksOf(emulator, PLAIN_MODEL, prompt, {})), 'the answer without tools')
    }
    const validated = await chunksOf(emulator, PLAIN_MODEL, WEATHER_PROMPTS[1]!, { tools, toolConfig: { functionCallingConfig: { mode: FunctionCallingConfigMode.VALIDATED } } })
    t.match(callsOf(validated), [{ name: 'get_weather' }], 'VALIDATED decides as AUTO')
  })

  await t.test('ANY always calls, restricted to allowedFunctionNames', async t => {
    for (const prompt of ['Tell me a joke', 'hi', WEATHER_PROMPTS[2]!]) {
      const forced = await chunksOf(emulator, PLAIN_MODEL, prompt, { tools, toolConfig: anyMode() })
      t.equal(callsOf(forced).length, 1, `ANY calls for "${prompt}"`)
      const restricted = await chunksOf(emulator, PLAIN_MODEL, prompt, { tools, toolConfig: anyMode(['book_train']) })
      t.match(callsOf(restricted), [{ name: 'book_train' }])
      t.ok(validTrain((callsOf(restricted)[0] as { args: unknown }).args))
    }
    t.match(callsOf(await chunksOf(emulator, PLAIN_MODEL, 'Tell me a joke', { tools, toolConfig: anyMode() })), [{ name: 'getStockPrice' }], 'the first declaration when none matches')
    t.match(callsOf(await chunksOf(emulator, PLAIN_MODEL, WEATHER_PROMPTS[3]!, { tools, toolConfig: anyMode() })), [{ name: 'get_weather' }], 'the matching one when one does')
  })

  await t.test('generateContent answers with the same call part', async t => {
    const streamed = await chunksOf(emulator, THINKING_MODEL, WEATHER_PROMPTS[4]!, { tools, thinkingConfig: { thinkingBudget: 32 } })
    const unary = await sdk(emulator).models.generateContent({ model: THINKING_MODEL, contents: WEATHER_PROMPTS[4]!, config: { tools, thinkingConfig: { thinkingBudget: 32 } } })
    t.same(unary.candidates?.[0]?.content?.parts, streamed[0]!.candidates?.[0]?.content?.parts)
    t.equal(unary.functionCalls?.[0]?.name, 'get_weather')
    t.same(unary.usageMetadata, streamed[0]!.usageMetadata)
  })

  await t.test('a thinking model signs the call part, after its thought summary', async t => {
    const chunks = await chunksOf(emulator, THINKING_MODEL, WEATHER_PROMPTS[0]!, { tools, thinkingConfig: { thinkingBudget: 32, includeThoughts: true } })
    const last = chunks.at(-1)!
    t.ok(chunks.slice(0, -1).every(chunk => chunk.candidates?.[0]?.content?.parts?.[0]?.thought === true), 'thoughts first')
    const part = last.candidates?.[0]?.content?.parts?.[0]
    t.equal(part?.functionCall?.name, 'get_weather')
    t.match(part?.thoughtSignature, /^[A-Za-z0-9+/]{43}=$/, 'a base64 signature on the part')
    t.equal(last.usageMetadata?.thoughtsTokenCount, 32, 'the budget spent on thoughts')
  })

  await t.test('a functionResponse as the latest user content is answered in text', async t => {
    const conversation: Content[] = [
      { role: 'user', parts: [{ text: WEATHER_PROMPTS[0]! }] },
      { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: { city: 'Paris', unit: 'celsius', location: { lat: 48.9, lon: 2.3 } } } }] },
      { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { temperature: 21, sky: 'clear "blue"' } } }] }
    ]
    const chunks = await chunksOf(emulator, PLAIN_MODEL, conversation, { tools })
    t.same(callsOf(chunks), [], 'AUTO does not call again')
    t.match(textOf(chunks), /^get_weather returned \{"temperature":21,"sky":"clear \\"blue\\""\}\. \S/)
    const text = textOf(chunks)
    t.equal(chunks.at(-1)!.candidates?.[0]?.finishReason, 'STOP')
    t.equal(text.split(/\s+/).length, 4 + PACE.defaultMaxTokens, 'the opening, then the plain answer')
    t.equal(chunks.at(-1)!.usageMetadata?.candidatesTokenCount, 4 + PACE.defaultMaxTokens, 'all of it billed')
  })

  await t.test('Google\'s 400s', async t => {
    const refusal = async (config: GenerateContentConfig, contents: string | Content[] = 'hello'): Promise<ApiError | undefined> => {
      try {
        await chunksOf(emulator, PLAIN_MODEL, contents, config)
      } catch (error) {
        return error instanceof ApiError ? error : undefined
      }
      return undefined
    }
    const invalidName = 'Invalid function name. Must start with a letter or an underscore. Must be a-z, A-Z, 0-9, or contain underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.'
    for (const name of ['1st', 'has space', 'a'.repeat(65), '', 'ümlaut']) {
      const error = await refusal({ tools: [{ functionDeclarations: [WEATHER, { name }] }] })
      t.equal(error?.status, 400, `"${name}" refused`)
      t.equal(JSON.parse(error?.message ?? '{}').error?.message,
        `The GenerateContentRequest proto is invalid:\n  * tools[0].function_declarations[1].name: [FIELD_INVALID] ${invalidName}`)
    }
    for (const name of ['_private', 'a'.repeat(64), 'ns.tool:v1-b']) {
      t.equal(await refusal({ tools: [{ functionDeclarations: [{ name }] }] }), undefined, `"${name}" accepted`)
    }
    const allowedField = '* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names'
    for (const mode of [FunctionCallingConfigMode.AUTO, FunctionCallingConfigMode.NONE]) {
      const error = await refusal({ tools, toolConfig: { functionCallingConfig: { mode, allowedFunctionNames: ['get_weather'] } } })
      t.match(error, { status: 400, message: new RegExp(`${escaped(allowedField)}: allowed_function_names may only be set when mode is ANY or VALIDATED\\.`) }, mode)
    }
    t.match(await refusal({ tools, toolConfig: anyMode(['get_weather', 'send_mail']) }),
      { status: 400, message: new RegExp(`${escaped(allowedField)}\\[1\\]: function \\\\"send_mail\\\\" is not declared in tools\\.`) })
    const unknownMode = await refusal({ tools, toolConfig: { functionCallingConfig: { mode: 'SOMETIMES' as FunctionCallingConfigMode } } })
    t.equal(JSON.parse(unknownMode?.message ?? '{}').error?.message,
      'Invalid value at \'tool_config.function_calling_config.mode\' (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "SOMETIMES"')
    t.match(await refusal({ tools }, [{ role: 'user', parts: [{ functionCall: { name: 'get_weather', args: {} } }] }]),
      { status: 400, message: /Please ensure that function call turn comes immediately after a user turn or after a function response turn\./ })
    t.match(await refusal({ tools }, [
      { role: 'user', parts: [{ text: 'hi' }] },
      { role: 'model', parts: [{ functionResponse: { name: 'get_weather', response: {} } }] },
      { role: 'user', parts: [{ text: 'and?' }] }
    ]), { status: 400, message: /Please ensure that function response turn comes immediately after a function call turn\./ })
  })
})

function escaped (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

interface Outcome { deltas: GenerationDelta[], error?: { code: unknown, message: string } }

async function collect (client: GeminiClient, request: GenerationRequest): Promise<Outcome> {
  const deltas: GenerationDelta[] = []
  try {
    const iterator = await client.streamGenerate(request, new AbortController().signal)
    for (;;) {
      const result = await within(5000, iterator.next(), 'the next delta')
      if (result.done === true) return { deltas }
      deltas.push(result.value)
    }
  } catch (error) {
    if (!(error instanceof UpstreamError)) throw error
    return { deltas, error: { code: error.code, message: error.message } }
  }
}

t.test('both gateway clients send the tools and read the calls as the same deltas', async t => {
  const emulator = await startEmulator(t, PACE)
  const rest = createRestGeminiClient({ apiKey: API_KEY, baseUrl: emulator.url })
  t.teardown(async () => { await rest.close() })
  const clients = { sdk: createSdkGeminiClient({ apiKey: API_KEY, baseUrl: emulator.url }), rest }
  const tools: FunctionDeclaration[] = [
    { name: 'getStockPrice', description: 'Latest price of a share', parameters: { type: 'object', properties: { ticker: { type: 'string' } }, required: ['ticker'] } },
    { name: 'get_weather', description: 'Current weather and forecast for a city', parameters: WEATHER_SCHEMA }
  ]
  const validWeather = ajv.compile(WEATHER_SCHEMA)
  const both = async (request: GenerationRequest): Promise<Outcome> => {
    const sdkOutcome = await collect(clients.sdk, request)
    const restOutcome = await collect(clients.rest, request)
    t.same(restOutcome, sdkOutcome, 'the same deltas through both clients')
    t.equal(JSON.stringify(emulator.requests.at(-1)!.body), JSON.stringify(emulator.requests.at(-2)!.body), 'the same request bytes')
    return sdkOutcome
  }

  const asked = { model: THINKING_MODEL, prompt: WEATHER_PROMPTS[5]!, tools, options: { thinking: { budget: 32 } } }
  const called = await both(asked)
  t.equal(called.deltas.length, 1)
  const [call] = called.deltas[0]!.functionCalls ?? []
  t.equal(call?.name, 'get_weather')
  t.ok(validWeather(call?.args), JSON.stringify(call?.args))
  t.match(call?.thoughtSignature, /^[A-Za-z0-9+/]{43}=$/, 'the part\'s signature, read onto the call')
  t.equal(called.deltas[0]!.text, '')
  t.equal(called.deltas[0]!.finishReason, 'STOP')
  t.match(JSON.stringify(emulator.requests.at(-1)!.body), /"tools":\[\{"functionDeclarations":\[\{"name":"getStockPrice","description":"Latest price of a share","parametersJsonSchema":\{/)

  const answered = await both({
    model: THINKING_MODEL,
    prompt: '',
    tools,
    options: { thinking: { budget: 32 } },
    contents: [
      { role: 'user', text: WEATHER_PROMPTS[5]! },
      { role: 'model', text: '', functionCalls: [call!] },
      { role: 'user', text: '', functionResponses: [{ name: 'get_weather', response: { temperature: 18 } }] }
    ]
  })
  t.same(answered.deltas.flatMap(delta => delta.functionCalls ?? []), [], 'no call after the response')
  t.match(answered.deltas.map(delta => delta.text).join(''), /^get_weather returned \{"temperature":18\}\. /)
  const sent = JSON.stringify(emulator.requests.at(-1)!.body)
  t.ok(sent.includes(`{"functionCall":{"args":${JSON.stringify(call!.args)},"name":"get_weather"},"thoughtSignature":"${call!.thoughtSignature!}"}`), 'the signature goes back on the call\'s part')
  t.ok(sent.includes('{"parts":[{"functionResponse":{"name":"get_weather","response":{"temperature":18}}}],"role":"user"}'))

  const forced = await both({ model: PLAIN_MODEL, prompt: 'Tell me a joke', tools, toolChoice: { mode: 'ANY', allowedFunctionNames: ['getStockPrice'] } })
  t.match(forced.deltas, [{ functionCalls: [{ name: 'getStockPrice', args: { ticker: String } }] }])
  t.equal(forced.deltas[0]!.functionCalls![0]!.thoughtSignature, undefined)
  t.match(JSON.stringify(emulator.requests.at(-1)!.body), /"toolConfig":\{"functionCallingConfig":\{"allowedFunctionNames":\["getStockPrice"\],"mode":"ANY"\}\},"generationConfig":\{\}\}$/)

  const refused = await both({ model: PLAIN_MODEL, prompt: 'hello', tools: [{ name: 'no spaces allowed' }] })
  t.match(refused, { deltas: [], error: { code: 'http' } })
})

t.test('both clients refuse a malformed functionCall part as a malformed stream', async t => {
  const emulator = await startEmulator(t, PACE)
  const rest = createRestGeminiClient({ apiKey: API_KEY, baseUrl: emulator.url })
  t.teardown(async () => { await rest.close() })
  const clients = { sdk: createSdkGeminiClient({ apiKey: API_KEY, baseUrl: emulator.url }), rest }
  const malformed: Array<[string, unknown]> = [
    ['a name that is no string', { functionCall: { name: 7, args: {} } }],
    ['no name', { functionCall: { args: {} } }],
    ['args that are no object', { functionCall: { name: 'f', args: [1] } }],
    ['args that are a string', { functionCall: { name: 'f', args: '{}' } }],
    ['a functionCall that is no object', { functionCall: 'f()' }],
    ['an id that is no string', { functionCall: { name: 'f', id: 3, args: {} } }],
    ['a signature that is no string', { functionCall: { name: 'f', args: {} }, thoughtSignature: 12 }]
  ]
  for (const [what, part] of malformed) {
    const outcomes: Outcome[] = []
    for (const name of ['sdk', 'rest'] as const) {
      emulator.addFault({ kind: 'non-text-part', part }, { match: what })
      outcomes.push(await collect(clients[name], { model: PLAIN_MODEL, prompt: what }))
    }
    t.same(outcomes[1], outcomes[0], `${what}: the same through both`)
    t.match(outcomes[0], { deltas: { length: 1 }, error: { code: 'malformed', message: 'Gemini sent a malformed stream' } }, what)
  }
  // A call without args (Gemini leaves an empty object out) is well formed.
  emulator.addFault({ kind: 'non-text-part', part: { functionCall: { name: 'no_args', id: 'call-1' } } }, { match: 'empty', times: 2 })
  for (const client of [clients.sdk, clients.rest]) {
    const outcome = await collect(client, { model: PLAIN_MODEL, prompt: 'empty args' })
    t.same(outcome.deltas[1]?.functionCalls, [{ name: 'no_args', args: {}, id: 'call-1' }])
  }
})
