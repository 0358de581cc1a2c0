import t, { type Test } from 'tap'
import { MemoryStreamLogStore, type LoggedEvent, type StreamLogLimits, type StreamLogStore } from '../plugins/stream-log-store.js'
import { RedisStreamLogStore } from '../plugins/stream-log-redis-store.js'
import { REDIS_SKIP, redisNamespace } from './support/redis.js'

// The foundation of issue 19's resumable streams: the log that keeps a stream's events for a reader who comes back.
const frame = (n: number): string => `data: {"chunk":"word${n} ","index":${n}}\n\n`
const event = (n: number): LoggedEvent => ({ n, frame: frame(n) })
const owner = { caller: 'search-team', requestId: 'req-1', api: 'stream' }
const LOST = 'data: {"error":"lost","recoverable":true}\n\n'

async function collect (events: AsyncIterable<LoggedEvent>): Promise<number[]> {
  const seen: number[] = []
  for await (const { n, frame: text } of events) {
    if (text !== frame(n)) throw new Error(`event ${n} came back as ${text}`)
    seen.push(n)
  }
  return seen
}

type Made = (limits: StreamLogLimits) => Promise<StreamLogStore>

async function behavesAsALog (t: Test, make: Made): Promise<void> {
  const store = await make({ retentionMs: 60_000, maxEvents: 100 })
  await store.open('s1', owner, LOST)
  t.same(await store.owner('s1'), owner)
  t.equal(await store.owner('unknown'), undefined)
  t.equal(await store.read('unknown', 0, new AbortController().signal), undefined, 'an unknown stream has nothing to read')
  for (let n = 1; n <= 3; n++) await store.append('s1', event(n), false)
  const reading = store.read('s1', 1, new AbortController().signal).then(async events => await collect(events!))
  // The reader has the stored events and then waits on the live ones, until the last.
  await new Promise(resolve => setTimeout(resolve, 50))
  await store.append('s1', event(4), false)
  await store.append('s1', event(5), true)
  t.same(await reading, [2, 3, 4, 5], 'the events after the one given, stored and live, each once, in order')
  t.same(await collect((await store.read('s1', 5, new AbortController().signal))!), [], 'after the last event, nothing')
  t.same(await collect((await store.read('s1', 0, new AbortController().signal))!), [1, 2, 3, 4, 5], 'a finished stream replays to its end')

  await store.open('s2', owner, LOST)
  await store.append('s2', event(1), false)
  const stop = new AbortController()
  const waiting = store.read('s2', 1, stop.signal).then(async events => await collect(events!))
  await new Promise(resolve => setTimeout(resolve, 50))
  stop.abort()
  t.same(await waiting, [], 'a reader that leaves stops waiting')
}

t.test('the memory log keeps, replays and follows a stream, within its retention and length', async t => {
  await behavesAsALog(t, async limits => new MemoryStreamLogStore(limits))
  const short = new MemoryStreamLogStore({ retentionMs: 100, maxEvents: 3 })
  await short.open('s', owner, LOST)
  for (let n = 1; n <= 5; n++) await short.append('s', event(n), n === 5)
  t.equal(await short.read('s', 0, new AbortController().signal), undefined, 'the oldest events are gone past maxEvents, so a resume from before them is refused')
  t.same(await collect((await short.read('s', 2, new AbortController().signal))!), [3, 4, 5])
  await new Promise(resolve => setTimeout(resolve, 150))
  t.equal(await short.owner('s'), undefined, 'gone after the retention')
})

t.test('the Redis log does the same in Redis Streams, bounded in length and expiring', { skip: REDIS_SKIP }, async t => {
  const { redis, nameSpace, keys } = await redisNamespace(t, 'stream-log')
  await behavesAsALog(t, async limits => new RedisStreamLogStore(redis, nameSpace, limits))

  const short = new RedisStreamLogStore(redis, nameSpace, { retentionMs: 300, maxEvents: 3 })
  await short.open('s', owner, LOST)
  for (let n = 1; n <= 50; n++) await short.append('s', event(n), n === 50)
  const eventsKey = `${nameSpace}{s}:events`
  t.equal(await redis.xlen(eventsKey), 3, 'XLEN stays at maxEvents')
  // Chunks of a kilobyte, as a long answer's are: memory follows what is kept, not what was written.
  const kilobyte = (n: number): LoggedEvent => ({ n, frame: `data: ${'x'.repeat(1024)}\n\n` })
  const [capped, whole] = await Promise.all([3, 1000].map(async maxEvents => {
    const log = new RedisStreamLogStore(redis, nameSpace, { retentionMs: 300, maxEvents })
    await log.open(`kb-${maxEvents}`, owner, LOST)
    for (let n = 1; n <= 50; n++) await log.append(`kb-${maxEvents}`, kilobyte(n), n === 50)
    return Number(await redis.memory('USAGE', `${nameSpace}{kb-${maxEvents}}:events`))
  }))
  t.ok(capped! < 3 * 1024 + 8192 && whole! > 50 * 1024, `MEMORY USAGE: 50 events of 1 KiB capped at 3 take ${capped} bytes, kept whole ${whole}`)
  t.equal(await short.read('s', 10, new AbortController().signal), undefined)
  t.same(await collect((await short.read('s', 47, new AbortController().signal))!), [48, 49, 50])
  const ttl = await redis.pttl(eventsKey)
  t.ok(ttl > 0 && ttl <= 300, `the events expire with the retention (${ttl} ms)`)
  await new Promise(resolve => setTimeout(resolve, 350))
  t.equal(await short.owner('s'), undefined)
  t.notOk((await keys()).some(key => key.includes('{s}')), 'nothing of it is left in Redis')
})

t.test('a Redis reader whose stream lost its producer ends the log with the lost-producer event instead of waiting out the retention', { skip: REDIS_SKIP }, async t => {
  const { redis, nameSpace } = await redisNamespace(t, 'stream-log-lost')
  const store = new RedisStreamLogStore(redis, nameSpace, { retentionMs: 60_000, maxEvents: 100 })
  await store.open('alive', owner, LOST)
  const stopProducing = store.produce('alive')
  await store.append('alive', event(1), false)
  const reading = store.read('alive', 0, new AbortController().signal).then(async events => await collectAll(events!))
  // Past a whole blocking read, a live producer keeps its reader waiting.
  await new Promise(resolve => setTimeout(resolve, 1500))
  await store.append('alive', event(2), true)
  t.same((await reading).map(read => read.n), [1, 2], 'the producer\'s events, to its last')
  stopProducing()

  // A producer gone before the stream's end (its key expired: its instance died).
  await store.open('orphan', owner, LOST)
  await redis.del(`${nameSpace}{orphan}:producer`)
  await store.append('orphan', event(1), false)
  const started = performance.now()
  const seen = await collectAll((await store.read('orphan', 0, new AbortController().signal))!)
  t.same(seen, [event(1), { n: 2, frame: `id: orphan:2\n${LOST}` }], 'the lost-producer event, numbered after the last one kept')
  t.ok(performance.now() - started < 5000, 'after one blocking read, not the retention')
  t.same(await collectAll((await store.read('orphan', 1, new AbortController().signal))!), [{ n: 2, frame: `id: orphan:2\n${LOST}` }], 'kept in the log for every later reader')
})

async function collectAll (events: AsyncIterable<LoggedEvent>): Promise<LoggedEvent[]> {
  const seen: LoggedEvent[] = []
  for await (const read of events) seen.push(read)
  return seen
}

t.test('the memory logs together stay within their character cap: the oldest log goes first, and its waiting reader ends', async t => {
  const store = new MemoryStreamLogStore({ retentionMs: 60_000, maxEvents: 100 }, 100)
  const sixty = (n: number): LoggedEvent => ({ n, frame: 'x'.repeat(60) })
  await store.open('older', owner, LOST)
  await store.append('older', sixty(1), false)
  const waiting = store.read('older', 1, new AbortController().signal).then(async events => await collectAll(events!))
  await store.open('newer', owner, LOST)
  await store.append('newer', sixty(1), false)
  t.equal(await store.owner('older'), undefined, 'past 100 characters the older log is dropped')
  t.same(await store.owner('newer'), owner)
  t.same(await waiting, [], 'its reader is let go rather than waiting for ever')
  await store.append('newer', sixty(2), true)
  t.same((await collectAll((await store.read('newer', 0, new AbortController().signal))!)).map(read => read.n), [1, 2], 'a log alone over the cap keeps its events: the cap drops other logs, never the one being written')
})

t.test('a Redis reader ahead of a log that lost its producer still gets the lost-producer event, numbered after its own', { skip: REDIS_SKIP }, async t => {
  const { redis, nameSpace } = await redisNamespace(t, 'stream-log-ahead')
  const store = new RedisStreamLogStore(redis, nameSpace, { retentionMs: 60_000, maxEvents: 100 })
  await store.open('ahead', owner, LOST)
  await redis.del(`${nameSpace}{ahead}:producer`)
  await store.append('ahead', event(1), false)
  // The client read event 3 from the socket; its producer died before events 2 and 3 were kept.
  t.same(await collectAll((await store.read('ahead', 3, new AbortController().signal))!), [{ n: 4, frame: `id: ahead:4\n${LOST}` }])
})
