// The benchmark harness on a tiny configuration: it starts the real processes (emulator, bare
// proxy, gateway from dist/), reports every path and concurrency, and its byte checks reject
// streams that are not exactly what each path must send. No timing is asserted.

import t from 'tap'
import { expectedGatewayBody, expectedStream, gatewayBodyProblem, upstreamBodyProblem } from '../bench/expect.js'
import { PATHS, runBench, type BenchReport, type ScenarioConfig } from '../bench/harness.js'

const PACE = { chunkCount: 5, chunkDelayMs: 0, defaultMaxTokens: 20 }
const TINY: ScenarioConfig = { name: 'tiny', pace: PACE, concurrencies: [1, 2], runs: 1, streamsPerRun: () => 3 }
const MEASURES = ['streams', 'ttfcP50Ms', 'ttfcP99Ms', 'totalP50Ms', 'totalP99Ms', 'streamsPerSecond', 'cpuMsPerStream', 'peakRssMiB']

t.test('reports every path at every concurrency, with every stream checked and right', async t => {
  const report: BenchReport = await runBench({ scenarios: [TINY], warmupStreams: 4, promptVariety: 3 })
  t.equal(report.machine.cores > 0, true)
  t.equal(report.machine.clockTicksPerSecond > 0, true)
  const [scenario] = report.scenarios
  t.ok(scenario)
  if (scenario === undefined) return
  t.same(scenario.cells.map(c => `${c.path}@${c.concurrency}`), ['direct@1', 'proxy@1', 'gateway@1', 'direct@2', 'proxy@2', 'gateway@2'])
  for (const cell of scenario.cells) {
    t.equal(cell.runs.length, 1)
    t.same(Object.keys(cell.summary).sort(), [...MEASURES].sort(), `${cell.path}@${cell.concurrency} has every measure`)
    t.equal(cell.summary.streams.median, 3)
    for (const name of MEASURES) {
      const spread = cell.summary[name as keyof typeof cell.summary]
      t.ok(Number.isFinite(spread.median) && spread.min <= spread.median && spread.median <= spread.max, `${name} is a finite spread`)
    }
    t.ok(cell.summary.cpuMsPerStream.median >= 0)
    t.ok(cell.summary.peakRssMiB.median > 0)
  }
  t.same(scenario.ratios.map(r => r.concurrency), [1, 2])
  // Warm-up (4 per path), per-cell warm-up (c streams) and the timed streams, all checked.
  t.equal(scenario.checks.streamsChecked, PATHS.length * 4 + PATHS.length * (1 + 3 + 2 + 3))
  t.equal(scenario.checks.wrongStreams, 0, scenario.checks.problems.join('; '))
})

t.test('flags every stream as wrong when the answers differ from what the checker expects', async t => {
  // The emulator answers in 5 chunks; the checker expects 4, so every path's bytes are wrong.
  const report = await runBench({ scenarios: [{ ...TINY, concurrencies: [1] }], warmupStreams: 1, promptVariety: 2, checkPace: { chunkCount: 4, defaultMaxTokens: 20 } })
  const checks = report.scenarios[0]!.checks
  t.equal(checks.streamsChecked, PATHS.length * (1 + 1 + 3))
  t.equal(checks.wrongStreams, checks.streamsChecked)
  for (const path of PATHS) t.ok(checks.problems.some(p => p.startsWith(`${path} `)), `a problem is reported for ${path}`)
})

t.test('the byte checks catch a single altered byte', async t => {
  const expected = expectedStream('one altered byte', PACE)
  const body = expectedGatewayBody(expected)
  t.equal(gatewayBodyProblem(body, expected), undefined)
  const at = body.indexOf('"index":3') + 8
  const altered = body.slice(0, at) + '4' + body.slice(at + 1)
  t.match(gatewayBodyProblem(altered, expected), `differs from the expected one at character ${at}`)
  t.match(gatewayBodyProblem(body.slice(0, -1), expected), 'differs')

  const event = (text: string, last: boolean): string => `data: ${JSON.stringify({
    candidates: [{ content: { parts: [{ text }], role: 'model' }, ...(last ? { finishReason: expected.finishReason } : {}), index: 0 }],
    usageMetadata: { promptTokenCount: expected.promptTokens, candidatesTokenCount: last ? expected.completionTokens : 1, totalTokenCount: expected.promptTokens + (last ? expected.completionTokens : 1) }
  })}\r\n\r\n`
  const upstream = expected.deltas.map((d, i) => event(d, i === expected.deltas.length - 1)).join('')
  t.equal(upstreamBodyProblem(upstream, expected), undefined)
  const textAt = upstream.indexOf('"text":"') + 8
  t.match(upstreamBodyProblem(upstream.slice(0, textAt) + 'X' + upstream.slice(textAt + 1), expected), 'wrong text')
  t.match(upstreamBodyProblem(upstream.replace('"finishReason":"STOP"', '"finishReason":"SAFETY"'), expected), 'finishReason')
  t.match(upstreamBodyProblem(upstream.slice(0, -2), expected), 'delimiter')
})
