// The standalone emulator: environment validation, and the compiled CLI as a child process.

import t from 'tap'
import { spawn, execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { emulatorOptionsFromEnv } from '../emulator/env.js'

t.test('emulatorOptionsFromEnv: defaults, values, and errors that name the variable', async t => {
  t.strictSame(emulatorOptionsFromEnv({}), { host: '127.0.0.1', port: 8090 })
  t.strictSame(emulatorOptionsFromEnv({ EMULATOR_PORT: '', EMULATOR_API_KEY: ' ' }), { host: '127.0.0.1', port: 8090 }, 'empty means unset')
  t.strictSame(emulatorOptionsFromEnv({
    EMULATOR_PORT: '0',
    EMULATOR_HOST: '0.0.0.0',
    EMULATOR_CHUNK_COUNT: '4',
    EMULATOR_CHUNK_DELAY_MS: '25',
    EMULATOR_DEFAULT_MAX_TOKENS: '100',
    EMULATOR_API_KEY: 'secret'
  }), { host: '0.0.0.0', port: 0, chunkCount: 4, chunkDelayMs: 25, defaultMaxTokens: 100, apiKey: 'secret' })
  t.throws(() => emulatorOptionsFromEnv({ EMULATOR_PORT: '65536' }), { name: 'EmulatorEnvError', variable: 'EMULATOR_PORT', message: 'EMULATOR_PORT must be an integer from 0 to 65535, got "65536"' })
  t.throws(() => emulatorOptionsFromEnv({ EMULATOR_PORT: '80.5' }), { variable: 'EMULATOR_PORT', message: 'EMULATOR_PORT must be an integer from 0 to 65535, got "80.5"' })
  t.throws(() => emulatorOptionsFromEnv({ EMULATOR_CHUNK_COUNT: '0' }), { variable: 'EMULATOR_CHUNK_COUNT', message: 'EMULATOR_CHUNK_COUNT must be an integer from 1 to 4096, got "0"' })
  t.throws(() => emulatorOptionsFromEnv({ EMULATOR_CHUNK_DELAY_MS: '-1' }), { variable: 'EMULATOR_CHUNK_DELAY_MS', message: 'EMULATOR_CHUNK_DELAY_MS must be an integer from 0 to 600000, got "-1"' })
  t.throws(() => emulatorOptionsFromEnv({ EMULATOR_DEFAULT_MAX_TOKENS: 'lots' }), { variable: 'EMULATOR_DEFAULT_MAX_TOKENS', message: 'EMULATOR_DEFAULT_MAX_TOKENS must be an integer from 1 to 4096, got "lots"' })
  t.throws(() => emulatorOptionsFromEnv({ EMULATOR_HOST: 'a b' }), { variable: 'EMULATOR_HOST', message: 'EMULATOR_HOST must be a host name or address, got "a b"' })
})

t.test('the compiled CLI serves, rejects bad settings and stops on SIGTERM', async t => {
  // Compile only the emulator, into a private directory: independent of other in-progress files and of dist/.
  const out = await mkdtemp(join(tmpdir(), 'gemini-emulator-cli-'))
  t.teardown(() => rm(out, { recursive: true, force: true }))
  await promisify(execFile)(process.execPath, [
    'node_modules/typescript/bin/tsc', '--outDir', out, '--rootDir', '.', '--module', 'NodeNext', '--moduleResolution', 'NodeNext',
    '--target', 'ES2024', '--types', 'node', '--skipLibCheck', '--strict', 'emulator/cli.ts'
  ])
  await writeFile(join(out, 'package.json'), '{"type":"module"}\n')
  const cli = join(out, 'emulator', 'cli.js')

  const bad = spawn(process.execPath, [cli], { env: { ...process.env, EMULATOR_CHUNK_COUNT: 'abc' } })
  let badErr = ''
  bad.stderr.setEncoding('utf8').on('data', (d: string) => { badErr += d })
  const [badCode] = await once(bad, 'exit') as [number | null]
  t.equal(badCode, 1)
  t.equal(badErr, 'gemini-emulator: invalid configuration: EMULATOR_CHUNK_COUNT must be an integer from 1 to 4096, got "abc"\n')

  const child = spawn(process.execPath, [cli], { env: { ...process.env, EMULATOR_PORT: '0', EMULATOR_CHUNK_COUNT: '2', EMULATOR_API_KEY: 'sekret' } })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let stdout = ''
  child.stdout.setEncoding('utf8')
  const firstLine = new Promise<string>(resolve => {
    child.stdout.on('data', (d: string) => {
      stdout += d
      if (stdout.includes('\n')) resolve(stdout.slice(0, stdout.indexOf('\n')))
    })
  })
  const line = await firstLine
  const url = /^gemini-emulator listening on (http:\/\/127\.0\.0\.1:\d+) - use GEMINI_BASE_URL=(\S+) /.exec(line)
  t.ok(url, line)
  t.equal(url?.[2], url?.[1])
  const res = await fetch(`${url?.[1] ?? ''}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse`, {
    method: 'POST',
    headers: { 'x-goog-api-key': 'sekret' },
    body: JSON.stringify({ contents: [{ parts: [{ text: 'hello' }] }] })
  })
  t.equal(res.status, 200)
  t.equal((await res.text()).split('\r\n\r\n').length, 3, 'EMULATOR_CHUNK_COUNT=2 gives 2 events')
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit') as [number | null]
  t.equal(code, 0)
  t.match(stdout, /\n#1 POST \/v1beta\/models\/gemini-2\.0-flash:streamGenerateContent\?alt=sse 200 finished chunks=2 /)
  t.match(stdout, /gemini-emulator: SIGTERM, closing\n$/)
})
