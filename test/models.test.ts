import { ApiError, GoogleGenAI } from '@google/genai'
import t from 'tap'
import { createRestGeminiClient } from '../gemini/rest-client.js'
import { createSdkGeminiClient } from '../gemini/sdk-client.js'
import type { GeminiClient } from '../gemini/types.js'
import { UpstreamError } from '../gemini/upstream-error.js'
import { createModelPolicy, labelledModels } from '../plugins/models.js'
import { GEMINI_MODELS } from '../plugins/metrics.js'
import { ADMIN_KEY, buildGateway, postStream, startEmulator, startGateway, USER_KEY, waitUntil } from './support/gateway.js'
import { Exposition } from './support/prometheus.js'
import { startScriptedServer } from './support/scripted-server.js'
import { runUntilExit, startServerProcess } from './support/server-process.js'

const NOT_FOUND_TAIL = 'Call ListModels to see the list of available models and their supported methods.'

/** Google's 404 for a model it does not serve, as the emulator must answer it. */
function notFound (model: string, version: string, method: string): unknown {
  return { error: { code: 404, message: `models/${model} is not found for API version ${version}, or is not supported for ${method}. ${NOT_FOUND_TAIL}`, status: 'NOT_FOUND' } }
}

async function getModels (url: string, headers: Record<string, string> = { 'x-api-key': USER_KEY }): Promise<{ status: number, body: string }> {
  const response = await fetch(`${url}/api/models`, { headers })
  return { status: response.status, body: await response.text() }
}

/** The emulator's catalogue as GET /api/models shows it. */
const CATALOGUE = [
  { id: 'gemini-2.5-pro', displayName: 'Gemini 2.5 Pro', description: 'Gemini 2.5 Pro (served by the local Gemini emulator)', inputTokenLimit: 1048576, outputTokenLimit: 65536, thinking: true },
  { id: 'gemini-2.5-flash', displayName: 'Gemini 2.5 Flash', description: 'Gemini 2.5 Flash (served by the local Gemini emulator)', inputTokenLimit: 1048576, outputTokenLimit: 65536, thinking: true },
  { id: 'gemini-2.0-flash', displayName: 'Gemini 2.0 Flash', description: 'Gemini 2.0 Flash (served by the local Gemini emulator)', inputTokenLimit: 1048576, outputTokenLimit: 8192 },
  { id: 'gemini-2.0-flash-exp', displayName: 'Gemini 2.0 Flash Experimental', description: 'Gemini 2.0 Flash Experimental (served by the local Gemini emulator)', inputTokenLimit: 1048576, outputTokenLimit: 8192 },
  { id: 'gemini-2.0-flash-lite', displayName: 'Gemini 2.0 Flash-Lite', description: 'Gemini 2.0 Flash-Lite (served by the local Gemini emulator)', inputTokenLimit: 1048576, outputTokenLimit: 8192 }
]
const byId = (id: string): typeof CATALOGUE[number] => CATALOGUE.find(model => model.id === id)!

t.test('the emulator answers a model it does not know with Google\'s 404 NOT_FOUND, on every generation RPC', async t => {
  const emulator = await startEmulator(t)
  const body = JSON.stringify({ contents: [{ parts: [{ text: 'hi' }], role: 'user' }] })
  const cases: Array<[string, string, string]> = [
    ['v1beta', 'generateContent', 'generateContent'],
    ['v1beta', 'streamGenerateContent?alt=sse', 'StreamGenerateContent'],
    ['v1', 'countTokens', 'countTokens']
  ]
  for (const [version, rpc, method] of cases) {
    const response = await fetch(`${emulator.url}/${version}/models/gemini-1.5-pro:${rpc}`, { method: 'POST', headers: { 'x-goog-api-key': 'k', 'content-type': 'application/json' }, body })
    t.equal(response.status, 404, rpc)
    t.equal(response.headers.get('content-type'), 'application/json; charset=UTF-8')
    t.strictSame(await response.json(), notFound('gemini-1.5-pro', version, method), rpc)
  }
  t.equal(emulator.requests.filter(r => r.status === 404).length, 3)

  const ai = new GoogleGenAI({ apiKey: 'k', apiVersion: 'v1beta', httpOptions: { baseUrl: emulator.url } })
  const refused = await ai.models.generateContent({ model: 'gemini-1.5-pro', contents: 'hi' }).then(() => undefined, (error: unknown) => error)
  t.ok(refused instanceof ApiError, 'the SDK reads it as its ApiError')
  t.equal((refused as ApiError).status, 404)
  t.strictSame(JSON.parse((refused as ApiError).message), notFound('gemini-1.5-pro', 'v1beta', 'generateContent'))
  await t.rejects(ai.models.generateContentStream({ model: 'gemini-1.5-pro', contents: 'hi' }), { name: 'ApiError', status: 404 })

  const permissive = await startEmulator(t, { extraModels: ['models/my-model'] })
  const served = await fetch(`${permissive.url}/v1/models/my-model:generateContent`, { method: 'POST', headers: { 'x-goog-api-key': 'k' }, body })
  t.equal(served.status, 200, 'extraModels generate besides the catalogue')
  t.equal((await fetch(`${permissive.url}/v1/models/my-model`, { headers: { 'x-goog-api-key': 'k' } })).status, 404, 'but are not listed')
  await t.rejects(startEmulator(t, { extraModels: [''] }), /extraModels must be an array of non-empty model names/)
})

t.test('both Gemini clients list every page of models and get one; an unknown one is an UpstreamError 404', async t => {
  const emulator = await startEmulator(t)
  const clients: Record<string, GeminiClient> = {
    rest: createRestGeminiClient({ apiKey: 'k', baseUrl: emulator.url }),
    sdk: createSdkGeminiClient({ apiKey: 'k', baseUrl: emulator.url })
  }
  const signal = new AbortController().signal
  for (const [name, client] of Object.entries(clients)) {
    emulator.reset()
    const listed = await client.listModels!(signal)
    t.strictSame(listed.map(model => model.id), CATALOGUE.map(model => model.id), `${name}: the catalogue, in order`)
    t.strictSame(listed[1], { id: 'gemini-2.5-flash', displayName: 'Gemini 2.5 Flash', description: byId('gemini-2.5-flash').description, inputTokenLimit: 1048576, outputTokenLimit: 65536, supportedActions: ['generateContent', 'countTokens'], thinking: true })
    t.strictSame(emulator.requests.map(r => r.path), ['/v1/models?pageSize=25'], `${name}: one page of 25`)
    t.strictSame(await client.getModel!('models/gemini-2.0-flash', signal), listed[2])
    const missing = await client.getModel!('gemini-1.0-pro', signal).then(() => undefined, (error: unknown) => error)
    t.ok(missing instanceof UpstreamError, name)
    t.match(missing, { code: 'http_status', status: 404, message: 'models/gemini-1.0-pro is not found for API version v1, or is not supported.' })
  }
  await (clients.rest as ReturnType<typeof createRestGeminiClient>).close()
})

t.test('both clients follow nextPageToken to the last page; a list that is not a list is malformed', async t => {
  const paths: string[] = []
  const model = (id: string, methods: string[]): unknown => ({ name: `models/${id}`, displayName: id, supportedGenerationMethods: methods })
  const upstream = await startScriptedServer(t, (request, response) => {
    paths.push(request.url ?? '')
    const token = new URL(request.url ?? '/', 'http://x').searchParams.get('pageToken')
    const page = token === null
      ? { models: [model('a', ['generateContent']), model('embedder', ['embedContent'])], nextPageToken: 'p2' }
      : token === 'p2' ? { models: [model('b', ['generateContent'])] } : 'not a page'
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(page))
  })
  const clients: Record<string, GeminiClient> = {
    rest: createRestGeminiClient({ apiKey: 'k', baseUrl: upstream }),
    sdk: createSdkGeminiClient({ apiKey: 'k', baseUrl: upstream })
  }
  t.teardown(async () => { await (clients.rest as ReturnType<typeof createRestGeminiClient>).close() })
  for (const [name, client] of Object.entries(clients)) {
    paths.length = 0
    const listed = await client.listModels!(new AbortController().signal)
    t.strictSame(listed.map(m => [m.id, m.supportedActions]), [['a', ['generateContent']], ['embedder', ['embedContent']], ['b', ['generateContent']]], name)
    t.strictSame(paths, ['/v1/models?pageSize=25', '/v1/models?pageSize=25&pageToken=p2'], `${name}: two pages`)
  }
  const gateway = await buildGateway(t, upstream, { rateLimit: false, models: { listTtlMs: 0 } })
  const listed = async (): Promise<unknown> => (await gateway.inject({ method: 'GET', url: '/api/models', headers: { 'x-api-key': USER_KEY } })).json()
  t.strictSame(await listed(), { models: [{ id: 'a', displayName: 'a' }, { id: 'b', displayName: 'b' }] }, 'only models that generate are listed')
  paths.length = 0
  await listed()
  t.equal(paths.length, 2, 'with a TTL of 0 every call asks again')
  const broken = await startScriptedServer(t, (_request, response) => { response.writeHead(200, { 'content-type': 'application/json' }).end('{"models":{}}') })
  await t.rejects(createRestGeminiClient({ apiKey: 'k', baseUrl: broken }).listModels(new AbortController().signal), { code: 'malformed' })
  const notAPage = await startScriptedServer(t, (_request, response) => { response.writeHead(200, { 'content-type': 'application/json' }).end('"not a page"') })
  await t.rejects(createSdkGeminiClient({ apiKey: 'k', baseUrl: notAPage }).listModels!(new AbortController().signal), { code: 'malformed' }, 'the SDK choking on it is malformed too')
})

t.test('the model policy: aliases first, then the allow-list; its options are checked by name', async t => {
  const policy = createModelPolicy({ allowedModels: ['gemini-2.5-*', 'models/gemini-2.0-flash'], aliases: { 'gemini-2.0-flash-exp': 'gemini-2.5-flash' } })
  t.strictSame(policy.resolve('gemini-2.5-pro'), { model: 'gemini-2.5-pro' })
  t.strictSame(policy.resolve('models/gemini-2.5-pro'), { model: 'models/gemini-2.5-pro' }, 'the name goes to Gemini as written')
  t.strictSame(policy.resolve('gemini-2.0-flash-exp'), { model: 'gemini-2.5-flash' })
  t.strictSame(policy.resolve('models/gemini-2.0-flash-exp'), { model: 'gemini-2.5-flash' })
  t.strictSame(policy.resolve('gemini-2.0-flash').model, 'gemini-2.0-flash')
  t.strictSame(policy.resolve('gemini-2.0-flash-lite').refusal?.body, { error: 'Model not allowed: gemini-2.0-flash-lite' })
  t.strictSame(policy.resolve('gemini-2.5').refusal?.body, { error: 'Model not allowed: gemini-2.5' }, 'a pattern matches the whole name')
  t.strictSame(labelledModels(policy, 'gemini-2.0-flash-exp', GEMINI_MODELS), ['gemini-2.5-flash', 'gemini-2.0-flash', 'gemini-2.5-pro'])
  const open = createModelPolicy()
  t.strictSame(labelledModels(open, 'gemini-2.0-flash-exp', GEMINI_MODELS), ['gemini-2.0-flash-exp', ...GEMINI_MODELS], 'unconfigured: the labels of old')
  t.strictSame(open.resolve('anything-at-all'), { model: 'anything-at-all' })

  t.throws(() => createModelPolicy({ allowedModels: ['gemini 2.5'] }), { message: 'models: option "allowedModels" has an entry that is not a model name or * pattern: "gemini 2.5"' })
  t.throws(() => createModelPolicy({ allowedModels: [] }), /option "allowedModels" must be a non-empty array/)
  t.throws(() => createModelPolicy({ aliases: { a: '../b' } }), /option "aliases" must map model names to model names: "a"/)
  t.throws(() => createModelPolicy({ allowedModels: ['gemini-2.5-*'], aliases: { a: 'gemini-2.0-flash' } }), { message: 'models: alias a points to gemini-2.0-flash, which "allowedModels" does not allow' })
})

t.test('GET /api/models: authenticated, the catalogue, filtered by the allow-list, aliases beside, cached', async t => {
  const emulator = await startEmulator(t)
  const { url } = await startGateway(t, emulator, { rateLimit: { max: 3 } })
  t.strictSame(await getModels(url, {}), { status: 401, body: '{"error":"Unauthorized: API key is missing."}' })
  t.strictSame(await getModels(url, { 'x-api-key': 'guess' }), { status: 403, body: '{"error":"Forbidden: Invalid API key."}' })
  const open = await getModels(url)
  t.equal(open.status, 200)
  t.strictSame(JSON.parse(open.body), { models: CATALOGUE })
  t.equal(open.body, JSON.stringify({ models: CATALOGUE }), 'the fields in that order')
  t.equal((await getModels(url)).body, open.body)
  t.strictSame(emulator.requests.map(r => [r.method, r.path]), [['GET', '/v1/models?pageSize=25']], 'a second call within the TTL is served from the cache')
  t.match(await (await postStream(url, { prompt: 'p' })).text(), /"complete":true/)
  const limited = await fetch(`${url}/api/models`, { headers: { 'x-api-key': USER_KEY } })
  t.equal(limited.status, 429, 'on the same per-key budget as the stream route')
  t.equal(await limited.text(), '{"error":"Too Many Requests","message":"You have exceeded the request limit. Please try again later."}')

  const emulator2 = await startEmulator(t)
  const configured = await startGateway(t, emulator2, {
    models: { allowedModels: ['gemini-2.5-*'], aliases: { 'gemini-2.0-flash-exp': 'gemini-2.5-flash', fast: 'gemini-2.5-flash' } },
    rateLimit: false
  })
  const asked = await Promise.all([getModels(configured.url), getModels(configured.url, { 'x-api-key': ADMIN_KEY })])
  t.equal(emulator2.requests.length, 1, 'concurrent callers share one fetch')
  t.strictSame(asked[0], asked[1])
  t.strictSame(JSON.parse(asked[0].body), {
    models: [
      byId('gemini-2.5-pro'),
      byId('gemini-2.5-flash'),
      { ...byId('gemini-2.5-flash'), id: 'gemini-2.0-flash-exp', aliasOf: 'gemini-2.5-flash' },
      { ...byId('gemini-2.5-flash'), id: 'fast', aliasOf: 'gemini-2.5-flash' }
    ]
  })
  t.match(asked[0].body, /^\{"models":\[\{"id":"gemini-2\.5-pro",.*\{"id":"fast","aliasOf":"gemini-2\.5-flash","displayName"/)
})

t.test('GET /api/models when Gemini fails: 502 with Gemini\'s message, and the failure is not cached', async t => {
  // The gateway's upstream key is not the one this emulator takes.
  const emulator = await startEmulator(t, { apiKey: 'another-key' })
  const { url } = await startGateway(t, emulator, { rateLimit: false })
  const refused = { status: 502, body: '{"error":"Failed to list models","message":"API key not valid. Please pass a valid API key."}' }
  t.strictSame(await getModels(url), refused)
  t.strictSame(await getModels(url), refused)
  t.equal(emulator.requests.length, 2, 'the next call asks again')

  const gone = await buildGateway(t, 'http://127.0.0.1:9', { rateLimit: false })
  const answer = await gone.inject({ method: 'GET', url: '/api/models', headers: { 'x-api-key': USER_KEY } })
  t.strictSame([answer.statusCode, answer.body], [502, '{"error":"Failed to list models","message":"Connection to Gemini failed"}'])

  const ownClient = await buildGateway(t, 'http://127.0.0.1:9', {
    gemini: { client: { streamGenerate: async () => { throw new Error('unused') }, countTokens: async () => 0 } },
    rateLimit: false
  })
  const without = await ownClient.inject({ method: 'GET', url: '/api/models', headers: { 'x-api-key': USER_KEY } })
  t.strictSame([without.statusCode, without.body], [502, '{"error":"Failed to list models","message":"The Gemini client cannot list models"}'], 'a host\'s client without listModels is still accepted')
})

t.test('POST /api/stream: a model the allow-list does not name is a 400 naming it; an alias calls its target', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 2 })
  const { url } = await startGateway(t, emulator, {
    models: { allowedModels: ['gemini-2.5-*'], aliases: { 'gemini-2.0-flash-exp': 'gemini-2.5-flash' } },
    rateLimit: false
  })
  for (const model of ['gemini-2.0-flash', 'models/gemini-2.0-flash', 'gemini-1.5-pro']) {
    const refused = await postStream(url, { prompt: 'p', model })
    t.equal(refused.status, 400)
    t.equal(await refused.text(), JSON.stringify({ error: `Model not allowed: ${model.replace('models/', '')}` }))
  }
  t.equal(emulator.requests.length, 0, 'Gemini is never called for a refused model')

  t.match(await (await postStream(url, { prompt: 'p' })).text(), /"complete":true/, 'the default model, through its alias')
  t.match(await (await postStream(url, { prompt: 'p', model: 'models/gemini-2.0-flash-exp' })).text(), /"complete":true/)
  t.match(await (await postStream(url, { prompt: 'p', model: 'gemini-2.5-pro' })).text(), /"complete":true/)
  t.strictSame(emulator.requests.map(r => r.path), [
    '/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse',
    '/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse',
    '/v1/models/gemini-2.5-pro:streamGenerateContent?alt=sse'
  ])

  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  const completed = 'amrikyy_stream_sessions_completed_total'
  t.strictSame(Object.fromEntries(scrape.labelSets(completed).map(labels => [labels.model, scrape.value(completed, labels)])), { 'gemini-2.5-flash': 2, 'gemini-2.5-pro': 1 },
    'labelled by the model called; the refused ones never reach a label')

  await t.rejects(buildGateway(t, emulator.url, { models: { allowedModels: ['gemini-2.5-*'] } }),
    { message: 'models: the default model gemini-2.0-flash-exp is not allowed by "allowedModels" (give it an alias to an allowed model)' })
})

t.test('a model Gemini does not serve is answered as any Gemini failure before the first chunk, with Google\'s message', async t => {
  const emulator = await startEmulator(t)
  for (const client of ['rest', 'sdk'] as const) {
    emulator.reset()
    const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'k', baseUrl: emulator.url, client }, rateLimit: false })
    const response = await postStream(url, { prompt: 'p', model: 'gemini-1.5-pro' })
    t.equal(response.status, 500, client)
    t.equal(await response.text(), JSON.stringify({
      error: 'Failed to start stream',
      message: `models/gemini-1.5-pro is not found for API version v1, or is not supported for StreamGenerateContent. ${NOT_FOUND_TAIL}`
    }), client)
    t.equal(emulator.requests.length, 1, `${client}: a 404 is not retried`)
  }
})

t.test('the standalone server: ALLOWED_MODELS and MODEL_ALIASES are checked at start, by name', async t => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ ALLOWED_MODELS: 'gemini 2.5' }, 'ALLOWED_MODELS must be comma-separated model names or * patterns, such as "gemini-2.5-*,gemini-2.0-flash"'],
    [{ MODEL_ALIASES: 'gemini-2.0-flash-exp' }, 'MODEL_ALIASES must be comma-separated name=target pairs of model names, each name once, such as "gemini-2.0-flash-exp=gemini-2.5-flash"'],
    [{ MODEL_ALIASES: 'a=gemini-2.5-flash,a=gemini-2.5-pro' }, 'MODEL_ALIASES must be comma-separated name=target pairs of model names, each name once, such as "gemini-2.0-flash-exp=gemini-2.5-flash"'],
    [{ ALLOWED_MODELS: 'gemini-2.5-*' }, 'DEFAULT_MODEL gemini-2.0-flash-exp is not allowed by ALLOWED_MODELS: allow it, or map it in MODEL_ALIASES to an allowed model'],
    [{ ALLOWED_MODELS: 'gemini-2.5-*', MODEL_ALIASES: 'gemini-2.0-flash-exp=gemini-2.0-flash' }, 'MODEL_ALIASES maps gemini-2.0-flash-exp to gemini-2.0-flash, which ALLOWED_MODELS does not allow']
  ]
  for (const [env, message] of cases) {
    const refused = await runUntilExit(env)
    t.same([refused.code, refused.stderr], [1, `amrikyy gateway failed to start: ${message}\n`], JSON.stringify(env))
  }
})

t.test('with a real key the server checks DEFAULT_MODEL with models.get and warns in one line when Gemini does not serve it', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 2 })
  const warning = (line: string): boolean => line.includes('"level":40') && line.includes('DEFAULT_MODEL')
  const retired = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, DEFAULT_MODEL: 'gemini-1.0-pro' })
  await waitUntil(() => retired.output().split('\n').some(warning), 5000, 'the warning')
  const lines = retired.output().split('\n').filter(warning)
  t.equal(lines.length, 1, 'one line')
  t.match(JSON.parse(lines[0]!), {
    level: 40,
    defaultModel: 'gemini-1.0-pro',
    model: 'gemini-1.0-pro',
    msg: 'DEFAULT_MODEL gemini-1.0-pro is not a model Gemini serves (models.get answered 404), so requests that name no model will fail: set DEFAULT_MODEL to a current model, or map it in MODEL_ALIASES (e.g. MODEL_ALIASES=gemini-1.0-pro=gemini-2.5-flash)'
  })
  t.notMatch(retired.output(), /upstream-secret-key/, 'no key in the logs')
  t.equal((await postStream(retired.url, { prompt: 'p', model: 'gemini-2.0-flash' })).status, 200, 'the start went on')

  const aliased = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, DEFAULT_MODEL: 'gemini-1.0-pro', MODEL_ALIASES: 'gemini-1.0-pro=gemini-2.5-flash', ALLOWED_MODELS: 'gemini-2.5-flash' })
  await waitUntil(() => emulator.requests.filter(r => r.rpc === 'get').length === 2, 5000, 'the second check')
  t.strictSame(emulator.requests.filter(r => r.rpc === 'get').map(r => [r.path, r.status]), [['/v1/models/gemini-1.0-pro', 404], ['/v1/models/gemini-2.5-flash', 200]], 'the alias\'s target is checked')
  t.match(await (await postStream(aliased.url, { prompt: 'p' })).text(), /"complete":true/)
  t.equal(emulator.requests.at(-1)!.path, '/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse')
  t.equal((await postStream(aliased.url, { prompt: 'p', model: 'gemini-2.0-flash' })).status, 400)
  t.equal(aliased.output().split('\n').filter(warning).length, 0, 'no warning when the default resolves')
})
