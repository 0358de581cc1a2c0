import { once } from 'node:events'
import fp from 'fastify-plugin'
import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit'
import type { Redis } from 'ioredis'
import promClient from '@prometheus-io/client'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import { refusals } from '../schemas/refusals.js'
import { DEFAULT_MAX_ADDRESSES, MemoryStore } from './rate-limit-memory-store.js'

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
}

export const DEFAULT_MAX = 100
export const DEFAULT_ADMIN_MAX = 1000
export const DEFAULT_TIME_WINDOW = '15 minutes'
export const DEFAULT_NAMESPACE = 'amrikyy-rate-limit:'

const UNIT_MS: Record<string, number> = {
  ms: 1, millisecond: 1, milliseconds: 1,
  s: 1000, sec: 1000, secs: 1000, second: 1000, seconds: 1000,
  m: 60_000, min: 60_000, mins: 60_000, minute: 60_000, minutes: 60_000,
  h: 3_600_000, hour: 3_600_000, hours: 3_600_000,
  d: 86_400_000, day: 86_400_000, days: 86_400_000
}

/** Accepted spellings of a window, for validating `RATE_LIMIT_WINDOW` before the plugin sees it. */
export const TIME_WINDOW_PATTERN = `^\\s*\\d+(\\.\\d+)?\\s*(${Object.keys(UNIT_MS).join('|')})?\\s*$`

/** A window in milliseconds, from a number of milliseconds or a string like `15 minutes` (a bare number is milliseconds). */
export function parseTimeWindow (value: number | string): number {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 1) throw new Error('rate-limit: option "timeWindow" must be a positive integer of milliseconds')
    return value
  }
  const match = new RegExp(TIME_WINDOW_PATTERN, 'i').exec(value)
  const ms = match === null ? NaN : Math.round(Number.parseFloat(value) * (UNIT_MS[(match[2] ?? 'ms').toLowerCase()] ?? NaN))
  if (!Number.isInteger(ms) || ms < 1) {
    throw new Error(`rate-limit: option "timeWindow" must be milliseconds or a duration such as "15 minutes" (got ${JSON.stringify(value)})`)
  }
  return ms
}

function positiveInteger (name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value < 1) throw new Error(`rate-limit: option "${name}" must be a positive integer`)
  return value
}

interface ResolvedOptions {
  max: number
  adminMax: number
  timeWindowMs: number
  redis: string | Redis | undefined
  onRedisError: RedisErrorPolicy
  nameSpace: string
  maxAddresses: number
}

function resolveOptions (options: RateLimitOptions): ResolvedOptions {
  const { redis, onRedisError = 'open', nameSpace = DEFAULT_NAMESPACE } = options
  if (redis !== undefined) {
    const isUrl = typeof redis === 'string' && /^rediss?:\/\//.test(redis)
    const isClient = typeof redis === 'object' && redis !== null && typeof (redis as Partial<Redis>).defineCommand === 'function'
    if (!isUrl && !isClient) throw new Error('rate-limit: option "redis" must be a redis:// or rediss:// URL or an ioredis client')
  }
  if (onRedisError !== 'open' && onRedisError !== 'closed') throw new Error('rate-limit: option "onRedisError" must be "open" or "closed"')
  if (typeof nameSpace !== 'string' || nameSpace === '') throw new Error('rate-limit: option "nameSpace" must be a non-empty string')
  return {
    max: positiveInteger('max', options.max, DEFAULT_MAX),
    adminMax: positiveInteger('adminMax', options.adminMax, DEFAULT_ADMIN_MAX),
    timeWindowMs: parseTimeWindow(options.timeWindow ?? DEFAULT_TIME_WINDOW),
    redis,
    onRedisError,
    nameSpace,
    maxAddresses: positiveInteger('maxAddresses', options.maxAddresses, DEFAULT_MAX_ADDRESSES)
  }
}

/** The counter a request spends: its caller's stable, non-secret id, or its client address when it carries no valid key. */
export function rateLimitKey (request: FastifyRequest): string {
  return request.caller !== null ? `key:${request.caller.id}` : `ip:${normalizeIP(request.ip)}`
}

/**
 * A store that failed must not fill the log at the request rate: the first failure is logged at once, later ones at
 * most every `intervalMs`, with how many went unlogged in between.
 */
function throttledWarn (log: FastifyBaseLogger, intervalMs: number): (error: unknown, message: string) => void {
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

type StoreCallback = (error: Error | null, result?: { current: number, ttl: number }) => void

const INCREMENT_COMMAND = 'amrikyyRateLimitIncrement'

// One round trip, atomic: count the request and start the window on the first one. A key found without an expiry
// (written by something else, or after a failed PEXPIRE) gets one rather than counting forever.
const INCREMENT_SCRIPT = `
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { count, ttl }
`

interface IncrementingRedis {
  [INCREMENT_COMMAND]: (key: string, windowMs: number) => Promise<[number, number]>
}

/**
 * Fixed-window counters in Redis, shared by every instance pointed at it. Failures are reported to `onFailure`
 * before the rate limiter sees them, so each one is logged and counted whichever way the policy goes.
 */
class SharedRedisStore {
  constructor (
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly policy: RedisErrorPolicy,
    private readonly onFailure: (error: unknown) => void
  ) {
    if (typeof (redis as unknown as Partial<IncrementingRedis>)[INCREMENT_COMMAND] !== 'function') {
      redis.defineCommand(INCREMENT_COMMAND, { numberOfKeys: 1, lua: INCREMENT_SCRIPT })
    }
  }

  incr (key: string, callback: StoreCallback, timeWindow: number): void {
    (this.redis as unknown as IncrementingRedis)[INCREMENT_COMMAND](this.prefix + key, timeWindow).then(
      ([current, ttl]) => { callback(null, { current, ttl }) },
      (error: unknown) => {
        this.onFailure(error)
        callback(this.policy === 'closed' ? refusals.rateLimitUnavailable(error) : error instanceof Error ? error : new Error(String(error)))
      }
    )
  }

  /** The limiter derives a store per route; ours has one counter space, named by the key alone. */
  child (): SharedRedisStore {
    return this
  }
}

const CONNECT_TIMEOUT_MS = 2000
const COMMAND_TIMEOUT_MS = 1000

/**
 * A client that can never hold a request: commands fail at once while disconnected instead of queueing, a reply
 * that does not come within a second is an error, and reconnection goes on in the background.
 */
async function createRedisClient (url: string): Promise<Redis> {
  // Loaded only when REDIS_URL is used: ioredis adds about 20 MiB to a process that counts in memory.
  const { Redis } = await import('ioredis')
  return new Redis(url, {
    enableOfflineQueue: false,
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: COMMAND_TIMEOUT_MS,
    maxRetriesPerRequest: 1,
    retryStrategy: attempt => Math.min(attempt * 200, 2000)
  })
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Counts the request against its caller's budget; the stream route runs it between identifying and rejecting a caller. */
    rateLimitCaller: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>
  }
}

export default fp<RateLimitOptions>(async function rateLimitPlugin (app, options) {
  const settings = resolveOptions(options)
  const storeErrors = new promClient.Counter({
    name: 'amrikyy_rate_limit_store_errors_total',
    help: 'Rate-limit checks that could not reach Redis (let through when failing open, answered 503 when failing closed)',
    registers: [app.gatewayMetrics.registry]
  })
  const warnUnreachable = throttledWarn(app.log, 5000)
  const warnFailedCheck = throttledWarn(app.log, 5000)
  const consequence = settings.onRedisError === 'open' ? 'requests pass unlimited until it answers' : 'requests are refused with 503 until it answers'

  // The limiter builds its store with `new`, so the connection, policy and bounds travel in a class made for this app.
  let store: (new () => SharedRedisStore | MemoryStore)
  if (settings.redis === undefined) {
    const { maxAddresses } = settings
    // Evictions mean the bound is too small for the traffic: each one lets an address start over early.
    const evictions = new promClient.Counter({
      name: 'amrikyy_rate_limit_address_evictions_total',
      help: 'Per-address rate-limit counters dropped within their window because maxAddresses were held (in-memory limiter only)',
      registers: [app.gatewayMetrics.registry]
    })
    store = class AppMemoryStore extends MemoryStore {
      constructor () { super(maxAddresses, () => { evictions.inc() }) }
    }
  } else {
    let redis = settings.redis
    if (typeof redis === 'string') {
      const owned = await createRedisClient(redis)
      // Connection errors repeat on every reconnect attempt; without a listener ioredis prints each to stderr.
      owned.on('error', (error: unknown) => { warnUnreachable(error, `rate limit: Redis is unreachable; ${consequence}`) })
      app.addHook('onClose', async () => { owned.disconnect() })
      // Let the first requests find the connection ready; a Redis that is down must not stop the start.
      await Promise.race([once(owned, 'ready'), new Promise(resolve => setTimeout(resolve, CONNECT_TIMEOUT_MS).unref())])
        .catch(() => {})
      redis = owned
    }
    const shared = redis
    const reportFailure = (error: unknown): void => {
      storeErrors.inc()
      warnFailedCheck(error, `rate limit: a request could not be counted in Redis; ${consequence}`)
    }
    const { nameSpace, onRedisError } = settings
    store = class AppRedisStore extends SharedRedisStore {
      constructor () { super(shared, nameSpace, onRedisError, reportFailure) }
    }
  }

  await app.register(fastifyRateLimit, {
    global: false,
    store,
    skipOnError: settings.onRedisError === 'open'
  })

  const limiter = app.rateLimit({
    max: request => request.caller?.role === 'admin' ? settings.adminMax : settings.max,
    timeWindow: settings.timeWindowMs,
    keyGenerator: rateLimitKey,
    onExceeded: () => { app.gatewayMetrics.rateLimited() },
    errorResponseBuilder: () => refusals.tooManyRequests()
  })
  app.decorate('rateLimitCaller', limiter as (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>)
}, { name: 'amrikyy-rate-limit', fastify: '5.x', dependencies: ['amrikyy-auth', 'amrikyy-metrics'] })
