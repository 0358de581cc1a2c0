import t from 'tap'
import { USER_KEY, buildGateway } from './support/gateway.js'
import { MODEL_NAME_RULE } from '../schemas/refusals.js'
import { Exposition } from './support/prometheus.js'

// Nothing listens here: every request below must be refused before the gateway calls Gemini.
const UNREACHABLE_UPSTREAM = 'http://127.0.0.1:9'

t.test('API key checks answer the contract bodies byte for byte', async t => {
  const app = await buildGateway(t, UNREACHABLE_UPSTREAM)
  const post = async (headers: Record<string, string>): Promise<{ status: number, body: string }> => {
    const response = await app.inject({ method: 'POST', url: '/api/stream', headers: { 'content-type': 'application/json', ...headers }, payload: '{"prompt":"hi"}' })
    return { status: response.statusCode, body: response.body }
  }
  t.same(await post({}), { status: 401, body: '{"error":"Unauthorized: API key is missing."}' })
  t.same(await post({ 'x-api-key': '' }), { status: 401, body: '{"error":"Unauthorized: API key is missing."}' })
  t.same(await post({ 'x-api-key': 'nope' }), { status: 403, body: '{"error":"Forbidden: Invalid API key."}' })
  t.same(await post({ 'x-api-key': USER_KEY.slice(0, -1) }), { status: 403, body: '{"error":"Forbidden: Invalid API key."}' })
  // Auth runs before the body is parsed: a bad key never learns whether its body was valid.
  const unauthenticatedGarbage = await app.inject({ method: 'POST', url: '/api/stream', headers: { 'content-type': 'application/json' }, payload: '{' })
  t.equal(unauthenticatedGarbage.statusCode, 401)

  const metrics = await app.inject({ method: 'GET', url: '/api/metrics' })
  const scrape = new Exposition(metrics.body)
  t.equal(scrape.sample('amrikyy_auth_failures_total', { reason: 'missing' }), 3)
  t.equal(scrape.sample('amrikyy_auth_failures_total', { reason: 'invalid' }), 2)
})

t.test('every invalid body is a 400 naming what is wrong', async t => {
  const app = await buildGateway(t, UNREACHABLE_UPSTREAM)
  const cases: Array<[payload: string, status: number, body: string]> = [
    ['{}', 400, '{"error":"Prompt is required"}'],
    ['{"prompt":""}', 400, '{"error":"Prompt is required"}'],
    ['{"prompt":"   \\n\\t "}', 400, '{"error":"Prompt is required"}'],
    ['{"agent":"poet"}', 400, '{"error":"Prompt is required"}'],
    ['', 400, '{"error":"Prompt is required"}'],
    ['{"prompt":123}', 400, '{"error":"prompt must be string"}'],
    ['{"prompt":"hi","temprature":0.5}', 400, '{"error":"Unknown field: temprature"}'],
    ['{"prompt":"hi","options":{"temprature":0.5,"topk":3}}', 400, '{"error":"Unknown fields: options.temprature, options.topk"}'],
    ['{"prompt":"hi","options":{"temperature":2.5}}', 400, '{"error":"options.temperature must be <= 2"}'],
    ['{"prompt":"hi","options":{"temperature":"0.5"}}', 400, '{"error":"options.temperature must be number"}'],
    ['{"prompt":"hi","options":{"topP":-0.1}}', 400, '{"error":"options.topP must be >= 0"}'],
    ['{"prompt":"hi","options":{"topK":1.5}}', 400, '{"error":"options.topK must be integer"}'],
    ['{"prompt":"hi","options":{"topK":0}}', 400, '{"error":"options.topK must be >= 1"}'],
    ['{"prompt":"hi","options":{"maxOutputTokens":0}}', 400, '{"error":"options.maxOutputTokens must be >= 1"}'],
    ['{"prompt":"hi","model":"../../etc"}', 400, JSON.stringify({ error: MODEL_NAME_RULE })],
    ['{"prompt":"hi","model":"gemini..pro"}', 400, JSON.stringify({ error: MODEL_NAME_RULE })],
    ['{"prompt":"hi","agent":"bad agent\\n"}', 400, '{"error":"agent must match pattern \\"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$\\""}'],
    ['[]', 400, '{"error":"Request body must be object"}'],
    ['null', 400, '{"error":"Request body must be object"}'],
    ['{"prompt":"hi"', 400, '{"error":"Malformed JSON in request body"}'],
    [JSON.stringify({ prompt: 'x'.repeat(32_001) }), 400, '{"error":"prompt must not have more than 32000 characters"}']
  ]
  for (const [payload, status, body] of cases) {
    const response = await app.inject({ method: 'POST', url: '/api/stream', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, payload })
    t.equal(response.statusCode, status, payload.slice(0, 60))
    t.equal(response.body, body, payload.slice(0, 60))
    t.equal(response.headers['content-type'], 'application/json; charset=utf-8')
  }
})

t.test('wrong content types and oversized bodies are refused as JSON', async t => {
  const app = await buildGateway(t, UNREACHABLE_UPSTREAM)
  const textPlain = await app.inject({ method: 'POST', url: '/api/stream', headers: { 'content-type': 'text/plain', 'x-api-key': USER_KEY }, payload: 'prompt=hi' })
  t.equal(textPlain.statusCode, 415)
  t.equal(textPlain.body, '{"error":"Unsupported Media Type: send the body as application/json"}')

  const huge = await app.inject({ method: 'POST', url: '/api/stream', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, payload: JSON.stringify({ prompt: 'x'.repeat(2_000_000) }) })
  t.equal(huge.statusCode, 413)
  t.equal(huge.body, '{"error":"Request body is too large"}')
})
