// Soak: `npm run soak` (not part of CI; about 4 minutes with the defaults).
//
// Starts the Gemini emulator and the gateway (production mode) as separate processes on loopback,
// keeps `--concurrency` streams (default 1,000) open through the gateway for `--duration` (default
// 3 minutes), while the client leaves a random share of them early, and samples the gateway's RSS
// and open sockets, the emulator's open sockets and the gateway's active-stream gauge. After the load
// it waits for the processes to go idle and checks: the gauge is back to 0, both processes' sockets
// are back to their baseline (so every upstream connection closed), and the gateway's completed /
// cancelled / failed counters match what the client did exactly. It prints a Markdown summary, writes
// it to bench/results/soak.md and exits non-zero when an invariant fails. Every child is stopped on
// every path, Ctrl-C included.
//
//   npm run soak -- --duration 30s --concurrency 200 --cancel-fraction 0.3

import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { Agent, get as httpGet } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join, resolve as resolvePath } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { machineFacts } from './shared/machine.js'
import { LOOPBACK, freePort } from './shared/ports.js'
import { parseSamples } from './shared/prometheus-text.js'
import { SoakLoad, type LoadTally } from './soak-load.js'
import { memory, openFileLimit, socketCount } from './shared/procfs.js'
import { startNodeChild, type NodeChild } from './soak-processes.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const REPORT_FILE = join(ROOT, 'bench', 'results', 'soak.md')
const API_KEY = 'soak-client-key-0123456789abcdef'
/** Prompts with this get an endless event from the emulator; the gateway must refuse it at HUGE_EVENT_CAP. */
const HUGE_EVENT_MARKER = '[soak: huge event]'
/** The gateway's default event cap, set explicitly so the expected error text is known. */
const HUGE_EVENT_CAP = 8 * 1024 * 1024
/** After the load: how long the processes get to release everything. */
const IDLE_TIMEOUT_MS = 30_000
const IDLE_POLL_MS = 500
const SCRAPE_TIMEOUT_MS = 5_000
/** Descriptors beyond the sockets: node's own, log pipes, the listener, some room. */
const FD_HEADROOM = 512

class SoakError extends Error {
  override name = 'SoakError'
}

// ---------------------------------------------------------------- options

interface Options {
  durationMs: number
  concurrency: number
  cancelFraction: number
  /** Share of streams whose upstream sends one event without end (issue 12): each must end refused as too large. */
  hugeEventFraction: number
  chunkCount: number
  chunkDelayMs: number
  reportFile: string
}

const USAGE = `usage: npm run soak -- [--duration 3m] [--concurrency 1000] [--cancel-fraction 0.3] [--huge-event-fraction 0] [--chunks 40] [--chunk-delay-ms 200] [--report FILE]
  --duration         how long to keep the streams open: 90s, 3m, 500ms (a bare number is seconds)
  --concurrency      streams open at all times
  --cancel-fraction  share of streams the client leaves early, 0 to 1
  --chunks           chunk events per answer at most (the emulator's EMULATOR_CHUNK_COUNT)
  --chunk-delay-ms   pause between two chunk events (EMULATOR_CHUNK_DELAY_MS)
  --huge-event-fraction  share of streams whose upstream sends one event without end, 0 to 1 (default 0)
  --report           where to write the Markdown summary (default bench/results/soak.md)`

function duration (raw: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(raw)
  if (match === null) throw new SoakError(`--duration must look like 30s, 3m or 500ms, got "${raw}"`)
  const unit = match[2] ?? 's'
  return Math.round(Number(match[1]) * (unit === 'ms' ? 1 : unit === 's' ? 1000 : 60_000))
}

function integer (name: string, raw: string, min: number, max: number): number {
  const n = Number(raw)
  if (!/^\d+$/.test(raw) || n < min || n > max) throw new SoakError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`)
  return n
}

function parseOptions (argv: string[]): Options {
  const options: Options = { durationMs: 180_000, concurrency: 1000, cancelFraction: 0.3, hugeEventFraction: 0, chunkCount: 40, chunkDelayMs: 200, reportFile: REPORT_FILE }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!
    if (flag === '--help' || flag === '-h') {
      process.stdout.write(`${USAGE}\n`)
      process.exit(0)
    }
    const value = argv[++i]
    if (value === undefined) throw new SoakError(`${flag} needs a value\n${USAGE}`)
    switch (flag) {
      case '--duration': options.durationMs = duration(value); break
      case '--concurrency': options.concurrency = integer(flag, value, 1, 20_000); break
      case '--chunks': options.chunkCount = integer(flag, value, 2, 4096); break
      case '--chunk-delay-ms': options.chunkDelayMs = integer(flag, value, 0, 60_000); break
      case '--report': options.reportFile = resolvePath(value); break
      case '--cancel-fraction':
      case '--huge-event-fraction': {
        const n = Number(value)
        if (!(n >= 0 && n <= 1)) throw new SoakError(`${flag} must be from 0 to 1, got "${value}"`)
        if (flag === '--cancel-fraction') options.cancelFraction = n
        else options.hugeEventFraction = n
        break
      }
      default: throw new SoakError(`unknown option ${flag}\n${USAGE}`)
    }
  }
  if (options.durationMs < 1000) throw new SoakError('--duration must be at least 1s')
  return options
}

// ---------------------------------------------------------------- small helpers

function say (line = ''): void {
  process.stdout.write(`${line}\n`)
}

const mib = (kib: number): string => (kib / 1024).toFixed(1)

function percentile (values: number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

/** Least-squares slope and R² of y over x. */
function linearFit (points: Array<{ x: number, y: number }>): { slope: number, r2: number } | undefined {
  if (points.length < 3) return undefined
  const n = points.length
  const mx = points.reduce((s, p) => s + p.x, 0) / n
  const my = points.reduce((s, p) => s + p.y, 0) / n
  let sxy = 0
  let sxx = 0
  let syy = 0
  for (const { x, y } of points) {
    sxy += (x - mx) * (y - my)
    sxx += (x - mx) ** 2
    syy += (y - my) ** 2
  }
  if (sxx === 0) return undefined
  return { slope: sxy / sxx, r2: syy === 0 ? 1 : (sxy * sxy) / (sxx * syy) }
}

// ---------------------------------------------------------------- the gateway's metrics

// Its own connection per scrape, closed after it, so the scrape never counts as an open socket later.
const scrapeAgent = new Agent({ keepAlive: false })

async function scrape (url: string): Promise<Map<string, number>> {
  const text = await new Promise<string>((resolve, reject) => {
    const req = httpGet(`${url}/api/metrics`, { agent: scrapeAgent, timeout: SCRAPE_TIMEOUT_MS }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (piece: string) => { body += piece })
      res.once('end', () => { res.statusCode === 200 ? resolve(body) : reject(new SoakError(`/api/metrics answered ${res.statusCode ?? '?'}`)) })
      res.once('error', reject)
    })
    req.once('timeout', () => { req.destroy(new SoakError(`/api/metrics did not answer within ${SCRAPE_TIMEOUT_MS} ms`)) })
    req.once('error', reject)
  })
  return sumSeries(text)
}

/** Each series of a Prometheus text exposition, summed over its label sets: the soak judges the gateway as a whole. */
export function sumSeries (text: string): Map<string, number> {
  const sums = new Map<string, number>()
  for (const sample of parseSamples(text)) sums.set(sample.name, (sums.get(sample.name) ?? 0) + sample.value)
  return sums
}

const ACTIVE = 'amrikyy_active_streams'
const COMPLETED = 'amrikyy_stream_sessions_completed_total'
const CANCELLED = 'amrikyy_stream_sessions_cancelled_total'
const FAILED = 'amrikyy_stream_sessions_failed_total'
const UPSTREAM_ERRORS = 'amrikyy_upstream_errors_total'
const HEAP_USED = 'nodejs_heap_size_used_bytes'

// ---------------------------------------------------------------- sampling

interface Sample {
  /** Seconds since the load started (negative: before it). */
  t: number
  gatewayRssKiB: number
  gatewaySockets: number
  emulatorSockets: number
  activeGauge: number
  /** The gateway's V8 heap in use (the default metric nodejs_heap_size_used_bytes), in KiB. */
  gatewayHeapKiB: number
  clientOpen: number
}

async function takeSample (gateway: NodeChild, emulator: NodeChild, gatewayUrl: string, loadStart: number, clientOpen: number): Promise<Sample> {
  // /proc first, the scrape after: the scrape's own connection must not be counted.
  const gatewayRss = memory(gateway.pid).rssKiB
  const gatewaySockets = socketCount(gateway.pid)
  const emulatorSockets = socketCount(emulator.pid)
  const metrics = await scrape(gatewayUrl)
  return {
    t: (performance.now() - loadStart) / 1000,
    gatewayRssKiB: gatewayRss,
    gatewaySockets,
    emulatorSockets,
    activeGauge: metrics.get(ACTIVE) ?? 0,
    gatewayHeapKiB: (metrics.get(HEAP_USED) ?? NaN) / 1024,
    clientOpen
  }
}

function sampleLine (s: Sample): string {
  return `  t=${s.t.toFixed(0).padStart(4)} s  client open ${String(s.clientOpen).padStart(5)}  gauge ${String(s.activeGauge).padStart(5)}` +
    `  gateway sockets ${String(s.gatewaySockets).padStart(5)}  emulator sockets ${String(s.emulatorSockets).padStart(5)}  gateway RSS ${mib(s.gatewayRssKiB)} MiB, heap ${mib(s.gatewayHeapKiB)} MiB`
}

// ---------------------------------------------------------------- children

const children: NodeChild[] = []
let load: SoakLoad | undefined

async function stopChildren (): Promise<void> {
  // The gateway first, so it never sees its upstream vanish.
  for (const child of [...children].reverse()) await child.stop(10_000)
}

process.on('exit', () => {
  for (const child of children) if (child.running()) process.kill(child.pid, 'SIGKILL')
})
process.once('SIGINT', () => {
  say('\nsoak: interrupted; stopping the load and the child processes')
  load?.abort()
  void stopChildren().finally(() => process.exit(130))
})

function machineLine (): string {
  const m = machineFacts()
  return `${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB.toFixed(1)} GiB, Node ${m.node}, Linux ${m.kernel}, open-file limit ${openFileLimit().soft}`
}

// ---------------------------------------------------------------- the run

interface Verdict { name: string, ok: boolean, detail: string }

async function main (): Promise<number> {
  const options = parseOptions(process.argv.slice(2))
  const { concurrency, durationMs } = options

  const own = openFileLimit()
  if (own.soft < concurrency + FD_HEADROOM) {
    throw new SoakError(`this process may open ${own.soft} files but needs about ${concurrency + FD_HEADROOM}: run \`ulimit -n ${concurrency * 2 + FD_HEADROOM}\` first`)
  }
  // The gateway holds a client and an upstream socket per stream.
  const gatewayNeeds = 2 * concurrency + FD_HEADROOM
  if (own.hard < gatewayNeeds) throw new SoakError(`the gateway needs about ${gatewayNeeds} open files; the hard limit is ${own.hard}`)
  const fileLimit = own.soft < gatewayNeeds ? gatewayNeeds : undefined

  const logDir = await mkdtemp(join(tmpdir(), 'amrikyy-soak-'))
  const pace = { chunkCount: options.chunkCount, defaultMaxTokens: 64 }
  const emulatorPort = await freePort()
  const emulator = await startNodeChild({
    name: 'emulator',
    script: join(ROOT, 'dist', 'emulator', 'cli.js'),
    port: emulatorPort,
    cwd: ROOT,
    logFile: join(logDir, 'emulator.log'),
    fileLimit,
    env: {
      EMULATOR_PORT: String(emulatorPort),
      EMULATOR_HOST: LOOPBACK,
      EMULATOR_CHUNK_COUNT: String(options.chunkCount),
      EMULATOR_CHUNK_DELAY_MS: String(options.chunkDelayMs),
      EMULATOR_DEFAULT_MAX_TOKENS: String(pace.defaultMaxTokens),
      EMULATOR_HUGE_EVENT_MATCH: HUGE_EVENT_MARKER
    }
  })
  children.push(emulator)
  const gatewayPort = await freePort()
  const gateway = await startNodeChild({
    name: 'gateway',
    script: join(ROOT, 'dist', 'server.js'),
    port: gatewayPort,
    cwd: ROOT,
    logFile: join(logDir, 'gateway.log'),
    fileLimit,
    env: {
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      GEMINI_API_KEY: 'soak',
      GEMINI_BASE_URL: `http://${LOOPBACK}:${emulatorPort}`,
      GEMINI_MAX_EVENT_CHARS: String(HUGE_EVENT_CAP),
      API_KEYS: API_KEY,
      RATE_LIMIT_MAX: '100000000',
      PORT: String(gatewayPort),
      HOST: LOOPBACK
    }
  })
  children.push(gateway)
  const gatewayUrl = `http://${LOOPBACK}:${gatewayPort}`

  let childDied: string | undefined
  let stopping = false
  for (const child of children) {
    void child.exited.then(code => {
      if (stopping) return
      childDied = `${child.name} exited (${code}) during the soak; see ${child.logFile}`
      load?.abort()
    })
  }

  try {
    say(`soak: ${concurrency} concurrent streams for ${durationMs / 1000} s, ${Math.round(options.cancelFraction * 100)}% left early by the client; ` +
      `emulator ${options.chunkCount} chunks x ${options.chunkDelayMs} ms; logs in ${logDir}`)
    say(`soak: ${machineLine()}`)
    await sleep(1000)
    const baseline = await takeSample(gateway, emulator, gatewayUrl, performance.now(), 0)
    say(`soak: baseline: gateway sockets ${baseline.gatewaySockets}, emulator sockets ${baseline.emulatorSockets}, gateway RSS ${mib(baseline.gatewayRssKiB)} MiB`)

    const loadStart = performance.now()
    const sampleEveryMs = Math.min(5000, Math.max(1000, Math.round(durationMs / 30)))
    load = new SoakLoad({
      url: gatewayUrl,
      apiKey: API_KEY,
      concurrency,
      durationMs,
      cancelFraction: options.cancelFraction,
      hugeEvent: { fraction: options.hugeEventFraction, marker: HUGE_EVENT_MARKER, cap: HUGE_EVENT_CAP },
      pace,
      streamDeadlineMs: 90_000,
      rampMs: Math.min(5000, durationMs / 4)
    })
    const running = load.run()
    let loadOver = false
    void running.finally(() => { loadOver = true })
    const samples: Sample[] = []
    const scrapeFailures: string[] = []
    for (;;) {
      await Promise.race([sleep(sampleEveryMs), running])
      if (loadOver || childDied !== undefined) break
      try {
        const sample = await takeSample(gateway, emulator, gatewayUrl, loadStart, load.open)
        samples.push(sample)
        say(sampleLine(sample))
      } catch (error) {
        scrapeFailures.push(error instanceof Error ? error.message : String(error))
      }
    }
    await running
    const loadEndedAt = (performance.now() - loadStart) / 1000
    if (childDied !== undefined) throw new SoakError(childDied)

    // Right after the last client stream ended: pooled keep-alive connections to the emulator may still be open.
    const atLoadEnd = await takeSample(gateway, emulator, gatewayUrl, loadStart, load.open)
    say(`soak: load over after ${loadEndedAt.toFixed(1)} s; right away:`)
    say(sampleLine(atLoadEnd))
    const idleStart = performance.now()
    let idle = atLoadEnd
    while (performance.now() - idleStart < IDLE_TIMEOUT_MS) {
      if (idle.activeGauge === 0 && idle.gatewaySockets <= baseline.gatewaySockets && idle.emulatorSockets <= baseline.emulatorSockets) break
      await sleep(IDLE_POLL_MS)
      idle = await takeSample(gateway, emulator, gatewayUrl, loadStart, load.open)
    }
    const idleAfterS = (performance.now() - idleStart) / 1000
    say(`soak: ${idleAfterS.toFixed(1)} s later:`)
    say(sampleLine(idle))
    const finalMetrics = await scrape(gatewayUrl)
    const gatewayLog = (await readFile(gateway.logFile, 'utf8')).split('\n').filter(line => line.trim() !== '')

    const report = buildReport({ options, baseline, samples, atLoadEnd, idle, idleAfterS, loadEndedAt, tally: load.tally, metrics: finalMetrics, gatewayLog, scrapeFailures })
    say()
    say(report.markdown)
    await mkdir(dirname(options.reportFile), { recursive: true })
    await writeFile(options.reportFile, `${report.markdown}\n`)
    say(`soak: summary written to ${options.reportFile}`)
    const failed = report.verdicts.filter(v => !v.ok)
    if (failed.length > 0) {
      say(`soak: FAILED: ${failed.map(v => v.name).join('; ')}`)
      return 1
    }
    say('soak: every invariant held')
    return 0
  } finally {
    stopping = true
    await stopChildren()
  }
}

// ---------------------------------------------------------------- the report

interface ReportInput {
  options: Options
  baseline: Sample
  samples: Sample[]
  atLoadEnd: Sample
  idle: Sample
  idleAfterS: number
  loadEndedAt: number
  tally: LoadTally
  metrics: Map<string, number>
  gatewayLog: string[]
  scrapeFailures: string[]
}

function buildReport (input: ReportInput): { markdown: string, verdicts: Verdict[] } {
  const { options, baseline, samples, atLoadEnd, idle, idleAfterS, loadEndedAt, tally, metrics, gatewayLog, scrapeFailures } = input
  const durationS = options.durationMs / 1000
  const clientCancelled = tally.cancelledBeforeHeaders + tally.cancelledAfterHeaders
  const problems = [...tally.problems.values()].reduce((a, b) => a + b, 0)
  const completed = metrics.get(COMPLETED) ?? 0
  const cancelled = metrics.get(CANCELLED) ?? 0
  const failed = metrics.get(FAILED) ?? 0
  const upstreamErrors = metrics.get(UPSTREAM_ERRORS) ?? 0

  const verdicts: Verdict[] = [
    { name: 'active gauge back to 0', ok: idle.activeGauge === 0, detail: `${idle.activeGauge}` },
    { name: 'gateway sockets back to baseline', ok: idle.gatewaySockets <= baseline.gatewaySockets, detail: `${idle.gatewaySockets} (baseline ${baseline.gatewaySockets})` },
    { name: 'upstream connections all closed (emulator sockets back to baseline)', ok: idle.emulatorSockets <= baseline.emulatorSockets, detail: `${idle.emulatorSockets} (baseline ${baseline.emulatorSockets})` },
    { name: 'completed: gateway = client', ok: completed === tally.completed, detail: `${completed} = ${tally.completed}` },
    { name: 'cancelled: gateway = client', ok: cancelled === clientCancelled, detail: `${cancelled} = ${clientCancelled}` },
    { name: 'failed streams: only the huge events refused', ok: failed === tally.refusedTooLarge, detail: `${failed} = ${tally.refusedTooLarge}` },
    { name: 'every request sent accounted for', ok: completed + cancelled + failed === tally.requestsSent, detail: `${completed + cancelled + failed} of ${tally.requestsSent}` },
    { name: 'client problems (wrong bytes, errors, statuses, timeouts)', ok: problems === 0, detail: `${problems}` }
  ]

  // V8 grows its heap to the working size over the first minute or two; the second half of the load is the steady part.
  const warmupS = durationS / 2
  const steady = samples.filter(s => s.t >= warmupS && s.t <= durationS)
  const fit = linearFit(steady.map(s => ({ x: s.t / 60, y: s.gatewayRssKiB / 1024 })))
  const heapFit = linearFit(steady.map(s => ({ x: s.t / 60, y: s.gatewayHeapKiB / 1024 })))
  const firstHalf = linearFit(samples.filter(s => s.t < warmupS).map(s => ({ x: s.t / 60, y: s.gatewayRssKiB / 1024 })))
  const slope = (f: { slope: number }): string => `${f.slope >= 0 ? '+' : ''}${f.slope.toFixed(2)} MiB/min`
  const peakRss = Math.max(baseline.gatewayRssKiB, ...samples.map(s => s.gatewayRssKiB), atLoadEnd.gatewayRssKiB)
  const loaded = samples.filter(s => s.t <= durationS)
  const afterRamp = loaded.filter(s => s.t >= durationS / 4).map(s => s.clientOpen)
  const minOpen = afterRamp.length === 0 ? 0 : Math.min(...afterRamp)
  const meanGauge = loaded.length === 0 ? 0 : loaded.reduce((sum, s) => sum + s.activeGauge, 0) / loaded.length
  const streams = tally.requestsSent

  const lines = [
    `# Soak: ${options.concurrency.toLocaleString('en-US')} concurrent streams with random client disconnects`,
    '',
    `Run ${new Date().toISOString()} on ${machineLine()}. Emulator, gateway (NODE_ENV=production, LOG_LEVEL=warn, default settings) and load client are separate processes on loopback, sharing the cores.`,
    '',
    `Load: ${options.concurrency} streams open at all times for ${durationS} s (\`npm run soak -- --duration ${durationS}s --concurrency ${options.concurrency}\`), one connection per stream; ` +
      `answers of 20–200 words in up to ${options.chunkCount} chunk events, ${options.chunkDelayMs} ms apart; ${Math.round(options.cancelFraction * 100)}% of streams left by the client, ` +
      'half of them 0–25 ms after the request was sent, half after a random number of chunk events. Every completed stream was compared byte for byte with the answer the emulator owes it.' +
      (options.hugeEventFraction > 0
        ? ` ${Math.round(options.hugeEventFraction * 100)}% of streams got one endless upstream event after their first chunk; each had to end with exactly the too-large error event.`
        : ''),
    '',
    '## Invariants',
    '',
    '| check | result | value |',
    '|---|---|---|',
    ...verdicts.map(v => `| ${v.name} | ${v.ok ? 'yes' : '**NO**'} | ${v.detail} |`),
    '',
    '## Streams',
    '',
    '| | client | gateway metrics |',
    '|---|---:|---:|',
    `| requests sent | ${streams} | ${completed + cancelled + failed} counted |`,
    `| completed (byte-exact) | ${tally.completed} | ${completed} |`,
    `| cancelled | ${clientCancelled} (${tally.cancelledBeforeHeaders} before headers, ${tally.cancelledAfterHeaders} after chunks) | ${cancelled} |`,
    `| failed / problems | ${problems} | ${failed} |`,
    `| upstream errors | | ${upstreamErrors} |`,
    '',
    `Throughput ${(streams / loadEndedAt).toFixed(0)} streams/s, ${(tally.chunkEvents / loadEndedAt).toFixed(0)} chunk events/s received; ` +
      `time to first chunk p50 ${percentile(tally.firstChunkMs, 50).toFixed(0)} ms, p99 ${percentile(tally.firstChunkMs, 99).toFixed(0)} ms; ` +
      `completed stream p50 ${(percentile(tally.completedMs, 50) / 1000).toFixed(2)} s, p99 ${(percentile(tally.completedMs, 99) / 1000).toFixed(2)} s; ` +
      `heartbeats received ${tally.heartbeats}. Streams open at the client, lowest sample after the first quarter: ${minOpen}; mean active gauge while loaded ${meanGauge.toFixed(0)}.`,
    '',
    '## Sockets and memory',
    '',
    '| | before the load | loaded (max) | last client stream ended | idle |',
    '|---|---:|---:|---:|---:|',
    `| gateway open sockets | ${baseline.gatewaySockets} | ${Math.max(0, ...loaded.map(s => s.gatewaySockets))} | ${atLoadEnd.gatewaySockets} | ${idle.gatewaySockets} |`,
    `| emulator open sockets | ${baseline.emulatorSockets} | ${Math.max(0, ...loaded.map(s => s.emulatorSockets))} | ${atLoadEnd.emulatorSockets} | ${idle.emulatorSockets} |`,
    `| active gauge | ${baseline.activeGauge} | ${Math.max(0, ...loaded.map(s => s.activeGauge))} | ${atLoadEnd.activeGauge} | ${idle.activeGauge} |`,
    `| gateway RSS MiB | ${mib(baseline.gatewayRssKiB)} | ${mib(peakRss)} (peak) | ${mib(atLoadEnd.gatewayRssKiB)} | ${mib(idle.gatewayRssKiB)} |`,
    `| gateway V8 heap used MiB | ${mib(baseline.gatewayHeapKiB)} | ${mib(Math.max(0, ...loaded.map(s => s.gatewayHeapKiB)))} | ${mib(atLoadEnd.gatewayHeapKiB)} | ${mib(idle.gatewayHeapKiB)} |`,
    '',
    `${verdicts[1]!.ok && verdicts[2]!.ok ? `Both processes were back to their baseline ${idleAfterS.toFixed(1)} s` : `Not back to baseline ${idleAfterS.toFixed(1)} s`} after the last client stream ended ` +
      `(waited at most ${IDLE_TIMEOUT_MS / 1000} s). Sockets are counted from /proc/PID/fd; the baseline is each process's listener plus its stdout and stderr, ` +
      'which Node connects to the soak through socket pairs. The emulator sockets still open when the load ended are the idle keep-alive connections ' +
      "of the gateway's upstream pool (undici, 4 s keep-alive timeout). While loaded the emulator held at most " +
      `${Math.max(0, ...loaded.map(s => s.emulatorSockets)) - baseline.emulatorSockets} connections for ${options.concurrency} open streams: ` +
      'the upstream call of every stream the client left was closed, not run to its end.',
    '',
    fit === undefined || heapFit === undefined
      ? 'RSS growth: too few samples in the second half of the load for a fit (run longer).'
      : `RSS growth in the steady part: **${slope(fit)}** (least-squares fit over the ${steady.length} samples of the second half of the load, ${warmupS.toFixed(0)}–${durationS} s; ` +
        `RSS ${mib(steady[0]!.gatewayRssKiB)} → ${mib(steady[steady.length - 1]!.gatewayRssKiB)} MiB); V8 heap in use over the same samples ${slope(heapFit)}` +
        `${firstHalf === undefined ? '' : `; in the first half, while the heap grew to its working size, RSS grew ${slope(firstHalf)}`}.`,
    '',
    `Gateway log lines at warn or above: ${gatewayLog.length}${gatewayLog.length === 0 ? '' : ` (first: \`${gatewayLog[0]!.slice(0, 300)}\`)`}.` +
      (scrapeFailures.length === 0 ? '' : ` Metric scrapes that failed during the load: ${scrapeFailures.length} (first: ${scrapeFailures[0]!}).`),
    ...(tally.problemExamples.length === 0 ? [] : ['', 'Problems (first 10):', '', ...tally.problemExamples.map(p => `- ${p}`)]),
    '',
    '<details><summary>Samples</summary>',
    '',
    '| t s | client open | active gauge | gateway sockets | emulator sockets | gateway RSS MiB | gateway heap used MiB |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    ...[baseline, ...samples, atLoadEnd, idle].map(s => `| ${s.t.toFixed(0)} | ${s.clientOpen} | ${s.activeGauge} | ${s.gatewaySockets} | ${s.emulatorSockets} | ${mib(s.gatewayRssKiB)} | ${mib(s.gatewayHeapKiB)} |`),
    '',
    '</details>'
  ]
  return { markdown: lines.join('\n'), verdicts }
}

main().then(code => { process.exit(code) }, (error: unknown) => {
  say(`soak: ${error instanceof Error ? error.message : String(error)}`)
  void stopChildren().finally(() => process.exit(1))
})
