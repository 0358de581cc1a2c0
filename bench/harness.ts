// The benchmark: paths to the same emulator (direct, bare proxy, the gateway's POST /api/stream and,
// on the same gateway process, its POST /v1/chat/completions and its resumable POST /api/stream), and one more when another build is
// given as a baseline, driven at several concurrencies with the paths interleaved run by run, every
// stream's bytes checked.

import { resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { AnswerPace } from '../emulator/answer.js'
import { machineFacts as sharedMachineFacts, type MachineFacts as SharedMachineFacts } from '../scripts/shared/machine.js'
import { distFile, GATEWAY_CLIENT_KEY, startEmulatorProcess, type GatewayProcessOptions, startGatewayProcess, startProxyProcess, type Child } from './children.js'
import { expectedStream, gatewayBodyProblem, openAIBodyProblem, resumableBodyProblem, upstreamBodyProblem, type ExpectedStream } from './expect.js'
import { keepAliveAgent, percentile, runLoad, type StreamSample, type StreamTarget } from './load.js'
import { cpuMs, sampleRss, ticksPerSecond } from '../scripts/shared/procfs.js'
import { baselineRatiosFor, besideGatewayRatiosFor, ratiosFor, type BaselineRatioReport, type BesideGatewayRatioReport, type RatioReport } from './ratios.js'

export type { BaselineRatioReport, BesideGatewayRatioReport, RatioReport } from './ratios.js'

/**
 * `gateway` is POST /api/stream, `openai` POST /v1/chat/completions (streamed) and `resumable` POST /api/stream
 * with `"resumable": true` (issue 19), all on the same gateway process; `baseline` is another build of the
 * gateway, measured only when the bench is given one.
 */
export type PathName = 'direct' | 'proxy' | 'gateway' | 'openai' | 'resumable' | 'baseline'
/** The paths every run measures unless told otherwise. */
export const PATHS: readonly PathName[] = ['direct', 'proxy', 'gateway', 'openai', 'resumable']
/** The paths that take turns at the head of a run; the others are measured right beside the gateway. */
const ROTATED: readonly PathName[] = ['direct', 'proxy', 'gateway']

export const MODEL = 'gemini-2.0-flash-exp'
const WARMUP_CONCURRENCY = 10

export interface UpstreamPace extends AnswerPace {
  chunkDelayMs: number
}

export interface ScenarioConfig {
  name: string
  pace: UpstreamPace
  concurrencies: number[]
  /** Timed streams per run at each concurrency. */
  streamsPerRun: (concurrency: number) => number
  runs: number
}

export interface BenchConfig {
  scenarios: ScenarioConfig[]
  /**
   * The pace the byte checks assume. Normally each scenario's own; a test sets a different one to
   * prove that a wrong stream is caught.
   */
  checkPace?: AnswerPace
  /** Distinct prompts cycled through; each has its own answer. */
  promptVariety?: number
  /** Unmeasured streams per path before the first run. Default 500. */
  warmupStreams?: number
  /** Gateway process options (another build's script, extra env or node flags). */
  gateway?: GatewayProcessOptions
  /** When set, a second gateway build (its `script`) measured as the `baseline` path beside the gateway. */
  baseline?: GatewayProcessOptions
  /** Measure POST /v1/chat/completions as the `openai` path. Default true; false for a build without it. */
  openai?: boolean
  /** Measure POST /api/stream with `"resumable": true` as the `resumable` path. Default true; false for a build without it. */
  resumable?: boolean
  log?: (line: string) => void
}

export interface RunMeasure {
  streams: number
  ttfcP50Ms: number
  ttfcP99Ms: number
  totalP50Ms: number
  totalP99Ms: number
  streamsPerSecond: number
  /** CPU of the serving process (emulator for direct, proxy, gateway) per timed stream. */
  cpuMsPerStream: number
  /** Highest RSS of the serving process sampled during the run, in MiB. */
  peakRssMiB: number
}

export type MeasureName = keyof RunMeasure

export interface Spread { median: number, min: number, max: number }

export interface CellReport {
  path: PathName
  concurrency: number
  runs: RunMeasure[]
  summary: Record<MeasureName, Spread>
}

export interface CheckReport {
  streamsChecked: number
  wrongStreams: number
  /** The first few problems, each naming path, concurrency and what was wrong. */
  problems: string[]
}

export interface ScenarioReport {
  name: string
  pace: UpstreamPace
  runs: number
  cells: CellReport[]
  ratios: RatioReport[]
  /** Only when the openai path was measured. */
  openaiRatios?: BesideGatewayRatioReport[]
  /** Only when the resumable path was measured. */
  resumableRatios?: BesideGatewayRatioReport[]
  /** Only when a baseline build was measured. */
  baselineRatios?: BaselineRatioReport[]
  checks: CheckReport
}

export interface MachineFacts extends SharedMachineFacts {
  clockTicksPerSecond: number
}

export interface BenchReport {
  startedAt: string
  machine: MachineFacts
  /** The two builds compared, as absolute script paths; only when a baseline was measured. */
  builds?: { gateway: string, baseline: string }
  /** Whether the gateway process had REDIS_URL (resumable logs, rate-limit counters and budgets in Redis). */
  gatewayRedis?: boolean
  scenarios: ScenarioReport[]
}

export function machineFacts (): MachineFacts {
  return { ...sharedMachineFacts(), clockTicksPerSecond: ticksPerSecond() }
}

export function promptFor (i: number, variety: number): string {
  return `bench prompt ${i % variety}: why is the sky blue?`
}

export function upstreamRequestBody (prompt: string): string {
  // What the SDK sends for a bare prompt with a config object (see docs/gemini-wire-protocol.md §2.3).
  return JSON.stringify({ contents: [{ parts: [{ text: prompt }], role: 'user' }], generationConfig: {} })
}

/** The paths a run measures: direct, proxy, gateway, openai and resumable unless turned off, and `baseline` when there is one. */
export function pathsFor (config: BenchConfig): PathName[] {
  const off = new Set<PathName>([...(config.openai === false ? ['openai'] as const : []), ...(config.resumable === false ? ['resumable'] as const : [])])
  const paths = PATHS.filter(path => !off.has(path))
  return config.baseline === undefined ? paths : [...paths, 'baseline']
}

/**
 * The order of the paths in one cell: direct, proxy and gateway rotate by run. The openai path, the
 * resumable path and the baseline are each measured beside the gateway (so that what is compared with
 * it meets the same machine noise), on either side of it, swapping sides by turns so that none always
 * goes first. That matters most for openai and resumable, which share the gateway's process: whichever
 * runs second may pay for garbage the first left behind. openai's side is one, the baseline's the
 * other; resumable takes the baseline's side when there is no baseline, else it sits on openai's side
 * between openai and the gateway (so the gateway's two neighbours are resumable and the baseline, and
 * openai is one further off).
 */
export function pathOrder (paths: readonly PathName[], run: number, cellIndex: number): PathName[] {
  const rotated = ROTATED.map((_, i) => ROTATED[(i + run) % ROTATED.length]!)
  const present = (path: PathName): PathName[] => paths.includes(path) ? [path] : []
  const baseline = paths.includes('baseline')
  // Outermost first on openai's side; nearest to the gateway first on the baseline's side.
  const openaiSide = [...present('openai'), ...(baseline ? present('resumable') : [])]
  const baselineSide = [...(baseline ? [] : present('resumable')), ...present('baseline')]
  // Alternates along the concurrencies of a run and, for each concurrency, from run to run.
  const [left, right] = (run + cellIndex) % 2 === 0
    ? [openaiSide, baselineSide]
    : [[...baselineSide].reverse(), [...openaiSide].reverse()]
  const at = rotated.indexOf('gateway')
  return [...rotated.slice(0, at), ...left, 'gateway', ...right, ...rotated.slice(at + 1)]
}

export function targetFor (path: PathName, url: string): StreamTarget {
  if (path === 'gateway' || path === 'baseline') {
    return { url: `${url}/api/stream`, headers: { 'x-api-key': GATEWAY_CLIENT_KEY }, body: prompt => JSON.stringify({ prompt }) }
  }
  if (path === 'resumable') {
    return { url: `${url}/api/stream`, headers: { 'x-api-key': GATEWAY_CLIENT_KEY }, body: prompt => JSON.stringify({ prompt, resumable: true }) }
  }
  if (path === 'openai') {
    return {
      url: `${url}/v1/chat/completions`,
      headers: { authorization: `Bearer ${GATEWAY_CLIENT_KEY}` },
      body: prompt => JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: prompt }], stream: true })
    }
  }
  return {
    url: `${url}/v1beta/models/${MODEL}:streamGenerateContent?alt=sse`,
    headers: { 'x-goog-api-key': 'bench' },
    body: upstreamRequestBody
  }
}

/** Why a sample is wrong, or undefined when its status and every byte are right. */
export function sampleProblem (path: PathName, sample: StreamSample, expected: ExpectedStream): string | undefined {
  if (sample.error !== undefined) return `transport error: ${sample.error}`
  if (sample.status !== 200) return `status ${sample.status}`
  // The baseline speaks the same contract as the gateway, so the same bytes are expected of it.
  if (path === 'gateway' || path === 'baseline') return gatewayBodyProblem(sample.body, expected)
  if (path === 'openai') return openAIBodyProblem(sample.body, expected, MODEL)
  if (path === 'resumable') return resumableBodyProblem(sample.body, sample.streamId, expected)
  return upstreamBodyProblem(sample.body, expected)
}

function spread (values: number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
  return { median, min: sorted[0]!, max: sorted[sorted.length - 1]! }
}

function summarise (runs: RunMeasure[]): Record<MeasureName, Spread> {
  const names = Object.keys(runs[0]!) as MeasureName[]
  return Object.fromEntries(names.map(name => [name, spread(runs.map(run => run[name]))])) as Record<MeasureName, Spread>
}

class Checker {
  private readonly cache = new Map<string, ExpectedStream>()
  readonly report: CheckReport = { streamsChecked: 0, wrongStreams: 0, problems: [] }

  constructor (private readonly pace: AnswerPace) {}

  check (path: PathName, concurrency: number, samples: StreamSample[]): void {
    for (const sample of samples) {
      let expected = this.cache.get(sample.prompt)
      if (expected === undefined) {
        expected = expectedStream(sample.prompt, this.pace)
        this.cache.set(sample.prompt, expected)
      }
      this.report.streamsChecked++
      const problem = sampleProblem(path, sample, expected)
      if (problem === undefined) continue
      this.report.wrongStreams++
      if (this.report.problems.length < 10) this.report.problems.push(`${path} c=${concurrency}: ${problem}`)
    }
  }
}

interface Servers {
  emulator: Child
  proxy: Child
  gateway: Child
  baseline?: Child
}

function serverFor (servers: Servers, path: PathName): Child {
  // The openai and resumable paths are served by the gateway process, so their CPU and RSS are read from that process.
  const server = path === 'direct' ? servers.emulator : path === 'openai' || path === 'resumable' ? servers.gateway : servers[path]
  if (server === undefined) throw new Error(`bench: no ${path} server was started`)
  return server
}

async function measureRun (servers: Servers, path: PathName, concurrency: number, streams: number, checker: Checker, variety: number): Promise<RunMeasure> {
  const server = serverFor(servers, path)
  const target = targetFor(path, server.url)
  const agent = keepAliveAgent(concurrency)
  try {
    // Opens every connection (client side and the server's upstream pool) before the clock starts.
    const warm = await runLoad(agent, target, { streams: concurrency, concurrency, promptFor: i => promptFor(i, variety) })
    checker.check(path, concurrency, warm.samples)
    await sleep(20)

    const rss = sampleRss(server.pid)
    const cpuBefore = cpuMs(server.pid)
    const load = await runLoad(agent, target, { streams, concurrency, promptFor: i => promptFor(i + concurrency, variety) })
    // Lets work the server does right after the last byte (metrics, socket bookkeeping) land in this run.
    await sleep(30)
    const cpuAfter = cpuMs(server.pid)
    const peakRssKiB = rss.stop()
    checker.check(path, concurrency, load.samples)

    const firstChunks = load.samples.map(s => s.firstChunkMs)
    const totals = load.samples.map(s => s.totalMs)
    return {
      streams,
      ttfcP50Ms: percentile(firstChunks, 50),
      ttfcP99Ms: percentile(firstChunks, 99),
      totalP50Ms: percentile(totals, 50),
      totalP99Ms: percentile(totals, 99),
      streamsPerSecond: streams / (load.wallMs / 1000),
      cpuMsPerStream: (cpuAfter - cpuBefore) / streams,
      peakRssMiB: peakRssKiB / 1024
    }
  } finally {
    agent.destroy()
  }
}

export async function runScenario (scenario: ScenarioConfig, config: BenchConfig): Promise<ScenarioReport> {
  const log = config.log ?? (() => {})
  const variety = config.promptVariety ?? 64
  const checker = new Checker(config.checkPace ?? scenario.pace)
  const started: Child[] = []
  try {
    const emulator = await startEmulatorProcess(scenario.pace)
    started.push(emulator)
    const proxy = await startProxyProcess(emulator.url)
    started.push(proxy)
    const gateway = await startGatewayProcess(emulator.url, config.gateway)
    started.push(gateway)
    const servers: Servers = { emulator, proxy, gateway }
    if (config.baseline !== undefined) {
      servers.baseline = await startGatewayProcess(emulator.url, { ...config.baseline, name: 'baseline' })
      started.push(servers.baseline)
    }
    const paths = pathsFor(config)

    // JIT warm-up, unmeasured: a fresh process is several times slower for its first few hundred streams.
    for (const path of paths) {
      const agent = keepAliveAgent(WARMUP_CONCURRENCY)
      const warm = await runLoad(agent, targetFor(path, serverFor(servers, path).url), { streams: config.warmupStreams ?? 500, concurrency: WARMUP_CONCURRENCY, promptFor: i => promptFor(i, variety) })
      agent.destroy()
      checker.check(path, WARMUP_CONCURRENCY, warm.samples)
    }

    const measures = new Map<string, RunMeasure[]>()
    for (let run = 0; run < scenario.runs; run++) {
      for (const [cellIndex, concurrency] of scenario.concurrencies.entries()) {
        // Rotating the order each run spreads any drift (JIT, heap growth, thermal) over all paths.
        for (const path of pathOrder(paths, run, cellIndex)) {
          const measure = await measureRun(servers, path, concurrency, scenario.streamsPerRun(concurrency), checker, variety)
          const key = `${path}@${concurrency}`
          measures.set(key, [...(measures.get(key) ?? []), measure])
          log(`${scenario.name} run ${run + 1}/${scenario.runs} ${path} c=${concurrency}: ` +
            `${measure.streamsPerSecond.toFixed(0)} streams/s, ttfc p50 ${measure.ttfcP50Ms.toFixed(2)} ms, ` +
            `cpu ${measure.cpuMsPerStream.toFixed(3)} ms/stream, rss ${measure.peakRssMiB.toFixed(0)} MiB`)
        }
      }
    }

    const cells: CellReport[] = []
    for (const concurrency of scenario.concurrencies) {
      for (const path of paths) {
        const runs = measures.get(`${path}@${concurrency}`)!
        cells.push({ path, concurrency, runs, summary: summarise(runs) })
      }
    }
    return {
      name: scenario.name,
      pace: scenario.pace,
      runs: scenario.runs,
      cells,
      ratios: ratiosFor(cells, scenario.concurrencies),
      ...(paths.includes('openai') ? { openaiRatios: besideGatewayRatiosFor(cells, scenario.concurrencies, 'openai') } : {}),
      ...(paths.includes('resumable') ? { resumableRatios: besideGatewayRatiosFor(cells, scenario.concurrencies, 'resumable') } : {}),
      ...(servers.baseline === undefined ? {} : { baselineRatios: baselineRatiosFor(cells, scenario.concurrencies) }),
      checks: checker.report
    }
  } finally {
    for (const child of started.reverse()) await child.stop()
  }
}

export async function runBench (config: BenchConfig): Promise<BenchReport> {
  const script = (options?: GatewayProcessOptions): string => resolve(options?.script ?? distFile('server.js'))
  const report: BenchReport = {
    startedAt: new Date().toISOString(),
    machine: machineFacts(),
    ...(config.baseline === undefined ? {} : { builds: { gateway: script(config.gateway), baseline: script(config.baseline) } }),
    ...(config.gateway?.env?.REDIS_URL === undefined ? {} : { gatewayRedis: true }),
    scenarios: []
  }
  for (const scenario of config.scenarios) report.scenarios.push(await runScenario(scenario, config))
  return report
}
