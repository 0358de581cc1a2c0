// The benchmark harness on a tiny configuration: it starts the real processes (emulator, bare
// proxy, gateway from dist/, and a baseline build when given one), reports every path (the gateway's
// /api/stream, resumable /api/stream and /v1/chat/completions among them) and concurrency, and its byte checks reject
// streams that are not exactly what each path must send.
// No timing is asserted; the ratio maths is checked on made-up medians.

import t from 'tap'
import { expectedGatewayBody, expectedStream, gatewayBodyProblem, openAIBodyProblem, resumableBodyProblem, upstreamBodyProblem, type ExpectedStream } from '../bench/expect.js'
import { MODEL, PATHS, pathOrder, pathsFor, runBench, type BenchReport, type CellReport, type MeasureName, type PathName, type ScenarioConfig, type Spread } from '../bench/harness.js'
import { baselineRatiosFor, besideGatewayRatiosFor, ratiosFor } from '../bench/ratios.js'
import { renderMarkdown } from '../bench/report.js'
import { attribute, nameMapEntry, parseCallgrind, PerfMap } from '../bench/callgrind.js'

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
  t.same(scenario.cells.map(c => `${c.path}@${c.concurrency}`),
    ['direct@1', 'proxy@1', 'gateway@1', 'openai@1', 'resumable@1', 'direct@2', 'proxy@2', 'gateway@2', 'openai@2', 'resumable@2'])
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
  t.same(scenario.openaiRatios?.map(r => r.concurrency), [1, 2])
  t.same(scenario.resumableRatios?.map(r => r.concurrency), [1, 2])
  // Warm-up (4 per path), per-cell warm-up (c streams) and the timed streams, all checked.
  t.equal(scenario.checks.streamsChecked, PATHS.length * 4 + PATHS.length * (1 + 3 + 2 + 3))
  t.equal(scenario.checks.wrongStreams, 0, scenario.checks.problems.join('; '))
  // Without a baseline, nothing of one appears.
  t.notOk('builds' in report)
  t.notOk('baselineRatios' in scenario)
  const markdown = renderMarkdown(report)
  t.notMatch(markdown, /baseline/)
  t.match(markdown, '| conc. | CPU/stream openai÷gateway | streams/s openai÷gateway | TTFC p50 openai−gateway ms | stream p50 openai−gateway ms |')
  t.match(markdown, /\| openai \| 2 \| 3 \|/)
  t.match(markdown, '| conc. | CPU/stream resumable÷gateway | streams/s resumable÷gateway | TTFC p50 resumable−gateway ms | stream p50 resumable−gateway ms |')
  t.match(markdown, /\| resumable \| 2 \| 3 \|/)
  t.match(markdown, 'in process memory')
  t.notOk('gatewayRedis' in report)
})

t.test('without the openai and resumable paths (a build that has no such route or opt-in), nothing of them is measured or reported', async t => {
  t.same(pathsFor({ scenarios: [], openai: false }), ['direct', 'proxy', 'gateway', 'resumable'])
  t.same(pathsFor({ scenarios: [], resumable: false }), ['direct', 'proxy', 'gateway', 'openai'])
  t.same(pathsFor({ scenarios: [], openai: false, resumable: false }), ['direct', 'proxy', 'gateway'])
  t.same(pathsFor({ scenarios: [], openai: false, resumable: false, baseline: {} }), ['direct', 'proxy', 'gateway', 'baseline'])
  const report = await runBench({ scenarios: [{ ...TINY, concurrencies: [1] }], warmupStreams: 1, promptVariety: 2, openai: false, resumable: false })
  const [scenario] = report.scenarios
  if (scenario === undefined) return t.fail('no scenario')
  t.same(scenario.cells.map(c => c.path), ['direct', 'proxy', 'gateway'])
  t.notOk('openaiRatios' in scenario)
  t.notOk('resumableRatios' in scenario)
  t.notMatch(renderMarkdown(report), /openai|resumable/)
})

t.test('with a baseline build, measures it as one more path with the gateway\'s byte checks and reports gateway against baseline', async t => {
  // This build as its own baseline: the point is the plumbing, not a difference.
  const report = await runBench({ scenarios: [TINY], warmupStreams: 4, promptVariety: 3, baseline: {} })
  const [scenario] = report.scenarios
  if (scenario === undefined) return t.fail('no scenario')
  t.same(scenario.cells.map(c => `${c.path}@${c.concurrency}`),
    ['direct@1', 'proxy@1', 'gateway@1', 'openai@1', 'resumable@1', 'baseline@1', 'direct@2', 'proxy@2', 'gateway@2', 'openai@2', 'resumable@2', 'baseline@2'])
  t.equal(scenario.checks.streamsChecked, 6 * 4 + 6 * (1 + 3 + 2 + 3))
  t.equal(scenario.checks.wrongStreams, 0, scenario.checks.problems.join('; '))
  t.same(scenario.baselineRatios?.map(r => r.concurrency), [1, 2])
  t.ok(report.builds?.gateway.endsWith('/dist/server.js'))
  t.equal(report.builds?.baseline, report.builds?.gateway)
  const markdown = renderMarkdown(report)
  t.match(markdown, '| conc. | CPU/stream gateway÷baseline | streams/s gateway÷baseline | TTFC p50 gateway−baseline ms |')
  t.match(markdown, /\| baseline \| 2 \| 3 \|/)
})

t.test('openai, resumable and the baseline are each measured beside the gateway, and take turns at going first', async t => {
  const three: PathName[] = ['direct', 'proxy', 'gateway']
  t.same(pathOrder(three, 0, 0), ['direct', 'proxy', 'gateway'])
  t.same(pathOrder(three, 1, 0), ['proxy', 'gateway', 'direct'])
  t.same(pathOrder(three, 2, 1), ['gateway', 'direct', 'proxy'])
  const withOpenAI: PathName[] = [...three, 'openai']
  t.same(pathOrder(withOpenAI, 0, 0), ['direct', 'proxy', 'openai', 'gateway'])
  t.same(pathOrder(withOpenAI, 0, 1), ['direct', 'proxy', 'gateway', 'openai'])
  t.same(pathOrder(withOpenAI, 1, 0), ['proxy', 'gateway', 'openai', 'direct'])
  t.same(pathOrder(withOpenAI, 2, 0), ['openai', 'gateway', 'direct', 'proxy'])
  // openai and resumable (the default paths): the gateway sits between them.
  t.same(pathOrder(PATHS, 0, 0), ['direct', 'proxy', 'openai', 'gateway', 'resumable'])
  t.same(pathOrder(PATHS, 0, 1), ['direct', 'proxy', 'resumable', 'gateway', 'openai'])
  t.same(pathOrder(PATHS, 1, 0), ['proxy', 'resumable', 'gateway', 'openai', 'direct'])
  t.same(pathOrder(PATHS, 2, 0), ['openai', 'gateway', 'resumable', 'direct', 'proxy'])
  // With openai and the baseline, the gateway sits between them, so each comparison is between neighbours.
  const five: PathName[] = [...withOpenAI, 'baseline']
  t.same(pathOrder(five, 0, 0), ['direct', 'proxy', 'openai', 'gateway', 'baseline'])
  t.same(pathOrder(five, 0, 1), ['direct', 'proxy', 'baseline', 'gateway', 'openai'])
  // With all three, the gateway's neighbours are resumable and the baseline; openai is next to resumable.
  const six: PathName[] = [...PATHS, 'baseline']
  t.same(pathOrder(six, 0, 0), ['direct', 'proxy', 'openai', 'resumable', 'gateway', 'baseline'])
  t.same(pathOrder(six, 0, 1), ['direct', 'proxy', 'baseline', 'gateway', 'resumable', 'openai'])
  // resumable without openai, with the baseline: resumable on one side, the baseline on the other.
  const resumableAndBaseline: PathName[] = [...three, 'resumable', 'baseline']
  t.same(pathOrder(resumableAndBaseline, 0, 0), ['direct', 'proxy', 'resumable', 'gateway', 'baseline'])
  t.same(pathOrder(resumableAndBaseline, 1, 0), ['proxy', 'baseline', 'gateway', 'resumable', 'direct'])
  const four: PathName[] = [...three, 'baseline']
  t.same(pathOrder(four, 0, 0), ['direct', 'proxy', 'gateway', 'baseline'])
  t.same(pathOrder(four, 0, 1), ['direct', 'proxy', 'baseline', 'gateway'])
  t.same(pathOrder(four, 1, 0), ['proxy', 'baseline', 'gateway', 'direct'])
  t.same(pathOrder(four, 2, 0), ['gateway', 'baseline', 'direct', 'proxy'])
  t.same(pathOrder(four, 2, 1), ['baseline', 'gateway', 'direct', 'proxy'])
})

t.test('ratios are taken between the medians of the paths at the same concurrency', async t => {
  const spread = (median: number): Spread => ({ median, min: median - 1, max: median + 1 })
  const made = (path: PathName, concurrency: number, cpu: number, perSecond: number, ttfc: number, total: number): CellReport => {
    const summary = { streams: 3, ttfcP50Ms: ttfc, ttfcP99Ms: 0, totalP50Ms: total, totalP99Ms: 0, streamsPerSecond: perSecond, cpuMsPerStream: cpu, peakRssMiB: 0 }
    return { path, concurrency, runs: [], summary: Object.fromEntries(Object.entries(summary).map(([k, v]) => [k, spread(v)])) as Record<MeasureName, Spread> }
  }
  const cells = [
    made('direct', 50, 0.1, 2000, 1, 10),
    made('proxy', 50, 0.25, 1000, 1.5, 12),
    made('gateway', 50, 1, 500, 3, 20),
    made('baseline', 50, 0.8, 400, 4.5, 25),
    made('gateway', 1, 2, 100, 2, 5),
    made('proxy', 1, 1, 200, 1, 4),
    made('direct', 1, 0.5, 400, 0.5, 3),
    made('baseline', 1, 4, 50, 1.25, 6),
    made('openai', 50, 1.1, 450, 3.5, 21.5),
    made('openai', 1, 3, 80, 1.5, 5.25),
    made('resumable', 50, 1.25, 400, 3.25, 22),
    made('resumable', 1, 2.5, 50, 2.5, 4.5)
  ]
  t.same(ratiosFor(cells, [1, 50]), [
    { concurrency: 1, cpuPerStreamGatewayOverProxy: 2, throughputGatewayOverProxy: 0.5, ttfcP50GatewayMinusDirectMs: 1.5, ttfcP50GatewayMinusProxyMs: 1, ttfcP50ProxyMinusDirectMs: 0.5, totalP50GatewayMinusDirectMs: 2 },
    { concurrency: 50, cpuPerStreamGatewayOverProxy: 4, throughputGatewayOverProxy: 0.5, ttfcP50GatewayMinusDirectMs: 2, ttfcP50GatewayMinusProxyMs: 1.5, ttfcP50ProxyMinusDirectMs: 0.5, totalP50GatewayMinusDirectMs: 10 }
  ])
  t.same(baselineRatiosFor(cells, [1, 50]), [
    { concurrency: 1, cpuPerStreamGatewayOverBaseline: 0.5, throughputGatewayOverBaseline: 2, ttfcP50GatewayMinusBaselineMs: 0.75 },
    { concurrency: 50, cpuPerStreamGatewayOverBaseline: 1.25, throughputGatewayOverBaseline: 1.25, ttfcP50GatewayMinusBaselineMs: -1.5 }
  ])
  const openai = besideGatewayRatiosFor(cells, [1, 50], 'openai')
  t.same(openai.map(r => [r.concurrency, r.ttfcP50MinusGatewayMs, r.totalP50MinusGatewayMs]), [[1, -0.5, 0.25], [50, 0.5, 1.5]])
  t.equal(openai[0]!.cpuPerStreamOverGateway, 1.5)
  t.equal(openai[0]!.throughputOverGateway, 0.8)
  t.ok(Math.abs(openai[1]!.cpuPerStreamOverGateway - 1.1) < 1e-12)
  t.equal(openai[1]!.throughputOverGateway, 0.9)
  t.throws(() => baselineRatiosFor(cells.filter(c => c.path !== 'baseline'), [1]), /no baseline cell at concurrency 1/)
  t.throws(() => besideGatewayRatiosFor(cells.filter(c => c.path !== 'openai'), [50], 'openai'), /no openai cell at concurrency 50/)
  t.same(besideGatewayRatiosFor(cells, [1, 50], 'resumable'), [
    { concurrency: 1, cpuPerStreamOverGateway: 1.25, throughputOverGateway: 0.5, ttfcP50MinusGatewayMs: 0.5, totalP50MinusGatewayMs: -0.5 },
    { concurrency: 50, cpuPerStreamOverGateway: 1.25, throughputOverGateway: 0.8, ttfcP50MinusGatewayMs: 0.25, totalP50MinusGatewayMs: 2 }
  ])
  t.throws(() => besideGatewayRatiosFor(cells.filter(c => c.path !== 'resumable'), [1], 'resumable'), /no resumable cell at concurrency 1/)
})

t.test('flags every stream as wrong when the answers differ from what the checker expects', async t => {
  // The emulator answers in 5 chunks; the checker expects 4, so every path's bytes are wrong.
  const report = await runBench({ scenarios: [{ ...TINY, concurrencies: [1] }], warmupStreams: 1, promptVariety: 2, checkPace: { chunkCount: 4, defaultMaxTokens: 20 } })
  const checks = report.scenarios[0]!.checks
  t.equal(checks.streamsChecked, PATHS.length * (1 + 1 + 3))
  t.equal(checks.wrongStreams, checks.streamsChecked)
  for (const path of PATHS) t.ok(checks.problems.some(p => p.startsWith(`${path} `)), `a problem is reported for ${path}`)
})

t.test('flags the baseline\'s streams as wrong too, against the gateway\'s expected bytes', async t => {
  const report = await runBench({ scenarios: [{ ...TINY, concurrencies: [1] }], warmupStreams: 1, promptVariety: 2, checkPace: { chunkCount: 4, defaultMaxTokens: 20 }, baseline: {} })
  const checks = report.scenarios[0]!.checks
  t.equal(checks.streamsChecked, 6 * (1 + 1 + 3))
  t.equal(checks.wrongStreams, checks.streamsChecked)
  t.ok(checks.problems.some(p => p.startsWith('baseline c=10: gateway body differs')), checks.problems.join('; '))
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

t.test('the callgrind parser sums self instructions per function, skipping a call\'s inclusive cost', async t => {
  const file = ['# callgrind format', 'version: 1', 'pid: 4242', 'positions: line', 'events: Ir', 'summary: 1000', '',
    'ob=/bin/node', 'fl=a.c', 'fn=v8::internal::Scanner::Next()', '10 100', '+2 50', 'cob=/lib/libc.so.6', 'cfn=malloc', 'calls=3 7 ', '* 900', '* 5',
    '', 'ob=???', 'fl=???', 'fn=0x0000000000001010', '0 40', 'fn=0x0000000000009000', '0 7', '', 'ob=/lib/libc.so.6', 'fn=malloc', '7 20', '', 'totals: 222', ''].join('\n')
  const profile = parseCallgrind(file)
  t.equal(profile.pid, 4242)
  t.equal(profile.totals, 222)
  t.same(profile.functions.map(f => [f.object, f.name, f.self]), [['/bin/node', 'v8::internal::Scanner::Next()', 155], ['???', '0x0000000000001010', 40], ['???', '0x0000000000009000', 7], ['/lib/libc.so.6', 'malloc', 20]])
  const map = PerfMap.parse('1000 20 JS:~old /b/dist/x.js:1:1\n1000 40 JS:*\'relay file:///b/dist/relay/relay.js:12:3\n2000 8 Builtin:LoadIC\n')
  t.equal(map.lookup(0x1010), 'JS:*\'relay file:///b/dist/relay/relay.js:12:3')
  t.equal(map.lookup(0x2008), undefined)
  const named = attribute(profile, map, '/b')
  t.same([...named.functions], [
    ['v8::internal::Scanner::Next()', { category: 'V8 internals (GC, compiler, parser, runtime)', self: 155 }],
    ['relay dist/relay/relay.js', { category: 'gateway JS', self: 40 }],
    ['(unnamed JIT code)', { category: 'unnamed JIT code', self: 7 }],
    ['malloc', { category: 'other native', self: 20 }]
  ])
  t.same(nameMapEntry('JS:^get href node:internal/url:1003:11', '/b'), { name: 'get href node:internal/url', category: 'node core JS' })
  t.same(nameMapEntry('JS:+ /b/node_modules/undici/lib/x.js:3:4', '/b'), { name: '(anonymous) node_modules/undici/lib/x.js', category: 'dependency JS' })
  t.throws(() => parseCallgrind('events: Ir\nfn=x\n1 2\n'), /no totals/)
})

/** A right streamed chat completion for `expected`, built by hand from OpenAI's chunk format. */
function openAIBody (expected: ExpectedStream, choices: string[] = openAIChoices(expected)): string {
  const id = 'chatcmpl-0123456789abcdef0123456789abcdef'
  return choices.map(choice => `data: {"id":"${id}","object":"chat.completion.chunk","created":1764670000,"model":"${MODEL}","choices":[${choice}]}\n\n`).join('') +
    'data: [DONE]\n\n'
}

function openAIChoices (expected: ExpectedStream): string[] {
  return [
    '{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}',
    ...expected.deltas.map(delta => `{"index":0,"delta":{"content":${JSON.stringify(delta)}},"logprobs":null,"finish_reason":null}`),
    '{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}'
  ]
}

t.test('the openai byte checks catch a wrong or truncated chat completion stream', async t => {
  const expected = expectedStream('a chat completion', PACE)
  const choices = openAIChoices(expected)
  const body = openAIBody(expected)
  t.equal(openAIBodyProblem(body, expected, MODEL), undefined)
  const problem = (wrong: string): string | undefined => openAIBodyProblem(wrong, expected, MODEL)

  t.match(problem(body.slice(0, -'data: [DONE]\n\n'.length)), 'does not end with data: [DONE]', 'cut before [DONE]')
  t.match(problem(body.slice(0, -1)), 'does not end with data: [DONE]', 'one byte short')
  t.match(problem(openAIBody(expected, [...choices.slice(0, 3), ...choices.slice(4)])), 'openai body has 6 chunks before [DONE], expected 7', 'a chunk missing, yet [DONE]')
  t.match(problem(openAIBody(expected, choices.slice(0, -1))), 'has 6 chunks before [DONE], expected 7', 'no finish chunk')
  t.match(problem(openAIBody(expected, [...choices.slice(0, -1), choices[1]!])), 'openai event 7 has a misplaced finish_reason', 'a content chunk in place of the finish')
  t.match(problem(openAIBody(expected, [choices[1]!, ...choices.slice(1)])), 'openai event 1 delta is {"content":', 'no role first')
  const textAt = body.indexOf('"content":"', body.indexOf('\n\n')) + 11
  t.match(problem(body.slice(0, textAt) + 'X' + body.slice(textAt + 1)), 'openai event 2 carries the wrong text', 'one altered character of the answer')
  t.match(problem(body.replace('"finish_reason":"stop"', '"finish_reason":"length"')), 'finish_reason length, expected stop')
  const secondId = body.indexOf('chatcmpl-', body.indexOf('\n\n'))
  t.match(problem(body.slice(0, secondId + 9) + 'f' + body.slice(secondId + 10)), 'openai event 2 has another id or created than the first chunk')
  t.match(problem(body.replaceAll(`"model":"${MODEL}"`, '"model":"gemini-other"')), 'names model gemini-other')
  t.match(problem(body.replaceAll('"choices":[', '"usage":null,"choices":[')), 'carries usage')
  t.match(problem(body.replace('"object":"chat.completion.chunk"', '"object":"chat.completion"')), 'openai event 1 is not a chat.completion.chunk')
  t.match(problem(body.replace('"object":', '"object":\n')), 'openai event 1 is not one data line')
  t.match(problem(expectedGatewayBody(expected) + 'data: [DONE]\n\n'), 'openai body has 6 chunks before [DONE], expected 7', '/api/stream\'s events are not chunks')
  const streamEvents = expectedGatewayBody(expected).split('\n\n').slice(0, -1).map(event => `${event}\n\n`)
  t.match(problem([streamEvents[0]!, ...streamEvents].join('') + 'data: [DONE]\n\n'), 'openai event 1 is not a chat.completion.chunk', '/api/stream\'s events, as many as the chunks')
  t.match(problem('data: [DONE]\n\n'), 'has 0 chunks before [DONE]')
  const joined = `{"index":0,"delta":{"content":${JSON.stringify(expected.deltas.join(''))}},"logprobs":null,"finish_reason":null}`
  t.match(problem(openAIBody(expected, [choices[0]!, joined, ...choices.slice(2)])), 'openai event 2 carries the wrong text', 'the right text, chunked otherwise')
})

t.test('the resumable byte checks want the gateway\'s bytes under one id line <X-Stream-Id>:<n> per event, n in order', async t => {
  const expected = expectedStream('a resumable stream', PACE)
  const streamId = '0f8c2b1e-3d4a-4b5c-9d6e-7f8091a2b3c4'
  const events = expectedGatewayBody(expected).split('\n\n').slice(0, -1).map(event => `${event}\n\n`)
  const numbered = (ids: Array<string | undefined>): string => events.map((event, i) => ids[i] === undefined ? event : `id: ${ids[i]}\n${event}`).join('')
  const right = events.map((_, i) => `${streamId}:${i + 1}`)
  const body = numbered(right)
  t.equal(resumableBodyProblem(body, streamId, expected), undefined)
  const problem = (wrong: string, id: string | undefined = streamId): string | undefined => resumableBodyProblem(wrong, id, expected)

  t.match(resumableBodyProblem(body, undefined, expected), 'no UUID X-Stream-Id', 'no header')
  t.match(problem(body, 'not-a-uuid'), 'no UUID X-Stream-Id')
  t.match(problem(expectedGatewayBody(expected)), 'resumable event 1 does not start with "id: ', 'the plain body, no ids at all')
  t.match(problem(body, streamId.replace('0f8c', '1f8c')), 'resumable event 1 does not start with', 'ids of another stream')
  t.match(problem(numbered(right.map((id, i) => i === 2 ? `${streamId}:4` : id))), 'resumable event 3 does not start with', 'a number skipped')
  t.match(problem(numbered([right[0], right[2], right[1], ...right.slice(3)])), 'resumable event 2 does not start with', 'out of order')
  t.match(problem(numbered(right.map((id, i) => i === 4 ? undefined : id))), 'resumable event 5 does not start with', 'one event without an id')
  const twice = events.map((event, i) => `id: ${right[i]}\n${i === 1 ? `id: ${right[i]}\n` : ''}${event}`).join('')
  t.match(problem(twice), 'resumable event 2 has more than one id line')
  const after = events.map((event, i) => i === 0 ? event.replace('\n\n', `\nid: ${right[i]}\n\n`) : `id: ${right[i]}\n${event}`).join('')
  t.match(problem(after), 'resumable event 1 does not start with', 'the id line after the data line')
  const at = body.indexOf('"index":3') + 8
  t.match(problem(body.slice(0, at) + '4' + body.slice(at + 1)), 'resumable body without its id lines: gateway body differs', 'one altered byte of the data')
  t.match(problem(body.slice(0, -1)), 'resumable body without its id lines: gateway body differs', 'one byte short')
  t.match(problem(numbered(right).replace('\n\n', '\n\nid: x\n\n')), 'gateway body differs', 'an extra id-only event')
})
