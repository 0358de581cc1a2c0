import t from 'tap'
import OpenAI from 'openai'
import { GoogleGenAI, ApiError } from '@google/genai'
import { sha256Hex, type ApiKeyEntry } from '../plugins/auth.js'
import { parseKeyEntries, KeysFileError } from '../standalone/keys-file.js'
import { defaultKeyPolicyOf, loadEnv } from '../standalone/env.js'
import { postStream, startEmulator, startGateway } from './support/gateway.js'

const key = (name: string): string => `${name}-key-0123456789abcdef`
function entry (name: string, policy: ApiKeyEntry['policy'] = {}): ApiKeyEntry {
  return { name, sha256: sha256Hex(key(name)), role: 'user', policy }
}
const json = (body: unknown): { method: string, headers: Record<string, string>, body: string } => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

t.test('the keys file takes the policy fields beside name, sha256 and role, and names a wrong one without its value', async t => {
  const base = { name: 'team', sha256: sha256Hex('k'), role: 'user' }
  t.same(parseKeyEntries([{ ...base, tokensPerMinute: 20000, tokensPerDay: 1000000, requestsPerWindow: 30, models: ['gemini-2.5-*'], maxOutputTokens: 512, maxConcurrentStreams: 2, expiresAt: '2027-01-31T00:00:00Z', disabled: false }], 'keys.json'), [{
    ...base,
    policy: { tokensPerMinute: 20000, tokensPerDay: 1000000, requestsPerWindow: 30, maxOutputTokens: 512, maxConcurrentStreams: 2, models: ['gemini-2.5-*'], expiresAt: Date.UTC(2027, 0, 31), disabled: false }
  }])
  t.same(parseKeyEntries([base], 'keys.json'), [base], 'an entry without policy fields is as before')
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ tokensPerMinute: 0 }, '"tokensPerMinute" must be a positive integer'],
    [{ tokensPerDay: 1.5 }, '"tokensPerDay" must be a positive integer'],
    [{ maxConcurrentStreams: '2' }, '"maxConcurrentStreams" must be a positive integer'],
    [{ models: [] }, '"models" must be a non-empty array of model names or * patterns'],
    [{ models: ['gemini 2.5'] }, '"models" must be a non-empty array of model names or * patterns'],
    [{ expiresAt: '2027-01-31' }, '"expiresAt" must be an ISO 8601 time with a zone, such as "2027-01-31T00:00:00Z"'],
    [{ expiresAt: 'sk-secret-pasted-here' }, '"expiresAt" must be an ISO 8601 time with a zone, such as "2027-01-31T00:00:00Z"'],
    [{ disabled: 'yes' }, '"disabled" must be true or false'],
    [{ usdPerDay: 0 }, '"usdPerDay" must be a positive number of US dollars'],
    [{ usdPerDay: '5' }, '"usdPerDay" must be a positive number of US dollars']
  ]
  for (const [fields, message] of cases) {
    t.throws(() => parseKeyEntries([{ ...base, ...fields }], 'keys.json'), new KeysFileError(`keys.json: entry 0 ("team"): ${message}`), message)
  }
})

t.test('TOKEN_LIMIT_PER_MINUTE, TOKEN_LIMIT_PER_DAY and MAX_CONCURRENT_STREAMS_PER_KEY are the defaults of every key', async t => {
  t.same(defaultKeyPolicyOf(loadEnv({})), {}, 'unset: unlimited, as before')
  t.same(defaultKeyPolicyOf(loadEnv({ TOKEN_LIMIT_PER_MINUTE: '20000', TOKEN_LIMIT_PER_DAY: '1000000', MAX_CONCURRENT_STREAMS_PER_KEY: '4' })), { tokensPerMinute: 20000, tokensPerDay: 1000000, maxConcurrentStreams: 4 })
  t.throws(() => loadEnv({ TOKEN_LIMIT_PER_MINUTE: '0' }), /TOKEN_LIMIT_PER_MINUTE must be an integer from 1/)
})

t.test('an expired or disabled key is refused on every API, in each API\'s shape', async t => {
  const emulator = await startEmulator(t)
  const keyEntries = [entry('expired', { expiresAt: Date.now() - 1000 }), entry('disabled', { disabled: true }), entry('later', { expiresAt: Date.now() + 3_600_000 })]
  const { url } = await startGateway(t, emulator, { keyEntries })

  const stream = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('expired') })
  t.equal(stream.status, 403)
  t.equal(await stream.text(), '{"error":"Forbidden: API key expired."}')
  const disabled = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('disabled') })
  t.equal(disabled.status, 403)
  t.equal(await disabled.text(), '{"error":"Forbidden: API key disabled."}')
  const later = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('later') })
  t.equal(later.status, 200, 'a key whose expiry is ahead works')
  await later.text()

  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key('expired'), maxRetries: 0 })
  const refused = await openai.chat.completions.create({ model: 'gemini-2.0-flash', messages: [{ role: 'user', content: 'hi' }] }).catch((error: unknown) => error)
  t.ok(refused instanceof OpenAI.PermissionDeniedError, 'the openai SDK raises PermissionDeniedError')
  t.match((refused as InstanceType<typeof OpenAI.APIError>).error, { message: 'Forbidden: API key expired.', type: 'authentication_error', code: 'expired_api_key' })

  const google = new GoogleGenAI({ apiKey: key('disabled'), httpOptions: { baseUrl: `${url}/gemini` } })
  const denied = await google.models.generateContent({ model: 'gemini-2.0-flash', contents: 'hi' }).catch((error: unknown) => error)
  t.ok(denied instanceof ApiError, '@google/genai raises ApiError')
  t.equal((denied as ApiError).status, 403)
  t.match((denied as ApiError).message, /"status":"PERMISSION_DENIED"/)
  t.match((denied as ApiError).message, /Forbidden: API key disabled\./)
  t.equal(emulator.requests.length, 1, 'only the working key reached Gemini')

  const metrics = await (await fetch(`${url}/api/metrics`)).text()
  t.match(metrics, /amrikyy_auth_failures_total\{reason="expired"\} 2/)
  t.match(metrics, /amrikyy_auth_failures_total\{reason="disabled"\} 2/)
})

t.test('requestsPerWindow replaces the role\'s request limit for that key only', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 2 })
  const { url } = await startGateway(t, emulator, { keyEntries: [entry('tight', { requestsPerWindow: 2 }), entry('roomy')], rateLimit: { max: 5 } })
  for (const expected of ['1', '0']) {
    const response = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('tight') })
    t.equal(response.status, 200)
    t.equal(response.headers.get('x-ratelimit-limit'), '2')
    t.equal(response.headers.get('x-ratelimit-remaining'), expected)
    await response.text()
  }
  const third = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('tight') })
  t.equal(third.status, 429)
  t.equal(await third.text(), '{"error":"Too Many Requests","message":"You have exceeded the request limit. Please try again later."}')
  const other = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key('roomy') })
  t.equal(other.headers.get('x-ratelimit-limit'), '5', 'another key keeps the role\'s limit')
  await other.text()
})

t.test('a key\'s models narrow what it may use after aliases, on every route and in every model list', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 2 })
  const { url } = await startGateway(t, emulator, {
    keyEntries: [entry('flash-only', { models: ['gemini-2.5-flash*'] }), entry('any')],
    models: { allowedModels: ['gemini-2.5-*', 'gemini-2.0-flash', 'gemini-2.0-flash-exp'], aliases: { fast: 'gemini-2.5-flash', big: 'gemini-2.5-pro' } }
  })
  const headers = { 'x-api-key': key('flash-only') }
  const allowed = await postStream(url, { prompt: 'hello', model: 'fast' }, headers)
  t.equal(allowed.status, 200, 'an alias whose target the key may use')
  await allowed.text()
  for (const model of ['gemini-2.5-pro', 'big', 'gemini-2.0-flash']) {
    const refused = await postStream(url, { prompt: 'hello', model }, headers)
    t.equal(refused.status, 400, model)
    t.equal(await refused.text(), JSON.stringify({ error: `Model not allowed: ${model}` }))
  }
  const broad = await postStream(url, { prompt: 'hello', model: 'gemini-2.5-pro' }, { 'x-api-key': key('any') })
  t.equal(broad.status, 200, 'a key without models has the gateway\'s list')
  await broad.text()

  const listed = await (await fetch(`${url}/api/models`, { headers })).json() as { models: Array<{ id: string }> }
  const ids = listed.models.map(model => model.id)
  t.ok(ids.includes('fast') && ids.includes('gemini-2.5-flash'), `the key's models are listed: ${ids.join(', ')}`)
  t.ok(ids.every(id => id === 'fast' || id.startsWith('gemini-2.5-flash')), 'and nothing else: not big, not gemini-2.5-pro, not gemini-2.0-flash')

  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key('flash-only'), maxRetries: 0 })
  const notFound = await openai.chat.completions.create({ model: 'gemini-2.5-pro', messages: [{ role: 'user', content: 'hi' }] }).catch((error: unknown) => error)
  t.ok(notFound instanceof OpenAI.NotFoundError)
  t.match((notFound as InstanceType<typeof OpenAI.APIError>).error, { code: 'model_not_found', param: 'model' })
  const openaiModels = (await openai.models.list()).data.map(model => model.id)
  t.ok(openaiModels.includes('fast') && !openaiModels.includes('big') && !openaiModels.includes('gemini-2.5-pro'), '/v1/models is narrowed too')

  const google = new GoogleGenAI({ apiKey: key('flash-only'), httpOptions: { baseUrl: `${url}/gemini` } })
  const forbidden = await google.models.generateContent({ model: 'gemini-2.5-pro', contents: 'hi' }).catch((error: unknown) => error)
  t.ok(forbidden instanceof ApiError)
  t.equal((forbidden as ApiError).status, 403)
  const googleModels: string[] = []
  for await (const model of await google.models.list()) googleModels.push(model.name ?? '')
  t.ok(googleModels.length > 0 && googleModels.every(name => name.startsWith('models/gemini-2.5-flash')), `Gemini's list is narrowed too: ${googleModels.join(', ')}`)
})

t.test('maxOutputTokens caps every request of the key, on every route, and what Gemini is asked is the smaller one', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 50 })
  const { url } = await startGateway(t, emulator, { keyEntries: [entry('capped', { maxOutputTokens: 5 })] })
  const apiKey = key('capped')
  const sent = (): unknown => (emulator.requests.at(-1)?.body as { generationConfig?: { maxOutputTokens?: unknown } }).generationConfig?.maxOutputTokens

  for (const [options, expected] of [[undefined, 5], [{ maxOutputTokens: 100 }, 5], [{ maxOutputTokens: 3 }, 3]] as const) {
    const response = await postStream(url, { prompt: 'hello', ...(options === undefined ? {} : { options }) }, { 'x-api-key': apiKey })
    const body = await response.text()
    t.equal(sent(), expected, `/api/stream with ${JSON.stringify(options)}`)
    t.match(body, new RegExp(`"completionTokens":${expected},`), 'and the answer is that long')
  }

  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 })
  const completion = await openai.chat.completions.create({ model: 'gemini-2.0-flash', max_tokens: 4096, messages: [{ role: 'user', content: 'hi' }] })
  t.equal(sent(), 5, '/v1/chat/completions lowers max_tokens')
  t.equal(completion.usage?.completion_tokens, 5)
  t.equal(completion.choices[0]?.finish_reason, 'length')

  const body = { contents: [{ role: 'user', parts: [{ text: 'hi' }] }], generationConfig: { temperature: 0.5, maxOutputTokens: 40 } }
  const forwarded = await fetch(`${url}/gemini/v1beta/models/gemini-2.0-flash:generateContent`, { ...json(body), headers: { 'content-type': 'application/json', 'x-goog-api-key': apiKey } })
  t.equal(forwarded.status, 200)
  await forwarded.text()
  t.same((emulator.requests.at(-1)?.body as { generationConfig: unknown }).generationConfig, { temperature: 0.5, maxOutputTokens: 5 }, 'the passthrough rewrites only the cap')
  const google = new GoogleGenAI({ apiKey, httpOptions: { baseUrl: `${url}/gemini` } })
  let text = ''
  for await (const chunk of await google.models.generateContentStream({ model: 'gemini-2.0-flash', contents: 'hi' })) text += chunk.text ?? ''
  t.equal(sent(), 5, 'a passthrough stream without a cap gets the key\'s')
  t.equal(text.trim().split(/\s+/).length, 5)
})
