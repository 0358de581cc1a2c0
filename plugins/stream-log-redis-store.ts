import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { PRESENCE_MS, PRESENCE_RENEW_MS, PRODUCER_MS, withEventId, type LoggedEvent, type StreamLogLimits, type StreamLogStore, type StreamOwner } from './stream-log-store.js'

/** How long one blocking read waits for the next event before it looks again (and at the reader's signal). */
const BLOCK_MS = 1000
/** The field that marks a stream's last event. */
const LAST = 'last'
/** How often a live stream's keys have their expiry pushed back. */
const EXPIRY_PUSH_MS = 1000

/** The events of one write of a stream's log. */
interface Batch {
  events: LoggedEvent[]
  last: boolean
  written: PromiseWithResolvers<void>
}

interface StreamWriting {
  /** The events gathering for the next write. */
  next: Batch | undefined
  /** A write of this stream is out. */
  busy: boolean
}

/**
 * The logs in Redis Streams, which every instance reads: one stream key per answer (`{id}:events`, an entry a
 * write, whose id is its last event's `0-<n>`, at least the newest `maxEvents` events kept) and its owner
 * (`{id}:owner`), both expiring `retentionMs` after the last write. A reader follows the live stream with XREAD
 * BLOCK on a connection of its own, so that no other command waits, and shows it is there with a field of its own in
 * `{id}:readers`, a hash that expires unless some reader renews it.
 * The producing instance keeps `{id}:producer` alive (one pipeline a second for all its streams); a reader that finds
 * it gone before the stream's last event ends the log with the stream's lost-producer event, so that no reader waits
 * out the retention for an instance that died.
 */
export class RedisStreamLogStore implements StreamLogStore {
  constructor (
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly limits: StreamLogLimits
  ) {}

  /** The streams produced here, whose producer keys are renewed together. */
  private readonly producing = new Set<string>()
  private renewing: NodeJS.Timeout | undefined
  /** Each stream's events waiting for their write, and whether one is out. */
  private readonly writing = new Map<string, StreamWriting>()
  /** When each live stream's keys last had their expiry pushed back. */
  private readonly expiryPushedAt = new Map<string, number>()

  private keysOf (streamId: string): { events: string, owner: string, readers: string, producer: string } {
    const base = `${this.prefix}{${streamId}}:`
    return { events: `${base}events`, owner: `${base}owner`, readers: `${base}readers`, producer: `${base}producer` }
  }

  ready (): boolean {
    return this.redis.status === 'ready'
  }

  /** One pipeline: the owner, and the producer's first sign of life, so that produce() need not send one. */
  async open (streamId: string, owner: StreamOwner, lostFrame: string): Promise<void> {
    const { owner: ownerKey, producer } = this.keysOf(streamId)
    const results = await this.redis.pipeline()
      .hset(ownerKey, 'caller', owner.caller, 'requestId', owner.requestId, 'api', owner.api, 'lost', lostFrame)
      .pexpire(ownerKey, this.limits.retentionMs)
      .set(producer, '1', 'PX', PRODUCER_MS)
      .exec()
    const failed = results?.find(([error]) => error !== null)?.[0]
    if (failed != null) throw failed
  }

  produce (streamId: string): () => void {
    this.producing.add(streamId)
    if (this.renewing === undefined) {
      this.renewing = setInterval(() => { this.renewProducers([...this.producing]) }, PRESENCE_RENEW_MS)
      this.renewing.unref()
    }
    // The key goes with the stream's last write; a stream that ends without one (its client left before the first
    // byte, so nobody can read it) lets it expire.
    return () => {
      this.producing.delete(streamId)
      this.expiryPushedAt.delete(streamId)
      if (this.producing.size > 0) return
      clearInterval(this.renewing)
      this.renewing = undefined
    }
  }

  private renewProducers (streamIds: string[]): void {
    const pipeline = this.redis.pipeline()
    for (const streamId of streamIds) pipeline.set(this.keysOf(streamId).producer, '1', 'PX', PRODUCER_MS)
    // A missed renewal is covered by the next ones: the key outlives several.
    pipeline.exec().catch(() => {})
  }

  /**
   * Queues the event for the stream's next write. The events of one turn of the event loop (an upstream read's
   * worth) go to Redis in one pipeline, and while one write is out the next ones gather: a slow Redis gets fewer,
   * larger writes instead of a growing queue of small ones.
   */
  append (streamId: string, event: LoggedEvent, last: boolean): Promise<void> {
    let writing = this.writing.get(streamId)
    if (writing === undefined) {
      writing = { next: undefined, busy: false }
      this.writing.set(streamId, writing)
    }
    let batch = writing.next
    if (batch === undefined) {
      batch = { events: [], last: false, written: Promise.withResolvers() }
      writing.next = batch
      if (!writing.busy) setImmediate(() => { this.write(streamId, writing) })
    }
    batch.events.push(event)
    batch.last ||= last
    return batch.written.promise
  }

  private write (streamId: string, writing: StreamWriting): void {
    const batch = writing.next
    if (batch === undefined) return
    writing.next = undefined
    writing.busy = true
    const { events, owner, producer } = this.keysOf(streamId)
    const pipeline = this.redis.pipeline()
    pipeline.xadd(events, ...entryOf(batch.events, batch.last, this.limits.maxEvents))
    // After the last event on the same connection: no reader can see the producer gone without the stream's end.
    if (batch.last) pipeline.del(producer)
    // The retention runs from the last event; pushing it back once a second (and at the end) is as good as every time.
    const now = performance.now()
    if (batch.last || now - (this.expiryPushedAt.get(streamId) ?? -Infinity) >= EXPIRY_PUSH_MS) {
      pipeline.pexpire(events, this.limits.retentionMs).pexpire(owner, this.limits.retentionMs)
      if (batch.last) this.expiryPushedAt.delete(streamId)
      else this.expiryPushedAt.set(streamId, now)
    }
    pipeline.exec().then(results => {
      const failed = results?.find(([error]) => error !== null)?.[0]
      if (failed == null) batch.written.resolve()
      else batch.written.reject(failed)
    }, (error: unknown) => { batch.written.reject(error) }).finally(() => {
      writing.busy = false
      if (writing.next !== undefined) this.write(streamId, writing)
      else this.writing.delete(streamId)
    })
  }

  async owner (streamId: string): Promise<StreamOwner | undefined> {
    const stored = await this.redis.hgetall(this.keysOf(streamId).owner)
    return typeof stored.caller === 'string' && typeof stored.requestId === 'string'
      ? { caller: stored.caller, requestId: stored.requestId, api: stored.api ?? 'stream' }
      : undefined
  }

  attend (streamId: string): () => void {
    const { readers } = this.keysOf(streamId)
    const reader = randomUUID()
    // A failed renewal is only a shorter presence: the producer's grace time covers it.
    const renew = (): void => { this.redis.multi().hset(readers, reader, '1').pexpire(readers, PRESENCE_MS).exec().catch(() => {}) }
    renew()
    const renewing = setInterval(renew, PRESENCE_RENEW_MS)
    renewing.unref()
    return () => {
      clearInterval(renewing)
      this.redis.hdel(readers, reader).catch(() => {})
    }
  }

  async attended (streamId: string): Promise<boolean> {
    return await this.redis.exists(this.keysOf(streamId).readers) === 1
  }

  async read (streamId: string, after: number, signal: AbortSignal): Promise<AsyncIterable<LoggedEvent> | undefined> {
    const { events, owner, producer } = this.keysOf(streamId)
    if (await this.owner(streamId) === undefined) return undefined
    const first = await this.redis.xrange(events, '-', '+', 'COUNT', 1)
    const firstN = first[0] === undefined ? 1 : Number(first[0][1][0])
    if (after + 1 < firstN) return undefined
    const redis = this.redis
    const limits = this.limits
    return {
      [Symbol.asyncIterator]: async function * () {
        let last = `0-${after}`
        let follower: Redis | undefined
        // A reader that leaves must not wait out a blocking read: closing its connection ends the read at once.
        const leave = (): void => { follower?.disconnect() }
        signal.addEventListener('abort', leave, { once: true })
        try {
          while (!signal.aborted) {
            // What is stored is read at once; only a reader that waits for live events needs a blocking connection.
            const stored = await redis.xread('COUNT', 100, 'STREAMS', events, last)
            follower ??= stored === null ? followerOf(redis) : undefined
            const read = stored ?? await follower!.xread('COUNT', 100, 'BLOCK', BLOCK_MS, 'STREAMS', events, last).catch((error: unknown) => {
              if (signal.aborted) return null
              throw error
            })
            for (const [, entries] of read ?? []) {
              for (const [id, fields] of entries) {
                last = id
                // An entry holds one write's events: those up to `after` were read before.
                for (let i = 0; i + 1 < fields.length; i += 2) {
                  if (fields[i] === LAST) return
                  const n = Number(fields[i])
                  if (n > after) yield { n, frame: fields[i + 1]! }
                }
              }
            }
            // Nothing new: the stream may have ended before the reader came, expired while followed, or lost its producer.
            if (read === null) {
              const [newest, kept, produced] = await Promise.all([redis.xrevrange(events, '+', '-', 'COUNT', 1), redis.exists(owner), redis.exists(producer)])
              if (newest[0]?.[1].includes(LAST) === true || kept === 0) return
              // A reader may be ahead of the log (the client got an event its dying producer never kept): its number then.
              if (produced === 0) await endLost(redis, { events, owner }, streamId, Math.max(after, newest[0] === undefined ? 0 : entryNumber(newest[0][0])), limits)
            }
          }
        } finally {
          signal.removeEventListener('abort', leave)
          follower?.disconnect()
        }
      }
    }
  }
}

/**
 * Ends the log of a stream whose producer died with its lost-producer event, as event `newest + 1` (`newest`: the
 * log's newest event, or the reader's if it is ahead), which the reader then reads like any other. Refused by Redis (an id not above the newest) when the producer wrote meanwhile after
 * all: the reader then reads on what it wrote.
 */
async function endLost (redis: Redis, keys: { events: string, owner: string }, streamId: string, newest: number, limits: StreamLogLimits): Promise<void> {
  const lostFrame = await redis.hget(keys.owner, 'lost')
  if (lostFrame === null) return
  const n = newest + 1
  await redis.multi()
    .xadd(keys.events, ...entryOf([{ n, frame: withEventId(lostFrame, streamId, n) }], true, limits.maxEvents))
    .pexpire(keys.events, limits.retentionMs)
    .exec()
    .catch(() => {})
}

/**
 * A connection for blocking reads: it may queue its first command while it connects (the gateway's clients fail at
 * once while disconnected), and its command timeout leaves room for the block itself.
 */
function followerOf (redis: Redis): Redis {
  const follower = redis.duplicate({ enableOfflineQueue: true, commandTimeout: BLOCK_MS + 2000 })
  // Its failures reach the read that was waiting; ioredis would otherwise print each to stderr.
  follower.on('error', () => {})
  return follower
}

function entryNumber (id: string): number {
  return Number(id.split('-')[1])
}

/**
 * The XADD arguments of one write: an entry `0-<its last n>` whose fields are `<n> <frame>` for each event (and
 * `last 1` after the stream's last), trimming the entries whose events all come before the newest `maxEvents`.
 * One entry a write keeps a fast answer's dozens of events to one command.
 */
function entryOf (events: readonly LoggedEvent[], last: boolean, maxEvents: number): [string, string, string, ...string[]] {
  const newest = events[events.length - 1]!.n
  const fields: string[] = []
  for (const event of events) fields.push(String(event.n), event.frame)
  if (last) fields.push(LAST, '1')
  return ['MINID', `0-${Math.max(0, newest - maxEvents + 1)}`, `0-${newest}`, ...fields]
}
