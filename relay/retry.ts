import type { UpstreamError } from '../gemini/upstream-error.js'

export interface RetryPolicy {
  /** Tries in all, the first one included. */
  attempts: number
  baseDelayMs: number
  maxDelayMs: number
  /** Upper bound of all back-off waits of one request; a longer Retry-After ends the retries. */
  maxTotalWaitMs: number
}

/**
 * How long to wait before trying again after `attempt` (1 for the first try) failed with `error`, or
 * undefined when the policy allows no further try. Gemini's own Retry-After wins over the back-off;
 * `random` (0 ≤ r < 1) is the jitter's source.
 */
export function retryDelay (error: UpstreamError, attempt: number, policy: RetryPolicy, random: () => number = Math.random): number | undefined {
  if (!error.retryable || attempt >= policy.attempts) return undefined
  const exponential = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1))
  // Equal jitter (half fixed, half random) spreads the retries of many clients hit by the same outage.
  return error.retryAfterMs ?? Math.round(exponential / 2 + random() * exponential / 2)
}
