// Token budgets and concurrency limits per key: a stream starts only while its key's budgets have room for its
// reservation, and once it ends, whatever the outcome, it is charged the tokens Gemini reported. The books live in
// Redis when one is given (every instance shares them) and in process memory otherwise.

import { randomUUID } from 'node:crypto'
import type { OutgoingHttpHeaders } from 'node:http'
import fp from 'fastify-plugin'
import promClient from '@prometheus-io/client'
import type { Redis } from 'ioredis'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { GenerationRequest } from '../gemini/types.js'
import { hasBudget, type KeyPolicy } from '../schemas/key-policy.js'
import { refusals } from '../schemas/refusals.js'
import { callerOf, type Caller } from './auth.js'
import { modelId } from './models.js'
import type { StreamRecorder } from './metrics.js'
import { need, provide } from './services.js'
import { throttledWarn, type RedisErrorPolicy } from './rate-limit.js'
import { isRedisOption, redisFor } from './rate-limit-redis-store.js'
import { DAY_MS, DEFAULT_RETENTION_DAYS, HOUR_MS, MINUTE_MS, MemoryBudgetStore, windowAt, type AdmissionRefusal, type BudgetBooks, type BudgetStore, type BudgetWindow, type HourOfUsage } from './key-budgets-store.js'
import { RedisBudgetStore } from './key-budgets-redis-store.js'
import type { Prices } from './prices.js'
import { positiveInteger } from './option-checks.js'

export interface KeyBudgetsOptions {
  /** A `redis://` URL (the plugin owns that client) or an ioredis client owned by the caller; unset: process memory. */
  redis?: string | Redis | undefined
  /** What a stream gets when Redis cannot be reached: `open` starts it uncounted, `closed` answers 503. Default `open`. */
  onRedisError?: RedisErrorPolicy | undefined
  /** Prefix of the Redis keys. Default `amrikyy-budget:`. */
  nameSpace?: string | undefined
  /** How long a stream's slot and reservation outlive the last sign of life of the instance running it. Default 30 s. */
  leaseMs?: number | undefined
  /** The clock windows are measured on, in milliseconds. Default `Date.now`. */
  now?: (() => number) | undefined
  /** Days each key's hourly usage record is kept (GET /admin/usage). Default 30. */
  retentionDays?: number | undefined
  /** The operator's prices, which a key's `usdPerDay` is spent in; without them no key may have one. */
  prices?: Prices | undefined
}

export const DEFAULT_BUDGET_NAMESPACE = 'amrikyy-budget:'
export const DEFAULT_LEASE_MS = 30_000
/** Output reserved for a request that sets no maxOutputTokens, neither itself nor through its key's policy. */
export const DEFAULT_OUTPUT_RESERVATION = 8192
/** What Gemini counts for an image, and what an inline file of any kind is reserved at. */
const INLINE_FILE_TOKENS = 258
/** The estimate takes a token for every 4 bytes of text: English runs about 4 characters a token. */
const BYTES_PER_TOKEN = 4

/** What a stream asks of its key's budgets. */
export interface TokenAsk {
  /** The prompt's estimated tokens (promptEstimate). */
  promptTokens: number
  /** The output cap sent to Gemini, if any. */
  maxOutputTokens: number | undefined
}

/** A stream's place in its key's books; `charging` makes the stream's end settle it. */
export interface Admission {
  charging: (recorder: StreamRecorder) => StreamRecorder
}

/** One token budget of a key as /api/usage shows it. */
export interface BudgetUsage {
  limit: number | null
  /** Tokens charged in the current window (what Gemini reported for streams that ended). */
  used: number
  /** Tokens held by streams still running, settled against their real usage when they end. */
  reserved: number
  remaining: number | null
  /** Seconds until the window ends. */
  resetSeconds: number
}

export interface KeyUsage {
  key: string
  policy: KeyPolicy
  tokensPerMinute: BudgetUsage
  tokensPerDay: BudgetUsage
  /** In US dollars; present only with a price table. */
  usdPerDay?: BudgetUsage
  concurrentStreams: { limit: number | null, open: number }
}

export interface KeyBudgets {
  /** The caller's limits, what it used in the current windows and what remains. */
  usage: (caller: Caller) => Promise<KeyUsage>
  /** A key's hourly usage record between two times (milliseconds), the hours with any request only. */
  hours: (key: string, fromMs: number, toMs: number) => Promise<HourOfUsage[]>
  /** How far back the hourly record goes, in milliseconds. */
  readonly retentionMs: number
  /** Whether there is a price table, which a key's usdPerDay needs. */
  readonly priced: boolean
  /**
   * Admits a stream of the request's caller or throws the 429 (or, failing closed, the 503) that refuses it. Sets the
   * `x-ratelimit-*-tokens` headers on the reply of a key with a token budget, in both cases. `ask` is called only
   * for a key with a budget, so that other keys' requests are never estimated.
   */
  admit: (request: FastifyRequest, reply: FastifyReply, model: string, ask: () => TokenAsk) => Promise<Admission>
}

declare module './services.js' {
  interface GatewayServices {
    budgets?: KeyBudgets
  }
}

const UNCOUNTED: Admission = { charging: recorder => recorder }

/**
 * A request's estimated prompt tokens: a token per 4 bytes of its text, wherever it is (prompt, system, history,
 * tool declarations, a forwarded Gemini body), and 258 per inline file (a `data` field, never read as text).
 */
export function promptEstimate (request: unknown): number {
  let bytes = 0
  let files = 0
  const pending: unknown[] = [request]
  while (pending.length > 0) {
    const value = pending.pop()
    if (typeof value === 'string') bytes += Buffer.byteLength(value)
    else if (Array.isArray(value)) pending.push(...value)
    else if (typeof value === 'object' && value !== null) {
      for (const [name, field] of Object.entries(value)) {
        if (name === 'data' && typeof field === 'string') files++
        else pending.push(field)
      }
    }
  }
  return Math.ceil(bytes / BYTES_PER_TOKEN) + files * INLINE_FILE_TOKENS
}

/** The output cap of a request under its key's: the smaller one, or whichever is set. */
export function cappedOutput (asked: number | undefined, cap: number | undefined): number | undefined {
  if (cap === undefined) return asked
  return asked === undefined ? cap : Math.min(asked, cap)
}

/** The generation with its output cap lowered to the key's `maxOutputTokens`, or set to it. */
export function withOutputCap (generation: GenerationRequest, cap: number | undefined): GenerationRequest {
  if (cap === undefined) return generation
  return { ...generation, options: { ...generation.options, maxOutputTokens: cappedOutput(generation.options?.maxOutputTokens, cap) } }
}

interface TokenBudget {
  name: 'tokensPerMinute' | 'tokensPerDay'
  limit: number
  remaining: number
  resetMs: number
}

/** What a budget has left once `reserve` more is held. */
function remainingOf (limit: number, spent: BudgetBooks['minute'], reserve = 0): number {
  return Math.max(0, limit - spent.charged - spent.reserved - reserve)
}

/** A key's usdPerDay in the books' unit, millionths of a dollar. */
function microsPerDayOf (policy: KeyPolicy): number | undefined {
  return policy.usdPerDay === undefined ? undefined : Math.round(policy.usdPerDay * 1e6)
}

/** The key's token budgets after `reserve`; the one with the least room first, since it refuses first. */
function tokenBudgets (policy: KeyPolicy, books: BudgetBooks, reserve: number, window: BudgetWindow, nowMs: number): TokenBudget[] {
  const budgets: TokenBudget[] = []
  const add = (name: TokenBudget['name'], limit: number | undefined, spent: BudgetBooks['minute'], endMs: number): void => {
    if (limit === undefined) return
    budgets.push({ name, limit, remaining: remainingOf(limit, spent, reserve), resetMs: endMs - nowMs })
  }
  add('tokensPerMinute', policy.tokensPerMinute, books.minute, (window.minute + 1) * MINUTE_MS)
  add('tokensPerDay', policy.tokensPerDay, books.day, (window.day + 1) * DAY_MS)
  return budgets.sort((a, b) => a.remaining - b.remaining)
}

/** A budget of millionths of a dollar in dollars. */
function dollars (micros: BudgetUsage): BudgetUsage {
  const usd = (value: number | null): number | null => value === null ? null : value / 1e6
  return { ...micros, limit: usd(micros.limit), used: micros.used / 1e6, reserved: micros.reserved / 1e6, remaining: usd(micros.remaining) }
}

function tokenHeaders (budget: TokenBudget | undefined): OutgoingHttpHeaders {
  if (budget === undefined) return {}
  return {
    'x-ratelimit-limit-tokens': String(budget.limit),
    'x-ratelimit-remaining-tokens': String(budget.remaining),
    'x-ratelimit-reset-tokens': String(Math.ceil(budget.resetMs / 1000))
  }
}

export default fp<KeyBudgetsOptions>(async function keyBudgetsPlugin (app, options) {
  const { onRedisError = 'open', nameSpace = DEFAULT_BUDGET_NAMESPACE, now = Date.now } = options
  if (onRedisError !== 'open' && onRedisError !== 'closed') throw new Error('key-budgets: option "onRedisError" must be "open" or "closed"')
  if (typeof nameSpace !== 'string' || nameSpace === '') throw new Error('key-budgets: option "nameSpace" must be a non-empty string')
  const leaseMs = positiveInteger('key-budgets', 'leaseMs', options.leaseMs, DEFAULT_LEASE_MS)
  const { prices } = options
  const retentionDays = positiveInteger('key-budgets', 'retentionDays', options.retentionDays, DEFAULT_RETENTION_DAYS)
  const retentionMs = retentionDays * DAY_MS
  const metrics = need(app, 'metrics', 'amrikyy-metrics')
  const storeErrors = new promClient.Counter({
    name: 'amrikyy_key_budget_store_errors_total',
    help: 'Budget checks and charges that could not reach Redis (streams started uncounted when failing open, answered 503 when failing closed)',
    registers: [metrics.registry]
  })
  const warnFailure = throttledWarn(app.log, 5000)
  const consequence = onRedisError === 'open' ? 'streams start uncounted until it answers' : 'streams are refused with 503 until it answers'

  let store: BudgetStore
  if (options.redis === undefined) {
    store = new MemoryBudgetStore(retentionDays * 24)
  } else {
    if (!isRedisOption(options.redis)) throw new Error('key-budgets: option "redis" must be a redis:// or rediss:// URL or an ioredis client')
    const redis = await redisFor(app, options.redis, error => { warnFailure(error, `key budgets: Redis is unreachable; ${consequence}`) })
    store = new RedisBudgetStore(redis, nameSpace, leaseMs, now, error => {
      storeErrors.inc()
      warnFailure(error, `key budgets: a stream could not be counted in Redis; ${consequence}`)
      return error instanceof Error ? error : new Error(String(error))
    }, retentionMs)
  }

  // The leases of the streams running here, refreshed well before they expire.
  const open = new Map<string, string>()
  const refresher = setInterval(() => {
    store.refresh([...open].map(([leaseId, key]) => ({ key, leaseId }))).catch(() => {})
  }, Math.max(1, Math.floor(leaseMs / 3)))
  refresher.unref()
  app.addHook('onClose', async () => { clearInterval(refresher) })

  /** Millionths of a dollar, the unit of the books: whole numbers, which Redis counts exactly. */
  const microsOf = (model: string, usage: Parameters<Prices['costOf']>[1]): number => Math.round((prices?.costOf(model, usage) ?? 0) * 1e6)

  /** An admission whose stream's end charges its tokens to `window` and gives up its lease, if it holds one. */
  function charged (key: string, model: string, leaseId: string | undefined, window: BudgetWindow): Admission {
    const lease = leaseId ?? ''
    if (leaseId !== undefined) open.set(leaseId, key)
    return {
      charging: recorder => {
        let ended = false
        return {
          chunkSent: recorder.chunkSent,
          upstreamError: recorder.upstreamError,
          fellBack: recorder.fellBack,
          end (outcome, usage) {
            recorder.end(outcome, usage)
            if (ended) return
            ended = true
            if (leaseId !== undefined) open.delete(leaseId)
            store.settle(key, lease, window, {
              outcome,
              total: usage?.totalTokens ?? 0,
              prompt: usage?.promptTokens ?? 0,
              completion: usage?.completionTokens ?? 0,
              thoughts: usage?.thoughtsTokens ?? 0,
              micros: usage === undefined ? 0 : microsOf(model, usage)
            }).catch(() => {})
          }
        }
      }
    }
  }

  function refusalFor (why: AdmissionRefusal, policy: KeyPolicy, budgets: TokenBudget[], nowMs: number): Error {
    if (why === 'concurrency') {
      return refusals.tooManyStreams(policy.maxConcurrentStreams ?? 0, { 'retry-after': '1', ...tokenHeaders(budgets[0]) })
    }
    if (why === 'usdPerDay') {
      const untilMidnight = String(Math.ceil(((windowAt(nowMs).day + 1) * DAY_MS - nowMs) / 1000))
      return refusals.spendingLimitExceeded(policy.usdPerDay ?? 0, { 'retry-after': untilMidnight, ...tokenHeaders(budgets[0]) })
    }
    const refusing = budgets.find(budget => budget.name === why) ?? budgets[0]
    const retryAfter = String(Math.max(1, Math.ceil((refusing?.resetMs ?? 1000) / 1000)))
    return refusals.tokenBudgetExceeded(why, refusing?.limit ?? 0, { 'retry-after': retryAfter, ...tokenHeaders(refusing) })
  }

  const budgets: KeyBudgets = {
    retentionMs,
    priced: prices !== undefined,
    async hours (key, fromMs, toMs) {
      const oldest = Math.floor((now() - retentionMs) / HOUR_MS) + 1
      return await store.hours(key, Math.max(oldest, Math.floor(fromMs / HOUR_MS)), Math.floor(toMs / HOUR_MS))
    },
    async usage (caller) {
      const nowMs = now()
      const window = windowAt(nowMs)
      const books = await store.books(caller.id, window)
      const { policy } = caller
      const budget = (limit: number | undefined, spent: BudgetBooks['minute'], endMs: number): BudgetUsage => ({
        limit: limit ?? null,
        used: spent.charged,
        reserved: spent.reserved,
        remaining: limit === undefined ? null : remainingOf(limit, spent),
        resetSeconds: Math.ceil((endMs - nowMs) / 1000)
      })
      return {
        key: caller.id,
        policy,
        tokensPerMinute: budget(policy.tokensPerMinute, books.minute, (window.minute + 1) * MINUTE_MS),
        tokensPerDay: budget(policy.tokensPerDay, books.day, (window.day + 1) * DAY_MS),
        ...(prices === undefined ? {} : { usdPerDay: dollars(budget(microsPerDayOf(policy), books.cost, (window.day + 1) * DAY_MS)) }),
        concurrentStreams: { limit: policy.maxConcurrentStreams ?? null, open: books.openStreams }
      }
    },
    async admit (request, reply, model, ask) {
      const caller = callerOf(request)
      if (caller === null) return UNCOUNTED
      const { policy } = caller
      const nowMs = now()
      const window = windowAt(nowMs)
      // A key without a budget is not checked, only charged at the end, so that its usage can still be told.
      if (!hasBudget(policy)) return charged(caller.id, model, undefined, window)
      if (policy.usdPerDay !== undefined && prices?.priceOf(model) === undefined) throw refusals.unpricedModel(modelId(model))
      const leaseId = randomUUID()
      const { promptTokens, maxOutputTokens } = ask()
      const output = maxOutputTokens ?? DEFAULT_OUTPUT_RESERVATION
      const reserve = promptTokens + output
      let answer
      try {
        answer = await store.admit({
          key: caller.id,
          leaseId,
          tokensPerMinute: policy.tokensPerMinute,
          tokensPerDay: policy.tokensPerDay,
          maxConcurrentStreams: policy.maxConcurrentStreams,
          microsPerDay: microsPerDayOf(policy),
          reserve,
          reserveMicros: microsOf(model, { promptTokens, completionTokens: output }),
          window
        })
      } catch (error) {
        if (onRedisError === 'closed') throw refusals.budgetsUnavailable(error)
        return UNCOUNTED
      }
      if (answer.refusal !== undefined) {
        metrics.rateLimited()
        metrics.keyRefused(caller.id)
        store.refused(caller.id, window).catch(() => {})
        throw refusalFor(answer.refusal, policy, tokenBudgets(policy, answer.books, 0, window, nowMs), nowMs)
      }
      reply.headers(tokenHeaders(tokenBudgets(policy, answer.books, reserve, window, nowMs)[0]))
      return charged(caller.id, model, leaseId, window)
    }
  }
  provide(app, 'budgets', budgets)
}, { name: 'amrikyy-key-budgets', fastify: '5.x', dependencies: ['amrikyy-auth', 'amrikyy-metrics'] })
