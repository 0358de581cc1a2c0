// Summarises a V8 .cpuprofile (from `node --cpu-prof`): the functions with the most self time, and
// time by where the code lives (a package in node_modules, Node's internals, the project's files).
//
//   node dist/bench/cpuprofile.js FILE.cpuprofile [TOP]

import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

interface CallFrame { functionName: string, url: string, lineNumber: number, columnNumber: number }
interface ProfileNode { id: number, callFrame: CallFrame, children?: number[] }
export interface CpuProfile { nodes: ProfileNode[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }

export interface FunctionCost { name: string, where: string, selfMs: number, selfShare: number }
export interface AreaCost { area: string, selfMs: number, selfShare: number, inclusiveMs: number, inclusiveShare: number }
export interface ProfileSummary { totalMs: number, busyMs: number, functions: FunctionCost[], areas: AreaCost[] }

/** Where a frame's code lives: `pkg:<name>`, `node`, `project:<file>`, or a V8 pseudo-frame. */
export function areaOf (frame: CallFrame): string {
  const { url, functionName } = frame
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)
  if (pkg !== null) return `pkg:${pkg[1]!}`
  if (url.startsWith('node:')) return 'node'
  const project = /\/dist\/(.+)$/.exec(url)
  return project !== null ? `project:${project[1]!}` : url
}

const IDLE = new Set(['(idle)', '(program)'])

export function summariseProfile (profile: CpuProfile, top = 30): ProfileSummary {
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const node of profile.nodes) {
    byId.set(node.id, node)
    for (const child of node.children ?? []) parent.set(child, node.id)
  }
  const selfByFunction = new Map<string, { name: string, where: string, ms: number }>()
  const selfByArea = new Map<string, number>()
  const inclusiveByArea = new Map<string, number>()
  let totalMs = 0
  let idleMs = 0
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; it is the best estimate of that sample's weight.
    const ms = (profile.timeDeltas[i] ?? 0) / 1000
    const node = byId.get(profile.samples[i]!)
    if (node === undefined) continue
    totalMs += ms
    const frame = node.callFrame
    if (IDLE.has(frame.functionName)) { idleMs += ms; continue }
    const where = frame.url === '' ? '' : `${frame.url.replace(/^.*\/(node_modules|dist)\//, '$1/')}:${frame.lineNumber + 1}`
    const key = `${frame.functionName}@${where}`
    const entry = selfByFunction.get(key) ?? { name: frame.functionName === '' ? '(anonymous)' : frame.functionName, where, ms: 0 }
    entry.ms += ms
    selfByFunction.set(key, entry)
    const area = areaOf(frame)
    selfByArea.set(area, (selfByArea.get(area) ?? 0) + ms)
    const seen = new Set<string>()
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const a = areaOf(byId.get(id)!.callFrame)
      if (a === '(root)' || seen.has(a)) continue
      seen.add(a)
      inclusiveByArea.set(a, (inclusiveByArea.get(a) ?? 0) + ms)
    }
  }
  const busyMs = totalMs - idleMs
  const share = (ms: number): number => busyMs === 0 ? 0 : ms / busyMs
  const functions = [...selfByFunction.values()].sort((a, b) => b.ms - a.ms).slice(0, top)
    .map(f => ({ name: f.name, where: f.where, selfMs: f.ms, selfShare: share(f.ms) }))
  const areas = [...selfByArea.entries()].map(([area, ms]) => ({
    area, selfMs: ms, selfShare: share(ms), inclusiveMs: inclusiveByArea.get(area) ?? ms, inclusiveShare: share(inclusiveByArea.get(area) ?? ms)
  })).sort((a, b) => b.selfMs - a.selfMs)
  return { totalMs, busyMs, functions, areas }
}

export function renderProfileSummary (summary: ProfileSummary, title: string): string {
  const pct = (x: number): string => `${(x * 100).toFixed(1)}%`
  const lines = [
    `## ${title}`, '',
    `Sampled ${summary.totalMs.toFixed(0)} ms, of which ${summary.busyMs.toFixed(0)} ms busy (not idle). Shares are of busy time.`, '',
    '| area | self ms | self | inclusive ms | inclusive |', '|---|---:|---:|---:|---:|'
  ]
  for (const a of summary.areas) lines.push(`| ${a.area} | ${a.selfMs.toFixed(0)} | ${pct(a.selfShare)} | ${a.inclusiveMs.toFixed(0)} | ${pct(a.inclusiveShare)} |`)
  lines.push('', '| function | where | self ms | self |', '|---|---|---:|---:|')
  for (const f of summary.functions) lines.push(`| ${f.name} | ${f.where} | ${f.selfMs.toFixed(1)} | ${pct(f.selfShare)} |`)
  lines.push('')
  return lines.join('\n')
}

const isEntry = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href
if (isEntry) {
  const file = process.argv[2]
  if (file === undefined) {
    process.stderr.write('usage: node dist/bench/cpuprofile.js FILE.cpuprofile [TOP]\n')
    process.exit(1)
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  process.stdout.write(renderProfileSummary(summariseProfile(profile, Number(process.argv[3] ?? 30)), file))
}
