import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import Fastify, { type FastifyInstance } from 'fastify'
import closeWithGrace from 'close-with-grace'
import configPlugin, { DEFAULT_REQUEST_TIMEOUT_MS, splitList, trustProxyOf, type Env } from './plugins/config.js'
import { Registry } from '@prometheus-io/client'
import streamGateway, { type GatewayOptions } from './app.js'
import type { GeminiClientOptions } from './gemini/types.js'
import { GatewayLifecycle } from './plugins/lifecycle.js'
import { metricsEndpoint } from './plugins/metrics.js'
import requestIdPlugin, { genReqId } from './plugins/request-id.js'
import healthRoute from './routes/health.js'
import openApiPlugin from './plugins/openapi.js'
import connectionLimit from './plugins/connection-limit.js'

// By the package's own name, so it resolves the same from dist/ and from the sources.
const { version: packageVersion } = createRequire(import.meta.url)('amrikyy-stream-gateway/package.json') as { version: string }
import playgroundRoute from './routes/playground.js'
import { loadKeysFile } from './keys-file.js'

/** A misconfiguration the operator must fix; printed without a stack trace. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

interface UpstreamChoice {
  gemini: GeminiClientOptions
  close: () => Promise<void>
}

async function chooseUpstream (app: FastifyInstance, env: Env): Promise<UpstreamChoice> {
  if (env.GEMINI_API_KEY !== undefined) {
    return { gemini: { apiKey: env.GEMINI_API_KEY, baseUrl: env.GEMINI_BASE_URL }, close: async () => {} }
  }
  if (env.NODE_ENV === 'production') {
    throw new ConfigError('GEMINI_API_KEY must be set when NODE_ENV=production (the bundled emulator is for development only)')
  }
  if (env.GEMINI_BASE_URL !== undefined) {
    // A Gemini-compatible endpoint that needs no real key, such as a standalone emulator.
    return { gemini: { apiKey: 'unused', baseUrl: env.GEMINI_BASE_URL }, close: async () => {} }
  }
  const { GeminiEmulator } = await import('./emulator/server.js')
  const emulator = await GeminiEmulator.start({ chunkDelayMs: env.EMULATOR_CHUNK_DELAY_MS })
  app.log.info({ emulator: emulator.url }, 'GEMINI_API_KEY is not set: streaming from the bundled Gemini emulator')
  return { gemini: { apiKey: 'emulator', baseUrl: emulator.url }, close: async () => { await emulator.close() } }
}

async function chooseKeys (env: Env): Promise<Pick<GatewayOptions, 'apiKeys' | 'adminApiKeys' | 'keyEntries'>> {
  const apiKeys = splitList(env.API_KEYS)
  const adminApiKeys = splitList(env.ADMIN_API_KEYS)
  const keyEntries = env.API_KEYS_FILE === undefined ? [] : await loadKeysFile(env.API_KEYS_FILE)
  if (apiKeys.length > 0 || adminApiKeys.length > 0 || keyEntries.length > 0) return { apiKeys, adminApiKeys, keyEntries }
  if (env.NODE_ENV === 'production') {
    throw new ConfigError('API_KEYS, ADMIN_API_KEYS or API_KEYS_FILE must be set when NODE_ENV=production: the gateway never runs open')
  }
  const generated = randomBytes(24).toString('base64url')
  const host = env.HOST === '0.0.0.0' || env.HOST === '::' ? 'localhost' : env.HOST
  // Written once to stderr, apart from the JSON log lines on stdout, so the key stays out of log pipelines.
  process.stderr.write([
    '',
    'API_KEYS is not set: generated a development key for this run:',
    `  ${generated}`,
    'Try it:',
    `  curl -N -X POST http://${host}:${env.PORT}/api/stream -H "Content-Type: application/json" -H "X-API-Key: ${generated}" -d '{"prompt":"Write a haiku about AI","agent":"poet"}'`,
    '',
    ''
  ].join('\n'))
  return { apiKeys: [generated], adminApiKeys: [] }
}

/**
 * REQUEST_TIMEOUT_MS is needed before Fastify (and so the config plugin) exists; the config schema
 * validates it again, with an error naming the variable.
 */
function requestTimeoutOf (value: string | undefined): number {
  const parsed = Number(value)
  return value !== undefined && Number.isInteger(parsed) && parsed >= 1 ? parsed : DEFAULT_REQUEST_TIMEOUT_MS
}

export async function startServer (): Promise<FastifyInstance> {
  const requestTimeoutMs = requestTimeoutOf(process.env.REQUEST_TIMEOUT_MS)
  const app = Fastify({
    genReqId,
    // Receiving a request is bounded (a slow or never-finished body gets 408 and its socket closed);
    // Node checks these deadlines every connectionsCheckingInterval, so that is kept well below them.
    requestTimeout: requestTimeoutMs,
    http: { headersTimeout: requestTimeoutMs, requestTimeout: requestTimeoutMs, connectionsCheckingInterval: Math.min(1_000, requestTimeoutMs) },
    // Once the drain is over every stream has its terminal event: what is still open is an unfinished request.
    forceCloseConnections: true,
    // Before the config plugin has run: the rate limit keys unauthenticated callers by client address.
    trustProxy: trustProxyOf(process.env.TRUST_PROXY),
    logger: {
      level: process.env.LOG_LEVEL ?? 'info',
      redact: ['req.headers["x-api-key"]', 'req.headers.authorization']
    }
  })
  await app.register(configPlugin)
  const env = app.config
  app.log.level = env.LOG_LEVEL
  await app.register(connectionLimit, { maxConnections: env.MAX_CONNECTIONS })
  if (env.TRUST_PROXY === 'true') {
    app.log.warn('TRUST_PROXY=true believes the left-most X-Forwarded-For, which clients write themselves: name your proxies\' addresses instead unless every request passes a proxy that replaces the header')
  }

  const upstream = await chooseUpstream(app, env)
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
    gemini: { ...upstream.gemini, client: env.GEMINI_CLIENT, maxEventChars: env.GEMINI_MAX_EVENT_CHARS },
    defaultModel: env.DEFAULT_MODEL,
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
      maxAnswerChars: env.STREAM_MAX_ANSWER_CHARS
    },
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

  closeWithGrace({ delay: env.SHUTDOWN_TIMEOUT_MS + 10_000 }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'closing after an error')
    app.log.info({ signal, openStreams: lifecycle.openStreams, deadlineMs: env.SHUTDOWN_TIMEOUT_MS }, 'draining open streams before exit')
    const drained = await lifecycle.drain(env.SHUTDOWN_TIMEOUT_MS)
    app.log.info(drained, 'streams drained; closing')
    await app.close()
  })
  await app.listen({ port: env.PORT, host: env.HOST })
  if (metricsServer !== undefined) await metricsServer.listen({ port: env.METRICS_PORT, host: env.HOST })
  return app
}

startServer().catch((error: unknown) => {
  process.stderr.write(`amrikyy gateway failed to start: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
})
