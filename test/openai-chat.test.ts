// POST /v1/chat/completions over the wire, byte for byte: OpenAI's chunk format and [DONE], the whole
// chat.completion, the request mapping as Gemini receives it, and every refusal in OpenAI's shape.

import t from 'tap'
import { answerFor, type GeminiEmulator } from '../emulator/server.js'
import { ADMIN_KEY, startEmulator, startGateway, USER_KEY } from './support/gateway.js'

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
