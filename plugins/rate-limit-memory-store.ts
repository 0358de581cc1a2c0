/** Per-address counters kept in memory before the least recently used one is dropped. */
export const DEFAULT_MAX_ADDRESSES = 50_000

interface Counter {
  current: number
  windowStartMs: number
}

export type MemoryStoreCallback = (error: Error | null, result?: { current: number, ttl: number }) => void

/**
 * Fixed-window counters in process memory, in two spaces. A configured key's counter (`key:` prefix) is never
 * evicted: there are only as many as there are configured keys, and a key that spent its budget must stay
 * refused until its window ends. Counters of callers without a valid key (per client address) are an LRU of
 * `maxAddresses`: past it the least recently seen address is forgotten and starts a fresh window on its next
 * request, which costs a flood of addresses its own budget and never a key's.
 *
 * @fastify/rate-limit's own local store is one LRU of 5,000 for both, so 5,000 other callers reset a key.
 */
export class MemoryStore {
  private readonly keys = new Map<string, Counter>()
  // A Map iterates in insertion order: re-inserting on every hit keeps the least recently seen address first.
  private readonly addresses = new Map<string, Counter>()

  /** `now` is the clock windows are measured on, in milliseconds; a test passes its own to cross a window at once. */
  constructor (
    private readonly maxAddresses: number,
    private readonly onEvict: () => void = () => {},
    private readonly now: () => number = Date.now
  ) {}

  incr (id: string, callback: MemoryStoreCallback, timeWindow: number): void {
    const now = this.now()
    const isKey = id.startsWith('key:')
    const space = isKey ? this.keys : this.addresses
    let counter = space.get(id)
    if (counter === undefined || counter.windowStartMs + timeWindow <= now) {
      counter = { current: 0, windowStartMs: now }
    }
    counter.current++
    if (!isKey) {
      this.addresses.delete(id)
      if (this.addresses.size >= this.maxAddresses) this.evictOldestAddress(now, timeWindow)
    }
    space.set(id, counter)
    callback(null, { current: counter.current, ttl: counter.windowStartMs + timeWindow - now })
  }

  /** The limiter derives a store per route; ours has one counter space per caller kind, named by the id alone. */
  child (): MemoryStore {
    return this
  }

  /** `onEvict` hears only of counters whose window was still running: those are the budgets that start over early. */
  private evictOldestAddress (now: number, timeWindow: number): void {
    const oldest = this.addresses.entries().next()
    if (oldest.done === true) return
    const [id, counter] = oldest.value
    this.addresses.delete(id)
    if (counter.windowStartMs + timeWindow > now) this.onEvict()
  }
}
