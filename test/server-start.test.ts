import { execFile } from 'node:child_process'
import { createServer, type AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import t from 'tap'
import { parseEvents } from './support/gateway.js'
import { freePort, runUntilExit, startServerProcess } from './support/server-process.js'

const run = promisify(execFile)

t.test('a fresh development start streams from the embedded emulator with a generated key', async t => {
  const port = await freePort()
  // Nothing configured, as on a fresh clone.
  const server = await startServerProcess(t, { NODE_ENV: undefined, API_KEYS: undefined, GEMINI_API_KEY: undefined, PORT: String(port), EMULATOR_CHUNK_DELAY_MS: '0' })
  t.match(server.output(), /GEMINI_API_KEY is not set: streaming from the bundled Gemini emulator/)
  const curlLine = /^ {2}(curl -N -X POST .*)$/m.exec(server.stderr())?.[1]
  t.ok(curlLine, 'prints a ready-to-paste curl line, on stderr')
  const generatedKey = /X-API-Key: ([A-Za-z0-9_-]+)"/.exec(curlLine ?? '')?.[1] ?? ''
  t.equal(server.stderr().split(generatedKey).length - 1, 2, 'the key is printed once, with the curl line that uses it')
  t.equal(server.output().split(generatedKey).length - 1, 2, 'and never in the JSON log lines')
  t.match(curlLine, `http://127.0.0.1:${port}/api/stream`)

  const { stdout } = await run('bash', ['-c', curlLine ?? 'false'])
  const events = parseEvents(stdout) as Array<Record<string, unknown>>
  t.ok(events.length > 1)
  t.match(events.at(-1), { complete: true, totalChunks: events.length - 1, usage: { promptTokens: 5 } })
  t.equal((await fetch(`http://127.0.0.1:${port}/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': 'guess' }, body: '{"prompt":"x"}' })).status, 403, 'never runs open')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('a production start refuses what it cannot run safely, naming the variable', async t => {
  const noGemini = await runUntilExit({ GEMINI_API_KEY: undefined })
  t.equal(noGemini.code, 1)
  t.match(noGemini.output, /amrikyy gateway failed to start: GEMINI_API_KEY must be set when NODE_ENV=production/)
  t.notMatch(noGemini.output, /streaming from the bundled Gemini emulator/, 'no fallback in production')

  const noKeys = await runUntilExit({ API_KEYS: undefined })
  t.equal(noKeys.code, 1)
  t.match(noKeys.output, /API_KEYS, ADMIN_API_KEYS or API_KEYS_FILE must be set when NODE_ENV=production/)

  const badPort = await runUntilExit({ PORT: 'five thousand' })
  t.equal(badPort.code, 1)
  t.match(badPort.output, /PORT/)

  const badLevel = await runUntilExit({ RATE_LIMIT_ON_REDIS_ERROR: 'sometimes' })
  t.equal(badLevel.code, 1)
  t.match(badLevel.output, /RATE_LIMIT_ON_REDIS_ERROR/)
})

t.test('the variables Fastify is built from are checked first: one stderr line naming the variable and its rule', async t => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent'],
    [{ TRUST_PROXY: '2' }, 'TRUST_PROXY must be true, false, or the comma-separated addresses or CIDRs of the proxies (or loopback, linklocal, uniquelocal); a hop count is not accepted'],
    [{ REQUEST_TIMEOUT_MS: 'soon' }, 'REQUEST_TIMEOUT_MS must be an integer >= 1'],
    [{ REQUEST_TIMEOUT_MS: '0' }, 'REQUEST_TIMEOUT_MS must be an integer >= 1'],
    [{ PORT: '65536', RATE_LIMIT_WINDOW: 'fortnight' }, 'PORT must be an integer from 0 to 65535; RATE_LIMIT_WINDOW must be milliseconds or a duration such as "15 minutes"']
  ]
  for (const [env, message] of cases) {
    const refused = await runUntilExit(env)
    t.same([refused.code, refused.stderr], [1, `amrikyy gateway failed to start: ${message}\n`], JSON.stringify(env))
    t.equal(refused.output, refused.stderr, 'before any logger exists: nothing on stdout')
  }
})

t.test('a start that fails for any other reason is printed with its stack', async t => {
  const taken = createServer()
  await new Promise<void>(resolve => { taken.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { taken.close() })
  const port = (taken.address() as AddressInfo).port
  const refused = await runUntilExit({ PORT: String(port) })
  t.equal(refused.code, 1)
  t.match(refused.stderr, new RegExp(`^amrikyy gateway failed to start: Error: listen EADDRINUSE: address already in use 127\\.0\\.0\\.1:${port}\n {4}at `))
})

t.test('TRUST_PROXY=true starts with a warning that clients can then choose their address', async t => {
  const warned = /"level":40,.*"msg":"TRUST_PROXY=true believes the left-most X-Forwarded-For, which clients write themselves/
  const trusting = await startServerProcess(t, { TRUST_PROXY: 'true', GEMINI_BASE_URL: 'http://127.0.0.1:9' })
  t.match(trusting.output(), warned)
  const exact = await startServerProcess(t, { TRUST_PROXY: '127.0.0.1', GEMINI_BASE_URL: 'http://127.0.0.1:9' })
  t.notMatch(exact.output(), warned)
})
