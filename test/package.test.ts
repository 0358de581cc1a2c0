import { execFile, spawn } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm, writeFile, copyFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { answerFor } from '../emulator/server.js'
import { USER_KEY, expectedStreamBody, startEmulator, within } from './support/gateway.js'

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

/** The README's embedding example, exactly as a reader copies it. */
async function readmeEmbeddingExample (): Promise<string> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('## Embed in your Fastify app'))
  const match = /```js\n([\s\S]*?)```/.exec(section)
  if (match?.[1] === undefined) throw new Error('README has no js example under "Embed in your Fastify app"')
  return match[1]
}

t.test('the packed package installs, type-checks for a consumer and runs the README example', async t => {
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

  t.test('the README example runs from the installed package', async t => {
    const emulator = await startEmulator(t, { chunkCount: 3, defaultMaxTokens: 9 })
    await writeFile(join(scratch, 'example.mjs'), await readmeEmbeddingExample())
    const child = spawn(process.execPath, ['example.mjs'], {
      cwd: scratch,
      env: { PATH: process.env.PATH ?? '', API_KEYS: USER_KEY, GEMINI_API_KEY: 'upstream-key', GEMINI_BASE_URL: emulator.url, PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    t.teardown(() => { child.kill('SIGKILL') })
    let output = ''
    child.stdout.on('data', (data: Buffer) => { output += data.toString() })
    child.stderr.on('data', (data: Buffer) => { output += data.toString() })
    const url = await within(10_000, new Promise<string>((resolve, reject) => {
      child.stdout.on('data', () => {
        const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
        if (match?.[1] !== undefined) resolve(match[1])
      })
      child.once('exit', code => { reject(new Error(`example exited with ${code}: ${output}`)) })
    }), 'example start')

    t.same(await (await fetch(`${url}/hello`)).json(), { hello: 'world' })
    const response = await fetch(`${url}/ai/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body: '{"prompt":"from the readme"}' })
    t.equal(response.status, 200)
    const answer = answerFor('from the readme', undefined, { chunkCount: 3, defaultMaxTokens: 9 })
    t.equal(await response.text(), expectedStreamBody(answer.deltas, answer))
    t.match(await (await fetch(`${url}/ai/api/metrics`)).text(), /amrikyy_stream_sessions_completed_total\{agent="unknown",model="gemini-2.0-flash-exp"\} 1/)
  })
})
