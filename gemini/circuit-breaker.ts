// A circuit breaker per model in front of one Gemini key's client: after a run of failures within a short window it
// stops calling that model for a cool-down and fails at once instead, then lets a few trial calls through, and closes
// again when they pass. Only failures Gemini may be having (a 5xx, a transport timeout, a network failure) count:
// quotas (429) rest a key in the key pool, and a request error says nothing of Gemini's health.

import type { GeminiClient } from './types.js'
import { UpstreamError } from './upstream-error.js'
import { modelId } from './model-id.js'

export type CircuitState = 'closed' | 'open' | 'half-open'

export interface BreakerOptions {
  /** Failures within `windowMs` that open the circuit. */
  failures: number
  windowMs: number
  /** How long an open circuit answers at once before it lets trial calls through. */
  coolDownMs: number
  /** Calls let through at a time while half-open; the circuit closes once that many passed. */
  trials: number
}

export const DEFAULT_BREAKER: BreakerOptions = { failures: 5, windowMs: 10_000, coolDownMs: 30_000, trials: 1 }

interface Circuit {
  state: CircuitState
  /** When each failure of the window happened, oldest first. */
  failedAt: number[]
  openedAt: number
  trialsRunning: number
  trialsPassed: number
}

const failuresOf = new WeakSet<UpstreamError>()

/** Whether an error is an open circuit's answer, which made no call. */
export function isCircuitOpen (error: unknown): boolean {
  return error instanceof UpstreamError && failuresOf.has(error)
}

function counts (error: unknown): boolean {
  if (!(error instanceof UpstreamError) || isCircuitOpen(error)) return false
  return error.code === 'network' || error.code === 'timeout' || (error.code === 'http_status' && (error.status ?? 0) >= 500)
}

/**
 * `client` behind a breaker per model. `onChange` hears every change of a circuit's state. Only the calls of a
 * model (streams, token counts) go through it; the model list is not a model's health.
 */
export function withCircuitBreaker (client: GeminiClient, options: BreakerOptions, onChange: (model: string, state: CircuitState) => void, now: () => number = Date.now): GeminiClient {
  const circuits = new Map<string, Circuit>()

  // A circuit exists only while its model has failures to remember: names that never fail (a caller's made-up
  // model gets Google's 404, which does not count) take no memory.
  function become (model: string, circuit: Circuit, state: CircuitState): void {
    if (circuit.state === state) return
    circuit.state = state
    circuit.trialsRunning = 0
    circuit.trialsPassed = 0
    if (state === 'open') circuit.openedAt = now()
    if (state === 'closed') circuits.delete(model)
    onChange(model, state)
  }

  /** Lets a call through, or answers it at once; true when the call is a half-open circuit's trial. */
  function admit (model: string, circuit: Circuit | undefined): boolean {
    if (circuit === undefined) return false
    if (circuit.state === 'open') {
      const left = circuit.openedAt + options.coolDownMs - now()
      if (left > 0) {
        const refusal = new UpstreamError('http_status', `Gemini is failing for ${model}; the gateway stops calling it for ${Math.ceil(left / 1000)} s`, { status: 503, retryAfterMs: left, recoverable: true })
        failuresOf.add(refusal)
        throw refusal
      }
      become(model, circuit, 'half-open')
    }
    if (circuit.state === 'half-open') {
      if (circuit.trialsRunning >= options.trials) {
        const refusal = new UpstreamError('http_status', `Gemini is failing for ${model}; the gateway is trying it again`, { status: 503, retryAfterMs: 1000, recoverable: true })
        failuresOf.add(refusal)
        throw refusal
      }
      circuit.trialsRunning++
      return true
    }
    return false
  }

  function passed (model: string, circuit: Circuit | undefined, trial: boolean): void {
    if (circuit === undefined || !trial) return
    circuit.trialsRunning--
    circuit.trialsPassed++
    if (circuit.trialsPassed >= options.trials) become(model, circuit, 'closed')
  }

  function failed (model: string, known: Circuit | undefined, trial: boolean, error: unknown): void {
    if (trial && known !== undefined) known.trialsRunning--
    if (!counts(error)) return
    let circuit = known ?? circuits.get(model)
    if (circuit === undefined) circuits.set(model, circuit = { state: 'closed', failedAt: [], openedAt: 0, trialsRunning: 0, trialsPassed: 0 })
    if (trial) {
      become(model, circuit, 'open')
      return
    }
    const at = now()
    circuit.failedAt.push(at)
    while (circuit.failedAt.length > 0 && circuit.failedAt[0]! <= at - options.windowMs) circuit.failedAt.shift()
    if (circuit.failedAt.length >= options.failures) become(model, circuit, 'open')
  }

  async function through<T> (name: string, call: () => Promise<T>): Promise<T> {
    const model = modelId(name)
    const circuit = circuits.get(model)
    const trial = admit(model, circuit)
    try {
      const result = await call()
      passed(model, circuit, trial)
      return result
    } catch (error) {
      failed(model, circuit, trial, error)
      throw error
    }
  }

  return {
    ...client,
    streamGenerate: async (request, signal) => await through(request.model, async () => await client.streamGenerate(request, signal)),
    countTokens: async (model, contents, signal) => await through(model, async () => await client.countTokens(model, contents, signal))
  }
}
