// Several Gemini keys behind one GeminiClient. Gemini's quotas are per project: a key that answers 429 rests for as
// long as Gemini asked, and the call moves to the next key at once; a key answering 401 or 403 (revoked, wrong
// project) is taken out. A call fails only when no key can take it.

import type { ForwardedAnswer, GeminiClient } from './types.js'
import { retryDelayOf, UpstreamError } from './upstream-error.js'
import { googleErrorOf, type GoogleErrorBody } from './upstream-text.js'
import { isCircuitOpen } from './circuit-breaker.js'
import { modelId } from './model-id.js'

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
  /** Gemini's quotas are per model: model id ('' for calls of no model) → when the key serves it again. */
  restUntil: Map<string, number>
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
  const slots: Slot[] = keys.map((key, index) => ({ ...key, position: index + 1, state: 'serving', restUntil: new Map() }))
  let next = 0

  function setState (slot: Slot, state: KeyState, why: { status?: number | undefined, restMs?: number | undefined } = {}): void {
    if (slot.state === state && state !== 'resting') return
    slot.state = state
    options.onStateChange?.({ name: slot.name, position: slot.position }, state, why)
  }

  /** Whether a key serves `model` now; a key whose every rest is over serves again. */
  function serves (slot: Slot, model: string, at: number): boolean {
    if (slot.state === 'out') return false
    for (const [rested, until] of slot.restUntil) if (until <= at) slot.restUntil.delete(rested)
    if (slot.state === 'resting' && slot.restUntil.size === 0) setState(slot, 'serving')
    return !slot.restUntil.has(model)
  }

  /** The next key that serves `model`, round robin. */
  function pick (model: string): Slot | undefined {
    const at = now()
    for (let tried = 0; tried < slots.length; tried++) {
      const slot = slots[(next + tried) % slots.length]!
      if (serves(slot, model, at)) {
        next = (next + tried + 1) % slots.length
        return slot
      }
    }
    return undefined
  }

  /** Why no key can take a call of `model`: every key resting for it (429, until the first wakes) or out. */
  function noKey (model: string): UpstreamError {
    const wakes = slots.flatMap(slot => slot.state === 'out' ? [] : [slot.restUntil.get(model) ?? 0])
    if (wakes.length > 0) {
      return new UpstreamError('http_status', 'Every Gemini key is out of quota; retry later', { status: 429, retryAfterMs: Math.max(0, Math.min(...wakes) - now()) })
    }
    return new UpstreamError('http_status', 'No Gemini key is accepted by Gemini', { status: 503, recoverable: false })
  }

  /** Takes a key's failure out on it; true when another key serves `model` at once. */
  function blame (slot: Slot, model: string, verdict: 'rest' | 'out', status: number, retryAfterMs: number | undefined): boolean {
    if (verdict === 'rest') {
      const restMs = retryAfterMs ?? defaultRestMs
      slot.restUntil.set(model, now() + restMs)
      setState(slot, 'resting', { status, restMs })
    } else {
      setState(slot, 'out', { status })
    }
    const at = now()
    return slots.some(other => serves(other, model, at))
  }

  /**
   * A call on one key. A failure of the key itself becomes one the relay retries at once on the next key (its attempts
   * stay bounded by the relay's), or, with no key left, the one that says so.
   */
  async function onKey<T> (model: string, call: (client: GeminiClient) => Promise<T>): Promise<T> {
    let slot = pick(model)
    if (slot === undefined) throw noKey(model)
    // A key whose circuit for the model is open answers at once without a call: the next key is asked straight away.
    for (let tried = 1; ; tried++) {
      try {
        return await call(slot.client)
      } catch (error) {
        const other = isCircuitOpen(error) && tried < slots.length ? pick(model) : undefined
        if (other === undefined || other === slot) throw onFailure(slot, model, error)
        slot = other
      }
    }
  }

  /** What a key's failure becomes: the same, or one the relay retries at once on the next key. */
  function onFailure (slot: Slot, model: string, error: unknown): unknown {
    if (!(error instanceof UpstreamError)) return error
    failedKeys.set(error, slot.name)
    const verdict = error.code === 'http_status' && !isCircuitOpen(error) ? keyVerdict(error.status ?? 0, error.googleError) : undefined
    if (verdict === undefined) return error
    if (!blame(slot, model, verdict, error.status ?? 0, error.retryAfterMs)) return verdict === 'rest' ? error : noKey(model)
    const moved = new UpstreamError('http_status', error.message, { status: error.status, retryAfterMs: 0, googleError: error.googleError, retryable: true, cause: error })
    failedKeys.set(moved, slot.name)
    return moved
  }

  /** A forwarded call answers any status: one of a key's own is tried again at once on the next key, while there is one. */
  async function forwardOnKeys (call: Parameters<NonNullable<GeminiClient['forward']>>[0], signal: AbortSignal): Promise<ForwardedAnswer> {
    let answer: ForwardedAnswer | undefined
    const model = /^models\/([^:/]+)/.exec(call.path)?.[1] ?? ''
    for (let tried = 0; tried < slots.length; tried++) {
      const slot = pick(model)
      if (slot === undefined) break
      const forward = slot.client.forward
      if (forward === undefined) throw new UpstreamError('invalid_request', 'This Gemini client cannot forward requests')
      answer = await forward(call, signal)
      const body = answer.status >= 400 ? googleErrorOf(answer.body) : undefined
      const verdict = body === undefined && answer.status < 400 ? undefined : keyVerdict(answer.status, body)
      if (verdict === undefined) return answer
      if (!blame(slot, model, verdict, answer.status, retryDelayOf(body))) break
    }
    if (answer !== undefined) return answer
    throw noKey(model)
  }

  const first = keys[0]!.client
  return {
    states: () => slots.map(({ name, position, state }) => ({ name, position, state })),
    streamGenerate: async (request, signal) => await onKey(modelId(request.model), async client => await client.streamGenerate(request, signal)),
    countTokens: async (model, contents, signal) => await onKey(modelId(model), async client => await client.countTokens(model, contents, signal)),
    ...(first.listModels === undefined ? {} : { listModels: async (signal: AbortSignal) => await onKey('', async client => await client.listModels!(signal)) }),
    ...(first.getModel === undefined ? {} : { getModel: async (name: string, signal: AbortSignal) => await onKey('', async client => await client.getModel!(name, signal)) }),
    ...(first.forward === undefined ? {} : { forward: forwardOnKeys })
  }
}
