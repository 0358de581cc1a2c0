import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import OpenAI from 'openai'
import { sha256Hex } from '../plugins/auth.js'
import { buildGateway, listenOnLoopback, openStream, postStream, startEmulator, USER_KEY, type RunningGateway } from './support/gateway.js'
import { REDIS_SKIP, redisNamespace } from './support/redis.js'
import type { GeminiEmulator } from '../emulator/server.js'

const TOKEN = 'management-secret-0123456789'
const FILE_KEY = 'file-key-0123456789abcdef'
const operator = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }

interface Instance extends RunningGateway { logs: string[] }

async function instance (t: Test, emulator: GeminiEmulator, shared: { url: string, nameSpace: string }, withApi: boolean): Promise<Instance> {
  const logs: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { logs.push(chunk.toString()); done() } })
  const app = await buildGateway(t, emulator.url, {
    keyEntries: [{ name: 'from-file', sha256: sha256Hex(FILE_KEY), role: 'user', policy: { tokensPerDay: 1000 } }],
    budgets: { redis: shared.url, nameSpace: `${shared.nameSpace}budget:` },
    managedKeys: { redis: shared.url, nameSpace: `${shared.nameSpace}keys:` },
    ...(withApi ? { management: { token: TOKEN } } : {})
  }, { logger: { level: 'info', stream } })
  return { app, url: await listenOnLoopback(app), logs }
}

/** Tries `check` every 20 ms until it holds, and says how long that took. */
async function within (ms: number, check: () => Promise<boolean>): Promise<number> {
  const started = Date.now()
  while (!await check()) {
    if (Date.now() - started > ms) return Infinity
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  return Date.now() - started
}

t.test('the management API creates, lists, changes and revokes keys, and every instance follows within a second', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 6 })
  const shared = await redisNamespace(t, 'admin')
  const one = await instance(t, emulator, shared, true)
  const two = await instance(t, emulator, shared, false)

  const created = await fetch(`${one.url}/admin/keys`, { method: 'POST', headers: operator, body: JSON.stringify({ name: 'search-team', role: 'user', tokensPerMinute: 20000, models: ['gemini-2.5-*'], expiresAt: '2099-01-01T00:00:00Z' }) })
  t.equal(created.status, 201)
  const entry = await created.json() as Record<string, unknown> & { key: string }
  t.match(entry.key, /^amk_[A-Za-z0-9_-]{43}$/, 'the raw key, once')
  t.same({ ...entry, key: undefined, created: undefined }, {
    name: 'search-team',
    role: 'user',
    source: 'management',
    readOnly: false,
    policy: { tokensPerMinute: 20000, models: ['gemini-2.5-*'], expiresAt: '2099-01-01T00:00:00.000Z' },
    created: undefined,
    lastUsed: null,
    usage: { tokensThisMinute: 0, tokensToday: 0, openStreams: 0 },
    key: undefined
  })
  t.ok(Math.abs(Date.parse(String(entry.created)) - Date.now()) < 60_000, `created is the time of creation (${String(entry.created)})`)
  const stored = JSON.stringify(await shared.redis.hgetall(`${shared.nameSpace}keys:entries`))
  t.notOk(stored.includes(entry.key), 'Redis holds only the key\'s hash')
  t.ok(stored.includes(sha256Hex(entry.key)))

  const seen = await within(1000, async () => {
    const response = await postStream(two.url, { prompt: 'hello', model: 'gemini-2.5-flash' }, { 'x-api-key': entry.key })
    await response.text()
    return response.status === 200
  })
  t.ok(seen < 1000, `the other instance serves the new key within a second (${seen} ms)`)
  const refused = await postStream(two.url, { prompt: 'hello', model: 'gemini-2.0-flash' }, { 'x-api-key': entry.key })
  t.equal(refused.status, 400, 'with its policy')
  t.equal(await refused.text(), '{"error":"Model not allowed: gemini-2.0-flash"}')

  await new Promise(resolve => setTimeout(resolve, 1200))
  const listed = await (await fetch(`${one.url}/admin/keys`, { headers: operator })).json() as { keys: Array<Record<string, unknown>> }
  const names = listed.keys.map(key => key.name)
  t.same(names, ['key-' + sha256Hex(USER_KEY).slice(0, 12), 'from-file', 'key-' + sha256Hex('test-admin-key-0123456789').slice(0, 12), 'search-team'])
  const fromFile = listed.keys.find(key => key.name === 'from-file')
  t.match(fromFile, { source: 'configuration', readOnly: true, policy: { tokensPerDay: 1000 }, created: null })
  const managed = listed.keys.find(key => key.name === 'search-team') as { lastUsed: string, usage: { tokensToday: number } }
  t.ok(Date.parse(managed.lastUsed) > Date.now() - 10_000, 'last used, as the other instance saw it')
  t.equal(managed.usage.tokensToday, 7, 'usage so far: the one stream\'s 1 prompt and 6 answer tokens')
  const listing = JSON.stringify(listed)
  t.notOk(listing.includes(entry.key) || listing.includes(sha256Hex(entry.key)) || listing.includes(sha256Hex(FILE_KEY)), 'no key and no hash in the list')

  const patched = await fetch(`${one.url}/admin/keys/search-team`, { method: 'PATCH', headers: operator, body: JSON.stringify({ models: null, disabled: true }) })
  t.equal(patched.status, 200)
  t.match(await patched.json(), { name: 'search-team', policy: { tokensPerMinute: 20000, disabled: true, expiresAt: '2099-01-01T00:00:00.000Z' } })
  const disabledIn = await within(1000, async () => {
    const response = await postStream(two.url, { prompt: 'hello' }, { 'x-api-key': entry.key })
    return response.status === 403 && await response.text() === '{"error":"Forbidden: API key disabled."}'
  })
  t.ok(disabledIn < 1000, `a change reaches the other instance within a second (${disabledIn} ms)`)
  await fetch(`${one.url}/admin/keys/search-team`, { method: 'PATCH', headers: operator, body: JSON.stringify({ disabled: null }) })

  const openai = new OpenAI({ baseURL: `${two.url}/v1`, apiKey: entry.key, maxRetries: 0 })
  await within(1000, async () => await openai.models.list().then(() => true, () => false))
  const deleted = await fetch(`${one.url}/admin/keys/search-team`, { method: 'DELETE', headers: operator })
  t.equal(deleted.status, 204)
  const revokedIn = await within(1000, async () => {
    const response = await postStream(two.url, { prompt: 'hello' }, { 'x-api-key': entry.key })
    return response.status === 403 && await response.text() === '{"error":"Forbidden: Invalid API key."}'
  })
  t.ok(revokedIn < 1000, `a revocation reaches the other instance within a second (${revokedIn} ms)`)

  const again = await fetch(`${one.url}/admin/keys/search-team`, { method: 'DELETE', headers: operator })
  t.equal(again.status, 404)
  t.equal(await again.text(), '{"error":"No managed key named search-team"}')
  for (const instance of [one, two]) {
    const log = instance.logs.join('')
    t.notOk(log.includes(entry.key) || log.includes(TOKEN), 'no log line holds the raw key or the management token')
  }
})

t.test('the management API refuses callers without the token, a caller\'s key, bad bodies, taken names and read-only keys', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t)
  const shared = await redisNamespace(t, 'admin-refusals')
  const { url } = await instance(t, emulator, shared, true)
  const post = async (body: unknown, headers: Record<string, string> = operator): Promise<[number, string]> => {
    const response = await fetch(`${url}/admin/keys`, { method: 'POST', headers, body: JSON.stringify(body) })
    return [response.status, await response.text()]
  }
  const good = { name: 'team', role: 'user' }
  t.same(await post(good, { 'content-type': 'application/json' }), [401, '{"error":"Unauthorized: send the management token as Authorization: Bearer <MANAGEMENT_API_KEY>."}'])
  t.same(await post(good, { 'content-type': 'application/json', authorization: 'Bearer wrong-token-0123456789' }), [403, '{"error":"Forbidden: Invalid management token."}'])
  t.same(await post(good, { 'content-type': 'application/json', authorization: `Bearer ${USER_KEY}` }), [403, '{"error":"Forbidden: Invalid management token."}'], 'a caller\'s key is not the management token')
  const list = await fetch(`${url}/admin/keys`, { headers: { 'x-api-key': USER_KEY } })
  t.equal(list.status, 401, 'nor does X-API-Key open it')
  await list.text()

  t.same(await post({ name: 'bad name', role: 'user' }), [400, '{"error":"name must match pattern \\"^[A-Za-z0-9._@-]{1,64}$\\""}'])
  t.same(await post({ name: 'team', role: 'root' }), [400, '{"error":"role must be one of \\"user\\", \\"admin\\""}'])
  t.same(await post({ ...good, tokensPerMinute: 0 }), [400, '{"error":"tokensPerMinute must be >= 1"}'])
  t.same(await post({ ...good, expiresAt: 'tomorrow' }), [400, '{"error":"\\"expiresAt\\" must be an ISO 8601 time with a zone, such as \\"2027-01-31T00:00:00Z\\""}'])
  t.same(await post({ ...good, key: 'chosen-by-me' }), [400, '{"error":"Unknown field: key"}'])
  t.equal((await post(good))[0], 201)
  t.same(await post(good), [409, '{"error":"A key named team already exists"}'])
  t.same(await post({ name: 'from-file', role: 'user' }), [409, '{"error":"The key from-file comes from the configuration (API_KEYS_FILE or the environment) and is read-only here"}'])
  const patch = await fetch(`${url}/admin/keys/from-file`, { method: 'PATCH', headers: operator, body: '{"disabled":true}' })
  t.equal(patch.status, 409)
  await patch.text()
  const missing = await fetch(`${url}/admin/keys/nobody`, { method: 'PATCH', headers: operator, body: '{"disabled":true}' })
  t.same([missing.status, await missing.text()], [404, '{"error":"No managed key named nobody"}'])
})

t.test('without Redis the management API lists the configured keys and answers 503 naming REDIS_URL to any change', async t => {
  const emulator = await startEmulator(t)
  const app = await buildGateway(t, emulator.url, { management: { token: TOKEN } })
  const url = await listenOnLoopback(app)
  const created = await fetch(`${url}/admin/keys`, { method: 'POST', headers: operator, body: '{"name":"team","role":"user"}' })
  t.equal(created.status, 503)
  t.equal(await created.text(), '{"error":"Service Unavailable","message":"Managed keys need the shared store: set REDIS_URL."}')
  const listed = await (await fetch(`${url}/admin/keys`, { headers: operator })).json() as { keys: Array<{ readOnly: boolean }> }
  t.equal(listed.keys.length, 2)
  t.ok(listed.keys.every(key => key.readOnly))
  await t.rejects(buildGateway(t, emulator.url, { management: { token: USER_KEY } }), /must not be one of the callers' API keys/, 'the token can never be a caller\'s key')
})

t.test('GET /admin/usage gives requests, tokens and outcomes per key per hour, the same from every instance, kept for the retention', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 3, defaultMaxTokens: 6 })
  const shared = await redisNamespace(t, 'admin-usage')
  const started = Date.UTC(2026, 11, 3, 10, 0, 15)
  const range = 'from=2026-12-03T09:30:00Z&to=2026-12-03T10:30:00Z'
  const options = (withApi: boolean): Parameters<typeof buildGateway>[2] => ({
    keyEntries: [{ name: 'metered', sha256: sha256Hex(FILE_KEY), role: 'user', policy: { tokensPerMinute: 40, maxOutputTokens: 6 } }],
    // A clock that stands still, so that the minute cannot end halfway through the test.
    budgets: { redis: shared.url, nameSpace: `${shared.nameSpace}budget:`, retentionDays: 2, now: () => started },
    ...(withApi ? { management: { token: TOKEN } } : {})
  })
  const one = await listenOnLoopback(await buildGateway(t, emulator.url, options(true)))
  const two = await listenOnLoopback(await buildGateway(t, emulator.url, options(false)))
  const headers = { 'x-api-key': FILE_KEY }
  // Each stream reserves 7 + 6 = 13 tokens and is charged 1 + 6 = 7.
  for (const url of [one, two]) await (await postStream(url, { prompt: 'hello' }, headers)).text()
  emulator.addFault({ kind: 'http-error', status: 400, body: { error: { code: 400, message: 'bad', status: 'INVALID_ARGUMENT' } } }, { match: 'fails' })
  await (await postStream(two, { prompt: 'fails' }, headers)).text()
  emulator.addFault({ kind: 'stall', afterChunks: 1, ms: 60_000 }, { match: 'held' })
  const held = await openStream(one, { prompt: 'held' }, FILE_KEY)
  await held.waitFor('"index":1')
  held.disconnect()
  await new Promise(resolve => setTimeout(resolve, 300))
  // 7 + 7 + 3 (the cut stream's first event: 1 prompt and 2 answer tokens) charged, 0 for the failed one: 17;
  // two more make 31, and 31 + 13 passes 40.
  const fill = [await postStream(one, { prompt: 'hello' }, headers), await postStream(two, { prompt: 'hello' }, headers)]
  for (const response of fill) await response.text()
  await new Promise(resolve => setTimeout(resolve, 300))
  const refused = await postStream(two, { prompt: 'hello' }, headers)
  t.equal(refused.status, 429, '31 charged + 13 reserved would pass 40')
  await refused.text()
  await new Promise(resolve => setTimeout(resolve, 300))

  const answer = await fetch(`${one}/admin/usage?key=metered&${range}`, { headers: operator })
  t.equal(answer.status, 200)
  const usage = await answer.json() as { retentionDays: number, keys: Array<{ key: string, hours: Array<Record<string, unknown>> }> }
  t.equal(usage.retentionDays, 2)
  t.equal(usage.keys.length, 1)
  const hours = usage.keys[0]!.hours
  t.same(hours, [{
    hour: '2026-12-03T10:00:00.000Z',
    requests: 7,
    tokens: { prompt: 5, completion: 26, thoughts: 0 },
    outcomes: { completed: 4, failed: 1, cancelled: 1, refused: 1 }
  }], 'exactly what the streams of both instances spent')
  const fromOther = await (await fetch(`${one}/admin/usage?key=metered&${range}`, { headers: operator })).json()
  t.same(fromOther, usage)
  const stored = await shared.keys()
  const hourKey = stored.find(name => name.includes(':h:'))!
  const ttl = await shared.redis.pttl(hourKey)
  t.ok(ttl > 2 * 86_400_000 - 60_000 && ttl <= 2 * 86_400_000, `the hour's record expires with the retention (${ttl} ms)`)

  const all = await (await fetch(`${one}/admin/usage?${range}`, { headers: operator })).json() as { keys: Array<{ key: string, hours: unknown[] }> }
  t.same(all.keys.map(entry => [entry.key, entry.hours.length]), [[`key-${sha256Hex(USER_KEY).slice(0, 12)}`, 0], ['metered', 1], [`key-${sha256Hex('test-admin-key-0123456789').slice(0, 12)}`, 0]], 'without key=, every known key')
  const bad = await fetch(`${one}/admin/usage?from=yesterday`, { headers: operator })
  t.same([bad.status, await bad.text()], [400, '{"error":"from must be an ISO 8601 date or time with a zone, such as \\"2026-12-03T10:00:00Z\\""}'])
  const backwards = await fetch(`${one}/admin/usage?from=2026-12-03T10:00:00Z&to=2026-12-02T10:00:00Z`, { headers: operator })
  t.same([backwards.status, await backwards.text()], [400, '{"error":"from must not be after to"}'])
  const unauthorized = await fetch(`${one}/admin/usage`, { headers: { authorization: `Bearer ${FILE_KEY}` } })
  t.equal(unauthorized.status, 403, 'a caller\'s key does not open it')
  await unauthorized.text()
})
