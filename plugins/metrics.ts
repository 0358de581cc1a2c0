import fp from 'fastify-plugin'
import fastifyMetricsModule from 'fastify-metrics'
import promClient, { type Counter, type Gauge, type Histogram, Registry } from '@prometheus-io/client'
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { ReportedUsage } from '../schemas/stream.js'
import { refusals } from '../schemas/refusals.js'
import { provide } from './services.js'
import type { Prices } from './prices.js'
import { modelId } from '../gemini/model-id.js'
import type { KeyState } from '../gemini/key-pool.js'
import type { CircuitState } from '../gemini/circuit-breaker.js'
// The auth plugin declares `request.amrikyy`, which this plugin reads when auth ran.
import type {} from './auth.js'
import { positiveInteger } from './option-checks.js'

export type StreamOutcome = 'completed' | 'failed' | 'cancelled'

export interface MetricsOptions {
  /** Path of the Prometheus text endpoint; null serves none (scrape `registry` yourself). Default `/api/metrics`. */
  endpoint?: string | null
  /** Registry the gateway's metrics live in. Default: a registry of its own, so several apps in one process never collide. */
  registry?: Registry
  /** Node process metrics (CPU, memory, event loop). Default true; turn off when the host already collects them into this registry. */
  defaultMetrics?: boolean
  /** Fastify route duration metrics. Default true. */
  routeMetrics?: boolean
  /** Requests to the endpoint must carry `Authorization: Bearer <token>` when set. */
  bearerToken?: string | undefined
  /** Distinct `agent` label values kept, first come first served, before new ones are counted as `other`. Default 100. */
  maxAgents?: number
  /** Agent names that always keep their own label; they take none of the `maxAgents` slots, so a flood cannot push them out. */
  agents?: readonly string[]
  /**
   * The only model ids labelled by name (a `models/` prefix is ignored); any other model is counted as `other` and
   * takes no slot, so names a caller makes up never push a real model out. Default `GEMINI_MODELS`; the gateway
   * adds its default model.
   */
  models?: readonly string[]
  /** Distinct `key` label values kept, first come first served, before new ones are counted as `other`. Default 100. */
  maxKeys?: number
  /** Key names that always keep their own label and take none of the `maxKeys` slots. The gateway passes its keys file's names. */
  keys?: readonly string[]
  /** The operator's prices: with them, amrikyy_cost_usd_total{key,model} counts what each key's streams cost. */
  prices?: Prices | undefined
  /**
   * The names of the pooled Gemini keys (GEMINI_API_KEYS): with them, upstream errors get a `key` label and
   * amrikyy_upstream_key_state{key} shows each key's state. Unset: one key, labels as before.
   */
  upstreamKeys?: readonly string[] | undefined
}

/** The models Gemini's model list names (and the bundled emulator serves): the default `models` label allow-list. */
export const GEMINI_MODELS: readonly string[] = ['gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.0-flash', 'gemini-2.0-flash-exp', 'gemini-2.0-flash-lite']

/** The wire format a stream was asked in: `/api/stream`, the OpenAI-compatible routes, or the Gemini passthrough. */
export type StreamApi = 'stream' | 'openai' | 'gemini'

export interface StreamLabels {
  /** Default `stream`. */
  api?: StreamApi | undefined
  agent?: string | undefined
  model: string
  /** The caller's key name (never the key); a stream without one is left out of the per-key metrics. */
  key?: string | undefined
}

/** Records one stream; `end` counts only its first call, so every stream lands in exactly one outcome. */
export interface StreamRecorder {
  chunkSent: () => void
  /** A failed upstream call of this stream (a retried one included), by HTTP status or failure kind, and pooled key. */
  upstreamError: (label: string, key?: string | undefined) => void
  end: (outcome: StreamOutcome, usage?: ReportedUsage) => void
  /** The stream's call moved from one model to its fallback (MODEL_FALLBACKS). */
  fellBack: (from: string, to: string) => void
}

export interface GatewayMetrics {
  registry: Registry
  beginStream: (labels: StreamLabels) => StreamRecorder
  upstreamError: (status: number | string, key?: string | undefined) => void
  /** A pooled Gemini key's state (GEMINI_API_KEYS), by its name or position. */
  upstreamKeyState: (key: string, state: KeyState) => void
  /** A circuit breaker's state, by Gemini key (name or position) and model. */
  circuitState: (key: string, model: string, state: CircuitState) => void
  rateLimited: () => void
  /** A stream of `key` refused by its token budget or concurrency limit (outcome `refused`). */
  keyRefused: (key: string) => void
  /** One call of the Gemini passthrough, by method and the HTTP status it was answered with. */
  geminiCall: (method: GeminiMethod, status: number) => void
  /** A reader picked up a resumable stream of `api` after a dropped connection. */
  resumed: (api: StreamApi) => void
}

/** The Gemini passthrough's methods, each its own `method` label of amrikyy_gemini_calls_total. */
export type GeminiMethod = 'streamGenerateContent' | 'generateContent' | 'countTokens' | 'models.list' | 'models.get' | 'unknown'

/**
 * Caps a label's cardinality: `reserved` values are always kept, and besides them the first `max` distinct values;
 * later ones become `other`.
 */
export class BoundedLabel {
  private readonly seen = new Set<string>()
  private readonly reserved: ReadonlySet<string>
  constructor (private readonly max: number, reserved: Iterable<string> = []) {
    this.reserved = new Set(reserved)
  }

  value (raw: string): string {
    if (this.reserved.has(raw) || this.seen.has(raw)) return raw
    if (this.seen.size >= this.max) return 'other'
    this.seen.add(raw)
    return raw
  }
}

/** A label that names only the values it was given; anything else is `other`. */
export class AllowedLabel {
  private readonly allowed: ReadonlySet<string>
  constructor (allowed: Iterable<string>) {
    this.allowed = new Set(allowed)
  }

  value (raw: string): string {
    return this.allowed.has(raw) ? raw : 'other'
  }
}

function stringList (name: string, value: readonly string[] | undefined, fallback: readonly string[]): readonly string[] {
  if (value === undefined) return fallback
  if (!Array.isArray(value) || !value.every(item => typeof item === 'string' && item !== '')) {
    throw new Error(`metrics: option "${name}" must be an array of non-empty strings`)
  }
  return value
}

// fastify-metrics is CommonJS with `exports.default`: imported from ESM, the plugin is one level down.
const fastifyMetrics = fastifyMetricsModule.default

const DURATION_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600]
const FIRST_CHUNK_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

declare module './services.js' {
  interface GatewayServices {
    metrics?: GatewayMetrics
  }
}

export default fp<MetricsOptions>(async function metricsPlugin (app, options) {
  const registry = options.registry ?? new Registry()
  const agents = new BoundedLabel(positiveInteger('metrics', 'maxAgents', options.maxAgents, 100), stringList('agents', options.agents, []))
  const models = new AllowedLabel(stringList('models', options.models, GEMINI_MODELS).map(modelId))
  const keys = new BoundedLabel(positiveInteger('metrics', 'maxKeys', options.maxKeys, 100), stringList('keys', options.keys, []))
  const endpoint = options.endpoint === undefined ? '/api/metrics' : options.endpoint
  const registers = [registry]
  const streamLabels = ['api', 'agent', 'model']

  const chunksSent: Counter = new promClient.Counter({ name: 'amrikyy_stream_chunks_sent_total', help: 'Chunk events written to clients', labelNames: streamLabels, registers })
  const outcomes: Record<StreamOutcome, Counter> = {
    completed: new promClient.Counter({ name: 'amrikyy_stream_sessions_completed_total', help: 'Streams that ended with a completion event', labelNames: streamLabels, registers }),
    failed: new promClient.Counter({ name: 'amrikyy_stream_sessions_failed_total', help: 'Streams that ended with an error (500 or error event)', labelNames: streamLabels, registers }),
    cancelled: new promClient.Counter({ name: 'amrikyy_stream_sessions_cancelled_total', help: 'Streams whose client disconnected before the end', labelNames: streamLabels, registers })
  }
  const active: Gauge = new promClient.Gauge({ name: 'amrikyy_active_streams', help: 'Streams in progress', labelNames: streamLabels, registers })
  const duration: Histogram = new promClient.Histogram({ name: 'amrikyy_stream_duration_seconds', help: 'Whole stream duration, by outcome', labelNames: [...streamLabels, 'outcome'], buckets: DURATION_BUCKETS, registers })
  const firstChunk: Histogram = new promClient.Histogram({ name: 'amrikyy_stream_time_to_first_chunk_seconds', help: 'Time from request to the first chunk event', labelNames: streamLabels, buckets: FIRST_CHUNK_BUCKETS, registers })
  const tokens: Counter = new promClient.Counter({ name: 'amrikyy_stream_tokens_total', help: 'Tokens Gemini reported for every stream, its last running total (failed and cancelled streams included)', labelNames: [...streamLabels, 'type'], registers })
  const keyTokens: Counter = new promClient.Counter({ name: 'amrikyy_key_tokens_total', help: 'Tokens Gemini reported per key name, on every outcome; thoughts (only when Gemini reports them) are part of completion, not added to it', labelNames: ['key', 'type'], registers })
  const keyRequests: Counter = new promClient.Counter({ name: 'amrikyy_key_requests_total', help: 'Streams per key name, by outcome; refused is a 429 of the key\'s token budget or concurrency limit', labelNames: ['key', 'outcome'], registers })
  const { prices } = options
  // A key's series, resolved once per key name (bounded by maxKeys): labels() hashes its arguments on every call.
  interface KeySeries { requests: Record<StreamOutcome | 'refused', promClient.Counter.Internal>, tokens: Record<'prompt' | 'completion' | 'thoughts', promClient.Counter.Internal> }
  const keySeries = new Map<string, KeySeries>()
  const seriesOf = (key: string): KeySeries => {
    let series = keySeries.get(key)
    if (series === undefined) {
      series = {
        requests: { completed: keyRequests.labels(key, 'completed'), failed: keyRequests.labels(key, 'failed'), cancelled: keyRequests.labels(key, 'cancelled'), refused: keyRequests.labels(key, 'refused') },
        tokens: { prompt: keyTokens.labels(key, 'prompt'), completion: keyTokens.labels(key, 'completion'), thoughts: keyTokens.labels(key, 'thoughts') }
      }
      keySeries.set(key, series)
    }
    return series
  }
  const cost: Counter | undefined = prices === undefined ? undefined : new promClient.Counter({ name: 'amrikyy_cost_usd_total', help: 'US dollars the streams of each key cost, at the price table\'s prices (MODEL_PRICES); a model without a price is not counted', labelNames: ['key', 'model'], registers })
  const fallbacks: Counter = new promClient.Counter({ name: 'amrikyy_model_fallbacks_total', help: 'Calls moved to a fallback model (MODEL_FALLBACKS) before their first chunk, by the model that failed and the one tried next', labelNames: ['from', 'to'], registers })
  const upstreamKeys = options.upstreamKeys ?? []
  const pooled = upstreamKeys.length > 1
  const upstreamErrors: Counter = new promClient.Counter({ name: 'amrikyy_upstream_errors_total', help: `Failed Gemini calls, by HTTP status or failure kind${pooled ? ', and the pooled key that failed' : ''}`, labelNames: pooled ? ['status', 'key'] : ['status'], registers })
  const keyStates: Gauge | undefined = pooled ? new promClient.Gauge({ name: 'amrikyy_upstream_key_state', help: 'Each pooled Gemini key\'s state: 0 serving, 1 resting after a 429, 2 out (401, 403 or an invalid key)', labelNames: ['key'], registers }) : undefined
  for (const name of upstreamKeys) keyStates?.labels(name).set(0)
  const KEY_STATE_VALUES: Record<KeyState, number> = { serving: 0, resting: 1, out: 2 }
  const circuits: Gauge = new promClient.Gauge({ name: 'amrikyy_circuit_state', help: 'Each circuit breaker (CIRCUIT_BREAKER_FAILURES) by Gemini key and model: 0 closed, 1 open (calls answered at once), 2 half-open (trial calls)', labelNames: ['key', 'model'], registers })
  const CIRCUIT_VALUES: Record<CircuitState, number> = { closed: 0, open: 1, 'half-open': 2 }
  const countUpstreamError = (status: string, key: string | undefined): void => {
    if (pooled) upstreamErrors.labels(status, key ?? 'none').inc()
    else upstreamErrors.labels(status).inc()
  }
  const rateLimited: Counter = new promClient.Counter({ name: 'amrikyy_rate_limited_total', help: 'Requests refused with 429', registers })
  const geminiCalls: Counter = new promClient.Counter({ name: 'amrikyy_gemini_calls_total', help: 'Calls of the Gemini passthrough (/gemini), by method and answer status; its streams are also counted by the stream metrics with api="gemini"', labelNames: ['method', 'status'], registers })
  const resumes: Counter = new promClient.Counter({ name: 'amrikyy_stream_resumes_total', help: 'Resumable streams picked up again after a dropped connection (GET /api/stream/{streamId}), by the API that started them', labelNames: ['api'], registers })
  const authFailures: Counter = new promClient.Counter({ name: 'amrikyy_auth_failures_total', help: 'Requests refused for a missing, invalid, expired or disabled API key', labelNames: ['reason'], registers })

  const metrics: GatewayMetrics = {
    registry,
    beginStream (labels) {
      const api = labels.api ?? 'stream'
      const agent = agents.value(labels.agent ?? 'unknown')
      const model = models.value(modelId(labels.model))
      const key = labels.key === undefined ? undefined : keys.value(labels.key)
      // Resolve label children once, so the per-chunk path is a plain increment.
      const chunks = chunksSent.labels(api, agent, model)
      const activeChild = active.labels(api, agent, model)
      const started = performance.now()
      let firstChunkSeen = false
      let ended = false
      activeChild.inc()
      return {
        chunkSent () {
          chunks.inc()
          if (!firstChunkSeen) {
            firstChunkSeen = true
            firstChunk.labels(api, agent, model).observe((performance.now() - started) / 1000)
          }
        },
        upstreamError (label, key) { countUpstreamError(label, key) },
        fellBack (from, to) { fallbacks.labels(models.value(from), models.value(to)).inc() },
        end (outcome, usage) {
          if (ended) return
          ended = true
          activeChild.dec()
          outcomes[outcome].labels(api, agent, model).inc()
          duration.labels(api, agent, model, outcome).observe((performance.now() - started) / 1000)
          if (usage !== undefined) {
            tokens.labels(api, agent, model, 'prompt').inc(usage.promptTokens)
            tokens.labels(api, agent, model, 'completion').inc(usage.completionTokens)
          }
          if (key === undefined) return
          const series = seriesOf(key)
          series.requests[outcome].inc()
          if (usage === undefined) return
          series.tokens.prompt.inc(usage.promptTokens)
          series.tokens.completion.inc(usage.completionTokens)
          if (usage.thoughtsTokens !== undefined) series.tokens.thoughts.inc(usage.thoughtsTokens)
          const usd = prices?.costOf(labels.model, usage)
          if (usd !== undefined && usd > 0) cost?.labels(key, model).inc(usd)
        }
      }
    },
    upstreamError (status, key) { countUpstreamError(String(status), key) },
    upstreamKeyState (key, state) { keyStates?.labels(key).set(KEY_STATE_VALUES[state]) },
    circuitState (key, model, state) { circuits.labels(key, models.value(modelId(model))).set(CIRCUIT_VALUES[state]) },
    rateLimited () { rateLimited.inc() },
    keyRefused (key) { seriesOf(keys.value(key)).requests.refused.inc() },
    geminiCall (method, status) { geminiCalls.labels(method, String(status)).inc() },
    resumed (api) { resumes.labels(api).inc() }
  }
  provide(app, 'metrics', metrics)

  // `authFailure` is set by the auth plugin when it runs; without it there is nothing to count.
  app.addHook('onResponse', async (request: FastifyRequest, reply: FastifyReply) => {
    const authFailure = request.amrikyy?.authFailure
    if (authFailure != null && (reply.statusCode === 401 || reply.statusCode === 403)) {
      authFailures.labels(authFailure).inc()
    }
  })

  // A host that already collects Node and route metrics into this registry keeps its own: a second
  // collector would throw on the duplicate names, and would time the gateway's routes twice.
  const defaultMetrics = (options.defaultMetrics ?? true) && registry.getSingleMetric('process_cpu_user_seconds_total') === undefined
  const routeMetrics = (options.routeMetrics ?? true) && registry.getSingleMetric('http_request_duration_seconds') === undefined
  if (defaultMetrics || routeMetrics) {
    await app.register(fastifyMetrics, {
      // A client whose `register` is our registry keeps fastify-metrics off the client library's global one.
      promClient: { ...promClient, register: registry },
      name: 'amrikyyFastifyMetrics',
      endpoint: null,
      defaultMetrics: { enabled: defaultMetrics, register: registry },
      routeMetrics: {
        enabled: routeMetrics,
        overrides: { histogram: { registers }, summary: { registers } }
      }
    })
  }
  if (endpoint !== null) await app.register(metricsEndpoint, { registry, path: endpoint, bearerToken: options.bearerToken })
}, { name: 'amrikyy-metrics', fastify: '5.x' })

export interface MetricsEndpointOptions {
  registry: Registry
  path: string
  bearerToken?: string | undefined
}

function digest (value: string): Buffer {
  return createHash('sha256').update(value).digest()
}

/** Serves a registry as Prometheus text; also usable on its own listener (METRICS_PORT). */
export const metricsEndpoint: FastifyPluginAsync<MetricsEndpointOptions> = async (app, { registry, path, bearerToken }) => {
  const expected = bearerToken === undefined || bearerToken === '' ? undefined : digest(`Bearer ${bearerToken}`)
  app.get(path, { logLevel: 'warn', exposeHeadRoute: false, config: { disableMetrics: true } }, async (request, reply) => {
    if (expected !== undefined && !timingSafeEqual(digest(request.headers.authorization ?? ''), expected)) {
      return await refusals.metricsToken().sendWith(reply)
    }
    return await reply.type(registry.contentType).send(await registry.metrics())
  })
}
