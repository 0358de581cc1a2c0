// `npm run bench -- --instructions`: instructions per stream, counted by callgrind, for the gateway
// and (optionally) a baseline build. Instruction counts do not depend on how busy the machine is,
// which the CPU-time bench (±10 % on a shared machine) cannot say of itself.
//
// Each build runs twice under callgrind, with W warm-up streams and with W + N streams; the
// difference divided by N is what one steady-state stream costs, start-up and shutdown cancelled out.

import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { buildRoot, distFile, startGatewayProcess, type Child, type GatewayProcessOptions } from './children.js'
import { attribute, CATEGORIES, parseCallgrind, PerfMap, type Attributed, type Category } from './callgrind.js'
import { expectedStream } from './expect.js'
import { machineFacts, promptFor, sampleProblem, targetFor, type MachineFacts, type UpstreamPace } from './harness.js'
import { keepAliveAgent, runLoad } from './load.js'

export const DEFAULT_WARM = 100
export const DEFAULT_STREAMS = 300
const PROMPT_VARIETY = 64
// Valgrind's start of node takes 1–5 minutes on a loaded machine, its shutdown with the file written up to a few.
const START_TIMEOUT_MS = 15 * 60_000
const STOP_GRACE_MS = 10 * 60_000

export type BuildLabel = 'gateway' | 'baseline'

export interface CallgrindRun {
  /** Streams the process served: W, or W + N. */
  streams: number
  pid: number
  totals: number
  seconds: number
}

export interface BuildCost {
  label: BuildLabel
  script: string
  runs: [CallgrindRun, CallgrindRun]
  /** Instructions per measured stream, all of them. */
  perStream: number
  /** Per stream, by category; every category present, zero when none. */
  categories: Record<Category, number>
  /** Per stream, by comparable function name. */
  functions: Map<string, { category: Category, perStream: number }>
}

/** What one stream costs a build: the W + N run less the W run, over N. */
export function perStreamCost (label: BuildLabel, script: string, warm: Attributed & { run: CallgrindRun }, measured: Attributed & { run: CallgrindRun }): BuildCost {
  const n = measured.run.streams - warm.run.streams
  if (n <= 0) throw new Error(`bench: the measured run must serve more streams than the warm-up run (${measured.run.streams} vs ${warm.run.streams})`)
  const functions = new Map<string, { category: Category, perStream: number }>()
  for (const [name, { category, self }] of measured.functions) functions.set(name, { category, perStream: self / n })
  for (const [name, { category, self }] of warm.functions) {
    const entry = functions.get(name)
    if (entry === undefined) functions.set(name, { category, perStream: -self / n })
    else entry.perStream -= self / n
  }
  const categories = Object.fromEntries(CATEGORIES.map(c => [c, 0])) as Record<Category, number>
  for (const { category, perStream } of functions.values()) categories[category] += perStream
  return { label, script, runs: [warm.run, measured.run], perStream: (measured.totals - warm.totals) / n, categories, functions }
}

export interface FunctionRow { name: string, gateway: number, baseline?: number, difference?: number }

/** The gateway's own JS functions, biggest difference from the baseline first (biggest cost without one). */
export function topGatewayFunctions (gateway: BuildCost, baseline: BuildCost | undefined, count: number): FunctionRow[] {
  const names = new Set<string>()
  for (const build of [gateway, baseline]) {
    for (const [name, { category }] of build?.functions ?? []) if (category === 'gateway JS') names.add(name)
  }
  const rows: FunctionRow[] = [...names].map(name => {
    const g = gateway.functions.get(name)?.perStream ?? 0
    if (baseline === undefined) return { name, gateway: g }
    const b = baseline.functions.get(name)?.perStream ?? 0
    return { name, gateway: g, baseline: b, difference: g - b }
  })
  const weight = (row: FunctionRow): number => Math.abs(row.difference ?? row.gateway)
  return rows.sort((a, b) => weight(b) - weight(a) || a.name.localeCompare(b.name)).slice(0, count)
}

export interface InstructionsReport {
  startedAt: string
  machine: MachineFacts
  valgrind: string
  pace: UpstreamPace
  warmStreams: number
  measuredStreams: number
  builds: Array<Omit<BuildCost, 'functions'>>
  gatewayOverBaseline?: number
  topGatewayFunctions: FunctionRow[]
}

export function instructionsReport (context: Pick<InstructionsReport, 'startedAt' | 'machine' | 'valgrind' | 'pace'>, gateway: BuildCost, baseline?: BuildCost): InstructionsReport {
  const strip = ({ functions, ...rest }: BuildCost): Omit<BuildCost, 'functions'> => rest
  const [warm, measured] = gateway.runs
  return {
    ...context,
    warmStreams: warm.streams,
    measuredStreams: measured.streams - warm.streams,
    builds: baseline === undefined ? [strip(gateway)] : [strip(gateway), strip(baseline)],
    ...(baseline === undefined ? {} : { gatewayOverBaseline: gateway.perStream / baseline.perStream }),
    topGatewayFunctions: topGatewayFunctions(gateway, baseline, 15)
  }
}

const count = (value: number): string => Math.round(value).toLocaleString('en-US')
const signed = (value: number): string => `${value > 0 ? '+' : ''}${count(value)}`
const ratio = (a: number, b: number): string => b !== 0 && Number.isFinite(a / b) ? `${(a / b).toFixed(3)}×` : 'n/a'

export function renderInstructions (report: InstructionsReport): string {
  const m = report.machine
  const [gateway, baseline] = report.builds as [Omit<BuildCost, 'functions'>, Omit<BuildCost, 'functions'> | undefined]
  const p = report.pace
  const lines = [
    '# Instructions per stream (callgrind)',
    '',
    `Run ${report.startedAt} on ${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, Linux ${m.kernel}, ${report.valgrind}. ` +
      `Emulator upstream: ${p.chunkCount} chunks, ${p.chunkDelayMs} ms apart, ${p.defaultMaxTokens} tokens; one stream at a time.`,
    '',
    `Each build ran twice under \`valgrind --tool=callgrind\` with \`node --perf-basic-prof\`: ${report.warmStreams} warm-up streams, ` +
      `and the same ${report.warmStreams} followed by ${report.measuredStreams} measured streams. Per stream = (second run − first run) ÷ ${report.measuredStreams}, ` +
      'so start-up and shutdown cancel out.' + (baseline === undefined ? '' : ' The two builds ran at the same time, side by side.'),
    '',
    `Builds: gateway = \`${gateway.script}\`` + (baseline === undefined ? '.' : `, baseline = \`${baseline.script}\`.`),
    ''
  ]
  const builds = baseline === undefined ? [gateway] : [gateway, baseline]
  const head = (first: string): string[] => baseline === undefined
    ? [`| ${first} | gateway |`, '|---|---:|']
    : [`| ${first} | gateway | baseline | gateway − baseline | gateway÷baseline |`, '|---|---:|---:|---:|---:|']
  const row = (label: string, g: number, b: number | undefined): string => b === undefined
    ? `| ${label} | ${count(g)} |`
    : `| ${label} | ${count(g)} | ${count(b)} | ${signed(g - b)} | ${ratio(g, b)} |`
  lines.push('## Instructions per stream', '', ...head(''))
  lines.push(row('**all instructions**', gateway.perStream, baseline?.perStream))
  for (const [i, what] of ['warm-up run, whole process', 'measured run, whole process'].entries()) {
    lines.push(row(what, gateway.runs[i]!.totals, baseline?.runs[i]!.totals))
  }
  lines.push('', '## By category, per stream', '', ...head('category'))
  for (const category of CATEGORIES) {
    if (builds.every(b => Math.round(b.categories[category]) === 0)) continue
    lines.push(row(category, gateway.categories[category], baseline?.categories[category]))
  }
  lines.push('', `## The gateway's own JS functions, top ${report.topGatewayFunctions.length} by ${baseline === undefined ? 'cost' : 'difference'}, per stream`, '')
  lines.push(...(baseline === undefined ? ['| function | gateway |', '|---|---:|'] : ['| function | gateway | baseline | gateway − baseline |', '|---|---:|---:|---:|']))
  for (const f of report.topGatewayFunctions) {
    lines.push(baseline === undefined ? `| \`${f.name}\` | ${count(f.gateway)} |` : `| \`${f.name}\` | ${count(f.gateway)} | ${count(f.baseline ?? 0)} | ${signed(f.difference ?? 0)} |`)
  }
  lines.push('', '## What the numbers mean', '',
    '- Instructions are counted by valgrind, so machine load does not change them; the runs themselves do. V8 decides when to ' +
      'collect garbage and when to compile by time and heap size, so the total per stream moves by about ±5 % between runs of the ' +
      'same build. The JS categories (the code each build runs) are stable; compare builds by them first, and by the total only ' +
      'when the difference is well over 5 %.',
    '- V8 internals are the garbage collector, the compilers, the parser and the runtime; V8 builtins are its precompiled ' +
      'code (property access, calls, strings, bytecode handlers, compiled RegExps). Unnamed JIT code is generated code the ' +
      'perf map does not cover. Other native is node\'s C++, libuv, OpenSSL and libc.',
    '- A JS function is named by its name and file, without line and column, so the same function compares across builds. ' +
      'A function that moved to another file appears twice, once in each build. V8 reuses the addresses of collected code, ' +
      'so a little start-up code is counted under the function that took its place; the warm-up run subtracts most of it, ' +
      'and a small negative number is that remainder.',
    '- Valgrind runs the process about 50 times slower, so timers do relatively more work per stream than at full speed; ' +
      'both builds meet the same slowdown.',
    '')
  return lines.join('\n')
}

/** valgrind's version line, or a clear error when it is not installed. */
export function valgrindVersion (): string {
  const result = spawnSync('valgrind', ['--version'], { encoding: 'utf8' })
  if (result.error !== undefined || result.status !== 0) {
    throw new Error('bench --instructions needs valgrind (callgrind) on PATH, e.g. `apt-get install valgrind`; ' +
      `running "valgrind --version" failed: ${result.error?.message ?? result.stderr.trim()}`)
  }
  return result.stdout.trim()
}

export interface InstructionsOptions {
  upstreamUrl: string
  pace: UpstreamPace
  gateway: GatewayProcessOptions
  baseline?: GatewayProcessOptions
  warm: number
  streams: number
  log: (line: string) => void
}

/** Serves `streams` streams at concurrency 1 from one build under callgrind and returns what it cost. */
async function callgrindRun (options: InstructionsOptions, label: BuildLabel, build: GatewayProcessOptions, streams: number[], dir: string): Promise<Attributed & { run: CallgrindRun }> {
  const script = resolve(build.script ?? distFile('server.js'))
  const out = join(dir, `${label}-${streams.join('+')}.callgrind`)
  const started = Date.now()
  const child: Child = await startGatewayProcess(options.upstreamUrl, {
    ...build,
    script,
    name: `${label} (callgrind)`,
    nodeArgs: [...(build.nodeArgs ?? []), '--perf-basic-prof'],
    wrapper: { command: 'valgrind', args: ['--tool=callgrind', `--callgrind-out-file=${out}`, '--dump-line=no', '--compress-strings=no'] },
    startTimeoutMs: START_TIMEOUT_MS
  })
  const mapFile = `/tmp/perf-${child.pid}.map`
  try {
    try {
      const agent = keepAliveAgent(1)
      const target = targetFor(label, child.url)
      let served = 0
      for (const n of streams) {
        const load = await runLoad(agent, target, { streams: n, concurrency: 1, promptFor: i => promptFor(served + i, PROMPT_VARIETY) })
        served += n
        const wrong = load.samples.map(s => sampleProblem(label, s, expectedStream(s.prompt, options.pace))).filter(p => p !== undefined)
        if (wrong.length > 0) throw new Error(`bench: ${wrong.length} of ${n} ${label} streams were wrong, e.g. ${wrong[0]}`)
      }
      agent.destroy()
    } finally {
      // SIGTERM, not SIGKILL: callgrind writes its file as the process exits.
      await child.stop(STOP_GRACE_MS)
    }
    const profile = parseCallgrind(readFileSync(out, 'utf8'))
    const attributed = attribute(profile, PerfMap.parse(readFileSync(mapFile, 'utf8')), buildRoot(script))
    const run: CallgrindRun = { streams: streams.reduce((a, b) => a + b, 0), pid: child.pid, totals: profile.totals, seconds: (Date.now() - started) / 1000 }
    options.log(`${label}: ${run.streams} streams under callgrind, ${count(run.totals)} instructions, ${run.seconds.toFixed(0)} s`)
    return { ...attributed, run }
  } finally {
    rmSync(mapFile, { force: true })
    rmSync(out, { force: true })
  }
}

export async function measureInstructions (options: InstructionsOptions): Promise<InstructionsReport> {
  const valgrind = valgrindVersion()
  const startedAt = new Date().toISOString()
  const dir = mkdtempSync(join(tmpdir(), 'bench-callgrind-'))
  const builds: Array<[BuildLabel, GatewayProcessOptions]> = [['gateway', options.gateway]]
  if (options.baseline !== undefined) builds.push(['baseline', options.baseline])
  try {
    const costs: BuildCost[] = []
    const phases = [[options.warm], [options.warm, options.streams]]
    const runs = new Map<BuildLabel, Array<Attributed & { run: CallgrindRun }>>()
    for (const streams of phases) {
      options.log(`instructions: ${builds.map(b => b[0]).join(' and ')} under callgrind, ${streams.join(' + ')} streams (several minutes)`)
      // The builds run at the same time: two cores, and the same machine for both.
      // Settled, not Promise.all: a failed build must not leave the other one's valgrind running.
      const settled = await Promise.allSettled(builds.map(async ([label, build]) => await callgrindRun(options, label, build, streams, dir)))
      for (const [i, [label]] of builds.entries()) {
        const result = settled[i]!
        if (result.status === 'rejected') throw result.reason
        runs.set(label, [...(runs.get(label) ?? []), result.value])
      }
    }
    for (const [label, build] of builds) {
      const [warm, measured] = runs.get(label)!
      costs.push(perStreamCost(label, resolve(build.script ?? distFile('server.js')), warm!, measured!))
    }
    return instructionsReport({ startedAt, machine: machineFacts(), valgrind, pace: options.pace }, costs[0]!, costs[1])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
