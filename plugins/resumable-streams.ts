// Resumable streams (issue 19): a request that opts in gets a stream id, every event of its answer is kept in a log
// (Redis Streams when the gateway has Redis, so any instance can replay it; process memory otherwise), and a client
// whose connection dropped reads on from the last event it saw. This plugin owns the log and the opt-in rule; the
// relay writes the events, routes/stream-resume.ts reads them.

import { randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import type { FastifyRequest } from 'fastify'
import type { Caller } from './auth.js'
import type { StreamApi } from './metrics.js'
import type { WireFormat } from '../relay/wire-format.js'
import { provide } from './services.js'
import { throttledWarn } from './rate-limit.js'
import { isRedisOption, redisFor } from './rate-limit-redis-store.js'
import { DEFAULT_MEMORY_LOG_CHARS, MemoryStreamLogStore, type StreamLogStore } from './stream-log-store.js'
import { RedisStreamLogStore } from './stream-log-redis-store.js'
import { positiveInteger } from './option-checks.js'

export interface ResumableStreamsOptions {
  /** A `redis://` URL (the plugin owns that client) or an ioredis client owned by the caller; unset: process memory. */
  redis?: string | Redis | undefined
  /** Prefix of the Redis keys. Default `amrikyy-stream:`. */
  nameSpace?: string | undefined
  /** How long a stream's events are kept after its last one (RESUME_RETENTION_MS). Default 5 minutes. */
  retentionMs?: number | undefined
  /** Events kept per stream; a resume from before the oldest kept is refused with 410. Default 10000. */
  maxEvents?: number | undefined
  /** How long a stream whose client left goes on waiting for a reader (RESUME_GRACE_MS). Default 30 s. */
  graceMs?: number | undefined
  /** Every stream is resumable unless its request says `"resumable": false` (RESUMABLE_STREAMS). Default false. */
  byDefault?: boolean | undefined
  /** Characters the memory logs hold together before the oldest go. Default 64 Mi. */
  maxMemoryChars?: number | undefined
}

export const DEFAULT_RESUME_NAMESPACE = 'amrikyy-stream:'
export const DEFAULT_RETENTION_MS = 5 * 60_000
export const DEFAULT_MAX_EVENTS = 10_000
export const DEFAULT_GRACE_MS = 30_000
/** What a reader is told when the instance producing the stream died before its end (its log ends with it). */
export const LOST_PRODUCER_MESSAGE = 'The gateway instance generating this answer stopped before its end; send the request again'

/** What the relay needs to keep one stream resumable. */
export interface ResumableStream {
  streamId: string
  store: StreamLogStore
  graceMs: number
}

export interface ResumableStreams {
  store: StreamLogStore
  /**
   * A new resumable stream of `caller` in the wire format `format`, its log opened, when the request is to be one:
   * `asked` (its body's `resumable`), else its `X-Resumable` header, else the default. Undefined for a plain stream,
   * and when the log cannot be kept (Redis not connected): the stream then runs as a plain one rather than not at all.
   */
  streamFor: (request: FastifyRequest, caller: Caller | null, asked: boolean | null | undefined, api: StreamApi, format: WireFormat) => ResumableStream | undefined
}

declare module './services.js' {
  interface GatewayServices {
    resumable?: ResumableStreams
  }
}

export default fp<ResumableStreamsOptions>(async function resumableStreams (app, options) {
  const limits = {
    retentionMs: positiveInteger('resumable streams', 'retentionMs', options.retentionMs, DEFAULT_RETENTION_MS),
    maxEvents: positiveInteger('resumable streams', 'maxEvents', options.maxEvents, DEFAULT_MAX_EVENTS)
  }
  const graceMs = positiveInteger('resumable streams', 'graceMs', options.graceMs, DEFAULT_GRACE_MS)
  const byDefault = options.byDefault ?? false
  const warnFailure = throttledWarn(app.log, 5000)
  let store: StreamLogStore
  if (options.redis === undefined) {
    store = new MemoryStreamLogStore(limits, positiveInteger('resumable streams', 'maxMemoryChars', options.maxMemoryChars, DEFAULT_MEMORY_LOG_CHARS))
  } else {
    if (!isRedisOption(options.redis)) throw new Error('resumable streams: option "redis" must be a redis:// or rediss:// URL or an ioredis client')
    const redis = await redisFor(app, options.redis, error => { warnFailure(error, 'resumable streams: Redis is unreachable; streams run without resuming until it answers') })
    store = new RedisStreamLogStore(redis, options.nameSpace ?? DEFAULT_RESUME_NAMESPACE, limits)
  }

  function wanted (request: FastifyRequest, asked: boolean | null | undefined): boolean {
    if (typeof asked === 'boolean') return asked
    const header = request.headers['x-resumable']
    if (header === 'true') return true
    if (header === 'false') return false
    return byDefault
  }

  provide(app, 'resumable', {
    store,
    streamFor (request, caller, asked, api, format) {
      if (caller === null || !wanted(request, asked)) return undefined
      if (!store.ready()) {
        warnFailure(new Error('Redis is not connected'), 'resumable streams: a stream started without resuming')
        return undefined
      }
      const streamId = randomUUID()
      const lostFrame = format.error({ kind: 'unavailable', message: LOST_PRODUCER_MESSAGE, recoverable: true })
      // Not awaited: the log's first write follows on the same connection, and the first chunk waits on neither.
      store.open(streamId, { caller: caller.id, requestId: request.id, api }, lostFrame).catch((error: unknown) => {
        warnFailure(error, 'resumable streams: a stream\'s log could not be opened; it cannot be resumed')
      })
      return { streamId, store, graceMs }
    }
  })
}, { name: 'amrikyy-resumable-streams', fastify: '5.x' })
