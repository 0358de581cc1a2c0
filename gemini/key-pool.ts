// Several Gemini keys behind one GeminiClient. Gemini's quotas are per project: a key that answers 429 rests for as
// long as Gemini asked, and the call moves to the next key at once; a key answering 401 or 403 (revoked, wrong
// project) is taken out. A call fails only when no key can take it.

import type { ForwardedAnswer, GeminiClient } from './types.js'
import { retryDelayOf, UpstreamError } from './upstream-error.js'
import { googleErrorOf, type GoogleErrorBody } from './upstream-text.js'

export type KeyState = 'serving' | 'resting' | 'out'

export interface PooledKey {
  /** What logs and metrics call the key: its position (1, 2, …) or a configured name; never the key. */
  name: string
  client: GeminiClient
}

export interface KeyPoolOptions {
  /** A key's state changed; `position` counts from 1 in the configured order. */
  onStateChange?: (key: { name: string, position: number }, state: KeyState, why: { status?: number | undefined, restMs?: number | undefined }) => void
  /** How long a 429 that names no delay rests its key. Default 10 s. */
  defaultRestMs?: number
  now?: () => number
}

export const DEFAULT_REST_MS = 10_000

/**
 * What a failure says of the key rather than the request: a 429 rests it; a 401, a 403, or Google's 400 for a key
 * it no longer accepts (ErrorInfo reason API_KEY_INVALID, API_KEY_EXPIRED, …) takes it out.
 */
function keyVerdict (status: number, body: GoogleErrorBody | undefined): 'rest' | 'out' | undefined {
  if (status === 429) return 'rest'
  if (status === 401 || status === 403) return 'out'
  if (status !== 400) return undefined
  const reasons = (body?.error.details ?? []).map(detail => (detail as { reason?: unknown } | null)?.reason)
  return reasons.some(reason => typeof reason === 'string' && reason.startsWith('API_KEY_')) ? 'out' : undefined
}

interface Slot extends PooledKey {
  position: number
  state: KeyState
  restUntil: number
}

/** A pooled client that says which key each failure came from, for the metrics. */
export interface KeyPoolClient extends GeminiClient {
  /** The state of every key, in order. */
  states: () => Array<{ name: string, position: number, state: KeyState }>
}

/** An UpstreamError that also names the pooled key it came from. */
export function keyOfFailure (error: unknown): string | undefined {
  return error instanceof UpstreamError ? failedKeys.get(error) : undefined
}

const failedKeys = new WeakMap<UpstreamError, string>()

export function createKeyPool (keys: readonly PooledKey[], options: KeyPoolOptions = {}): KeyPoolClient {
  if (keys.length === 0) throw new Error('key pool: no keys')
  const now = options.now ?? Date.now
  const defaultRestMs = options.defaultRestMs ?? DEFAULT_REST_MS
  const slots: Slot[] = keys.map((key, index) => ({ ...key, position: index + 1, state: 'serving', restUntil: 0 }))
  let next = 0

  function setState (slot: Slot, state: KeyState, why: { status?: number | undefined, restMs?: number | undefined } = {}): void {
    if (slot.state === state && state !== 'resting') return
    slot.state = state
    options.onStateChange?.({ name: slot.name, position: slot.position }, state, why)
  }

  /** The next key that can serve, round robin; a key whose rest is over serves again. */
  function pick (): Slot | undefined {
    const at = now()
    for (let tried = 0; tried < slots.length; tried++) {
      const slot = slots[(next + tried) % slots.length]!
      if (slot.state === 'resting' && slot.restUntil <= at) setState(slot, 'serving')
      if (slot.state === 'serving') {
        next = (next + tried + 1) % slots.length
        return slot
      }
    }
    return undefined
  }

  /** Why no key can take a call: every key resting (429, until the first wakes) or out. */
  function noKey (): UpstreamError {
    const resting = slots.filter(slot => slot.state === 'resting')
    if (resting.length > 0) {
      const wakes = Math.max(0, Math.min(...resting.map(slot => slot.restUntil)) - now())
      return new UpstreamError('http_status', 'Every Gemini key is out of quota; retry later', { status: 429, retryAfterMs: wakes })
    }
    return new UpstreamError('http_status', 'No Gemini key is accepted by Gemini', { status: 503, recoverable: false })
  }

  /** Takes a key's failure out on it; true when another key can serve at once. */
  function blame (slot: Slot, verdict: 'rest' | 'out', status: number, retryAfterMs: number | undefined): boolean {
    if (verdict === 'rest') {
      const restMs = retryAfterMs ?? defaultRestMs
      slot.restUntil = now() + restMs
      setState(slot, 'resting', { status, restMs })
    } else {
      setState(slot, 'out', { status })
    }
    return slots.some(other => other.state === 'serving' || (other.state === 'resting' && other.restUntil <= now()))
  }

  /**
   * A call on one key. A failure of the key itself becomes one the relay retries at once on the next key (its attempts
   * stay bounded by the relay's), or, with no key left, the one that says so.
   */
  async function onKey<T> (call: (client: GeminiClient) => Promise<T>): Promise<T> {
    const slot = pick()
    if (slot === undefined) throw noKey()
    try {
      return await call(slot.client)
    } catch (error) {
      if (!(error instanceof UpstreamError)) throw error
      failedKeys.set(error, slot.name)
      const verdict = error.code === 'http_status' ? keyVerdict(error.status ?? 0, error.googleError) : undefined
      if (verdict === undefined) throw error
      if (!blame(slot, verdict, error.status ?? 0, error.retryAfterMs)) throw verdict === 'rest' ? error : noKey()
      const moved = new UpstreamError('http_status', error.message, { status: error.status, retryAfterMs: 0, googleError: error.googleError, retryable: true, cause: error })
      failedKeys.set(moved, slot.name)
      throw moved
    }
  }

  /** A forwarded call answers any status: one of a key's own is tried again at once on the next key, while there is one. */
  async function forwardOnKeys (call: Parameters<NonNullable<GeminiClient['forward']>>[0], signal: AbortSignal): Promise<ForwardedAnswer> {
    let answer: ForwardedAnswer | undefined
    for (let tried = 0; tried < slots.length; tried++) {
      const slot = pick()
      if (slot === undefined) break
      const forward = slot.client.forward
      if (forward === undefined) throw new UpstreamError('invalid_request', 'This Gemini client cannot forward requests')
      answer = await forward(call, signal)
      const body = answer.status >= 400 ? googleErrorOf(answer.body) : undefined
      const verdict = body === undefined && answer.status < 400 ? undefined : keyVerdict(answer.status, body)
      if (verdict === undefined) return answer
      if (!blame(slot, verdict, answer.status, retryDelayOf(body))) break
    }
    if (answer !== undefined) return answer
    throw noKey()
  }

  const first = keys[0]!.client
  return {
    states: () => slots.map(({ name, position, state }) => ({ name, position, state })),
    streamGenerate: async (request, signal) => await onKey(async client => await client.streamGenerate(request, signal)),
    countTokens: async (model, contents, signal) => await onKey(async client => await client.countTokens(model, contents, signal)),
    ...(first.listModels === undefined ? {} : { listModels: async (signal: AbortSignal) => await onKey(async client => await client.listModels!(signal)) }),
    ...(first.getModel === undefined ? {} : { getModel: async (name: string, signal: AbortSignal) => await onKey(async client => await client.getModel!(name, signal)) }),
    ...(first.forward === undefined ? {} : { forward: forwardOnKeys })
  }
}
