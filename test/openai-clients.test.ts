// The OpenAI-compatible routes driven by clients nobody here wrote: the official `openai` package, the Vercel
// AI SDK's OpenAI-compatible provider and LangChain's ChatOpenAI, each given only a base URL and a key.

import t from 'tap'
import OpenAI from 'openai'
import { zodResponseFormat } from 'openai/helpers/zod'
import { z } from 'zod'
import { generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai'
import { createOpenAICompatible } from '@ai-sdk/openai-compatible'
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { ChatOpenAI as ChatOpenAIClass } from '@langchain/openai'
import { answerFor } from '../emulator/server.js'
import { startEmulator, startGateway, USER_KEY, waitUntil } from './support/gateway.js'
import { markedBlock } from './support/readme-blocks.js'

// Required, not imported: tap's TypeScript loader (a ts-node fork) resolves @langchain/openai's ESM import of
// `openai/lib/responses/ResponseInputItems.js` to a `.js.mjs` file that does not exist; plain Node resolves it.
const { ChatOpenAI } = createRequire(import.meta.url)('@langchain/openai') as { ChatOpenAI: typeof ChatOpenAIClass }

const MODEL = 'gemini-2.0-flash-exp'
const PACE = { chunkCount: 4, defaultMaxTokens: 16 }

function openAIClient (url: string, apiKey = USER_KEY): OpenAI {
  // No retries: each test sees the gateway's first answer.
  return new OpenAI({ apiKey, baseURL: `${url}/v1`, maxRetries: 0 })
}

t.test('openai: a streamed completion with include_usage, and a whole one', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const client = openAIClient(url)
  const answer = answerFor('Why is the sky blue?', undefined, PACE)
  const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Why is the sky blue?' }], stream: true, stream_options: { include_usage: true } })
  const contents: string[] = []
  const ids = new Set<string>()
  let finish: string | null = null
  let usage: OpenAI.CompletionUsage | null | undefined
  for await (const chunk of stream) {
    ids.add(chunk.id)
    const choice = chunk.choices[0]
    if (choice?.delta.content !== undefined && choice.delta.content !== null && choice.delta.content !== '') contents.push(choice.delta.content)
    if (choice?.finish_reason !== undefined && choice.finish_reason !== null) finish = choice.finish_reason
    if (chunk.usage !== null && chunk.usage !== undefined) usage = chunk.usage
  }
  t.same(contents, answer.deltas, 'the SDK yields Gemini\'s deltas in order')
  t.equal(ids.size, 1)
  t.equal(finish, 'stop')
  t.same(usage, { prompt_tokens: answer.promptTokens, completion_tokens: answer.completionTokens, total_tokens: answer.promptTokens + answer.completionTokens, prompt_tokens_details: { cached_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0 } })

  const whole = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Why is the sky blue?' }] })
  t.equal(whole.object, 'chat.completion')
  t.equal(whole.choices[0]?.message.role, 'assistant')
  t.equal(whole.choices[0]?.message.content, answerFor({ system: 'Be brief.', turns: [{ role: 'user', text: 'Why is the sky blue?' }] }, undefined, PACE).deltas.join(''))
  t.equal(whole.choices[0]?.finish_reason, 'stop')
})

t.test('openai: json_schema output parses with the SDK\'s own zod helper', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const Weather = z.object({ city: z.string(), celsius: z.number(), conditions: z.enum(['sunny', 'cloudy', 'rain']) })
  const completion = await openAIClient(url).chat.completions.parse({
    model: 'gemini-2.5-flash',
    messages: [{ role: 'user', content: 'The weather in Paris, please' }],
    response_format: zodResponseFormat(Weather, 'weather')
  })
  const parsed = completion.choices[0]?.message.parsed
  t.ok(Weather.safeParse(parsed).success, 'the answer follows the schema')
  const sent = emulator.requests.at(-1)!.body as { generationConfig: { responseMimeType: string, responseJsonSchema: { required: string[] } } }
  t.equal(sent.generationConfig.responseMimeType, 'application/json')
  t.same(sent.generationConfig.responseJsonSchema.required, ['city', 'celsius', 'conditions'], 'the schema reached Gemini as responseJsonSchema')
})

t.test('openai: an AbortController abort closes the upstream call within a second', async t => {
  const emulator = await startEmulator(t, { chunkCount: 50, chunkDelayMs: 40, defaultMaxTokens: 200 })
  const { url } = await startGateway(t, emulator)
  const abort = new AbortController()
  const stream = await openAIClient(url).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'a long answer' }], stream: true }, { signal: abort.signal })
  let seen = 0
  // The SDK ends the iteration quietly when its own signal aborts it.
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta.content !== undefined) seen++
    if (seen === 3) abort.abort()
  }
  t.equal(seen, 3)
  const aborted = performance.now()
  await waitUntil(() => emulator.openStreams() === 0, 1000, 'the upstream stream to close')
  t.ok(performance.now() - aborted < 1000, 'the emulator saw the upstream call closed within a second')
})

t.test('openai: each refusal is the SDK\'s own error class', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, { rateLimit: { max: 3 } })
  const ask = async (client: OpenAI, body: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}): Promise<unknown> =>
    await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], ...body }).then(() => undefined, (error: unknown) => error)
  const expectError = (error: unknown, errorClass: { name: string, [Symbol.hasInstance]: (value: unknown) => boolean }, fields: object, what: string): void => {
    t.ok(error instanceof errorClass, `${what}: ${errorClass.name}`)
    t.match(error, fields, what)
  }
  expectError(await ask(openAIClient(url, 'not-a-key')), OpenAI.PermissionDeniedError, { status: 403, code: 'invalid_api_key', type: 'authentication_error' }, 'an unknown key')
  // The SDK will not send an empty key: the header is taken out instead.
  const keyless = new OpenAI({ apiKey: 'unused', baseURL: `${url}/v1`, maxRetries: 0, defaultHeaders: { authorization: null } })
  expectError(await ask(keyless), OpenAI.AuthenticationError, { status: 401, code: 'missing_api_key' }, 'no key')
  expectError(await ask(openAIClient(url), { model: 'gemini-0-none' }), OpenAI.NotFoundError, { status: 404, code: 'model_not_found', param: 'model' }, 'a model Gemini does not have')
  emulator.addFault({ kind: 'http-error', status: 400 })
  expectError(await ask(openAIClient(url)), OpenAI.BadRequestError, { status: 400, code: 'invalid_request', type: 'invalid_request_error' }, 'Gemini refusing the request')
  emulator.addFault({ kind: 'http-error', status: 500 }, { times: 4 })
  expectError(await ask(openAIClient(url)), OpenAI.InternalServerError, { status: 502, code: 'upstream_error', type: 'api_error' }, 'Gemini failing')
  emulator.clearFaults()
  expectError(await ask(openAIClient(url)), OpenAI.RateLimitError, { status: 429, code: 'rate_limit_exceeded', type: 'rate_limit_error' }, 'the key\'s budget spent')
})

t.test('openai: a failure after the first chunk is raised as an APIError, never taken as a whole answer', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 503, message: 'The model is overloaded.', status: 'UNAVAILABLE' })
  const stream = await openAIClient(url).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], stream: true })
  const contents: string[] = []
  const error = await (async () => {
    for await (const chunk of stream) contents.push(chunk.choices[0]?.delta.content ?? '')
  })().catch((caught: unknown) => caught)
  t.ok(error instanceof OpenAI.APIError, 'the SDK raises the error event')
  t.match(error, { message: /overloaded/, type: 'server_error', code: 'upstream_unavailable' })
  t.equal(contents.filter(content => content !== '').length, 2, 'the chunks before it arrived')
})

t.test('openai: GET /v1/models lists what a caller may name, and retrieves one', async t => {
  const emulator = await startEmulator(t)
  const { url } = await startGateway(t, emulator, { defaultModel: 'gemini-2.5-flash', models: { allowedModels: ['gemini-2.5-*'], aliases: { 'gpt-4o': 'gemini-2.5-flash' } } })
  const client = openAIClient(url)
  const ids: string[] = []
  for await (const model of client.models.list()) {
    t.equal(model.object, 'model')
    ids.push(model.id)
  }
  t.ok(ids.length > 1)
  t.ok(ids.every(id => id.startsWith('gemini-2.5-') || id === 'gpt-4o'), 'only allowed models and the aliases')
  t.ok(ids.includes('gpt-4o'))
  t.same(await client.models.retrieve('gpt-4o'), { id: 'gpt-4o', object: 'model', created: 0, owned_by: 'amrikyy' })
  t.same(await client.models.retrieve('gemini-2.5-flash'), { id: 'gemini-2.5-flash', object: 'model', created: 0, owned_by: 'google' })
  const missing = await client.models.retrieve('gemini-2.0-flash').catch((error: unknown) => error)
  t.ok(missing instanceof OpenAI.NotFoundError, 'a model the allow-list refuses is not found')
  const completion = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] })
  t.equal(completion.model, 'gemini-2.5-flash', 'an alias answers as the model it names')
  t.equal(emulator.requests.at(-1)!.model, 'gemini-2.5-flash')
})

const WEATHER_PARAMETERS: { type: 'object', properties: Record<string, { type: 'string', enum?: string[] }>, required: string[], additionalProperties: false } = {
  type: 'object',
  properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
  additionalProperties: false
}

t.test('openai: a tool-call round trip, streamed and whole', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const client = openAIClient(url)
  const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'get_weather', description: 'Current weather for a city', parameters: WEATHER_PARAMETERS } }]
  const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris?' }]
  const whole = await client.chat.completions.create({ model: MODEL, messages, tools })
  const message = whole.choices[0]!.message
  t.equal(whole.choices[0]!.finish_reason, 'tool_calls')
  const call = message.tool_calls?.[0]
  t.equal(call?.type, 'function')
  const args = call?.type === 'function' ? JSON.parse(call.function.arguments) as Record<string, unknown> : {}
  t.match(args, { city: String, unit: /^(celsius|fahrenheit)$/ }, 'the arguments follow the declared schema')

  // The SDK's stream helper puts the deltas together into the same call.
  const runner = client.chat.completions.stream({ model: MODEL, messages, tools })
  const streamed = await runner.finalChatCompletion()
  const streamedCall = streamed.choices[0]!.message.tool_calls?.[0]
  t.same(streamedCall?.type === 'function' ? { name: streamedCall.function.name, args: JSON.parse(streamedCall.function.arguments) } : undefined, { name: 'get_weather', args })
  t.equal(streamed.choices[0]!.finish_reason, 'tool_calls')

  const followUp = await client.chat.completions.create({ model: MODEL, tools, messages: [...messages, message, { role: 'tool', tool_call_id: call!.id, content: '{"celsius":21}' }] })
  t.match(followUp.choices[0]!.message.content, /^get_weather returned \{"celsius":21\}\./, 'Gemini answered the tool\'s result in text')
  t.equal(followUp.choices[0]!.finish_reason, 'stop')
})

t.test('Vercel AI SDK: streamText and generateText through @ai-sdk/openai-compatible', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const gateway = createOpenAICompatible({ name: 'amrikyy', baseURL: `${url}/v1`, apiKey: USER_KEY, includeUsage: true })
  const answer = answerFor('Tell me about rivers', undefined, PACE)
  const streamed = streamText({ model: gateway(MODEL), prompt: 'Tell me about rivers', maxRetries: 0 })
  const parts: string[] = []
  for await (const part of streamed.textStream) parts.push(part)
  t.equal(parts.join(''), answer.deltas.join(''))
  const usage = await streamed.usage
  t.equal(usage.inputTokens, answer.promptTokens)
  t.equal(usage.outputTokens, answer.completionTokens)
  t.equal(await streamed.finishReason, 'stop')

  const generated = await generateText({ model: gateway(MODEL), system: 'Be brief.', prompt: 'Tell me about rivers', maxRetries: 0 })
  t.equal(generated.text, answerFor({ system: 'Be brief.', turns: [{ role: 'user', text: 'Tell me about rivers' }] }, undefined, PACE).deltas.join(''))
  t.equal(generated.finishReason, 'stop')
})

t.test('Vercel AI SDK: generateText calls a tool and answers with its result', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const gateway = createOpenAICompatible({ name: 'amrikyy', baseURL: `${url}/v1`, apiKey: USER_KEY })
  const calls: unknown[] = []
  const result = await generateText({
    model: gateway(MODEL),
    prompt: 'What is the weather in Paris?',
    tools: {
      get_weather: tool({
        description: 'Current weather for a city',
        inputSchema: jsonSchema<{ city: string, unit: string }>(WEATHER_PARAMETERS),
        execute: async input => {
          calls.push(input)
          return { celsius: 21 }
        }
      })
    },
    stopWhen: stepCountIs(3),
    maxRetries: 0
  })
  t.equal(calls.length, 1, 'the SDK ran the tool once')
  t.match(calls[0], { city: String, unit: /^(celsius|fahrenheit)$/ })
  t.equal(result.steps.length, 2)
  t.equal(result.steps[0]?.finishReason, 'tool-calls')
  t.match(result.text, /^get_weather returned /)
  t.equal(result.finishReason, 'stop')
})

t.test('LangChain: ChatOpenAI streams through the gateway', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const chat = new ChatOpenAI({ model: MODEL, apiKey: USER_KEY, configuration: { baseURL: `${url}/v1` }, maxRetries: 0, streamUsage: true })
  const answer = answerFor('Tell me about mountains', undefined, PACE)
  let text = ''
  let chunks = 0
  let usage: { input_tokens: number, output_tokens: number } | undefined
  for await (const chunk of await chat.stream('Tell me about mountains')) {
    if (typeof chunk.content === 'string' && chunk.content !== '') chunks++
    text += String(chunk.content)
    usage = chunk.usage_metadata ?? usage
  }
  t.equal(text, answer.deltas.join(''))
  t.equal(chunks, answer.deltas.length, 'one LangChain chunk per Gemini delta')
  t.match(usage, { input_tokens: answer.promptTokens, output_tokens: answer.completionTokens })
  const invoked = await chat.invoke([['system', 'Be brief.'], ['human', 'Tell me about mountains']])
  t.equal(invoked.content, answerFor({ system: 'Be brief.', turns: [{ role: 'user', text: 'Tell me about mountains' }] }, undefined, PACE).deltas.join(''))
})

t.test('the README\'s OpenAI example runs as written', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const root = fileURLToPath(new URL('..', import.meta.url))
  const block = markedBlock(await readFile(join(root, 'README.md'), 'utf8'), 'openai')
  t.equal(block.lang, 'js')
  const dir = await mkdtemp(join(tmpdir(), 'readme-openai-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  // As a reader has it: the `openai` package installed beside the script.
  await mkdir(join(dir, 'node_modules'))
  await symlink(join(root, 'node_modules', 'openai'), join(dir, 'node_modules', 'openai'), 'dir')
  await writeFile(join(dir, 'openai.mjs'), block.code)
  const ran = await promisify(execFile)(process.execPath, [join(dir, 'openai.mjs')], { cwd: dir, env: { PATH: process.env.PATH ?? '', AMRIKYY_URL: url, AMRIKYY_API_KEY: USER_KEY } })
  const answer = answerFor({ system: 'You are a patient physics teacher.', turns: [{ role: 'user', text: 'Why is the sky blue?' }] }, undefined, PACE)
  t.equal(ran.stdout, answer.deltas.join(''))
  t.equal(ran.stderr, `\n${answer.promptTokens + answer.completionTokens} tokens\n`)
})
