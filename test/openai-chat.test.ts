// POST /v1/chat/completions over the wire, byte for byte: OpenAI's chunk format and [DONE], the whole
// chat.completion, the request mapping as Gemini receives it, and every refusal in OpenAI's shape.

import t from 'tap'
import { answerFor, BLOCKED_PROMPT_TRIGGER, UNSAFE_ANSWER_TRIGGER, type GeminiEmulator } from '../emulator/server.js'
import { GatewayLifecycle } from '../plugins/lifecycle.js'
import { Exposition } from './support/prometheus.js'
import { createHash } from 'node:crypto'
import Fastify from 'fastify'
import streamGateway from '../app.js'
import { ADMIN_KEY, listenOnLoopback, startEmulator, startGateway, USER_KEY } from './support/gateway.js'

const MODEL = 'gemini-2.0-flash-exp'

async function postChat (url: string, body: unknown, headers: Record<string, string> = { authorization: `Bearer ${USER_KEY}` }): Promise<Response> {
  return await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
}

/** The body of the last request Gemini received. */
function bodyOf (emulator: GeminiEmulator): Record<string, unknown> {
  return emulator.requests.at(-1)!.body as Record<string, unknown>
}

interface Chunk { id: string, object: string, created: number, model: string, choices: Array<{ index: number, delta: Record<string, unknown>, logprobs: null, finish_reason: string | null }>, usage?: unknown }

/** The `data:` payloads of an SSE body, `[DONE]` as the string itself. */
function dataLines (body: string): unknown[] {
  t.equal(body.split('\n\n').at(-1), '', 'the body ends with a whole event')
  return body.split('\n\n').filter(event => event !== '').map(event => {
    t.match(event, /^data: /, 'every event is one data line')
    const payload = event.slice('data: '.length)
    return payload === '[DONE]' ? payload : JSON.parse(payload)
  })
}

t.test('a streamed completion is OpenAI\'s chunk format byte for byte, usage last, then [DONE]', async t => {
  const emulator = await startEmulator(t, { chunkCount: 4, defaultMaxTokens: 12 })
  const { url } = await startGateway(t, emulator)
  const answer = answerFor('Why is the sky blue?', undefined, { chunkCount: 4, defaultMaxTokens: 12 })
  const response = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'Why is the sky blue?' }], stream: true, stream_options: { include_usage: true } })
  t.equal(response.status, 200)
  t.equal(response.headers.get('content-type'), 'text/event-stream')
  const body = await response.text()
  const first = JSON.parse(body.slice('data: '.length, body.indexOf('\n\n'))) as Chunk
  t.match(first.id, /^chatcmpl-[0-9a-f]{32}$/)
  t.ok(Math.abs(first.created - Date.now() / 1000) < 5, 'created is the completion\'s time in seconds')
  const frame = (rest: string): string => `data: {"id":"${first.id}","object":"chat.completion.chunk","created":${first.created},"model":"${MODEL}","choices":[${rest}}\n\n`
  const usage = { prompt_tokens: answer.promptTokens, completion_tokens: answer.completionTokens, total_tokens: answer.promptTokens + answer.completionTokens, prompt_tokens_details: { cached_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0 } }
  const expected = frame('{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null') +
    answer.deltas.map(delta => frame(`{"index":0,"delta":{"content":${JSON.stringify(delta)}},"logprobs":null,"finish_reason":null}],"usage":null`)).join('') +
    frame('{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null') +
    frame(`],"usage":${JSON.stringify(usage)}`) +
    'data: [DONE]\n\n'
  t.equal(body, expected)
})

t.test('without include_usage no chunk carries usage; max_tokens ends with finish_reason length', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2 })
  const { url } = await startGateway(t, emulator)
  const response = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'count to three' }], stream: true, max_tokens: 3 })
  const events = dataLines(await response.text())
  t.equal(events.at(-1), '[DONE]')
  const chunks = events.slice(0, -1) as Chunk[]
  t.ok(chunks.every(chunk => !('usage' in chunk)), 'no usage field at all')
  t.equal(new Set(chunks.map(chunk => `${chunk.id}/${chunk.created}`)).size, 1, 'one id and created for the whole completion')
  t.same(chunks.at(-1)!.choices[0], { index: 0, delta: {}, logprobs: null, finish_reason: 'length' })
  t.same(bodyOf(emulator).generationConfig, { maxOutputTokens: 3 })
})

t.test('a whole completion is one chat.completion object with usage', async t => {
  const emulator = await startEmulator(t, { chunkCount: 3, defaultMaxTokens: 9 })
  const { url } = await startGateway(t, emulator)
  const answer = answerFor('hello there', undefined, { chunkCount: 3, defaultMaxTokens: 9 })
  const response = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hello there' }] })
  t.equal(response.status, 200)
  t.equal(response.headers.get('content-type'), 'application/json; charset=utf-8')
  const completion = await response.json() as { id: string, created: number }
  t.same(completion, {
    id: completion.id,
    object: 'chat.completion',
    created: completion.created,
    model: MODEL,
    choices: [{ index: 0, message: { role: 'assistant', content: answer.deltas.join(''), refusal: null }, logprobs: null, finish_reason: 'stop' }],
    usage: { prompt_tokens: answer.promptTokens, completion_tokens: answer.completionTokens, total_tokens: answer.promptTokens + answer.completionTokens, prompt_tokens_details: { cached_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0 } }
  })
  t.match(completion.id, /^chatcmpl-[0-9a-f]{32}$/)
  t.equal(emulator.requests.at(-1)!.rpc, 'streamGenerateContent', 'the upstream call is streamed even for a whole answer')
})

t.test('messages and parameters reach Gemini as its request', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 6 })
  const { url } = await startGateway(t, emulator)
  const png = 'iVBORw0KGgo='
  const response = await postChat(url, {
    model: 'gemini-2.5-flash',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'developer', content: [{ type: 'text', text: 'Answer in English.' }] },
      { role: 'user', content: 'first question' },
      { role: 'assistant', content: 'first answer' },
      { role: 'user', content: [{ type: 'text', text: 'what is this?' }, { type: 'image_url', image_url: { url: `data:image/png;base64,${png}`, detail: 'low' } }] },
      { role: 'user', content: 'and say it twice' }
    ],
    temperature: 0.2,
    top_p: 0.9,
    max_completion_tokens: 100_000,
    stop: 'END',
    seed: 7,
    presence_penalty: 0.5,
    frequency_penalty: -0.5,
    response_format: { type: 'json_object' },
    reasoning_effort: 'low',
    n: 1,
    logprobs: false,
    store: false,
    parallel_tool_calls: true,
    user: 'someone@example.com'
  })
  t.equal(response.status, 200)
  await response.text()
  t.same(emulator.requests.at(-1)!.body, {
    contents: [
      { parts: [{ text: 'first question' }], role: 'user' },
      { parts: [{ text: 'first answer' }], role: 'model' },
      { parts: [{ text: 'what is this?\nand say it twice' }, { inlineData: { mimeType: 'image/png', data: png } }], role: 'user' }
    ],
    systemInstruction: { parts: [{ text: 'Be brief.\nAnswer in English.' }], role: 'user' },
    generationConfig: {
      temperature: 0.2,
      topP: 0.9,
      maxOutputTokens: 65_536,
      stopSequences: ['END'],
      presencePenalty: 0.5,
      frequencyPenalty: -0.5,
      seed: 7,
      responseMimeType: 'application/json',
      thinkingConfig: { thinkingBudget: 1024, includeThoughts: true }
    }
  })
})

t.test('thought summaries come as reasoning_content, never as content', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 6 })
  const { url } = await startGateway(t, emulator)
  const streamed = dataLines(await (await postChat(url, { model: 'gemini-2.5-flash', messages: [{ role: 'user', content: 'think first' }], stream: true, reasoning_effort: 'medium' })).text())
  const deltas = (streamed.slice(0, -1) as Chunk[]).map(chunk => chunk.choices[0]!.delta)
  const reasoning = deltas.filter(delta => 'reasoning_content' in delta)
  t.ok(reasoning.length > 0, 'reasoning deltas were sent')
  t.ok(reasoning.every(delta => Object.keys(delta).join() === 'reasoning_content'), 'a reasoning delta holds nothing else')
  const lastReasoning = deltas.findLastIndex(delta => 'reasoning_content' in delta)
  const firstContent = deltas.findIndex(delta => typeof delta.content === 'string' && delta.content !== '')
  t.ok(lastReasoning < firstContent, 'the thoughts come before the answer')
  const whole = await (await postChat(url, { model: 'gemini-2.5-flash', messages: [{ role: 'user', content: 'think first' }], reasoning_effort: 'medium' })).json() as { choices: Array<{ message: { content: string, reasoning_content: string } }>, usage: { completion_tokens_details: { reasoning_tokens: number } } }
  t.equal(whole.choices[0]!.message.reasoning_content, reasoning.map(delta => delta.reasoning_content).join(''))
  t.equal(whole.choices[0]!.message.content, deltas.map(delta => delta.content ?? '').join(''))
  t.ok(whole.usage.completion_tokens_details.reasoning_tokens > 0, 'thinking tokens are reported')
  t.same(bodyOf(emulator).generationConfig, { thinkingConfig: { thinkingBudget: 8192, includeThoughts: true } })
})

t.test('every refusal is in OpenAI\'s shape, with its param', async t => {
  const emulator = await startEmulator(t)
  const { url } = await startGateway(t, emulator, { models: { allowedModels: ['gemini-2.0-*', 'gemini-2.5-flash'] } })
  const error = (message: string | RegExp, type: string, param: string | null, code: string | null): object => ({ error: { message, type, param, code } })
  const cases: Array<[string, unknown, Record<string, string> | undefined, number, object]> = [
    ['no key', { model: MODEL, messages: [{ role: 'user', content: 'hi' }] }, {}, 401, error('Unauthorized: API key is missing.', 'authentication_error', null, 'missing_api_key')],
    ['an unknown key', { model: MODEL, messages: [{ role: 'user', content: 'hi' }] }, { authorization: 'Bearer nope' }, 403, error('Forbidden: Invalid API key.', 'authentication_error', null, 'invalid_api_key')],
    ['malformed JSON', '{"model":', undefined, 400, error('Malformed JSON in request body', 'invalid_request_error', null, 'invalid_json')],
    ['an unknown field', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], temprature: 1 }, undefined, 400, error('Unrecognized request argument supplied: temprature', 'invalid_request_error', 'temprature', 'unknown_parameter')],
    ['no messages', { model: MODEL }, undefined, 400, error('Missing required parameter: \'messages\'.', 'invalid_request_error', 'messages', 'missing_required_parameter')],
    ['a temperature out of range', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], temperature: 3 }, undefined, 400, error(/^Invalid value: temperature must be <= 2/, 'invalid_request_error', 'temperature', 'invalid_value')],
    ['n above 1', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], n: 2 }, undefined, 400, error(/^n is not supported/, 'invalid_request_error', 'n', 'unsupported_parameter')],
    ['logprobs', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], logprobs: true }, undefined, 400, error(/^logprobs is not supported/, 'invalid_request_error', 'logprobs', 'unsupported_parameter')],
    ['logit_bias', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], logit_bias: { 42: 10 } }, undefined, 400, error(/^logit_bias is not supported/, 'invalid_request_error', 'logit_bias', 'unsupported_parameter')],
    ['audio output', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], modalities: ['text', 'audio'] }, undefined, 400, error(/^modalities is not supported/, 'invalid_request_error', 'modalities', 'unsupported_parameter')],
    ['a remote image', { model: MODEL, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/cat.png' } }] }] }, undefined, 400, error(/does not fetch URLs/, 'invalid_request_error', 'messages[0].content[0].image_url.url', 'invalid_image_url')],
    ['a GIF', { model: MODEL, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/gif;base64,R0lGODlh' } }] }] }, undefined, 400, error(/does not take image\/gif inline/, 'invalid_request_error', 'messages[0].content[0].image_url.url', 'invalid_image_format')],
    ['an unknown role', { model: MODEL, messages: [{ role: 'robot', content: 'hi' }] }, undefined, 400, error(/^messages\[0\]\.role must be one of/, 'invalid_request_error', 'messages[0].role', 'invalid_value')],
    ['an assistant last', { model: MODEL, messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }] }, undefined, 400, error(/^The last message must be from the user or a tool/, 'invalid_request_error', 'messages[1].role', 'invalid_value')],
    ['system messages only', { model: MODEL, messages: [{ role: 'system', content: 'be nice' }] }, undefined, 400, error('messages must hold at least one user message', 'invalid_request_error', 'messages', 'invalid_value')],
    ['an empty user message', { model: MODEL, messages: [{ role: 'user', content: '' }] }, undefined, 400, error('messages[0].content must not be empty', 'invalid_request_error', 'messages[0].content', 'invalid_value')],
    ['a tool answer to no call', { model: MODEL, messages: [{ role: 'user', content: 'hi' }, { role: 'tool', tool_call_id: 'call_x', content: '{}' }] }, undefined, 400, error(/answers no tool call/, 'invalid_request_error', 'messages[1].tool_call_id', 'invalid_value')],
    ['tool_choice without tools', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], tool_choice: 'required' }, undefined, 400, error('tool_choice is only allowed when tools are specified', 'invalid_request_error', 'tool_choice', 'invalid_value')],
    ['a model the allow-list refuses', { model: 'gemini-1.5-pro', messages: [{ role: 'user', content: 'hi' }] }, undefined, 404, error('The model `gemini-1.5-pro` does not exist or you do not have access to it.', 'invalid_request_error', 'model', 'model_not_found')],
    ['a model name no Gemini model has', { model: 'gpt-4o/../x', messages: [{ role: 'user', content: 'hi' }] }, undefined, 404, error('The model `gpt-4o/../x` does not exist or you do not have access to it.', 'invalid_request_error', 'model', 'model_not_found')]
  ]
  for (const [name, body, headers, status, expected] of cases) {
    const response = await postChat(url, body, headers === undefined ? undefined : { ...headers })
    t.equal(response.status, status, name)
    t.match(response.headers.get('content-type'), /^application\/json/, name)
    t.match(await response.json(), expected, name)
  }
  const text = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${USER_KEY}`, 'content-type': 'text/plain' }, body: 'hi' })
  t.equal(text.status, 415)
  t.match(await text.json(), error(/application\/json/, 'invalid_request_error', null, 'unsupported_media_type'))
  t.equal(emulator.requests.filter(request => request.path.includes('generateContent')).length, 0, 'no refused request reached Gemini')
})

t.test('X-API-Key works as well as Bearer, and the admin key is an admin key', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 2 })
  const { url } = await startGateway(t, emulator, { rateLimit: { max: 1, adminMax: 2 } })
  t.equal((await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }] }, { 'x-api-key': USER_KEY })).status, 200)
  const limited = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }] }, { authorization: `bearer ${USER_KEY}` })
  t.equal(limited.status, 429, 'Bearer and X-API-Key spend one budget')
  t.match(await limited.json(), { error: { type: 'rate_limit_error', code: 'rate_limit_exceeded', param: null, message: /request limit/ } })
  t.ok(Number(limited.headers.get('retry-after')) > 0)
  t.equal(limited.headers.get('x-ratelimit-limit'), '1')
  const stream = await fetch(`${url}/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body: JSON.stringify({ prompt: 'hi' }) })
  t.equal(stream.status, 429, 'the stream route spends the same budget')
  const admin = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }] }, { authorization: `Bearer ${ADMIN_KEY}` })
  t.equal(admin.status, 200)
  t.equal(admin.headers.get('x-ratelimit-limit'), '2')
})

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false }
  }
}

/** What Gemini itself answers to the same request: the function call it makes. */
async function callGeminiMakes (emulator: GeminiEmulator, model: string): Promise<{ name: string, args: Record<string, unknown>, thoughtSignature?: string }> {
  const sent = bodyOf(emulator)
  const response = await fetch(`${emulator.url}/v1/models/${model}:generateContent`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-goog-api-key': 'upstream-secret-key' }, body: JSON.stringify(sent) })
  const answer = await response.json() as { candidates: Array<{ content: { parts: Array<{ functionCall?: { name: string, args: Record<string, unknown> }, thoughtSignature?: string }> } }> }
  const part = answer.candidates[0]!.content.parts.find(candidate => candidate.functionCall !== undefined)!
  return { ...part.functionCall!, ...(part.thoughtSignature === undefined ? {} : { thoughtSignature: part.thoughtSignature }) }
}

t.test('a streamed function call: its index, id and name, then its arguments, then finish_reason tool_calls', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 6 })
  const { url } = await startGateway(t, emulator)
  const response = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [WEATHER_TOOL], tool_choice: 'required', stream: true })
  const body = await response.text()
  const sent = bodyOf(emulator)
  t.same(sent.tools, [{ functionDeclarations: [{ name: 'get_weather', description: 'Current weather for a city', parametersJsonSchema: WEATHER_TOOL.function.parameters }] }])
  t.same(sent.toolConfig, { functionCallingConfig: { mode: 'ANY' } })
  const call = await callGeminiMakes(emulator, MODEL)
  const first = JSON.parse(body.slice('data: '.length, body.indexOf('\n\n'))) as Chunk
  const id = /"id":"(call_[0-9a-f]{24})"/.exec(body)?.[1]
  t.ok(id !== undefined, 'the call has an OpenAI-style id')
  const frame = (choice: string): string => `data: {"id":"${first.id}","object":"chat.completion.chunk","created":${first.created},"model":"${MODEL}","choices":[${choice}]}\n\n`
  t.equal(body,
    frame('{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}') +
    frame(`{"index":0,"delta":{"tool_calls":[{"index":0,"id":"${id}","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}`) +
    frame(`{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":${JSON.stringify(JSON.stringify(call.args))}}}]},"logprobs":null,"finish_reason":null}`) +
    frame('{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}') +
    'data: [DONE]\n\n')
})

t.test('a tool round trip: tool_calls and tool messages reach Gemini as functionCall and functionResponse parts', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 6 })
  const { url } = await startGateway(t, emulator)
  const ask = { model: 'gemini-2.5-flash', messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [WEATHER_TOOL], reasoning_effort: 'low' }
  const first = await (await postChat(url, ask)).json() as { choices: Array<{ message: { content: string | null, tool_calls: Array<{ id: string, function: { name: string, arguments: string }, extra_content: { google: { thought_signature: string } } }> }, finish_reason: string }> }
  const choice = first.choices[0]!
  t.equal(choice.finish_reason, 'tool_calls')
  t.equal(choice.message.content, null, 'an answer that only calls has no content')
  const made = await callGeminiMakes(emulator, 'gemini-2.5-flash')
  const toolCall = choice.message.tool_calls[0]!
  t.same(JSON.parse(toolCall.function.arguments), made.args)
  t.equal(toolCall.extra_content.google.thought_signature, made.thoughtSignature, 'the thinking model\'s signature is handed to the client')

  const answer = await postChat(url, { ...ask, messages: [...ask.messages, choice.message, { role: 'tool', tool_call_id: toolCall.id, content: '{"celsius":21}' }, { role: 'tool', tool_call_id: toolCall.id, content: 'sunny' }] })
  const second = await answer.json() as { choices: Array<{ message: { content: string }, finish_reason: string }> }
  t.match(second.choices[0]!.message.content, /^get_weather returned \{"celsius":21\}\. get_weather returned \{"result":"sunny"\}\./)
  t.equal(second.choices[0]!.finish_reason, 'stop')
  t.same((bodyOf(emulator).contents as unknown[]).slice(1), [
    { parts: [{ functionCall: { name: 'get_weather', args: made.args }, thoughtSignature: made.thoughtSignature }], role: 'model' },
    { parts: [{ functionResponse: { name: 'get_weather', response: { celsius: 21 } } }, { functionResponse: { name: 'get_weather', response: { result: 'sunny' } } }], role: 'user' }
  ], 'the call goes back with its signature, and both answers in one user turn')
})

t.test('tool_choice maps to Gemini\'s function-calling modes', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 4 })
  const { url } = await startGateway(t, emulator)
  const other = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } }
  const cases: Array<[unknown, object]> = [
    ['none', { mode: 'NONE' }],
    ['auto', { mode: 'AUTO' }],
    ['required', { mode: 'ANY' }],
    [{ type: 'function', function: { name: 'get_time' } }, { mode: 'ANY', allowedFunctionNames: ['get_time'] }],
    [{ type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [{ type: 'function', function: { name: 'get_weather' } }] } }, { mode: 'VALIDATED', allowedFunctionNames: ['get_weather'] }]
  ]
  for (const [choice, config] of cases) {
    const response = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }], tools: [WEATHER_TOOL, other], tool_choice: choice })
    t.equal(response.status, 200, JSON.stringify(choice))
    await response.text()
    t.same(bodyOf(emulator).toolConfig, { functionCallingConfig: config }, JSON.stringify(choice))
  }
  const unknown = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }], tools: [WEATHER_TOOL], tool_choice: { type: 'function', function: { name: 'nope' } } })
  t.equal(unknown.status, 400)
  t.match(await unknown.json(), { error: { param: 'tool_choice', message: 'tool_choice names nope, which tools does not declare' } })
  const badName = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: '1st-tool' } }] })
  t.equal(badName.status, 400)
  t.match(await badName.json(), { error: { param: 'tools[0].function.name', code: 'invalid_value' } })
  const custom = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'custom', custom: { name: 'x' } }] })
  t.match(await custom.json(), { error: { param: 'tools[0].type' } })
  const badArguments = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }] }, { role: 'tool', tool_call_id: 'c1', content: 'x' }] })
  t.match(await badArguments.json(), { error: { param: 'messages[1].tool_calls[0].function.arguments', message: /must be a JSON object/ } })
})

t.test('a safety stop ends as finish_reason content_filter; a blocked prompt is a 400 content_filter', async t => {
  const pace = { chunkCount: 4, defaultMaxTokens: 12 }
  const emulator = await startEmulator(t, pace)
  const { url } = await startGateway(t, emulator, { stream: { heartbeatMs: 0 } })
  const prompt = `tell me ${UNSAFE_ANSWER_TRIGGER} things`
  const first = answerFor(prompt, undefined, pace).deltas[0]!
  const events = dataLines(await (await postChat(url, { model: MODEL, messages: [{ role: 'user', content: prompt }], stream: true, stream_options: { include_usage: true } })).text())
  t.equal(events.at(-1), '[DONE]', 'a content filter stop is a whole answer to OpenAI clients')
  const chunks = events.slice(0, -1) as Chunk[]
  t.same(chunks.map(chunk => chunk.choices[0]?.delta), [{ role: 'assistant', content: '' }, { content: first }, {}, undefined])
  t.equal(chunks.at(-2)!.choices[0]!.finish_reason, 'content_filter')
  t.match(chunks.at(-1)!.usage, { prompt_tokens: Number, completion_tokens: Number }, 'what was generated is reported')
  const whole = await (await postChat(url, { model: MODEL, messages: [{ role: 'user', content: prompt }] })).json() as { choices: Array<{ message: { content: string }, finish_reason: string }> }
  t.same([whole.choices[0]!.message.content, whole.choices[0]!.finish_reason], [first, 'content_filter'])

  const blocked = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: `please ${BLOCKED_PROMPT_TRIGGER}` }], stream: true })
  t.equal(blocked.status, 400)
  t.same(await blocked.json(), { error: { message: 'Gemini blocked the prompt: SAFETY', type: 'invalid_request_error', param: 'messages', code: 'content_filter' } })
})

t.test('the stream metrics count these completions with api="openai" and `user` as a bounded agent label', async t => {
  const emulator = await startEmulator(t, { chunkCount: 3, defaultMaxTokens: 6 })
  const { url } = await startGateway(t, emulator)
  await (await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }], stream: true, user: 'search-team' })).text()
  await (await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'hi' }], user: 'someone@example.com' })).text()
  await (await fetch(`${url}/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body: '{"prompt":"hi"}' })).text()
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  const completed = (labels: Record<string, string>): number | undefined => scrape.sample('amrikyy_stream_sessions_completed_total', labels)
  t.equal(completed({ api: 'openai', agent: 'search-team', model: MODEL }), 1)
  const digest = createHash('sha256').update('someone@example.com').digest('hex').slice(0, 12)
  t.equal(completed({ api: 'openai', agent: `user-${digest}`, model: MODEL }), 1, 'an email becomes a digest, never a label')
  t.equal(completed({ api: 'stream', agent: 'unknown', model: MODEL }), 1)
  t.equal(scrape.sample('amrikyy_stream_chunks_sent_total', { api: 'openai', agent: 'search-team', model: MODEL }), 3)
  t.equal(scrape.sample('amrikyy_active_streams', { api: 'openai', agent: 'search-team', model: MODEL }), 0)
  t.notOk(scrape.text.includes('example.com'))
})

t.test('heartbeats are SSE comments; a draining gateway refuses in OpenAI\'s shape', async t => {
  const emulator = await startEmulator(t, { chunkCount: 3, chunkDelayMs: 120, defaultMaxTokens: 6 })
  const lifecycle = new GatewayLifecycle()
  const { url } = await startGateway(t, emulator, { lifecycle, stream: { heartbeatMs: 50 } })
  const slow = await (await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'slowly' }], stream: true })).text()
  t.match(slow, /\n\n: ping\n\n/, 'a heartbeat comment between the events')
  t.match(slow, /data: \[DONE\]\n\n$/)
  const drained = lifecycle.drain(200)
  const refused = await postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'too late' }] })
  t.equal(refused.status, 503)
  t.same(await refused.json(), { error: { message: 'Service Unavailable: The gateway is shutting down; retry the request', type: 'server_error', param: null, code: 'service_unavailable' } })
  await drained
})

t.test('under a host\'s prefix the routes move with the gateway', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 3 })
  const host = Fastify({ logger: false, forceCloseConnections: true })
  await host.register(streamGateway, { prefix: '/ai', apiKeys: [USER_KEY], gemini: { apiKey: 'k', baseUrl: emulator.url } })
  t.teardown(async () => { await host.close() })
  const url = await listenOnLoopback(host)
  const completion = await fetch(`${url}/ai/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${USER_KEY}` }, body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] }) })
  t.equal(completion.status, 200)
  t.match(await completion.json(), { object: 'chat.completion' })
  const models = await fetch(`${url}/ai/v1/models`, { headers: { authorization: `Bearer ${USER_KEY}` } })
  t.match(await models.json(), { object: 'list', data: Array })
  t.equal((await fetch(`${url}/v1/models`)).status, 404, 'nothing outside the prefix')
})

t.test('a whole completion whose client leaves aborts the upstream call and counts as cancelled', async t => {
  const emulator = await startEmulator(t, { chunkCount: 40, chunkDelayMs: 50, defaultMaxTokens: 80 })
  const { url } = await startGateway(t, emulator)
  const leave = new AbortController()
  const asked = postChat(url, { model: MODEL, messages: [{ role: 'user', content: 'a long one' }] })
  void asked.catch(() => {})
  await emulator.waitForRequests(1)
  const pending = fetch(`${url}/v1/chat/completions`, { method: 'POST', signal: leave.signal, headers: { 'content-type': 'application/json', authorization: `Bearer ${USER_KEY}` }, body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'another long one' }] }) })
  void pending.catch(() => {})
  await emulator.waitForRequests(2)
  leave.abort()
  const start = performance.now()
  while (emulator.openStreams() > 1 && performance.now() - start < 2000) await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(emulator.openStreams(), 1, 'only the call of the client that stayed is still open')
  t.equal((await (await asked).json() as { object: string }).object, 'chat.completion', 'the other answer is unaffected')
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.equal(scrape.sample('amrikyy_stream_sessions_cancelled_total', { api: 'openai', agent: 'unknown', model: MODEL }), 1)
  t.equal(scrape.sample('amrikyy_stream_sessions_completed_total', { api: 'openai', agent: 'unknown', model: MODEL }), 1)
})
