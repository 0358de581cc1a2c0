import { createRequire } from 'node:module'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import closeWithGrace from 'close-with-grace'
import { Registry } from '@prometheus-io/client'
import streamGateway from '../app.js'
import { GatewayLifecycle } from '../plugins/lifecycle.js'
import { metricsEndpoint } from '../plugins/metrics.js'
import requestIdPlugin, { genReqId } from '../plugins/request-id.js'
import openApiPlugin from '../plugins/openapi.js'
import connectionLimit from '../plugins/connection-limit.js'
import healthRoute from '../routes/health.js'
import playgroundRoute from '../routes/playground.js'
import { createRestGeminiClient } from '../gemini/rest-client.js'
import type { GeminiClientOptions } from '../gemini/types.js'
import { UpstreamError } from '../gemini/upstream-error.js'
import { createModelPolicy, type ModelsOptions } from '../plugins/models.js'
import { defaultKeyPolicyOf, fallbackChainsOf, modelsOptionsOf, splitList, trustProxyOf, type Env } from './env.js'
import { chooseKeys } from './keys.js'
import { loadPrices } from './prices.js'
import type { PriceTable } from '../plugins/prices.js'
import { chooseUpstream } from './upstream.js'

/** The price table, when one is given, as the gateway's option. */
async function pricesOf (env: Env): Promise<{ prices?: PriceTable }> {
  const prices = await loadPrices(env)
  return prices === undefined ? {} : { prices }
}

/** A URL with the value of its `key` query parameter (a caller's API key) replaced. */
export function withoutKey (url: string): string {
  return url.replace(/([?&]key=)[^&#]*/gi, '$1[redacted]')
}

// By the package's own name, so it resolves the same from dist/ and from the sources.
const { version: packageVersion } = createRequire(import.meta.url)('amrikyy-stream-gateway/package.json') as { version: string }

/** How much longer than the drain close-with-grace waits before it exits anyway: time to close what remains. */
const CLOSE_MARGIN_MS = 10_000
/** The longest the start's check of DEFAULT_MODEL waits for Gemini. */
const MODEL_CHECK_TIMEOUT_MS = 10_000

/**
 * Whether DEFAULT_MODEL, after MODEL_ALIASES, is a model Gemini serves (models.get), told in one warn line when it
 * is not: Google retires models (the seed's default among them), and the start must not depend on Gemini.
 */
async function checkDefaultModel (log: FastifyBaseLogger, gemini: GeminiClientOptions, defaultModel: string, models: ModelsOptions, closing: AbortSignal): Promise<void> {
  const model = createModelPolicy(models).resolve(defaultModel).model ?? defaultModel
  const via = model === defaultModel ? '' : ` (MODEL_ALIASES maps it to ${model})`
  const client = createRestGeminiClient(gemini)
  try {
    await client.getModel(model, AbortSignal.any([closing, AbortSignal.timeout(MODEL_CHECK_TIMEOUT_MS)]))
  } catch (error) {
    if (!(error instanceof UpstreamError)) throw error
    if (error.status === 404) {
      log.warn({ defaultModel, model }, `DEFAULT_MODEL ${defaultModel}${via} is not a model Gemini serves (models.get answered 404), so requests that name no model will fail: set DEFAULT_MODEL to a current model, or map it in MODEL_ALIASES (e.g. MODEL_ALIASES=${defaultModel}=gemini-2.5-flash)`)
    } else if (!closing.aborted) {
      const reason = error.code === 'aborted' ? `no answer within ${MODEL_CHECK_TIMEOUT_MS} ms` : error.message
      log.warn({ defaultModel, model, reason }, `DEFAULT_MODEL ${defaultModel}${via} could not be checked with Gemini's models.get: ${reason}`)
    }
  } finally {
    await client.close()
  }
}

/** The standalone server from a validated environment (see `loadEnv`): the gateway, probes, OpenAPI, listening, drain on a signal. */
export async function startServer (env: Env): Promise<FastifyInstance> {
  const requestTimeoutMs = env.REQUEST_TIMEOUT_MS
  const app = Fastify({
    genReqId,
    // Receiving a request is bounded (a slow or never-finished body gets 408 and its socket closed);
    // Node checks these deadlines every connectionsCheckingInterval, so that is kept well below them.
    requestTimeout: requestTimeoutMs,
    http: { headersTimeout: requestTimeoutMs, requestTimeout: requestTimeoutMs, connectionsCheckingInterval: Math.min(1_000, requestTimeoutMs) },
    // Once the drain is over every stream has its terminal event: what is still open is an unfinished request.
    forceCloseConnections: true,
    // The rate limit keys unauthenticated callers by client address.
    trustProxy: trustProxyOf(env.TRUST_PROXY),
    logger: {
      level: env.LOG_LEVEL,
      redact: ['req.headers["x-api-key"]', 'req.headers.authorization', 'req.headers["x-goog-api-key"]'],
      // Gemini's clients may send their key as `?key=`: the logged URL never carries it.
      serializers: { req: request => ({ method: request.method, url: withoutKey(request.url), host: request.host, remoteAddress: request.ip, remotePort: request.socket?.remotePort }) }
    }
  })
  await app.register(connectionLimit, { maxConnections: env.MAX_CONNECTIONS })
  if (env.TRUST_PROXY === 'true') {
    app.log.warn('TRUST_PROXY=true believes the left-most X-Forwarded-For, which clients write themselves: name your proxies\' addresses instead unless every request passes a proxy that replaces the header')
  }

  const upstream = await chooseUpstream(app.log, env)
  app.addHook('onClose', upstream.close)
  const lifecycle = new GatewayLifecycle()
  const registry = new Registry()
  // Request ids on every answer of the process, the probes included; the gateway sets the same header on its own routes.
  await app.register(requestIdPlugin)
  await app.register(healthRoute, { lifecycle })
  await app.register(openApiPlugin, { version: packageVersion })
  await app.register(streamGateway, {
    lifecycle,
    ...await chooseKeys(env),
    ...await pricesOf(env),
    gemini: {
      ...upstream.gemini,
      client: env.GEMINI_CLIENT,
      maxEventChars: env.GEMINI_MAX_EVENT_CHARS,
      ...(env.CIRCUIT_BREAKER_FAILURES === undefined
        ? {}
        : { breaker: { failures: env.CIRCUIT_BREAKER_FAILURES, windowMs: env.CIRCUIT_BREAKER_WINDOW_MS, coolDownMs: env.CIRCUIT_BREAKER_COOLDOWN_MS, trials: env.CIRCUIT_BREAKER_TRIALS } })
    },
    defaultModel: env.DEFAULT_MODEL,
    models: modelsOptionsOf(env),
    attachmentsMaxBytes: env.ATTACHMENTS_MAX_BYTES,
    // With METRICS_PORT the scrape endpoint lives on its own listener, off the public port.
    metrics: {
      registry,
      bearerToken: env.METRICS_TOKEN,
      endpoint: env.METRICS_PORT === undefined ? '/api/metrics' : null,
      ...(env.METRICS_MODELS === undefined ? {} : { models: splitList(env.METRICS_MODELS) }),
      ...(env.METRICS_AGENTS === undefined ? {} : { agents: splitList(env.METRICS_AGENTS) })
    },
    stream: {
      heartbeatMs: env.HEARTBEAT_INTERVAL_MS,
      timeouts: { firstChunkMs: env.STREAM_FIRST_CHUNK_TIMEOUT_MS, idleMs: env.STREAM_IDLE_TIMEOUT_MS, totalMs: env.STREAM_TOTAL_TIMEOUT_MS, clientStallMs: env.STREAM_CLIENT_STALL_TIMEOUT_MS },
      retry: { attempts: env.UPSTREAM_RETRY_ATTEMPTS },
      ...(env.MODEL_FALLBACKS === undefined ? {} : { fallbacks: fallbackChainsOf(env.MODEL_FALLBACKS) }),
      maxAnswerChars: env.STREAM_MAX_ANSWER_CHARS
    },
    defaultKeyPolicy: defaultKeyPolicyOf(env),
    budgets: { redis: env.REDIS_URL, onRedisError: env.RATE_LIMIT_ON_REDIS_ERROR, retentionDays: env.USAGE_RETENTION_DAYS },
    ...(env.REDIS_URL === undefined ? {} : { managedKeys: { redis: env.REDIS_URL } }),
    resumable: { redis: env.REDIS_URL, byDefault: env.RESUMABLE_STREAMS, retentionMs: env.RESUME_RETENTION_MS, graceMs: env.RESUME_GRACE_MS, maxEvents: env.RESUME_MAX_EVENTS },
    ...(env.MANAGEMENT_API_KEY === undefined ? {} : { management: { token: env.MANAGEMENT_API_KEY } }),
    rateLimit: {
      max: env.RATE_LIMIT_MAX,
      adminMax: env.RATE_LIMIT_ADMIN_MAX,
      timeWindow: env.RATE_LIMIT_WINDOW,
      redis: env.REDIS_URL,
      maxAddresses: env.RATE_LIMIT_MAX_ADDRESSES,
      onRedisError: env.RATE_LIMIT_ON_REDIS_ERROR
    }
  })
  if (env.PLAYGROUND ?? env.NODE_ENV !== 'production') await app.register(playgroundRoute)

  const metricsServer = env.METRICS_PORT === undefined ? undefined : Fastify({ logger: false })
  if (metricsServer !== undefined) {
    await metricsServer.register(metricsEndpoint, { registry, path: '/api/metrics', bearerToken: env.METRICS_TOKEN })
    app.addHook('onClose', async () => { await metricsServer.close() })
  }

  closeWithGrace({ delay: env.SHUTDOWN_TIMEOUT_MS + CLOSE_MARGIN_MS }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'closing after an error')
    app.log.info({ signal, openStreams: lifecycle.openStreams, deadlineMs: env.SHUTDOWN_TIMEOUT_MS }, 'draining open streams before exit')
    const drained = await lifecycle.drain(env.SHUTDOWN_TIMEOUT_MS)
    app.log.info(drained, 'streams drained; closing')
    await app.close()
  })
  const closing = new AbortController()
  app.addHook('onClose', async () => { closing.abort() })
  await app.listen({ port: env.PORT, host: env.HOST })
  if (metricsServer !== undefined) await metricsServer.listen({ port: env.METRICS_PORT, host: env.HOST })
  // With a real key only (the bundled emulator serves any model it knows); beside the serving, never holding up the start.
  if (env.GEMINI_API_KEY !== undefined || upstream.gemini.apiKeys !== undefined) {
    checkDefaultModel(app.log, upstream.gemini, env.DEFAULT_MODEL, modelsOptionsOf(env), closing.signal)
      .catch((error: unknown) => { app.log.error({ err: error }, 'DEFAULT_MODEL check failed') })
  }
  return app
}
