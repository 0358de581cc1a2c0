// Reads what the instruction-count bench collects: a callgrind output file (self instructions per
// function), node's `--perf-basic-prof` map (which JIT address holds which JS function), and sorts
// every function into a category so two builds can be compared by where their instructions go.

/** Self cost of one function as callgrind names it: its object (`ob=`) and its name (`fn=`). */
export interface FunctionCost {
  object: string
  name: string
  /** Instructions executed in the function itself (`Ir`), not in what it called. */
  self: number
}

export interface CallgrindProfile {
  pid: number
  /** Instructions of the whole program (the `totals:` lines, or the header's `summary:`). */
  totals: number
  functions: FunctionCost[]
}

// Compressed names (`fn=(12) name`, later `fn=(12)`) share one table per kind; cfn=/cob=/cfi= define into it too.
const NAME_TABLE: Record<string, string> = { ob: 'ob', cob: 'ob', fl: 'fl', fi: 'fl', fe: 'fl', cfi: 'fl', cfn: 'fn', fn: 'fn' }

/**
 * Self instructions per function from a callgrind file (format: valgrind's "Callgrind Format
 * Specification"). A cost line right after `calls=` is the callee's inclusive cost, so it is not
 * the caller's own and is skipped; everything else adds to the current `fn=`.
 */
export function parseCallgrind (text: string): CallgrindProfile {
  const names = new Map<string, string>()
  const costs = new Map<string, FunctionCost>()
  let positions = 1
  let irColumn = 0
  let pid = 0
  let summary: number | undefined
  let totals: number | undefined
  let object = '???'
  let current: FunctionCost | undefined
  let callCostNext = false

  const resolveName = (kind: string, value: string): string => {
    const compressed = /^\((\d+)\)(?: (.*))?$/.exec(value)
    if (compressed === null) return value
    const key = `${NAME_TABLE[kind]}:${compressed[1]}`
    if (compressed[2] !== undefined) names.set(key, compressed[2])
    const known = names.get(key)
    if (known === undefined) throw new Error(`callgrind: ${kind}=(${compressed[1]}) is used before it is defined`)
    return known
  }

  for (const line of text.split('\n')) {
    const first = line.charCodeAt(0)
    // A cost line: positions (a number, 0x…, +n, -n or *) then one cost per event.
    if ((first >= 48 && first <= 57) || first === 43 || first === 45 || first === 42) {
      if (callCostNext) {
        callCostNext = false
        continue
      }
      if (current === undefined) throw new Error('callgrind: a cost line before any fn=')
      const fields = line.trim().split(/\s+/)
      const cost = fields[positions + irColumn]
      if (cost !== undefined) current.self += Number(cost)
      continue
    }
    const eq = line.indexOf('=')
    const colon = line.indexOf(':')
    if (eq > 0 && (colon < 0 || eq < colon)) {
      const kind = line.slice(0, eq)
      const value = line.slice(eq + 1)
      if (kind === 'calls') callCostNext = true
      else if (kind === 'jump' || kind === 'jcnd') throw new Error('callgrind: jump lines (--collect-jumps) are not supported')
      else if (kind in NAME_TABLE) {
        const name = resolveName(kind, value)
        if (kind === 'ob') object = name
        else if (kind === 'fn') {
          const key = `${object}\n${name}`
          current = costs.get(key)
          if (current === undefined) {
            current = { object, name, self: 0 }
            costs.set(key, current)
          }
        }
      }
      continue
    }
    if (colon > 0) {
      const key = line.slice(0, colon)
      const value = line.slice(colon + 1).trim()
      if (key === 'positions') positions = value.split(/\s+/).length
      else if (key === 'events') {
        irColumn = value.split(/\s+/).indexOf('Ir')
        if (irColumn < 0) throw new Error(`callgrind: no Ir event in "events: ${value}"`)
      } else if (key === 'pid') pid = Number(value)
      else if (key === 'summary') summary = Number(value.split(/\s+/)[irColumn])
      else if (key === 'totals') totals = (totals ?? 0) + Number(value.split(/\s+/)[irColumn])
    }
  }
  const total = totals ?? summary
  if (total === undefined || !Number.isFinite(total)) throw new Error('callgrind: no totals: or summary: line; did the process exit before callgrind wrote its file?')
  return { pid, totals: total, functions: [...costs.values()] }
}

interface MapRange { start: number, end: number, name: string }

/**
 * Node's `--perf-basic-prof` map: `address size name` per line, both hex, written as code is
 * created. V8 reuses the addresses of code it has collected, so a later line replaces what an
 * earlier one said about the same bytes: a lookup finds the code that was there last, which for a
 * long steady run is the code that ran.
 */
export class PerfMap {
  /** Disjoint, sorted by start. */
  private readonly ranges: MapRange[] = []

  static parse (text: string): PerfMap {
    const map = new PerfMap()
    for (const line of text.split('\n')) {
      const match = /^([0-9a-fA-F]+) ([0-9a-fA-F]+) (.*)$/.exec(line)
      if (match === null) continue
      const start = parseInt(match[1]!, 16)
      map.add({ start, end: start + parseInt(match[2]!, 16), name: match[3]! })
    }
    return map
  }

  get size (): number { return this.ranges.length }

  /** The first range that ends after `address`. */
  private firstEndingAfter (address: number): number {
    let lo = 0
    let hi = this.ranges.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (this.ranges[mid]!.end <= address) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  add (range: MapRange): void {
    if (range.end <= range.start) return
    const from = this.firstEndingAfter(range.start)
    let to = from
    while (to < this.ranges.length && this.ranges[to]!.start < range.end) to++
    const replaced: MapRange[] = []
    const left = this.ranges[from]
    if (from < to && left !== undefined && left.start < range.start) replaced.push({ ...left, end: range.start })
    replaced.push(range)
    const right = this.ranges[to - 1]
    if (from < to && right !== undefined && right.end > range.end) replaced.push({ ...right, start: range.end })
    this.ranges.splice(from, to - from, ...replaced)
  }

  lookup (address: number): string | undefined {
    const range = this.ranges[this.firstEndingAfter(address)]
    return range !== undefined && range.start <= address ? range.name : undefined
  }
}

export const CATEGORIES = [
  'gateway JS',
  'dependency JS',
  'node core JS',
  'other JS',
  'WebAssembly',
  'V8 builtins',
  'V8 internals (GC, compiler, parser, runtime)',
  'unnamed JIT code',
  'other native'
] as const
export type Category = typeof CATEGORIES[number]

export interface NamedCost { name: string, category: Category }

const JS_KINDS = new Set(['JS', 'Script', 'Eval', 'Function', 'LazyCompile'])

/** A JS location as the map gives it, made the same in every build: no `file://`, no build root, no `:line:col`. */
function jsLocation (location: string, root: string): string {
  let path = location.replace(/^file:\/\//, '').replace(/:\d+:\d+$/, '')
  if (path.startsWith(`${root}/`)) path = path.slice(root.length + 1)
  return path
}

function jsCategory (location: string): Category {
  if (location.startsWith('node:')) return 'node core JS'
  if (location.includes('node_modules/')) return 'dependency JS'
  if (location.startsWith('dist/')) return 'gateway JS'
  if (location.startsWith('wasm-function[')) return 'WebAssembly'
  return 'other JS'
}

/** A perf-map entry's name, comparable across builds, and its category. */
export function nameMapEntry (entry: string, root: string): NamedCost {
  if (entry.startsWith('RegExp')) return { name: entry, category: 'V8 builtins' }
  const kind = /^(\w+):(.*)$/.exec(entry)
  if (kind === null) return { name: entry, category: 'unnamed JIT code' }
  const [, type, rest] = kind as unknown as [string, string, string]
  if (type === 'Builtin') return { name: `Builtins_${rest}`, category: 'V8 builtins' }
  if (!JS_KINDS.has(type)) return { name: entry, category: 'V8 builtins' }
  // A tier marker (~ interpreted, ^ Sparkplug, + Maglev, * TurboFan) and V8's `'`, then `name location`.
  const body = rest.replace(/^[~*^+']+/, '')
  const space = body.lastIndexOf(' ')
  const location = jsLocation(body.slice(space + 1), root)
  const fn = body.slice(0, Math.max(space, 0)).trim()
  return { name: `${fn === '' ? '(anonymous)' : fn} ${location}`, category: jsCategory(location) }
}

/** Whether a C++ symbol is V8's own (or its GC's), judged by the qualified name of the function itself. */
function isV8Internal (symbol: string): boolean {
  let plain = symbol.replace(/\(anonymous namespace\)/g, 'anon')
  for (let before = ''; before !== plain;) {
    before = plain
    plain = plain.replace(/<[^<>]*>/g, '')
  }
  const qualified = plain.split('(')[0]!.trim().split(/\s+/).pop() ?? ''
  return /^(v8|cppgc|heap)::/.test(qualified)
}

const ADDRESS = /^0x([0-9a-fA-F]+)$/

/** A callgrind function's name and category; unnamed code in no object (`???`) is looked up in the perf map. */
export function nameFunction (fn: Pick<FunctionCost, 'object' | 'name'>, map: PerfMap, root: string): NamedCost {
  const address = ADDRESS.exec(fn.name)
  if (address !== null) {
    if (fn.object !== '???') return { name: `(unnamed code in ${fn.object.split('/').pop() ?? fn.object})`, category: 'other native' }
    const entry = map.lookup(parseInt(address[1]!, 16))
    return entry === undefined ? { name: '(unnamed JIT code)', category: 'unnamed JIT code' } : nameMapEntry(entry, root)
  }
  // callgrind's `'2` marks a second recursion level of the same function.
  const name = fn.name.replace(/'\d+$/, '')
  if (name.startsWith('Builtins_')) return { name, category: 'V8 builtins' }
  return { name, category: isV8Internal(name) ? 'V8 internals (GC, compiler, parser, runtime)' : 'other native' }
}

export interface Attributed {
  totals: number
  /** Self instructions per comparable name. */
  functions: Map<string, { category: Category, self: number }>
}

/** Every function of a profile under its comparable name (several callgrind entries may share one). */
export function attribute (profile: CallgrindProfile, map: PerfMap, root: string): Attributed {
  const functions = new Map<string, { category: Category, self: number }>()
  for (const fn of profile.functions) {
    const { name, category } = nameFunction(fn, map, root)
    const entry = functions.get(name)
    if (entry === undefined) functions.set(name, { category, self: fn.self })
    else entry.self += fn.self
  }
  return { totals: profile.totals, functions }
}
