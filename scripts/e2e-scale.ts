// Scale-out, end to end: `npm run e2e:scale`.
//
// Starts Redis (unless one answers on 127.0.0.1:6379), the Gemini emulator, two gateway processes in
// production mode sharing that Redis, and Debian's nginx running deploy/nginx.conf in front of both.
// Then shows, through nginx: (1) a stream arrives unbuffered, (2) load reaches both instances,
// (3) one API key has one budget across both instances, (4) a caller without a valid key cannot escape its
// per-address budget by writing its own X-Forwarded-For. Everything listens on loopback, and every request comes
// from a loopback address (127.0.0.0/8); every process started here is stopped on every path (normal end, failure, Ctrl-C).

import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NginxConfigError, findNginx, localNginxConfig, nginxArgs, proxyDirectives } from './nginx-local.js'
import { childEnv, startChild, type RunningChild } from './shared/child-process.js'
import { LOOPBACK, freePort } from './shared/ports.js'
import { Exposition } from './shared/prometheus-text.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const REDIS_PORT = 6379
const CHUNK_COUNT = 20
const CHUNK_DELAY_MS = 50
const RATE_LIMIT_MAX = 10
const SPREAD_REQUESTS = 8
// More than twice the limit: a shared budget lets exactly RATE_LIMIT_MAX through; two instances counting alone would let about twice that.
const LIMIT_REQUESTS = 2 * RATE_LIMIT_MAX + 5
const TOO_MANY_REQUESTS_BODY = '{"error":"Too Many Requests","message":"You have exceeded the request limit. Please try again later."}'
const STREAM_TIMEOUT_MS = 30_000
const START_TIMEOUT_MS = 15_000
const STOP_TIMEOUT_MS = 10_000

class E2eError extends Error {
  override name = 'E2eError'
}

function say (line = ''): void {
  process.stdout.write(`${line}\n`)
}

// ---------------------------------------------------------------- child processes

// The children see only what this script sets (childEnv), not whatever PORT or API_KEYS the caller's shell exports.
interface Child extends RunningChild {
  logFile: string
}

const children: Child[] = []

async function startLoggedChild (name: string, command: string, args: string[], env: NodeJS.ProcessEnv, logDir: string): Promise<Child> {
  const logFile = join(logDir, `${name}.log`)
  const child = await startChild({ name, command, args, cwd: ROOT, env, output: { logFile } })
    .catch((error: unknown) => { throw new E2eError((error as Error).message) })
  const entry = { ...child, logFile }
  children.push(entry)
  return entry
}

async function stopChild (child: Child): Promise<void> {
  if (!child.running()) return
  if (!(await child.stop(STOP_TIMEOUT_MS))) say(`  ${child.name} ignored SIGTERM for ${STOP_TIMEOUT_MS} ms: killed it`)
}

async function stopAll (): Promise<void> {
  // Front to back: nginx first, Redis last, so nothing talks to a stopped neighbour.
  for (const child of [...children].reverse()) await stopChild(child)
}

// Last resort when the process exits without the orderly stop (an exception thrown elsewhere).
process.on('exit', () => {
  for (const child of children) if (child.running()) child.process.kill('SIGKILL')
})

async function logTail (child: Child, lines = 15): Promise<string> {
  const text = await readFile(child.logFile, 'utf8').catch(() => '')
  return text.trimEnd().split('\n').slice(-lines).map(line => `    ${line}`).join('\n')
}

// ---------------------------------------------------------------- network helpers

async function redisAnswers (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const socket = createConnection({ host: LOOPBACK, port })
    const done = (answer: boolean): void => { socket.destroy(); resolve(answer) }
    socket.setTimeout(1000, () => { done(false) })
    socket.once('error', () => { done(false) })
    socket.once('connect', () => { socket.write('PING\r\n') })
    socket.once('data', data => { done(data.toString().startsWith('+PONG')) })
  })
}

async function httpAnswers (url: string): Promise<number | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1000) })
    await response.arrayBuffer()
    return response.status
  } catch {
    return undefined
  }
}

/** Polls `check` until it returns true, failing with the child's log when the child dies or the deadline passes. */
async function waitReady (child: Child, what: string, check: () => Promise<boolean>): Promise<void> {
  try {
    await child.waitFor(check, `${what} was ready`, { timeoutMs: START_TIMEOUT_MS, pollMs: 100 })
  } catch (error) {
    throw new E2eError(`${(error as Error).message}:\n${await logTail(child)}`)
  }
}

// ---------------------------------------------------------------- the gateway over HTTP

interface StreamResult {
  status: number
  body: string
  rateLimitLimit: string | null
  /** ms from sending the request to the first chunk event, and to the completion event. */
  firstChunkMs: number | undefined
  completeMs: number | undefined
  chunkEvents: number
  /** How many separate pieces the body arrived in. */
  reads: number
}

async function stream (baseUrl: string, apiKey: string, body: unknown): Promise<StreamResult> {
  const started = performance.now()
  const response = await fetch(`${baseUrl}/api/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(STREAM_TIMEOUT_MS)
  })
  const result: StreamResult = {
    status: response.status,
    body: '',
    rateLimitLimit: response.headers.get('x-ratelimit-limit'),
    firstChunkMs: undefined,
    completeMs: undefined,
    chunkEvents: 0,
    reads: 0
  }
  if (response.body === null) return result
  const decoder = new TextDecoder()
  let pending = ''
  for await (const piece of response.body) {
    result.reads++
    const text = decoder.decode(piece, { stream: true })
    result.body += text
    pending += text
    let end: number
    while ((end = pending.indexOf('\n\n')) !== -1) {
      const event = pending.slice(0, end)
      pending = pending.slice(end + 2)
      if (!event.startsWith('data: ')) continue
      const data = JSON.parse(event.slice(6)) as { chunk?: string, complete?: boolean }
      if (data.chunk !== undefined) {
        result.chunkEvents++
        result.firstChunkMs ??= performance.now() - started
      }
      if (data.complete === true) result.completeMs = performance.now() - started
    }
  }
  return result
}

async function completedStreams (gatewayUrl: string): Promise<number> {
  const response = await fetch(`${gatewayUrl}/api/metrics`, { signal: AbortSignal.timeout(5000) })
  if (response.status !== 200) throw new E2eError(`${gatewayUrl}/api/metrics answered ${response.status}`)
  return new Exposition(await response.text()).value('amrikyy_stream_sessions_completed_total')
}

async function inParallel<T> (count: number, concurrency: number, task: (index: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      const index = next++
      results[index] = await task(index)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  return results
}

/** A request with a key no gateway knows, sent from `localAddress` (127.0.0.0/8 only) with a header of the client's choosing. */
async function badKeyStatus (baseUrl: string, localAddress: string, forwardedFor: string): Promise<number> {
  if (!localAddress.startsWith('127.')) throw new E2eError(`${localAddress} is not a loopback address`)
  return await new Promise((resolve, reject) => {
    const req = httpRequest(`${baseUrl}/api/stream`, {
      method: 'POST',
      localAddress,
      agent: false,
      timeout: STREAM_TIMEOUT_MS,
      headers: { 'content-type': 'application/json', 'x-api-key': 'e2e-scale-not-a-key', 'x-forwarded-for': forwardedFor }
    }, response => {
      response.resume()
      response.on('end', () => { resolve(response.statusCode ?? 0) })
    })
    req.on('timeout', () => { req.destroy(new E2eError(`no answer from ${baseUrl} within ${STREAM_TIMEOUT_MS} ms`)) })
    req.on('error', reject)
    req.end('{"prompt":"p"}')
  })
}

/** A loopback address of its own for each run, so per-address counters left in Redis by an earlier run never interfere. */
function freshLoopbackAddress (): string {
  const [a = 1, b = 1, c = 1] = [...randomBytes(3)].map(byte => 1 + (byte % 253))
  return `127.${a}.${b}.${c}`
}

function countStatuses (statuses: number[]): string {
  const counts = new Map<number, number>()
  for (const status of statuses) counts.set(status, (counts.get(status) ?? 0) + 1)
  return [...counts].sort(([a], [b]) => a - b).map(([status, count]) => `${count} x ${status}`).join(', ')
}

// ---------------------------------------------------------------- the run

type Verdict = 'PASS' | 'FAIL' | 'NOT SHOWN'
interface Check { name: string, verdict: Verdict, detail: string }

async function run (workDir: string): Promise<Check[]> {
  const checks: Check[] = []
  const nginx = findNginx()
  if (nginx === undefined) {
    throw new E2eError('nginx is not installed. Install Debian\'s package first: sudo apt-get install nginx')
  }
  for (const file of ['dist/server.js', 'dist/emulator/cli.js']) {
    await access(join(ROOT, file)).catch(() => { throw new E2eError(`${file} is missing: run \`npm run build\` (npm run e2e:scale builds first)`) })
  }

  // Redis: use the one that answers, or start a throwaway one.
  if (await redisAnswers(REDIS_PORT)) {
    say(`redis      already answering on ${LOOPBACK}:${REDIS_PORT}`)
  } else {
    const redis = await startLoggedChild('redis', 'redis-server', ['--port', String(REDIS_PORT), '--bind', LOOPBACK, '--save', '', '--appendonly', 'no', '--daemonize', 'no'], childEnv({}), workDir)
      .catch((error: unknown) => { throw new E2eError(`no Redis answers on ${LOOPBACK}:${REDIS_PORT} and redis-server could not start (apt-get install redis-server): ${(error as Error).message}`) })
    await waitReady(redis, 'redis-server', async () => await redisAnswers(REDIS_PORT))
    say(`redis      started on ${LOOPBACK}:${REDIS_PORT} (pid ${redis.pid})`)
  }

  const emulatorPort = await freePort()
  const emulator = await startLoggedChild('emulator', process.execPath, [join(ROOT, 'dist/emulator/cli.js')], childEnv({
    EMULATOR_HOST: LOOPBACK,
    EMULATOR_PORT: String(emulatorPort),
    EMULATOR_CHUNK_COUNT: String(CHUNK_COUNT),
    EMULATOR_CHUNK_DELAY_MS: String(CHUNK_DELAY_MS)
  }), workDir)
  const emulatorUrl = `http://${LOOPBACK}:${emulatorPort}`
  await waitReady(emulator, 'emulator', async () => await httpAnswers(`${emulatorUrl}/v1beta/models?key=readiness-probe`) === 200)
  say(`emulator   ${emulatorUrl} (${CHUNK_COUNT} chunks x ${CHUNK_DELAY_MS} ms per answer)`)

  // Fresh keys each run, so counters left in Redis by an earlier run (or anyone else) never interfere.
  const keys = { stream: randomBytes(12).toString('hex'), spread: randomBytes(12).toString('hex'), limit: randomBytes(12).toString('hex') }
  const gatewayPorts = [await freePort(), await freePort()]
  const gatewayUrls = gatewayPorts.map(port => `http://${LOOPBACK}:${port}`)
  for (const [index, port] of gatewayPorts.entries()) {
    const name = `gateway-${index + 1}`
    const gateway = await startLoggedChild(name, process.execPath, [join(ROOT, 'dist/server.js')], childEnv({
      NODE_ENV: 'production',
      HOST: LOOPBACK,
      PORT: String(port),
      LOG_LEVEL: 'warn',
      GEMINI_API_KEY: 'emulator',
      GEMINI_BASE_URL: emulatorUrl,
      API_KEYS: Object.values(keys).join(','),
      ADMIN_API_KEYS: '',
      REDIS_URL: `redis://${LOOPBACK}:${REDIS_PORT}`,
      RATE_LIMIT_MAX: String(RATE_LIMIT_MAX),
      // Short, so the counters of this run's keys expire from Redis by themselves a minute later.
      RATE_LIMIT_WINDOW: '1 minute',
      // nginx connects from loopback here, as it connects from the compose file's edge network there.
      TRUST_PROXY: LOOPBACK
    }), workDir)
    await waitReady(gateway, name, async () => await httpAnswers(`${gatewayUrls[index] ?? ''}/api/metrics`) === 200)
    say(`${name}  ${gatewayUrls[index] ?? ''} (production mode, pid ${gateway.pid})`)
  }

  const deployConfig = await readFile(join(ROOT, 'deploy/nginx.conf'), 'utf8')
  const nginxPort = await freePort()
  const prefix = join(workDir, 'nginx')
  await mkdir(prefix, { recursive: true })
  let config: string
  try {
    config = localNginxConfig(deployConfig, gatewayPorts, nginxPort, prefix)
  } catch (error) {
    throw error instanceof NginxConfigError ? new E2eError(error.message) : error
  }
  const local = proxyDirectives(config)
  const configFile = join(prefix, 'nginx.conf')
  await writeFile(configFile, config)
  const args = nginxArgs(prefix, configFile)
  const test = spawnSync(nginx, [...args, '-t'], { encoding: 'utf8' })
  if (test.status !== 0) throw new E2eError(`nginx rejects the generated config ${configFile}:\n${test.stderr}`)
  const proxy = await startLoggedChild('nginx', nginx, [...args, '-g', 'daemon off;'], childEnv({}), workDir)
  const nginxUrl = `http://${LOOPBACK}:${nginxPort}`
  // deploy/nginx.conf answers 404 for /api/metrics: proof that this nginx runs that file.
  await waitReady(proxy, 'nginx', async () => await httpAnswers(`${nginxUrl}/api/metrics`) === 404)
  say(`nginx      ${nginxUrl} -> ${gatewayPorts.map(port => `${LOOPBACK}:${port}`).join(', ')}`)
  say('           runs deploy/nginx.conf with upstream, listen, log and temp paths rewritten; these directives are identical:')
  for (const directive of local) say(`             ${directive}`)
  say()

  // (1) Unbuffered: the first chunk reaches the client long before the emulator has produced the last one.
  say('(1) one stream through nginx')
  const single = await stream(nginxUrl, keys.stream, { prompt: 'Stream through nginx, one event at a time', agent: 'e2e-scale' })
  if (single.status !== 200 || single.firstChunkMs === undefined || single.completeMs === undefined) {
    checks.push({ name: 'stream unbuffered through nginx', verdict: 'FAIL', detail: `status ${single.status}, body ${single.body.slice(0, 200)}` })
  } else {
    // The emulator waits CHUNK_DELAY_MS between events, so the last chunk is generated at least this long after the first.
    const generationSpanMs = (single.chunkEvents - 1) * CHUNK_DELAY_MS
    const unbuffered = single.completeMs - single.firstChunkMs >= generationSpanMs * 0.8 && single.reads > single.chunkEvents / 2
    const detail = `first chunk at ${single.firstChunkMs.toFixed(0)} ms, completion at ${single.completeMs.toFixed(0)} ms; ` +
      `${single.chunkEvents} chunk events arrived in ${single.reads} reads (the emulator spaces them ${CHUNK_DELAY_MS} ms apart)`
    say(`    ${detail}`)
    checks.push({ name: 'stream unbuffered through nginx', verdict: unbuffered ? 'PASS' : 'FAIL', detail })
  }

  // (2) Load spread: count completed streams on each instance, read from the instances themselves.
  say(`(2) ${SPREAD_REQUESTS} streams through nginx, 4 at a time`)
  const before = await Promise.all(gatewayUrls.map(completedStreams))
  const spread = await inParallel(SPREAD_REQUESTS, 4, async index =>
    await stream(nginxUrl, keys.spread, { prompt: `spread ${index}`, agent: 'e2e-scale', options: { maxOutputTokens: 8 } }))
  const after = await Promise.all(gatewayUrls.map(completedStreams))
  const served = after.map((count, index) => count - (before[index] ?? 0))
  const spreadOk = spread.filter(result => result.status === 200 && result.completeMs !== undefined).length
  const spreadDetail = `${spreadOk}/${SPREAD_REQUESTS} completed; gateway-1 served ${served[0] ?? 0}, gateway-2 served ${served[1] ?? 0} (amrikyy_stream_sessions_completed_total)`
  say(`    ${spreadDetail}`)
  checks.push({
    name: 'load reaches both instances',
    verdict: spreadOk === SPREAD_REQUESTS && served.every(count => count > 0) && served.reduce((a, b) => a + b) === SPREAD_REQUESTS ? 'PASS' : 'FAIL',
    detail: spreadDetail
  })

  // (3) One budget per key across both instances.
  say(`(3) ${LIMIT_REQUESTS} requests with one key through nginx, RATE_LIMIT_MAX=${RATE_LIMIT_MAX}, 5 at a time`)
  const beforeLimit = await Promise.all(gatewayUrls.map(completedStreams))
  const limited = await inParallel(LIMIT_REQUESTS, 5, async index =>
    await stream(nginxUrl, keys.limit, { prompt: `limit ${index}`, agent: 'e2e-scale', options: { maxOutputTokens: 4 } }))
  const afterLimit = await Promise.all(gatewayUrls.map(completedStreams))
  const limitServed = afterLimit.map((count, index) => count - (beforeLimit[index] ?? 0))
  const ok = limited.filter(result => result.status === 200).length
  const refused = limited.filter(result => result.status === 429)
  const other = limited.filter(result => result.status !== 200 && result.status !== 429)
  const advertised = limited.find(result => result.rateLimitLimit !== null)?.rateLimitLimit ?? null
  const limitDetail = `${ok} answered 200 (gateway-1 ${limitServed[0] ?? 0}, gateway-2 ${limitServed[1] ?? 0}), ${refused.length} answered 429` +
    `${other.length > 0 ? `, ${other.length} answered ${[...new Set(other.map(result => result.status))].join('/')}` : ''}; x-ratelimit-limit: ${advertised ?? 'absent'}`
  say(`    ${limitDetail}`)
  if (advertised === null && refused.length === 0) {
    checks.push({ name: 'one shared limit per key', verdict: 'NOT SHOWN', detail: `rate limiting is not active in this build (no x-ratelimit-* headers, no 429): ${limitDetail}` })
  } else if (advertised !== String(RATE_LIMIT_MAX)) {
    checks.push({ name: 'one shared limit per key', verdict: 'NOT SHOWN', detail: `the gateway does not apply RATE_LIMIT_MAX=${RATE_LIMIT_MAX} from its environment: ${limitDetail}` })
  } else {
    const exactBodies = refused.every(result => result.body === TOO_MANY_REQUESTS_BODY)
    const shared = ok === RATE_LIMIT_MAX && refused.length === LIMIT_REQUESTS - RATE_LIMIT_MAX && other.length === 0 && exactBodies
    const why = shared
      ? ''
      : ok > RATE_LIMIT_MAX
        ? ' - more than the limit got through: the instances are not sharing one budget'
        : exactBodies ? '' : ' - a 429 body differs from the contract'
    checks.push({ name: 'one shared limit per key', verdict: shared ? 'PASS' : 'FAIL', detail: `${limitDetail}${why}` })
  }

  // (4) Spoofing: every request claims a new X-Forwarded-For; nginx replaces it with the connecting address.
  const spoofer = freshLoopbackAddress()
  const bystander = freshLoopbackAddress()
  say(`(4) ${LIMIT_REQUESTS} bad-key requests from ${spoofer} through nginx, each claiming another X-Forwarded-For, then one from ${bystander}`)
  // The claimed addresses only travel inside the header (TEST-NET-2, RFC 5737); every socket stays on loopback.
  const spoofed: number[] = []
  for (let index = 0; index < LIMIT_REQUESTS; index++) spoofed.push(await badKeyStatus(nginxUrl, spoofer, `198.51.100.${1 + (index % 254)}`))
  const bystanderStatus = await badKeyStatus(nginxUrl, bystander, '198.51.100.1')
  const expected = [...Array<number>(RATE_LIMIT_MAX).fill(403), ...Array<number>(LIMIT_REQUESTS - RATE_LIMIT_MAX).fill(429)]
  const spoofDetail = `${spoofer}: ${countStatuses(spoofed)}; ${bystander}: ${bystanderStatus}`
  say(`    ${spoofDetail}`)
  const spoofFailed = spoofed.join() === Array<number>(LIMIT_REQUESTS).fill(403).join()
  checks.push({
    name: 'a spoofed X-Forwarded-For buys no new budget',
    verdict: spoofed.join() === expected.join() && bystanderStatus === 403 ? 'PASS' : 'FAIL',
    detail: `${spoofDetail}${spoofFailed ? ' - every spoofed address got a budget of its own' : bystanderStatus === 429 ? ' - another client was throttled as the spoofer: the gateway sees one address for everyone' : ''}`
  })
  return checks
}

async function main (): Promise<number> {
  const workDir = await mkdtemp(join(tmpdir(), 'amrikyy-e2e-scale-'))
  let interrupted = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return
    interrupted = true
    say(`\n${signal}: stopping everything this script started`)
    stopAll().finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  let checks: Check[] = []
  let failure: unknown
  try {
    checks = await run(workDir)
  } catch (error) {
    failure = error
  } finally {
    await stopAll()
  }
  if (interrupted) return 130
  process.off('SIGINT', onSignal)
  process.off('SIGTERM', onSignal)

  say()
  say('summary')
  for (const check of checks) say(`  ${check.verdict.padEnd(9)} ${check.name}: ${check.detail}`)
  if (failure !== undefined) {
    say(`  FAIL      ${failure instanceof E2eError ? failure.message : failure instanceof Error ? (failure.stack ?? failure.message) : String(failure)}`)
  }
  const passed = failure === undefined && checks.length > 0 && checks.every(check => check.verdict === 'PASS')
  if (passed || children.length === 0) {
    await rm(workDir, { recursive: true, force: true })
  } else {
    say(`  logs of every process: ${workDir}`)
  }
  say(`  stopped: ${children.map(child => child.name).join(', ') || 'nothing was started'}`)
  return passed ? 0 : 1
}

// Exit at once: fetch keeps idle connections to nginx and the gateways open for a few seconds more.
main().then(code => { process.exit(code) }, (error: unknown) => {
  process.stderr.write(`e2e-scale: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
})
