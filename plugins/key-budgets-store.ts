// What the key-budgets plugin asks of a store, and the store that keeps everything in this process's memory.
// The Redis store (key-budgets-redis-store.ts) keeps the same books for every instance at once.

/** One admission check of a key: its limits (undefined: none), the stream's reservation and where it counts. */
export interface AdmissionAsk {
  key: string
  /** The stream's own id: its lease in the concurrency count and its reservation. */
  leaseId: string
  tokensPerMinute: number | undefined
  tokensPerDay: number | undefined
  maxConcurrentStreams: number | undefined
  /** Millionths of a US dollar per UTC day. */
  microsPerDay: number | undefined
  /** Tokens reserved while the stream runs: its prompt estimate and output cap, clamped to each limit. */
  reserve: number
  /** Its cost reserved, in millionths of a dollar, at the model's price (0 without one). */
  reserveMicros: number
  window: BudgetWindow
}

/** The calendar minute, hour and UTC day a stream is admitted in; its tokens are charged to these, whenever it ends. */
export interface BudgetWindow {
  minute: number
  hour: number
  day: number
}

export type SpendOutcome = 'completed' | 'failed' | 'cancelled'

/** What one ended stream spent, for the books and the hourly usage record. */
export interface Spend {
  outcome: SpendOutcome
  /** What the budgets are charged: Gemini's totalTokenCount. */
  total: number
  prompt: number
  completion: number
  /** Of completion, those spent thinking. */
  thoughts: number
  /** Its cost in millionths of a dollar, 0 without a price. */
  micros: number
}

/** One key's usage in one hour, as GET /admin/usage shows it. */
export interface HourOfUsage {
  hour: number
  requests: number
  prompt: number
  completion: number
  thoughts: number
  completed: number
  failed: number
  cancelled: number
  refused: number
}

export const HOUR_FIELDS = ['requests', 'prompt', 'completion', 'thoughts', 'completed', 'failed', 'cancelled', 'refused'] as const

export function emptyHour (hour: number): HourOfUsage {
  return { hour, requests: 0, prompt: 0, completion: 0, thoughts: 0, completed: 0, failed: 0, cancelled: 0, refused: 0 }
}

/** A key's books in the windows of an admission: tokens charged, tokens reserved by open streams, streams open. */
export interface BudgetBooks {
  minute: { charged: number, reserved: number }
  day: { charged: number, reserved: number }
  /** Millionths of a dollar in the day. */
  cost: { charged: number, reserved: number }
  openStreams: number
}

export type AdmissionRefusal = 'concurrency' | 'tokensPerMinute' | 'tokensPerDay' | 'usdPerDay'

export interface AdmissionAnswer {
  /** Why the stream may not start, or undefined when it was admitted (and holds a lease). */
  refusal: AdmissionRefusal | undefined
  /** The books as they were before this stream's own reservation. */
  books: BudgetBooks
}

export interface BudgetStore {
  admit: (ask: AdmissionAsk) => Promise<AdmissionAnswer>
  /** Ends a lease (if `leaseId` names one), charges the spend's total to the windows it was admitted in and records its hour. */
  settle: (key: string, leaseId: string, window: BudgetWindow, spend: Spend) => Promise<void>
  /** Records a stream its budgets refused, in its hour. */
  refused: (key: string, window: BudgetWindow) => Promise<void>
  /** The key's recorded hours from `fromHour` to `toHour` (hour indexes since the epoch, both included) that saw any request. */
  hours: (key: string, fromHour: number, toHour: number) => Promise<HourOfUsage[]>
  /** Extends the leases of streams still running here, so that only a crashed instance's leases expire. */
  refresh: (leases: ReadonlyArray<{ key: string, leaseId: string }>) => Promise<void>
  /** The books of a key in a window, without admitting anything. */
  books: (key: string, window: BudgetWindow) => Promise<BudgetBooks>
}

export const MINUTE_MS = 60_000
export const HOUR_MS = 3_600_000
export const DAY_MS = 86_400_000
export const DEFAULT_RETENTION_DAYS = 30

export function windowAt (nowMs: number): BudgetWindow {
  return { minute: Math.floor(nowMs / MINUTE_MS), hour: Math.floor(nowMs / HOUR_MS), day: Math.floor(nowMs / DAY_MS) }
}

/**
 * The refusal of an ask given the books before it, the same rule in both stores: the open streams against the
 * concurrency limit, then in each window the tokens charged and reserved plus this stream's reservation (at most
 * the whole limit, so a stream that alone asks for more than the budget still runs in an empty window).
 */
export function refusalOf (ask: AdmissionAsk, books: BudgetBooks): AdmissionRefusal | undefined {
  if (ask.maxConcurrentStreams !== undefined && books.openStreams >= ask.maxConcurrentStreams) return 'concurrency'
  const over = (limit: number | undefined, spent: { charged: number, reserved: number }, reserve: number): boolean =>
    limit !== undefined && spent.charged + spent.reserved + Math.min(reserve, limit) > limit
  if (over(ask.tokensPerMinute, books.minute, ask.reserve)) return 'tokensPerMinute'
  if (over(ask.tokensPerDay, books.day, ask.reserve)) return 'tokensPerDay'
  if (over(ask.microsPerDay, books.cost, ask.reserveMicros)) return 'usdPerDay'
  return undefined
}

interface Lease {
  window: BudgetWindow
  reserve: number
  reserveMicros: number
}

interface Charged {
  /** The window's index: a count of an earlier window is read as zero. */
  index: number
  tokens: number
}

/**
 * The books in process memory: one instance only. Leases need no expiry here, since they die with the process
 * that holds them; every key that was ever admitted keeps two counters, its open leases and its hours within the
 * retention, so memory is bounded by the keys and the retention.
 */
export class MemoryBudgetStore implements BudgetStore {
  private readonly leases = new Map<string, Map<string, Lease>>()
  private readonly minutes = new Map<string, Charged>()
  private readonly days = new Map<string, Charged>()
  private readonly costs = new Map<string, Charged>()
  private readonly hourly = new Map<string, Map<number, HourOfUsage>>()

  constructor (private readonly retentionHours: number = DEFAULT_RETENTION_DAYS * 24) {}

  async admit (ask: AdmissionAsk): Promise<AdmissionAnswer> {
    const books = this.booksOf(ask.key, ask.window)
    const refusal = refusalOf(ask, books)
    if (refusal === undefined) {
      let open = this.leases.get(ask.key)
      if (open === undefined) this.leases.set(ask.key, open = new Map())
      open.set(ask.leaseId, { window: ask.window, reserve: ask.reserve, reserveMicros: ask.reserveMicros })
    }
    return { refusal, books }
  }

  async settle (key: string, leaseId: string, window: BudgetWindow, spend: Spend): Promise<void> {
    const open = this.leases.get(key)
    open?.delete(leaseId)
    if (open?.size === 0) this.leases.delete(key)
    const hour = this.hourOf(key, window.hour)
    hour.requests++
    hour[spend.outcome]++
    hour.prompt += spend.prompt
    hour.completion += spend.completion
    hour.thoughts += spend.thoughts
    if (spend.micros > 0) this.charge(this.costs, key, window.day, spend.micros)
    if (spend.total <= 0) return
    this.charge(this.minutes, key, window.minute, spend.total)
    this.charge(this.days, key, window.day, spend.total)
  }

  async refused (key: string, window: BudgetWindow): Promise<void> {
    const hour = this.hourOf(key, window.hour)
    hour.requests++
    hour.refused++
  }

  async hours (key: string, fromHour: number, toHour: number): Promise<HourOfUsage[]> {
    const hours = [...this.hourly.get(key)?.values() ?? []].filter(hour => hour.hour >= fromHour && hour.hour <= toHour)
    return hours.sort((a, b) => a.hour - b.hour).map(hour => ({ ...hour }))
  }

  /** The key's record of an hour, made if need be; hours past the retention are dropped on the way. */
  private hourOf (key: string, index: number): HourOfUsage {
    let hours = this.hourly.get(key)
    if (hours === undefined) this.hourly.set(key, hours = new Map())
    let hour = hours.get(index)
    if (hour === undefined) {
      for (const old of hours.keys()) if (old <= index - this.retentionHours) hours.delete(old)
      hours.set(index, hour = emptyHour(index))
    }
    return hour
  }

  async refresh (): Promise<void> {}

  async books (key: string, window: BudgetWindow): Promise<BudgetBooks> {
    return this.booksOf(key, window)
  }

  private booksOf (key: string, window: BudgetWindow): BudgetBooks {
    const books: BudgetBooks = {
      minute: { charged: chargedIn(this.minutes.get(key), window.minute), reserved: 0 },
      day: { charged: chargedIn(this.days.get(key), window.day), reserved: 0 },
      cost: { charged: chargedIn(this.costs.get(key), window.day), reserved: 0 },
      openStreams: 0
    }
    for (const lease of this.leases.get(key)?.values() ?? []) {
      books.openStreams++
      if (lease.window.minute === window.minute) books.minute.reserved += lease.reserve
      if (lease.window.day === window.day) {
        books.day.reserved += lease.reserve
        books.cost.reserved += lease.reserveMicros
      }
    }
    return books
  }

  private charge (counters: Map<string, Charged>, key: string, index: number, tokens: number): void {
    const counter = counters.get(key)
    // A stream admitted in an earlier window than the one counted now does not reset the later count.
    if (counter !== undefined && counter.index > index) return
    counters.set(key, { index, tokens: chargedIn(counter, index) + tokens })
  }
}

function chargedIn (counter: Charged | undefined, index: number): number {
  return counter?.index === index ? counter.tokens : 0
}
