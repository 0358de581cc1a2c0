// What one API key may do beyond its role: token budgets, concurrency, its own request limit, the models it may
// use, an output cap, an expiry and a switch. Written the same way in the keys file and (later) the management API.

import { isModelPattern } from '../plugins/models.js'

export interface KeyPolicy {
  /** Tokens Gemini reports for the key's streams, per calendar minute (UTC). */
  tokensPerMinute?: number
  /** Tokens per UTC day. */
  tokensPerDay?: number
  /** US dollars per UTC day, priced by the operator's price table (MODEL_PRICES); only with one. */
  usdPerDay?: number
  /** Requests per rate-limit window, in place of the role's limit. */
  requestsPerWindow?: number
  /** The models the key may use (ids or `*` patterns), checked after aliases, within ALLOWED_MODELS. */
  models?: readonly string[]
  /** The most output tokens any request of the key may ask for; a request asking more, or nothing, gets this. */
  maxOutputTokens?: number
  /** Streams of the key open at once, across every instance. */
  maxConcurrentStreams?: number
  /** When the key stops working, in milliseconds since the epoch (written as an ISO 8601 time). */
  expiresAt?: number
  /** A disabled key is refused as if expired, without being deleted. */
  disabled?: boolean
}

export const POLICY_FIELDS = ['tokensPerMinute', 'tokensPerDay', 'usdPerDay', 'requestsPerWindow', 'models', 'maxOutputTokens', 'maxConcurrentStreams', 'expiresAt', 'disabled'] as const

const COUNT_FIELDS = ['tokensPerMinute', 'tokensPerDay', 'requestsPerWindow', 'maxOutputTokens', 'maxConcurrentStreams'] as const
/** Beyond this, a count is surely a mistake (and Lua's numbers stay exact far above it). */
export const POLICY_COUNT_MAX = 1e12
/** A date and time with an explicit offset, so that a key never expires at a time that depends on the machine's zone. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/

/**
 * The policy fields of a record, checked; a wrong one is `fail(message)` naming the field, never its value (a
 * raw key may have been pasted anywhere). Other fields are the caller's to check.
 */
export function readPolicy (record: Readonly<Record<string, unknown>>, fail: (message: string) => never): KeyPolicy {
  const policy: KeyPolicy = {}
  for (const field of COUNT_FIELDS) {
    const value = record[field]
    if (value === undefined) continue
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > POLICY_COUNT_MAX) fail(`"${field}" must be a positive integer`)
    policy[field] = value
  }
  const { models, expiresAt, disabled, usdPerDay } = record
  if (usdPerDay !== undefined) {
    if (typeof usdPerDay !== 'number' || !Number.isFinite(usdPerDay) || usdPerDay <= 0 || usdPerDay > 1e9) fail('"usdPerDay" must be a positive number of US dollars')
    policy.usdPerDay = usdPerDay
  }
  if (models !== undefined) {
    if (!Array.isArray(models) || models.length === 0 || !models.every(entry => typeof entry === 'string' && isModelPattern(entry))) {
      fail('"models" must be a non-empty array of model names or * patterns')
    }
    policy.models = models as string[]
  }
  if (expiresAt !== undefined) {
    const ms = typeof expiresAt === 'string' && ISO_TIME.test(expiresAt) ? Date.parse(expiresAt) : NaN
    if (!Number.isFinite(ms)) fail('"expiresAt" must be an ISO 8601 time with a zone, such as "2027-01-31T00:00:00Z"')
    policy.expiresAt = ms
  }
  if (disabled !== undefined) {
    if (typeof disabled !== 'boolean') fail('"disabled" must be true or false')
    policy.disabled = disabled
  }
  return policy
}

/** The key's own policy over the defaults: a field the key sets wins, one it leaves out comes from the defaults. */
export function withDefaults (own: KeyPolicy | undefined, defaults: KeyPolicy): KeyPolicy {
  return { ...defaults, ...own }
}

/** Whether the key has a budget the gateway must count before admitting a stream. */
export function hasBudget (policy: KeyPolicy): boolean {
  return policy.tokensPerMinute !== undefined || policy.tokensPerDay !== undefined || policy.usdPerDay !== undefined || policy.maxConcurrentStreams !== undefined
}

/** A policy as the API shows it: `expiresAt` as an ISO 8601 time, as it is written. */
export function policyView (policy: KeyPolicy): Omit<KeyPolicy, 'expiresAt' | 'models'> & { expiresAt?: string, models?: string[] } {
  const { expiresAt, models, ...rest } = policy
  return {
    ...rest,
    ...(models === undefined ? {} : { models: [...models] }),
    ...(expiresAt === undefined ? {} : { expiresAt: new Date(expiresAt).toISOString() })
  }
}
