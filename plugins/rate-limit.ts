import fp from 'fastify-plugin'
import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit'
import { parse as parseDuration } from '@lukeed/ms'
import type { Redis } from 'ioredis'
import promClient from '@prometheus-io/client'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import { refusals } from '../schemas/refusals.js'
import { callerOf } from './auth.js'
import { need, provide } from './services.js'
import { DEFAULT_MAX_ADDRESSES, MemoryStore } from './rate-limit-memory-store.js'
import { RedisStore, isRedisOption, redisFor } from './rate-limit-redis-store.js'
import { positiveInteger } from './option-checks.js'

export type RedisErrorPolicy = 'open' | 'closed'

export interface RateLimitOptions {
  /** Requests per window for user keys and for requests without a valid key (counted per client IP). Default 100. */
  max?: number
  /** Requests per window for admin keys. Default 1000. */
  adminMax?: number
  /** Window length: milliseconds, or a string such as `15 minutes`, `1 s`, `2h`. Default `15 minutes`. */
  timeWindow?: number | string
  /**
   * Where the counters live so that every instance shares one budget: a `redis://` URL (the plugin owns that
   * client and closes it with the app) or an ioredis client owned by the caller, which should then fail fast too
   * (`enableOfflineQueue: false`, a `commandTimeout`) and listen for its `error` events. Unset: in-process memory.
   */
  redis?: string | Redis
  /** What a request gets when Redis cannot be reached: `open` lets it through, `closed` answers 503. Default `open`. */
  onRedisError?: RedisErrorPolicy
  /** Prefix of the Redis keys. Default `amrikyy-rate-limit:`. */
  nameSpace?: string
  /**
   * In memory (no `redis`): per-address counters of callers without a valid key kept at once, default 50,000. Past it
   * the least recently seen address is forgotten (its next request starts a fresh window); a configured key's
   * counter is never evicted within its window.
   */
  maxAddresses?: number
  /** In memory: the clock windows are measured on, in milliseconds. Default `Date.now`; tests pass a fake one. */
  now?: () => number
}

export const DEFAULT_MAX = 100
export const DEFAULT_ADMIN_MAX = 1000
export const DEFAULT_TIME_WINDOW = '15 minutes'
export const DEFAULT_NAMESPACE = 'amrikyy-rate-limit:'

/**
 * A window in milliseconds, from a number of milliseconds or a duration such as `15 minutes`, `1 s` or `2h` (read
 * by @lukeed/ms, as @fastify/rate-limit reads its own; a bare number is milliseconds).
 */
export function parseTimeWindow (value: number | string): number {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 1) throw new Error('rate-limit: option "timeWindow" must be a positive integer of milliseconds')
    return value
  }
  const ms = Math.round(parseDuration(value.trim()) ?? NaN)
  if (!Number.isInteger(ms) || ms < 1) {
    throw new Error(`rate-limit: option "timeWindow" must be milliseconds or a duration such as "15 minutes" (got ${JSON.stringify(value)})`)
  }
  return ms
}

interface ResolvedOptions {
  max: number
  adminMax: number
  timeWindowMs: number
  redis: string | Redis | undefined
  onRedisError: RedisErrorPolicy
  nameSpace: string
  maxAddresses: number
  now: () => number
}

function resolveOptions (options: RateLimitOptions): ResolvedOptions {
  const { redis, onRedisError = 'open', nameSpace = DEFAULT_NAMESPACE, now = Date.now } = options
  if (redis !== undefined && !isRedisOption(redis)) throw new Error('rate-limit: option "redis" must be a redis:// or rediss:// URL or an ioredis client')
  if (onRedisError !== 'open' && onRedisError !== 'closed') throw new Error('rate-limit: option "onRedisError" must be "open" or "closed"')
  if (typeof nameSpace !== 'string' || nameSpace === '') throw new Error('rate-limit: option "nameSpace" must be a non-empty string')
  if (typeof now !== 'function') throw new Error('rate-limit: option "now" must be a function returning milliseconds')
  return {
    max: positiveInteger('rate-limit', 'max', options.max, DEFAULT_MAX),
    adminMax: positiveInteger('rate-limit', 'adminMax', options.adminMax, DEFAULT_ADMIN_MAX),
    timeWindowMs: parseTimeWindow(options.timeWindow ?? DEFAULT_TIME_WINDOW),
    redis,
    onRedisError,
    nameSpace,
    maxAddresses: positiveInteger('rate-limit', 'maxAddresses', options.maxAddresses, DEFAULT_MAX_ADDRESSES),
    now
  }
}

/** The counter a request spends: its caller's stable, non-secret id, or its client address when it carries no valid key. */
export function rateLimitKey (request: FastifyRequest): string {
  const caller = callerOf(request)
  return caller !== null ? `key:${caller.id}` : `ip:${normalizeIP(request.ip)}`
}

/**
 * A store that failed must not fill the log at the request rate: the first failure is logged at once, later ones at
 * most every `intervalMs`, with how many went unlogged in between.
 */
export function throttledWarn (log: FastifyBaseLogger, intervalMs: number): (error: unknown, message: string) => void {
  let lastLogged = -Infinity
  let suppressed = 0
  return (error, message) => {
    const now = performance.now()
    if (now - lastLogged < intervalMs) {
      suppressed++
      return
    }
    lastLogged = now
    log.warn({ reason: error instanceof Error ? error.message : String(error), suppressedSinceLastWarning: suppressed }, message)
    suppressed = 0
  }
}

declare module './services.js' {
  interface GatewayServices {
    /** Counts the request against its caller's budget; the stream route runs it between identifying and rejecting a caller. */
    rateLimit?: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>
  }
}

export default fp<RateLimitOptions>(async function rateLimitPlugin (app, options) {
  const settings = resolveOptions(options)
  const metrics = need(app, 'metrics', 'amrikyy-metrics')
  const storeErrors = new promClient.Counter({
    name: 'amrikyy_rate_limit_store_errors_total',
    help: 'Rate-limit checks that could not reach Redis (let through when failing open, answered 503 when failing closed)',
    registers: [metrics.registry]
  })
  const warnUnreachable = throttledWarn(app.log, 5000)
  const warnFailedCheck = throttledWarn(app.log, 5000)
  const consequence = settings.onRedisError === 'open' ? 'requests pass unlimited until it answers' : 'requests are refused with 503 until it answers'

  // The limiter builds its store with `new`, so the connection, policy and bounds travel in a class made for this app.
  let store: (new () => RedisStore | MemoryStore)
  if (settings.redis === undefined) {
    const { maxAddresses, now } = settings
    // Evictions mean the bound is too small for the traffic: each one lets an address start over early.
    const evictions = new promClient.Counter({
      name: 'amrikyy_rate_limit_address_evictions_total',
      help: 'Per-address rate-limit counters dropped within their window because maxAddresses were held (in-memory limiter only)',
      registers: [metrics.registry]
    })
    store = class AppMemoryStore extends MemoryStore {
      constructor () { super(maxAddresses, () => { evictions.inc() }, now) }
    }
  } else {
    const shared = await redisFor(app, settings.redis, error => { warnUnreachable(error, `rate limit: Redis is unreachable; ${consequence}`) })
    const { nameSpace, onRedisError } = settings
    const failure = (error: unknown): Error => {
      storeErrors.inc()
      warnFailedCheck(error, `rate limit: a request could not be counted in Redis; ${consequence}`)
      return onRedisError === 'closed' ? refusals.rateLimitUnavailable(error) : error instanceof Error ? error : new Error(String(error))
    }
    store = class AppRedisStore extends RedisStore {
      constructor () { super(shared, nameSpace, failure) }
    }
  }

  await app.register(fastifyRateLimit, {
    global: false,
    store,
    skipOnError: settings.onRedisError === 'open'
  })

  const limiter = app.rateLimit({
    max: request => {
      const caller = callerOf(request)
      return caller?.policy.requestsPerWindow ?? (caller?.role === 'admin' ? settings.adminMax : settings.max)
    },
    timeWindow: settings.timeWindowMs,
    keyGenerator: rateLimitKey,
    onExceeded: () => { metrics.rateLimited() },
    errorResponseBuilder: () => refusals.tooManyRequests()
  })
  provide(app, 'rateLimit', limiter as (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>)
}, { name: 'amrikyy-rate-limit', fastify: '5.x', dependencies: ['amrikyy-auth', 'amrikyy-metrics'] })
