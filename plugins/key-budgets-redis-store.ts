import type { Redis } from 'ioredis'
import { DAY_MS, HOUR_FIELDS, MINUTE_MS, emptyHour, type AdmissionAnswer, type AdmissionAsk, type AdmissionRefusal, type BudgetBooks, type BudgetStore, type BudgetWindow, type HourOfUsage, type Spend } from './key-budgets-store.js'

const ADMIT_COMMAND = 'amrikyyBudgetAdmit'
const SETTLE_COMMAND = 'amrikyyBudgetSettle'

// Both scripts touch only one key's keys, which share a {hash tag}, so they also run on a Redis Cluster.
// KEYS: the key's leases (sorted set: lease id → expiry ms), its reservations (hash: lease id →
// "minute:day:tokens:micros"), its tokens charged in the ask's minute and in its day, its cost charged in the day.

// One round trip, atomic: forget the leases of instances that died, add up what the open streams reserved in
// these windows, apply the rule of key-budgets-store.ts's refusalOf, and take a lease when it passes.
const ADMIT_SCRIPT = `
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(expired))
end
local minute, day = ARGV[4], ARGV[5]
local reservedMinute, reservedDay, reservedCost = 0, 0, 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 2, #entries, 2 do
  local m, d, tokens, micros = string.match(entries[i], '^(%d+):(%d+):(%d+):(%d+)$')
  if m == minute then reservedMinute = reservedMinute + tonumber(tokens) end
  if d == day then
    reservedDay = reservedDay + tonumber(tokens)
    reservedCost = reservedCost + tonumber(micros)
  end
end
local chargedMinute = tonumber(redis.call('GET', KEYS[3]) or '0')
local chargedDay = tonumber(redis.call('GET', KEYS[4]) or '0')
local chargedCost = tonumber(redis.call('GET', KEYS[5]) or '0')
local open = redis.call('ZCARD', KEYS[1])
local reserve, reserveMicros = tonumber(ARGV[6]), tonumber(ARGV[11])
local perMinute, perDay, concurrent, microsPerDay = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local refusal = ''
if concurrent > 0 and open >= concurrent then
  refusal = 'concurrency'
elseif perMinute > 0 and chargedMinute + reservedMinute + math.min(reserve, perMinute) > perMinute then
  refusal = 'tokensPerMinute'
elseif perDay > 0 and chargedDay + reservedDay + math.min(reserve, perDay) > perDay then
  refusal = 'tokensPerDay'
elseif microsPerDay > 0 and chargedCost + reservedCost + math.min(reserveMicros, microsPerDay) > microsPerDay then
  refusal = 'usdPerDay'
end
if refusal == '' then
  local leaseMs = tonumber(ARGV[2])
  redis.call('ZADD', KEYS[1], now + leaseMs, ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[3], minute .. ':' .. day .. ':' .. reserve .. ':' .. reserveMicros)
  redis.call('PEXPIRE', KEYS[1], leaseMs * 2)
  redis.call('PEXPIRE', KEYS[2], leaseMs * 2)
end
return { refusal, chargedMinute, reservedMinute, chargedDay, reservedDay, open, chargedCost, reservedCost }
`

// Ends the lease, charges the windows it was admitted in (each count lives a little past its window; KEYS[6] is the
// day's cost) and adds the stream to its hour's record (KEYS[5], kept for the retention).
const SETTLE_SCRIPT = `
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  redis.call('INCRBY', KEYS[3], tokens)
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  redis.call('INCRBY', KEYS[4], tokens)
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end
redis.call('HINCRBY', KEYS[5], 'requests', 1)
redis.call('HINCRBY', KEYS[5], ARGV[6], 1)
redis.call('HINCRBY', KEYS[5], 'prompt', ARGV[7])
redis.call('HINCRBY', KEYS[5], 'completion', ARGV[8])
redis.call('HINCRBY', KEYS[5], 'thoughts', ARGV[9])
redis.call('PEXPIRE', KEYS[5], ARGV[5])
local micros = tonumber(ARGV[10])
if micros > 0 then
  redis.call('INCRBY', KEYS[6], micros)
  redis.call('PEXPIRE', KEYS[6], ARGV[4])
end
return 1
`

interface BudgetRedis {
  [ADMIT_COMMAND]: (...args: Array<string | number>) => Promise<[string, number, number, number, number, number, number, number]>
  [SETTLE_COMMAND]: (...args: Array<string | number>) => Promise<number>
}

/** How long a window's count outlives the window: long enough for any late settle of a stream admitted in it. */
const MINUTE_COUNT_TTL_MS = 2 * MINUTE_MS
const DAY_COUNT_TTL_MS = 2 * DAY_MS

/**
 * The books in Redis, shared by every instance pointed at it. Every lease expires `leaseMs` after its last refresh,
 * so the slots and reservations of a crashed instance come free by themselves. A failure goes to `onFailure`,
 * whose error is what the plugin sees.
 */
export class RedisBudgetStore implements BudgetStore {
  private readonly commands: BudgetRedis

  constructor (
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly leaseMs: number,
    private readonly now: () => number,
    private readonly onFailure: (error: unknown) => Error,
    private readonly retentionMs: number
  ) {
    const commands = redis as unknown as Partial<BudgetRedis>
    if (typeof commands[ADMIT_COMMAND] !== 'function') redis.defineCommand(ADMIT_COMMAND, { numberOfKeys: 5, lua: ADMIT_SCRIPT })
    if (typeof commands[SETTLE_COMMAND] !== 'function') redis.defineCommand(SETTLE_COMMAND, { numberOfKeys: 6, lua: SETTLE_SCRIPT })
    this.commands = redis as unknown as BudgetRedis
  }

  private keysOf (key: string, window: BudgetWindow): [string, string, string, string] {
    const base = `${this.prefix}{${key}}:`
    return [`${base}leases`, `${base}reserved`, `${base}m:${window.minute}`, `${base}d:${window.day}`]
  }

  private costKey (key: string, window: BudgetWindow): string {
    return `${this.prefix}{${key}}:usd:d:${window.day}`
  }

  async admit (ask: AdmissionAsk): Promise<AdmissionAnswer> {
    try {
      const [refusal, chargedMinute, reservedMinute, chargedDay, reservedDay, open, chargedCost, reservedCost] = await this.commands[ADMIT_COMMAND](
        ...this.keysOf(ask.key, ask.window), this.costKey(ask.key, ask.window),
        this.now(), this.leaseMs, ask.leaseId, ask.window.minute, ask.window.day, ask.reserve,
        ask.tokensPerMinute ?? 0, ask.tokensPerDay ?? 0, ask.maxConcurrentStreams ?? 0, ask.microsPerDay ?? 0, Math.round(ask.reserveMicros)
      )
      return {
        refusal: refusal === '' ? undefined : refusal as AdmissionRefusal,
        books: {
          minute: { charged: chargedMinute, reserved: reservedMinute },
          day: { charged: chargedDay, reserved: reservedDay },
          cost: { charged: chargedCost, reserved: reservedCost },
          openStreams: open
        }
      }
    } catch (error) {
      throw this.onFailure(error)
    }
  }

  private hourKey (key: string, hour: number): string {
    return `${this.prefix}{${key}}:h:${hour}`
  }

  async settle (key: string, leaseId: string, window: BudgetWindow, spend: Spend): Promise<void> {
    const count = (value: number): number => Math.max(0, Math.round(value))
    try {
      await this.commands[SETTLE_COMMAND](
        ...this.keysOf(key, window), this.hourKey(key, window.hour), this.costKey(key, window),
        leaseId, count(spend.total), MINUTE_COUNT_TTL_MS, DAY_COUNT_TTL_MS, this.retentionMs,
        spend.outcome, count(spend.prompt), count(spend.completion), count(spend.thoughts), count(spend.micros)
      )
    } catch (error) {
      throw this.onFailure(error)
    }
  }

  async refused (key: string, window: BudgetWindow): Promise<void> {
    const hour = this.hourKey(key, window.hour)
    try {
      await this.redis.multi().hincrby(hour, 'requests', 1).hincrby(hour, 'refused', 1).pexpire(hour, this.retentionMs).exec()
    } catch (error) {
      throw this.onFailure(error)
    }
  }

  async hours (key: string, fromHour: number, toHour: number): Promise<HourOfUsage[]> {
    const pipeline = this.redis.pipeline()
    for (let hour = fromHour; hour <= toHour; hour++) pipeline.hgetall(this.hourKey(key, hour))
    let replies: Array<[Error | null, unknown]> | null
    try {
      replies = await pipeline.exec()
    } catch (error) {
      throw this.onFailure(error)
    }
    return (replies ?? []).flatMap(([error, fields], offset) => {
      if (error !== null) throw this.onFailure(error)
      const stored = fields as Record<string, string>
      if (Object.keys(stored).length === 0) return []
      const hour = emptyHour(fromHour + offset)
      for (const field of HOUR_FIELDS) hour[field] = Number(stored[field] ?? 0)
      return [hour]
    })
  }

  async refresh (leases: ReadonlyArray<{ key: string, leaseId: string }>): Promise<void> {
    if (leases.length === 0) return
    const expiry = this.now() + this.leaseMs
    const pipeline = this.redis.pipeline()
    for (const { key, leaseId } of leases) {
      const base = `${this.prefix}{${key}}:`
      // XX: a lease that was settled meanwhile, or already given up as expired, is not brought back.
      pipeline.zadd(`${base}leases`, 'XX', expiry, leaseId)
      pipeline.pexpire(`${base}leases`, this.leaseMs * 2)
      pipeline.pexpire(`${base}reserved`, this.leaseMs * 2)
    }
    try {
      await pipeline.exec()
    } catch (error) {
      throw this.onFailure(error)
    }
  }

  async books (key: string, window: BudgetWindow): Promise<BudgetBooks> {
    const [leases, reserved, minute, day] = this.keysOf(key, window)
    try {
      const now = this.now()
      // Only live leases count: a dead instance's reservations stay in the hash until the next admission clears them.
      const [[, live], [, entries], [, chargedMinute], [, chargedDay], [, chargedCost]] = (await this.redis.multi()
        .zrangebyscore(leases, `(${now}`, '+inf')
        .hgetall(reserved)
        .get(minute)
        .get(day)
        .get(this.costKey(key, window))
        .exec()) as Array<[Error | null, unknown]> as [[null, string[]], [null, Record<string, string>], [null, string | null], [null, string | null], [null, string | null]]
      const books: BudgetBooks = {
        minute: { charged: Number(chargedMinute ?? 0), reserved: 0 },
        day: { charged: Number(chargedDay ?? 0), reserved: 0 },
        cost: { charged: Number(chargedCost ?? 0), reserved: 0 },
        openStreams: live.length
      }
      for (const leaseId of live) {
        const entry = entries[leaseId]
        if (entry === undefined) continue
        const [entryMinute, entryDay, tokens, micros] = entry.split(':').map(Number)
        if (entryMinute === window.minute) books.minute.reserved += tokens ?? 0
        if (entryDay === window.day) {
          books.day.reserved += tokens ?? 0
          books.cost.reserved += micros ?? 0
        }
      }
      return books
    } catch (error) {
      throw this.onFailure(error)
    }
  }
}
