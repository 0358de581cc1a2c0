import type { RetryPolicy } from './retry.js'

export interface StreamTimeouts {
  /** From the request to the first chunk event. */
  firstChunkMs: number
  /** Between two upstream events once the answer started. */
  idleMs: number
  /** The whole stream. */
  totalMs: number
  /** How long a client may leave written events unread (its socket buffer full) before the stream is cut. */
  clientStallMs: number
}

export interface RelaySettings {
  timeouts: StreamTimeouts
  /** A heartbeat is sent when nothing was written for this long; 0 turns heartbeats off. */
  heartbeatMs: number
  retry: RetryPolicy
  /** Characters of one answer the relay holds (a format may send them all again at the end); past it the stream fails. */
  maxAnswerChars: number
  /** Model id → the model a call falls back to when it fails before its first chunk (MODEL_FALLBACKS's chains). */
  fallbacks: ReadonlyMap<string, string>
}

/** What a host may set of the relay's settings; each one left out takes its default. */
export interface RelayOptions {
  timeouts?: Partial<StreamTimeouts>
  /** Milliseconds of silence before a heartbeat keeps proxies from closing the stream; 0 disables. Default 15000. */
  heartbeatMs?: number
  retry?: Partial<RetryPolicy>
  /** Characters of one answer before the stream fails as too large. Default 8 Mi. */
  maxAnswerChars?: number
  /**
   * Chains of models, each tried after the one before it when a call fails before its first chunk with 429, a 5xx,
   * a transport timeout or an unreachable Gemini: `[['gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.5-flash-lite']]`.
   */
  fallbacks?: ReadonlyArray<readonly string[]>
}

export const DEFAULT_RELAY_SETTINGS: RelaySettings = {
  timeouts: { firstChunkMs: 60_000, idleMs: 30_000, totalMs: 600_000, clientStallMs: 30_000 },
  heartbeatMs: 15_000,
  retry: { attempts: 3, baseDelayMs: 250, maxDelayMs: 4_000, maxTotalWaitMs: 10_000 },
  maxAnswerChars: 8 * 1024 * 1024,
  fallbacks: new Map()
}

const MODEL_ID = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$/

/** Each model of the chains → its next one; a model may follow only one, and no chain may come back to itself. */
export function fallbackMap (chains: ReadonlyArray<readonly string[]>): Map<string, string> {
  if (!Array.isArray(chains)) throw new Error('stream route: option "fallbacks" must be an array of model chains')
  const next = new Map<string, string>()
  for (const chain of chains) {
    if (!Array.isArray(chain) || chain.length < 2 || !chain.every(model => typeof model === 'string' && MODEL_ID.test(model))) {
      throw new Error('stream route: each chain of option "fallbacks" must list two or more model ids')
    }
    for (let i = 0; i + 1 < chain.length; i++) {
      const from = chain[i]!
      const to = chain[i + 1]!
      if (next.has(from) && next.get(from) !== to) throw new Error(`stream route: option "fallbacks" gives ${from} two fallbacks (${next.get(from)!} and ${to})`)
      next.set(from, to)
    }
  }
  for (const start of next.keys()) {
    const seen = new Set([start])
    for (let model = next.get(start); model !== undefined; model = next.get(model)) {
      if (seen.has(model)) throw new Error(`stream route: option "fallbacks" comes back to ${model}`)
      seen.add(model)
    }
  }
  return next
}

function checked (name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value < min) throw new Error(`stream route: option "${name}" must be an integer >= ${min}`)
  return value
}

/** The settings `options` ask for, each checked, with the defaults for the rest. */
export function relaySettings (options: RelayOptions): RelaySettings {
  const { timeouts, retry, heartbeatMs, maxAnswerChars } = DEFAULT_RELAY_SETTINGS
  return {
    timeouts: {
      firstChunkMs: checked('timeouts.firstChunkMs', options.timeouts?.firstChunkMs, timeouts.firstChunkMs, 1),
      idleMs: checked('timeouts.idleMs', options.timeouts?.idleMs, timeouts.idleMs, 1),
      totalMs: checked('timeouts.totalMs', options.timeouts?.totalMs, timeouts.totalMs, 1),
      clientStallMs: checked('timeouts.clientStallMs', options.timeouts?.clientStallMs, timeouts.clientStallMs, 1)
    },
    heartbeatMs: checked('heartbeatMs', options.heartbeatMs, heartbeatMs, 0),
    retry: {
      attempts: checked('retry.attempts', options.retry?.attempts, retry.attempts, 1),
      baseDelayMs: checked('retry.baseDelayMs', options.retry?.baseDelayMs, retry.baseDelayMs, 0),
      maxDelayMs: checked('retry.maxDelayMs', options.retry?.maxDelayMs, retry.maxDelayMs, 0),
      maxTotalWaitMs: checked('retry.maxTotalWaitMs', options.retry?.maxTotalWaitMs, retry.maxTotalWaitMs, 0)
    },
    maxAnswerChars: checked('maxAnswerChars', options.maxAnswerChars, maxAnswerChars, 1),
    fallbacks: options.fallbacks === undefined ? DEFAULT_RELAY_SETTINGS.fallbacks : fallbackMap(options.fallbacks)
  }
}

/** A duration as the relay's messages word it: `2.5 s`. */
export function seconds (ms: number): string {
  return `${Math.round(ms / 100) / 10} s`
}
