// The faults a test can inject, and the queue that hands them to matching requests in FIFO order.
// How each fault shapes a response is in responses.ts (the events) and generate.ts (the writes).

export type Fault =
  | { kind: 'http-error'; status: number; body?: unknown; contentType?: string; headers?: Record<string, string> }
  | { kind: 'stream-error'; afterChunks: number; code: number; message?: string; status?: string }
  | { kind: 'drop'; afterChunks: number }
  | { kind: 'stall-headers'; ms?: number }
  | { kind: 'stall'; afterChunks: number; ms?: number }
  | { kind: 'malformed-json'; afterChunks: number }
  | { kind: 'unterminated'; afterChunks: number }
  | { kind: 'done-sentinel' }
  | { kind: 'no-usage' }
  | { kind: 'blocked' }
  /** `part` (default `{functionCall:{name:'lookup',args:{}}}`) as its own event after the first text event. */
  | { kind: 'non-text-part'; part?: unknown }
  | { kind: 'empty-200' }
  | { kind: 'huge-error'; status: number; prefix?: string; bytes?: number; contentType?: string }
  | { kind: 'huge-event'; afterChunks: number; chars?: number }
  | { kind: 'endless'; chunkChars?: number }

export interface FaultWhen {
  /** Tested against the request's prompt text: a string must be contained, a RegExp must match. */
  match?: string | RegExp
  /** How many matching requests the fault applies to. Default 1; Infinity allowed. */
  times?: number
  /** Only requests of this RPC. Default: both streamGenerateContent and generateContent. */
  rpc?: 'streamGenerateContent' | 'generateContent'
}

interface FaultEntry { fault: Fault; match: string | RegExp | undefined; remaining: number; rpc: string | undefined }

export class FaultQueue {
  private entries: FaultEntry[] = []

  add (fault: Fault, when: FaultWhen = {}): void {
    validateFault(fault)
    const times = when.times ?? 1
    if (!(times === Infinity || (Number.isInteger(times) && times >= 1))) {
      throw new RangeError(`addFault: times must be a positive integer or Infinity, got ${String(times)}`)
    }
    this.entries.push({ fault, match: when.match, remaining: times, rpc: when.rpc })
  }

  clear (): void { this.entries = [] }

  /** The first entry that matches, used up once; undefined when none does. */
  take (rpc: string, prompt: string): Fault | undefined {
    for (let i = 0; i < this.entries.length; i++) {
      const entry = this.entries[i]!
      if (entry.rpc !== undefined && entry.rpc !== rpc) continue
      if (!promptMatches(entry.match, prompt)) continue
      entry.remaining--
      if (entry.remaining <= 0) this.entries.splice(i, 1)
      return entry.fault
    }
    return undefined
  }
}

function promptMatches (match: string | RegExp | undefined, prompt: string): boolean {
  if (match === undefined) return true
  if (typeof match === 'string') return prompt.includes(match)
  match.lastIndex = 0
  return match.test(prompt)
}

function validateFault (fault: Fault): void {
  const bad = (what: string): never => { throw new RangeError(`addFault(${fault.kind}): ${what}`) }
  if ('afterChunks' in fault && !(Number.isInteger(fault.afterChunks) && fault.afterChunks >= 0)) {
    bad(`afterChunks must be an integer >= 0, got ${String(fault.afterChunks)}`)
  }
  if ('ms' in fault && fault.ms !== undefined && !(Number.isFinite(fault.ms) && fault.ms >= 0)) {
    bad(`ms must be a finite number >= 0, got ${String(fault.ms)}`)
  }
  switch (fault.kind) {
    case 'http-error':
      if (!(Number.isInteger(fault.status) && fault.status >= 300 && fault.status <= 599)) bad(`status must be an integer from 300 to 599, got ${String(fault.status)}`)
      break
    case 'stream-error':
      if (!Number.isInteger(fault.code)) bad(`code must be an integer, got ${String(fault.code)}`)
      break
    case 'huge-error':
      if (!(Number.isInteger(fault.status) && fault.status >= 300 && fault.status <= 599)) bad(`status must be an integer from 300 to 599, got ${String(fault.status)}`)
      if (fault.bytes !== undefined && !(Number.isInteger(fault.bytes) && fault.bytes >= 0)) bad(`bytes must be an integer >= 0, got ${String(fault.bytes)}`)
      break
    case 'huge-event':
      if (fault.chars !== undefined && !(Number.isInteger(fault.chars) && fault.chars >= 0)) bad(`chars must be an integer >= 0, got ${String(fault.chars)}`)
      break
    case 'endless':
      if (fault.chunkChars !== undefined && !(Number.isInteger(fault.chunkChars) && fault.chunkChars >= 1)) bad(`chunkChars must be an integer >= 1, got ${String(fault.chunkChars)}`)
      break
    case 'drop': case 'stall-headers': case 'stall': case 'malformed-json': case 'unterminated':
    case 'done-sentinel': case 'no-usage': case 'blocked': case 'non-text-part': case 'empty-200':
      break
    default:
      bad('unknown fault kind')
  }
}
