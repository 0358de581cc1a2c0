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
}

/** What a host may set of the relay's settings; each one left out takes its default. */
export interface RelayOptions {
  timeouts?: Partial<StreamTimeouts>
  /** Milliseconds of silence before a heartbeat keeps proxies from closing the stream; 0 disables. Default 15000. */
  heartbeatMs?: number
  retry?: Partial<RetryPolicy>
  /** Characters of one answer before the stream fails as too large. Default 8 Mi. */
  maxAnswerChars?: number
}

export const DEFAULT_RELAY_SETTINGS: RelaySettings = {
  timeouts: { firstChunkMs: 60_000, idleMs: 30_000, totalMs: 600_000, clientStallMs: 30_000 },
  heartbeatMs: 15_000,
  retry: { attempts: 3, baseDelayMs: 250, maxDelayMs: 4_000, maxTotalWaitMs: 10_000 },
  maxAnswerChars: 8 * 1024 * 1024
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
    maxAnswerChars: checked('maxAnswerChars', options.maxAnswerChars, maxAnswerChars, 1)
  }
}

/** A duration as the relay's messages word it: `2.5 s`. */
export function seconds (ms: number): string {
  return `${Math.round(ms / 100) / 10} s`
}
