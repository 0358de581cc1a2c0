import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { KeysFileError, loadKeysFile, parseKeyEntries } from '../standalone/keys-file.js'
import { sha256Hex } from '../plugins/auth.js'
import { answerFor } from '../emulator/server.js'
import { expectedStreamBody, postStream, startEmulator, startGateway, within } from './support/gateway.js'

const ALICE_KEY = 'alice-raw-key-0123456789abcdef'
const BOB_KEY = 'bob-raw-key-0123456789abcdef'
const ALICE = { name: 'alice', sha256: sha256Hex(ALICE_KEY), role: 'admin' }
const BOB = { name: 'bob', sha256: sha256Hex(BOB_KEY), role: 'user' }

async function tempDir (t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'amrikyy-keys-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

async function writeKeysFile (t: Test, content: string): Promise<string> {
  const path = join(await tempDir(t), 'keys.json')
  await writeFile(path, content)
  return path
}

t.test('a valid file gives one entry per key, hashes in lower case', async t => {
  const path = await writeKeysFile(t, JSON.stringify([ALICE, { ...BOB, sha256: BOB.sha256.toUpperCase() }]))
  t.same(await loadKeysFile(path), [ALICE, BOB])
})

t.test('a malformed entry is refused with a message naming its index and name, never its values', async t => {
  const cases: Array<[unknown, string]> = [
    [{}, 'API_KEYS_FILE keys.json: must be a JSON array of { "name", "sha256", "role" } entries'],
    [[], 'API_KEYS_FILE keys.json: lists no keys'],
    [[ALICE, 'bob'], 'API_KEYS_FILE keys.json: entry 1 must be an object with "name", "sha256" and "role"'],
    [[ALICE, { ...BOB, sha256: BOB_KEY }], 'API_KEYS_FILE keys.json: entry 1 ("bob"): "sha256" must be the 64 hex characters of the key\'s SHA-256'],
    [[ALICE, { ...BOB, sha256: undefined }], 'API_KEYS_FILE keys.json: entry 1 ("bob"): "sha256" must be the 64 hex characters of the key\'s SHA-256'],
    [[{ ...ALICE, role: 'root' }], 'API_KEYS_FILE keys.json: entry 0 ("alice"): "role" must be "user" or "admin"'],
    [[ALICE, { ...BOB, name: 'bob smith' }], 'API_KEYS_FILE keys.json: entry 1: "name" must be 1 to 64 letters, digits or ._@- characters'],
    [[ALICE, { ...BOB, key: BOB_KEY }], 'API_KEYS_FILE keys.json: entry 1 ("bob") has an unknown field at position 4 (allowed: name, sha256, role, tokensPerMinute, tokensPerDay, usdPerDay, requestsPerWindow, models, maxOutputTokens, maxConcurrentStreams, expiresAt, disabled)'],
    // A raw key pasted as a field name is never quoted back.
    [[ALICE, { [BOB_KEY]: 'x', ...BOB, comment: 'y' }], 'API_KEYS_FILE keys.json: entry 1 ("bob") has unknown fields at positions 1, 5 (allowed: name, sha256, role, tokensPerMinute, tokensPerDay, usdPerDay, requestsPerWindow, models, maxOutputTokens, maxConcurrentStreams, expiresAt, disabled)'],
    [[ALICE, { ...BOB, name: 'alice' }], 'API_KEYS_FILE keys.json: entry 1 ("alice"): the name is already used by an earlier entry'],
    [[ALICE, BOB, { ...BOB, name: 'bob2' }], 'API_KEYS_FILE keys.json: entry 2 ("bob2"): the same key as entry 1']
  ]
  for (const [document, message] of cases) {
    t.throws(() => parseKeyEntries(document, 'API_KEYS_FILE keys.json'), new KeysFileError(message), message)
  }
})

t.test('a file that is not JSON is refused with where it breaks, without quoting it', async t => {
  const path = await writeKeysFile(t, `[\n  {"name": "alice", "sha256": "${ALICE.sha256}", "role": "admin"}\n  {"name": "bob"}\n]`)
  await t.rejects(loadKeysFile(path), new KeysFileError(`API_KEYS_FILE ${path}: is not valid JSON (line 3, column 3)`))
  const raw = await writeKeysFile(t, BOB_KEY)
  await t.rejects(loadKeysFile(raw), new KeysFileError(`API_KEYS_FILE ${raw}: is not valid JSON`), 'a raw key pasted as the file is not echoed')
  await t.rejects(loadKeysFile('/nonexistent/keys.json'), new KeysFileError('API_KEYS_FILE /nonexistent/keys.json: cannot be read (ENOENT)'))
})

t.test('a key from the file streams, with its role\'s limit', async t => {
  const pace = { chunkCount: 2, defaultMaxTokens: 20 }
  const emulator = await startEmulator(t, pace)
  const keyEntries = await loadKeysFile(await writeKeysFile(t, JSON.stringify([ALICE, BOB])))
  const { url } = await startGateway(t, emulator, { apiKeys: [], adminApiKeys: [], keyEntries, rateLimit: { max: 3, adminMax: 7 } })
  const answer = answerFor('hello', undefined, pace)
  for (const [key, limit] of [[ALICE_KEY, '7'], [BOB_KEY, '3']]) {
    const response = await postStream(url, { prompt: 'hello' }, { 'x-api-key': key! })
    t.equal(response.status, 200)
    t.equal(response.headers.get('x-ratelimit-limit'), limit)
    t.equal(await response.text(), expectedStreamBody(answer.deltas, answer))
  }
  const stranger = await postStream(url, { prompt: 'hello' }, { 'x-api-key': sha256Hex(ALICE_KEY) })
  t.equal(stranger.status, 403, 'the hash itself is not a key')
})

// The server entry, run as operators run it, to see API_KEYS_FILE and the RATE_LIMIT_* variables wired through.
const typescriptLoader = process.execArgv.find(arg => arg.includes('@tapjs/typescript'))
const serverSkip = typescriptLoader === undefined ? 'not running under tap\'s TypeScript loader' : false

function serverEnv (extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (name === 'NODE_OPTIONS' || name.startsWith('_TAPJS') || name.startsWith('TAP')) continue
    if (['API_KEYS', 'ADMIN_API_KEYS', 'GEMINI_API_KEY', 'REDIS_URL', 'NODE_ENV'].includes(name) || name.startsWith('RATE_LIMIT_')) continue
    env[name] = value
  }
  return { ...env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...extra }
}

t.test('the server refuses to start with a malformed keys file, naming the entry', { skip: serverSkip }, async t => {
  const path = await writeKeysFile(t, JSON.stringify([ALICE, { ...BOB, role: 'owner' }]))
  const child = spawn(process.execPath, [typescriptLoader!, 'server.ts'], {
    env: serverEnv({ API_KEYS_FILE: path, GEMINI_BASE_URL: 'http://127.0.0.1:9' }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => { child.kill() })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (piece: string) => { stderr += piece })
  const [code] = await within(20_000, once(child, 'exit'), 'the server exiting')
  t.equal(code, 1)
  t.equal(stderr, `amrikyy gateway failed to start: API_KEYS_FILE ${path}: entry 1 ("bob"): "role" must be "user" or "admin"\n`)
})

t.test('the server takes its keys from API_KEYS_FILE and its limit from RATE_LIMIT_MAX', { skip: serverSkip }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 1 })
  const path = await writeKeysFile(t, JSON.stringify([BOB]))
  const child = spawn(process.execPath, [typescriptLoader!, 'server.ts'], {
    env: serverEnv({ API_KEYS_FILE: path, GEMINI_BASE_URL: emulator.url, RATE_LIMIT_MAX: '2', RATE_LIMIT_WINDOW: '10 minutes' }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => { child.kill() })
  let stdout = ''
  child.stdout.setEncoding('utf8')
  const url = await within(20_000, new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (piece: string) => {
      stdout += piece
      const listening = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(stdout)
      if (listening !== null) resolve(listening[1]!)
    })
    child.once('exit', code => { reject(new Error(`server exited with ${code}`)) })
  }), 'the server listening')
  const statuses: Array<[number, string | null, string | null]> = []
  for (let i = 0; i < 3; i++) {
    const response = await postStream(url, { prompt: 'hello' }, { 'x-api-key': BOB_KEY })
    await response.text()
    statuses.push([response.status, response.headers.get('x-ratelimit-limit'), response.headers.get('x-ratelimit-reset')])
  }
  t.same(statuses.map(([status, limit]) => [status, limit]), [[200, '2'], [200, '2'], [429, '2']])
  t.equal(statuses[0]![2], '600', 'a 10-minute window')
  t.equal(emulator.requests.length, 2)
  t.notOk(stdout.includes(BOB_KEY), 'the key never reaches the log')
})
