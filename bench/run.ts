// `npm run bench` entry. Flags:
//   --quick        one short run of each path (a minute or less), written to bench/results/quick.*
//   --runs N       runs per path and concurrency in the cheap-upstream scenario (default 3)
//   --no-memory    skip the idle-open-streams scenario
//   --no-paced     skip the realistic-pace scenario
//   --no-openai    skip the openai path (POST /v1/chat/completions), for a gateway build that has no such route
//   --no-resumable skip the resumable path (POST /api/stream with "resumable": true), for a gateway build without
//                  resumable streams (issue 19); the baseline path never asks for them, so it needs no flag
//   --resume-redis start the gateway (and a baseline) with REDIS_URL (the shell's, else redis://127.0.0.1:6379),
//                  so the resumable logs go to Redis Streams; its rate-limit counters then go to Redis too
//   --gateway-script PATH   measure another build's server.js (e.g. an older commit's) instead of dist/server.js
//   --baseline-script PATH  also measure another build's server.js as one more path, `baseline`, in the same
//                  runs as the gateway, and report gateway÷baseline ratios
//   --out NAME     write bench/results/NAME.md and NAME.json instead of the default names (quick, latest,
//                  instructions), so a comparison can be kept without replacing those; refuses an existing file
//   --gemini-client sdk|rest   the gateway's GEMINI_CLIENT (default: the gateway's own default)
//   --profile      instead of the bench: CPU-profile the gateway under load, write bench/results/profile.md
//   --profile-path gateway|openai   the route --profile loads (default gateway); openai writes profile-openai.md
//   --instructions instead of the bench: count instructions per stream under callgrind (needs valgrind),
//                  with --baseline-script beside the gateway; --warm W (default 100) and --streams N
//                  (default 300) streams; writes bench/results/instructions.md (about 10 minutes)

import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { projectRoot, startEmulatorProcess, startGatewayProcess, type GatewayProcessOptions } from './children.js'
import { summariseProfile, renderProfileSummary, type CpuProfile } from './cpuprofile.js'
import { machineFacts, promptFor, runBench, targetFor, type BenchConfig, type PathName, type ScenarioConfig, type UpstreamPace } from './harness.js'
import { keepAliveAgent, runLoad } from './load.js'
import { measureIdleStreams, type MemoryReport } from './memory.js'
import { renderMarkdown } from './report.js'
import { DEFAULT_STREAMS, DEFAULT_WARM, measureInstructions, renderInstructions, valgrindVersion } from './instructions.js'

const CHEAP: UpstreamPace = { chunkCount: 50, chunkDelayMs: 0, defaultMaxTokens: 64 }
const PACED: UpstreamPace = { chunkCount: 50, chunkDelayMs: 10, defaultMaxTokens: 64 }

const log = (line: string): void => { process.stderr.write(`${line}\n`) }

function scenarios (quick: boolean, runs: number, paced: boolean): ScenarioConfig[] {
  if (quick) {
    return [{ name: 'cheap upstream (quick)', pace: CHEAP, concurrencies: [1, 50], runs: 1, streamsPerRun: c => c === 1 ? 100 : 500 }]
  }
  const list: ScenarioConfig[] = [{
    name: 'cheap upstream',
    pace: CHEAP,
    concurrencies: [1, 50, 200],
    runs,
    // Enough streams that a run spends a few hundred clock ticks of server CPU.
    streamsPerRun: c => c === 1 ? 300 : c === 50 ? 1200 : 1600
  }]
  if (paced) {
    list.push({ name: 'realistic pace', pace: PACED, concurrencies: [50, 200], runs: 2, streamsPerRun: c => 2 * c })
  }
  return list
}

type ProfiledPath = Extract<PathName, 'gateway' | 'openai'>
const ROUTE_OF: Record<ProfiledPath, string> = { gateway: 'POST /api/stream', openai: 'POST /v1/chat/completions' }

async function profileGateway (resultsDir: string, gatewayOptions: GatewayProcessOptions, path: ProfiledPath): Promise<void> {
  const profileDir = join(resultsDir, 'profiles')
  rmSync(profileDir, { recursive: true, force: true })
  mkdirSync(profileDir, { recursive: true })
  const emulator = await startEmulatorProcess(CHEAP)
  try {
    const gateway = await startGatewayProcess(emulator.url, { ...gatewayOptions, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] })
    try {
      const target = targetFor(path, gateway.url)
      const agent = keepAliveAgent(50)
      await runLoad(agent, target, { streams: 500, concurrency: 50, promptFor: i => promptFor(i, 64) })
      const load = await runLoad(agent, target, { streams: 5000, concurrency: 50, promptFor: i => promptFor(i, 64) })
      agent.destroy()
      const wrong = load.samples.filter(s => s.status !== 200).length
      log(`profiled ${load.samples.length} ${path} streams at c=50 (${wrong} not 200) in ${load.wallMs.toFixed(0)} ms`)
    } finally {
      await gateway.stop()
    }
  } finally {
    await emulator.stop()
  }
  const file = readdirSync(profileDir).find(name => name.endsWith('.cpuprofile'))
  if (file === undefined) throw new Error('bench: the gateway wrote no .cpuprofile')
  const summary = summariseProfile(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile, 40)
  const m = machineFacts()
  const markdown = `# Gateway CPU profile under load, ${ROUTE_OF[path]}\n\n5,000 streams of 50 chunks at concurrency 50 (after 500 warm-up streams), ` +
    `cheap emulator upstream, gateway in production mode. ${m.cpuModel}, ${m.cores} cores, Node ${m.node}.\n\n` +
    renderProfileSummary(summary, `Profile ${file}`)
  const name = path === 'gateway' ? 'profile' : `profile-${path}`
  writeFileSync(join(resultsDir, `${name}.md`), markdown)
  writeFileSync(join(resultsDir, `${name}.json`), `${JSON.stringify(summary, null, 2)}\n`)
  process.stdout.write(markdown)
}

/** The results' base name: `--out NAME` (which must be a plain name and must not replace a file), else the default. */
function resultsName (resultsDir: string, out: string | undefined, fallback: string): string {
  if (out === undefined) return fallback
  if (!/^[\w.-]+$/.test(out) || out.startsWith('.')) throw new Error(`--out must be a plain file name without an extension, got "${out}"`)
  for (const ext of ['md', 'json']) {
    if (existsSync(join(resultsDir, `${out}.${ext}`))) throw new Error(`--out: bench/results/${out}.${ext} exists; pick another name`)
  }
  return out
}

async function countInstructions (resultsDir: string, name: string, gateway: GatewayProcessOptions, baseline: GatewayProcessOptions | undefined, warmFlag: string, streamsFlag: string): Promise<void> {
  const warm = Number(warmFlag)
  const streams = Number(streamsFlag)
  if (!Number.isInteger(warm) || warm < 0) throw new Error(`--warm must be a whole number, got "${warmFlag}"`)
  if (!Number.isInteger(streams) || streams < 1) throw new Error(`--streams must be a positive integer, got "${streamsFlag}"`)
  valgrindVersion()
  const emulator = await startEmulatorProcess(CHEAP)
  try {
    const report = await measureInstructions({ upstreamUrl: emulator.url, pace: CHEAP, gateway, baseline, warm, streams, log })
    const markdown = renderInstructions(report)
    writeFileSync(join(resultsDir, `${name}.md`), markdown)
    writeFileSync(join(resultsDir, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`)
    process.stdout.write(markdown)
  } finally {
    await emulator.stop()
  }
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      runs: { type: 'string', default: '3' },
      'no-memory': { type: 'boolean', default: false },
      'no-paced': { type: 'boolean', default: false },
      'no-openai': { type: 'boolean', default: false },
      'no-resumable': { type: 'boolean', default: false },
      'resume-redis': { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'profile-path': { type: 'string', default: 'gateway' },
      instructions: { type: 'boolean', default: false },
      warm: { type: 'string', default: String(DEFAULT_WARM) },
      streams: { type: 'string', default: String(DEFAULT_STREAMS) },
      'gateway-script': { type: 'string' },
      'baseline-script': { type: 'string' },
      'gemini-client': { type: 'string' },
      out: { type: 'string' }
    }
  })
  const resultsDir = join(projectRoot(), 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const geminiClient = values['gemini-client']
  if (geminiClient !== undefined && geminiClient !== 'sdk' && geminiClient !== 'rest') throw new Error(`--gemini-client must be sdk or rest, got "${geminiClient}"`)
  const env: Record<string, string> = {
    ...(geminiClient === undefined ? {} : { GEMINI_CLIENT: geminiClient }),
    ...(values['resume-redis'] ? { REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' } : {})
  }
  const gateway: GatewayProcessOptions = {
    ...(values['gateway-script'] === undefined ? {} : { script: values['gateway-script'] }),
    ...(Object.keys(env).length === 0 ? {} : { env })
  }
  const baselineScript = values['baseline-script']
  if (baselineScript !== undefined && !existsSync(baselineScript)) throw new Error(`--baseline-script: ${baselineScript} does not exist; build that worktree first`)
  // Started exactly as the gateway is (same env and flags), only from the other build's script.
  const baseline: GatewayProcessOptions | undefined = baselineScript === undefined ? undefined : { ...gateway, script: resolve(baselineScript) }
  const profilePath = values['profile-path']
  if (profilePath !== 'gateway' && profilePath !== 'openai') throw new Error(`--profile-path must be gateway or openai, got "${profilePath}"`)
  if (values.profile) return await profileGateway(resultsDir, gateway, profilePath)
  if (values.instructions) return await countInstructions(resultsDir, resultsName(resultsDir, values.out, 'instructions'), gateway, baseline, values.warm, values.streams)

  const name = resultsName(resultsDir, values.out, values.quick ? 'quick' : 'latest')
  const runs = Number(values.runs)
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, got "${values.runs}"`)
  const openai = !values['no-openai']
  const resumable = !values['no-resumable']
  const config: BenchConfig = { scenarios: scenarios(values.quick, runs, !values['no-paced']), gateway, ...(baseline === undefined ? {} : { baseline }), openai, resumable, log }
  const report = await runBench(config)

  const memory: MemoryReport[] = []
  if (!values['no-memory']) {
    for (const [i, n] of (values.quick ? [200] : [1000, 5000]).entries()) {
      // With a baseline, the two builds take turns at going first.
      const builds = baseline === undefined ? ['gateway'] as const : i % 2 === 0 ? ['gateway', 'baseline'] as const : ['baseline', 'gateway'] as const
      // openai is this build's other route, in a gateway process of its own so that its streams alone fill it.
      const servers = ['proxy', ...builds, ...(openai ? ['openai'] as const : [])] as const
      for (const server of servers) memory.push(await measureIdleStreams(server, n, CHEAP, log, server === 'baseline' ? baseline : gateway))
    }
  }

  const markdown = renderMarkdown(report, memory)
  writeFileSync(join(resultsDir, `${name}.md`), markdown)
  writeFileSync(join(resultsDir, `${name}.json`), `${JSON.stringify({ ...report, memory }, null, 2)}\n`)
  process.stdout.write(markdown)
  const wrong = report.scenarios.reduce((sum, s) => sum + s.checks.wrongStreams, 0)
  if (wrong > 0) {
    log(`bench: ${wrong} streams had wrong bytes; their numbers do not count`)
    process.exitCode = 1
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  process.exit(1)
})
