import { execFile, spawn } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm, writeFile, copyFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { within } from './support/gateway.js'
import { markedBlock, markedBlockNames } from './support/readme-blocks.js'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')

const HOST_FASTIFY = '5.12.7'

// Where `fastify` resolves for the host and for the installed gateway, one line each.
const RESOLVE_FASTIFY_FROM_BOTH = `
import { createRequire } from 'node:module'
const fromHost = createRequire(process.cwd() + '/package.json').resolve('fastify')
const fromGateway = createRequire(process.cwd() + '/node_modules/amrikyy-stream-gateway/package.json').resolve('fastify')
console.log(fromHost + '\\n' + fromGateway)
`

/** Every installed package named fastify below `nodeModules`, as `path@version` relative to its parent. */
async function fastifyCopies (nodeModules: string): Promise<string[]> {
  const copies: string[] = []
  for (const entry of await readdir(nodeModules, { recursive: true })) {
    if (entry !== 'fastify/package.json' && !entry.endsWith('/node_modules/fastify/package.json')) continue
    const { name, version } = JSON.parse(await readFile(join(nodeModules, entry), 'utf8')) as { name: string, version: string }
    if (name === 'fastify') copies.push(`node_modules/${entry.slice(0, -'/package.json'.length)}@${version}`)
  }
  return copies.sort()
}

/** A marked README block, exactly as a reader copies it; every block this file runs is JavaScript. */
async function readmeBlock (name: string): Promise<string> {
  const block = markedBlock(await readFile(join(ROOT, 'README.md'), 'utf8'), name)
  if (block.lang !== 'js') throw new Error(`README block "${name}" is ${block.lang}, not js`)
  return block.code
}

interface Example {
  stdout: () => string
  stderr: () => string
  stop: () => void
  /** Resolves with the exit code, or the signal that ended it. */
  exited: Promise<number | string>
}

/** Runs `file` with this Node in the scratch host, with nothing of our environment but PATH and `env`. */
function runExample (t: Test, cwd: string, file: string, env: Record<string, string>): Example {
  const child = spawn(process.execPath, [file], { cwd, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill('SIGKILL') })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (data: Buffer) => { stdout += data.toString() })
  child.stderr.on('data', (data: Buffer) => { stderr += data.toString() })
  const exited = new Promise<number | string>(resolve => { child.once('exit', (code, signal) => { resolve(code ?? signal ?? 'unknown') }) })
  return { stdout: () => stdout, stderr: () => stderr, stop: () => { child.kill('SIGTERM') }, exited }
}

/** Resolves with `pattern`'s match on one of the example's outputs, or rejects when it exits first. */
async function waitForOutput (example: Example, output: 'stdout' | 'stderr', pattern: RegExp, label: string): Promise<RegExpExecArray> {
  const seen = new Promise<RegExpExecArray>((resolve, reject) => {
    const poll = setInterval(() => {
      const match = pattern.exec(example[output]())
      if (match !== null) { clearInterval(poll); resolve(match) }
    }, 20)
    void example.exited.then(code => { clearInterval(poll); reject(new Error(`${label} exited with ${code}: ${example.stdout()}${example.stderr()}`)) })
  })
  return await within(15_000, seen, label)
}

async function postStream (url: string, key: string | undefined, body: object): Promise<Response> {
  return await fetch(`${url}/api/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'x-api-key': key }) },
    body: JSON.stringify(body)
  })
}

/** Checks one whole streamed answer: chunk events numbered from 1, then one completion event that sums them up. */
function checkStream (t: Test, body: string): void {
  const events = body.split('\n\n')
  t.equal(events.pop(), '', 'the body ends with a complete event')
  const parsed = events.map(event => {
    t.match(event, /^data: \{.*\}$/, 'one data line per event')
    return JSON.parse(event.slice('data: '.length)) as Record<string, unknown>
  })
  const completion = parsed.pop()
  t.ok(parsed.length >= 1, 'at least one chunk event')
  parsed.forEach((event, i) => { t.same(Object.keys(event), ['chunk', 'index']); t.equal(event.index, i + 1) })
  const fullText = parsed.map(event => event.chunk).join('')
  t.match(completion, { complete: true, totalChunks: parsed.length, fullText, usage: { totalTokens: Number } }, 'the completion event')
}

t.test('the packed package installs, type-checks for a consumer and runs the README examples', async t => {
  const scratch = await mkdtemp(join(tmpdir(), 'amrikyy-pack-'))
  t.teardown(async () => { await rm(scratch, { recursive: true, force: true }) })

  // dist/ is built by `npm test` before tap runs; --ignore-scripts keeps pack from building again.
  const { stdout: packed } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', scratch], { cwd: ROOT })
  const [manifest] = JSON.parse(packed) as Array<{ filename: string, files: Array<{ path: string }> }>
  const files = manifest!.files.map(file => file.path)
  for (const required of ['dist/index.js', 'dist/index.d.ts', 'dist/app.js', 'dist/client/index.js', 'dist/client/cli.js', 'dist/emulator/server.js', 'dist/server.js', 'playground/index.html', 'README.md']) {
    t.ok(files.includes(required), `ships ${required}`)
  }
  t.same(files.filter(path => /(^|\/)test\/|\.test\.|^bench\/|^dist\/bench\/|^dist\/scripts\/|\.map$|(^|\/)\.env|\.tgz$/.test(path)), [], 'no tests, benchmarks, scripts, source maps or env files')
  t.same(files.filter(path => path.endsWith('.ts') && !path.endsWith('.d.ts')), [], 'no TypeScript sources')

  // The host brings its own Fastify 5, deliberately not the version we develop against: as a peer
  // dependency, ours must resolve to the host's copy rather than install a second one.
  await writeFile(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch-host', private: true, type: 'module', dependencies: { fastify: HOST_FASTIFY } }))
  // Offline from npm's cache where it can (`npm ci` filled it with our dependencies).
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: scratch })
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', join(scratch, manifest!.filename)], { cwd: scratch })
  t.same((await readdir(join(scratch, 'node_modules', 'amrikyy-stream-gateway'))).sort(), ['README.md', 'dist', 'package.json', 'playground'])

  t.test('one copy of Fastify: the host\'s', async t => {
    t.same(await fastifyCopies(join(scratch, 'node_modules')), [`node_modules/fastify@${HOST_FASTIFY}`])
    const resolved = await run(process.execPath, ['--input-type=module', '-e', RESOLVE_FASTIFY_FROM_BOTH], { cwd: scratch })
    const [fromHost, fromGateway] = resolved.stdout.trim().split('\n')
    t.equal(fromGateway, fromHost, 'the gateway imports the module the host imports')
    t.match(fromHost, /\/node_modules\/fastify\/fastify\.js$/)
  })

  t.test('TypeScript consumers get typed options and decorators', async t => {
    await copyFile(join(ROOT, 'test', 'fixtures', 'consumer', 'consumer.ts'), join(scratch, 'consumer.ts'))
    await writeFile(join(scratch, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false, typeRoots: [join(ROOT, 'node_modules', '@types')], types: ['node'] },
      files: ['consumer.ts']
    }))
    const result = await run(process.execPath, [TSC, '-p', scratch], { cwd: scratch }).then(() => ({ ok: true, output: '' }), (error: { stdout: string }) => ({ ok: false, output: error.stdout }))
    t.equal(result.output, '', 'no type errors, and every @ts-expect-error is an error')
    t.equal(result.ok, true)
  })

  t.test('the README\'s examples run from the installed package', async t => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
    // The conversation examples need a thinking model's answer checked word for word: test/client.test.ts runs them.
    t.same(markedBlockNames(readme), ['conversation-curl', 'conversation', 'openai', 'client', 'embed'], 'the README\'s runnable blocks, each run below, in test/client.test.ts or in test/openai-clients.test.ts')
    await writeFile(join(scratch, 'server.mjs'), await readmeBlock('embed'))
    await writeFile(join(scratch, 'client.mjs'), await readmeBlock('client'))

    t.test('embedding in a host with no environment: the emulator upstream, a key made up for the run', async t => {
      const server = runExample(t, scratch, 'server.mjs', { PORT: '0' })
      const [, origin, key] = await waitForOutput(server, 'stderr', /^curl -N (http:\/\/127\.0\.0\.1:\d+)\/ai\/api\/stream .*'X-API-Key: ([^']+)'/m, 'embedding example')
      const gateway = `${origin!}/ai`
      t.notOk(server.stdout().includes(key!), 'the key stays out of the log')

      t.same(await (await fetch(`${origin!}/hello`)).json(), { hello: 'world' }, 'the host\'s own route')
      t.equal((await postStream(gateway, undefined, { prompt: 'x' })).status, 401, 'the gateway\'s key check')
      const response = await postStream(gateway, key, { prompt: 'from the readme' })
      t.equal(response.status, 200)
      t.equal(response.headers.get('content-type'), 'text/event-stream')
      checkStream(t, await response.text())

      // The client example, pointed at the embedded gateway, prints the answer and its summary.
      const client = runExample(t, scratch, 'client.mjs', { AMRIKYY_URL: gateway, AMRIKYY_API_KEY: key! })
      t.equal(await within(15_000, client.exited, 'client example'), 0, client.stderr())
      t.match(client.stdout(), /\S/, 'the answer\'s text on stdout')
      t.match(client.stderr(), /^\n[1-9]\d* chunks, [1-9]\d* tokens\n$/, 'the summary on stderr')

      const metrics = await (await fetch(`${gateway}/api/metrics`)).text()
      t.match(metrics, /^amrikyy_stream_sessions_completed_total\{api="stream",agent="unknown",model="gemini-2.0-flash-exp"\} 1$/m, 'our stream')
      t.match(metrics, /^amrikyy_stream_sessions_completed_total\{api="stream",agent="poet",model="gemini-2.0-flash-exp"\} 1$/m, 'the client example\'s stream')
      server.stop()
      t.equal(await within(5_000, server.exited, 'embedding example stop'), 'SIGTERM')
    })

    t.test('embedding with API_KEYS: those keys, and no key printed', async t => {
      const server = runExample(t, scratch, 'server.mjs', { PORT: '0', API_KEYS: 'first-key,second-key' })
      const [, origin] = await waitForOutput(server, 'stdout', /Server listening at (http:\/\/127\.0\.0\.1:\d+)/, 'embedding example')
      t.equal((await postStream(`${origin!}/ai`, 'made-up-key', { prompt: 'x' })).status, 403)
      const response = await postStream(`${origin!}/ai`, 'second-key', { prompt: 'with a configured key' })
      t.equal(response.status, 200)
      checkStream(t, await response.text())
      server.stop()
      t.equal(await within(5_000, server.exited, 'embedding example stop'), 'SIGTERM')
      t.notMatch(server.stdout() + server.stderr(), /second-key|curl/, 'no key in the output')
    })
  })
})
