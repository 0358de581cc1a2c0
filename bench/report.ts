// Renders a bench report as Markdown: one table per scenario, then the ratios (the OpenAI route and the
// resumable streams against the stream route and, with a baseline build, the gateway against that build) and the byte checks.

import type { BenchReport, BesideGatewayRatioReport, Spread } from './harness.js'
import type { MemoryReport } from './memory.js'

/** Issue 15's bound on POST /v1/chat/completions' CPU per stream, as a multiple of POST /api/stream's. */
export const OPENAI_CPU_TARGET = 1.2

function fixed (value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : 'n/a'
}

function cell (spread: Spread, digits: number): string {
  if (spread.min === spread.max) return fixed(spread.median, digits)
  return `${fixed(spread.median, digits)} (${fixed(spread.min, digits)}–${fixed(spread.max, digits)})`
}

/** The ratios of a path served beside the gateway's plain route, flagging CPU over `cpuTarget` when there is one. */
function besideGatewayTable (path: string, ratios: readonly BesideGatewayRatioReport[], cpuTarget?: number): string[] {
  const lines = ['', `| conc. | CPU/stream ${path}÷gateway | streams/s ${path}÷gateway | TTFC p50 ${path}−gateway ms | stream p50 ${path}−gateway ms |`, '|---:|---:|---:|---:|---:|']
  for (const r of ratios) {
    const over = cpuTarget !== undefined && r.cpuPerStreamOverGateway > cpuTarget ? ` (over ${cpuTarget.toFixed(1)}×)` : ''
    lines.push(`| ${r.concurrency} | ${fixed(r.cpuPerStreamOverGateway, 2)}×${over} | ${fixed(r.throughputOverGateway, 2)}× | ` +
      `${fixed(r.ttfcP50MinusGatewayMs, 2)} | ${fixed(r.totalP50MinusGatewayMs, 2)} |`)
  }
  return lines
}

export function renderMarkdown (report: BenchReport, memory?: MemoryReport[]): string {
  const m = report.machine
  const lines: string[] = [
    '# Benchmark: gateway vs bare proxy vs direct upstream',
    '',
    `Run ${report.startedAt} on ${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, Linux ${m.kernel}. ` +
      'Emulator, bare proxy, gateway and load client are separate processes on the same machine.',
    '',
    'Each cell: median over runs, (min–max) across runs. TTFC = time to the first chunk event. ' +
      'CPU = user+system time of the serving process (emulator for direct) per stream, from /proc. RSS = highest sampled during the run.',
    ''
  ]
  if (report.scenarios.some(scenario => scenario.openaiRatios !== undefined)) {
    lines.push('gateway = `POST /api/stream`; openai = `POST /v1/chat/completions` with `"stream":true`, the same prompts on the same ' +
      'gateway process (so the same CPU and RSS counters), measured right beside the gateway path, taking turns at going first. ' +
      `Issue 15 wants openai's CPU per stream at most ${OPENAI_CPU_TARGET.toFixed(1)}× the gateway's.`, '')
  }
  if (report.scenarios.some(scenario => scenario.resumableRatios !== undefined)) {
    lines.push('resumable = `POST /api/stream` with `"resumable": true` (issue 19: an `id:` line before every event, every event appended ' +
      `to the stream's log in ${report.gatewayRedis === true ? 'Redis Streams' : 'process memory'}), the same prompts on the same gateway process, ` +
      'measured right beside the gateway path, taking turns at going first. Its bodies must be the gateway\'s byte for byte once the `id:` lines ' +
      'are taken out, with one id `<X-Stream-Id>:<n>` per event, n = 1, 2, ... in order.', '')
  }
  if (report.gatewayRedis === true) {
    lines.push('The gateway process ran with REDIS_URL: besides the resumable logs, its rate-limit counters (and budgets, were any set) are kept in Redis, for every path it serves, the plain gateway path too.', '')
  }
  if (report.builds !== undefined) {
    lines.push(`Two builds side by side: gateway = \`${report.builds.gateway}\`, baseline = \`${report.builds.baseline}\`, ` +
      'started the same way and measured in the same runs, next to each other, taking turns at going first.', '')
  }
  for (const scenario of report.scenarios) {
    const p = scenario.pace
    lines.push(`## ${scenario.name}: ${p.chunkCount} chunks, ${p.chunkDelayMs} ms between chunks, ${scenario.runs} run(s)`, '')
    lines.push('| path | conc. | streams/run | TTFC p50 ms | TTFC p99 ms | stream p50 ms | stream p99 ms | streams/s | CPU ms/stream | peak RSS MiB |')
    lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const c of scenario.cells) {
      const s = c.summary
      lines.push(`| ${c.path} | ${c.concurrency} | ${s.streams.median} | ${cell(s.ttfcP50Ms, 2)} | ${cell(s.ttfcP99Ms, 2)} | ${cell(s.totalP50Ms, 2)} | ` +
        `${cell(s.totalP99Ms, 2)} | ${cell(s.streamsPerSecond, 0)} | ${cell(s.cpuMsPerStream, 3)} | ${cell(s.peakRssMiB, 0)} |`)
    }
    lines.push('', '| conc. | CPU/stream gateway÷proxy | streams/s gateway÷proxy | TTFC p50 gateway−direct ms | TTFC p50 gateway−proxy ms | TTFC p50 proxy−direct ms | stream p50 gateway−direct ms |')
    lines.push('|---:|---:|---:|---:|---:|---:|---:|')
    for (const r of scenario.ratios) {
      lines.push(`| ${r.concurrency} | ${fixed(r.cpuPerStreamGatewayOverProxy, 2)}× | ${fixed(r.throughputGatewayOverProxy, 2)}× | ${fixed(r.ttfcP50GatewayMinusDirectMs, 2)} | ` +
        `${fixed(r.ttfcP50GatewayMinusProxyMs, 2)} | ${fixed(r.ttfcP50ProxyMinusDirectMs, 2)} | ${fixed(r.totalP50GatewayMinusDirectMs, 2)} |`)
    }
    if (scenario.openaiRatios !== undefined) lines.push(...besideGatewayTable('openai', scenario.openaiRatios, OPENAI_CPU_TARGET))
    if (scenario.resumableRatios !== undefined) lines.push(...besideGatewayTable('resumable', scenario.resumableRatios))
    if (scenario.baselineRatios !== undefined) {
      lines.push('', '| conc. | CPU/stream gateway÷baseline | streams/s gateway÷baseline | TTFC p50 gateway−baseline ms |')
      lines.push('|---:|---:|---:|---:|')
      for (const r of scenario.baselineRatios) {
        lines.push(`| ${r.concurrency} | ${fixed(r.cpuPerStreamGatewayOverBaseline, 2)}× | ${fixed(r.throughputGatewayOverBaseline, 2)}× | ${fixed(r.ttfcP50GatewayMinusBaselineMs, 2)} |`)
      }
    }
    const k = scenario.checks
    lines.push('', `Byte checks: ${k.streamsChecked} streams checked, ${k.wrongStreams} wrong.`)
    for (const problem of k.problems) lines.push(`- ${problem}`)
    lines.push('')
  }
  if (memory !== undefined && memory.length > 0) {
    lines.push('## Idle open streams (upstream paused after its first chunk)', '')
    lines.push('| server | open streams | RSS before MiB | RSS open MiB | KiB per open stream | RSS after close MiB | released |')
    lines.push('|---|---:|---:|---:|---:|---:|---|')
    for (const r of memory) {
      lines.push(`| ${r.server} | ${r.openStreams} | ${fixed(r.rssBeforeMiB, 1)} | ${fixed(r.rssOpenMiB, 1)} | ${fixed(r.kibPerOpenStream, 1)} | ` +
        `${fixed(r.rssAfterCloseMiB, 1)} | ${r.released ? 'yes' : `NO: ${r.releaseProblem ?? ''}`} |`)
    }
    lines.push('')
  }
  return lines.join('\n')
}
