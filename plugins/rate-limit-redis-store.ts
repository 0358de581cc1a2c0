import { once } from 'node:events'
import type { FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'

export type RedisStoreCallback = (error: Error | null, result?: { current: number, ttl: number }) => void

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
 * Fixed-window counters in Redis, shared by every instance pointed at it. A failure goes to `onFailure` before the
 * rate limiter sees it, so each one is logged and counted whichever way the policy goes; the limiter gets the error
 * `onFailure` returns.
 */
export class RedisStore {
  constructor (
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly onFailure: (error: unknown) => Error
  ) {
    if (typeof (redis as unknown as Partial<IncrementingRedis>)[INCREMENT_COMMAND] !== 'function') {
      redis.defineCommand(INCREMENT_COMMAND, { numberOfKeys: 1, lua: INCREMENT_SCRIPT })
    }
  }

  incr (key: string, callback: RedisStoreCallback, timeWindow: number): void {
    (this.redis as unknown as IncrementingRedis)[INCREMENT_COMMAND](this.prefix + key, timeWindow).then(
      ([current, ttl]) => { callback(null, { current, ttl }) },
      (error: unknown) => { callback(this.onFailure(error)) }
    )
  }

  /** The limiter derives a store per route; ours has one counter space, named by the key alone. */
  child (): RedisStore {
    return this
  }
}

/** Whether `value` can serve as the store's client: an ioredis client, which can define the increment command. */
export function isRedisClient (value: unknown): value is Redis {
  return typeof value === 'object' && value !== null && typeof (value as Partial<Redis>).defineCommand === 'function'
}

/** Whether `value` is what the plugins take as their `redis` option: a redis:// or rediss:// URL, or an ioredis client. */
export function isRedisOption (value: unknown): value is string | Redis {
  return (typeof value === 'string' && /^rediss?:\/\//.test(value)) || isRedisClient(value)
}

/** A plugin's Redis client: the host's own, or one connected for a URL that the plugin owns and closes with the app. */
export async function redisFor (app: FastifyInstance, redis: string | Redis, onError: (error: unknown) => void): Promise<Redis> {
  if (typeof redis !== 'string') return redis
  const owned = await connectRedis(redis, onError)
  app.addHook('onClose', async () => { owned.disconnect() })
  return owned
}

const CONNECT_TIMEOUT_MS = 2000
const COMMAND_TIMEOUT_MS = 1000

/**
 * A client that can never hold a request: commands fail at once while disconnected instead of queueing, a reply
 * that does not come within a second is an error, and reconnection goes on in the background. Resolves once it is
 * connected or after the connect timeout, whichever comes first: a Redis that is down must not stop the start.
 */
export async function connectRedis (url: string, onError: (error: unknown) => void): Promise<Redis> {
  // Loaded only when REDIS_URL is used: ioredis adds about 20 MiB to a process that counts in memory.
  const { Redis } = await import('ioredis')
  const client = new Redis(url, {
    enableOfflineQueue: false,
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: COMMAND_TIMEOUT_MS,
    maxRetriesPerRequest: 1,
    retryStrategy: attempt => Math.min(attempt * 200, 2000)
  })
  // Connection errors repeat on every reconnect attempt; without a listener ioredis prints each to stderr.
  client.on('error', onError)
  // Let the first requests find the connection ready.
  await Promise.race([once(client, 'ready'), new Promise(resolve => setTimeout(resolve, CONNECT_TIMEOUT_MS).unref())])
    .catch(() => {})
  return client
}
