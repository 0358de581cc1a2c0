import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import errorsPlugin from './plugins/errors.js'
import authPlugin, { type ApiKeyEntry } from './plugins/auth.js'
import metricsPlugin, { GEMINI_MODELS, type MetricsOptions } from './plugins/metrics.js'
import rateLimitPlugin, { type RateLimitOptions } from './plugins/rate-limit.js'
import keyBudgetsPlugin, { type KeyBudgetsOptions } from './plugins/key-budgets.js'
import managedKeysPlugin, { type ManagedKeysOptions } from './plugins/managed-keys.js'
import adminKeysRoute from './routes/admin-keys.js'
import type { KeyPolicy } from './schemas/key-policy.js'
import { createPrices, type PriceTable } from './plugins/prices.js'
import geminiClientPlugin, { pooledKeyNames, type GeminiPluginOptions } from './plugins/gemini-client.js'
import lifecyclePlugin, { type GatewayLifecycle } from './plugins/lifecycle.js'
import requestIdPlugin from './plugins/request-id.js'
import modelsPlugin, { createModelPolicy, labelledModels, type ModelsOptions } from './plugins/models.js'
import modelsRoute from './routes/models.js'
import usageRoute from './routes/usage.js'
import streamRoute from './routes/stream.js'
import streamResumeRoute from './routes/stream-resume.js'
import resumableStreamsPlugin, { type ResumableStreamsOptions } from './plugins/resumable-streams.js'
import openAIRoutes from './routes/openai/openai-routes.js'
import geminiRoutes from './routes/gemini/gemini-routes.js'
import type { RelayOptions } from './relay/settings.js'

export const DEFAULT_MODEL = 'gemini-2.0-flash-exp'

export interface GatewayOptions {
  /** Raw user keys accepted in X-API-Key. */
  apiKeys?: readonly string[]
  /** Raw admin keys (higher rate limit). */
  adminApiKeys?: readonly string[]
  /** Keys stored as SHA-256 hashes, with a name, a role and optionally a policy of their own. */
  keyEntries?: readonly ApiKeyEntry[]
  /** The policy of keys that set none of a field (token budgets, concurrency, …). Default: none, as before. */
  defaultKeyPolicy?: KeyPolicy
  /** Where token budgets and concurrency counts live (`redis`) and what happens when it is down. Default: memory. */
  budgets?: KeyBudgetsOptions
  /**
   * Model → US dollars per million prompt, completion and cached tokens (ids or `*` patterns). With it the metrics
   * count `amrikyy_cost_usd_total` and keys may have a `usdPerDay`; without it nothing is priced.
   */
  prices?: PriceTable
  /** Keys created by the management API, read from Redis by every instance; unset: none. */
  managedKeys?: ManagedKeysOptions
  /** The management API under /admin, behind `token` (MANAGEMENT_API_KEY); unset: off. */
  management?: { token: string }
  /** Options of the gateway's own Gemini client, or `{ client }`: any implementation of GeminiClient. */
  gemini: GeminiPluginOptions
  /** Model used when a request names none. Default `gemini-2.0-flash-exp`. */
  defaultModel?: string
  /**
   * The models callers may name (`allowedModels`, names or `*` patterns) and `aliases` (requested name → model
   * called). Unset: every model under its own name, as before.
   */
  models?: ModelsOptions
  /**
   * Scrape endpoint and labels; `models` (default `GEMINI_MODELS`) always gets `defaultModel` added. With an
   * allow-list or aliases the model label names the model called (an alias's target), and only allowed ones.
   */
  metrics?: MetricsOptions
  /** Per-key limits on `/api/stream` (100 / 1000 admin per 15 minutes unless set); `false` turns limiting off. */
  rateLimit?: RateLimitOptions | false
  /** Decoded bytes all attachments of one request may hold together (the body limit grows by their base64). Default 20 MiB. */
  attachmentsMaxBytes?: number
  /** Timeouts, heartbeats and upstream retries of each stream. */
  stream?: RelayOptions
  /**
   * Where the events of resumable streams (`"resumable": true`) are kept (`redis`, else process memory), for how long,
   * and how long a stream whose client left waits for a reader; `byDefault` makes every stream resumable.
   */
  resumable?: ResumableStreamsOptions
  /** Pass one to drain the gateway's streams on shutdown (`lifecycle.drain(deadlineMs)`). */
  lifecycle?: GatewayLifecycle
}

/**
 * The whole gateway as one encapsulated plugin: its hooks, error handler and decorators stay inside,
 * so a host app can register it under a prefix without its own routes changing.
 */
async function streamGateway (app: FastifyInstance, options: GatewayOptions): Promise<void> {
  await app.register(errorsPlugin)
  await app.register(requestIdPlugin)
  await app.register(lifecyclePlugin, options.lifecycle === undefined ? {} : { lifecycle: options.lifecycle })
  await app.register(authPlugin, {
    apiKeys: options.apiKeys ?? [],
    adminApiKeys: options.adminApiKeys ?? [],
    keyEntries: options.keyEntries ?? [],
    defaultPolicy: options.defaultKeyPolicy ?? {}
  })
  const defaultModel = options.defaultModel ?? DEFAULT_MODEL
  const policy = createModelPolicy(options.models)
  // A default the allow-list refuses would refuse every request that names no model.
  if (policy.resolve(defaultModel).refusal !== undefined) {
    throw new Error(`models: the default model ${defaultModel} is not allowed by "allowedModels" (give it an alias to an allowed model)`)
  }
  // A request that names no model uses the default one: it is always labelled by name.
  const models = options.metrics?.models
  // Anything but a list goes as it is, for the metrics plugin to refuse by name.
  const labels = models === undefined || Array.isArray(models) ? labelledModels(policy, defaultModel, models ?? GEMINI_MODELS) : models
  // The keys file's names keep their label however many other keys stream first.
  const keys = options.metrics?.keys ?? options.keyEntries?.map(entry => entry.name)
  const prices = options.prices === undefined ? undefined : createPrices(options.prices)
  const spending = [...options.keyEntries ?? []].find(entry => entry.policy?.usdPerDay !== undefined) ?? (options.defaultKeyPolicy?.usdPerDay !== undefined ? { name: 'the default policy' } : undefined)
  if (prices === undefined && spending !== undefined) throw new Error(`prices: ${spending.name} has a usdPerDay, which needs a price table (option "prices", MODEL_PRICES)`)
  await app.register(metricsPlugin, { ...options.metrics, models: labels, keys, prices, upstreamKeys: pooledKeyNames(options.gemini) })
  if (options.rateLimit !== false) await app.register(rateLimitPlugin, options.rateLimit ?? {})
  await app.register(keyBudgetsPlugin, { ...options.budgets, prices })
  if (options.managedKeys !== undefined) await app.register(managedKeysPlugin, options.managedKeys)
  if (options.management !== undefined) await app.register(adminKeysRoute, options.management)
  await app.register(geminiClientPlugin, options.gemini)
  await app.register(modelsPlugin, options.models ?? {})
  await app.register(modelsRoute)
  await app.register(usageRoute)
  await app.register(resumableStreamsPlugin, options.resumable ?? {})
  await app.register(streamRoute, { ...options.stream, defaultModel, attachmentsMaxBytes: options.attachmentsMaxBytes })
  await app.register(streamResumeRoute, { heartbeatMs: options.stream?.heartbeatMs })
  await app.register(openAIRoutes, { ...options.stream, defaultModel, attachmentsMaxBytes: options.attachmentsMaxBytes })
  await app.register(geminiRoutes, { ...options.stream, attachmentsMaxBytes: options.attachmentsMaxBytes })
}

export default fp(streamGateway, { name: 'amrikyy-stream-gateway', fastify: '5.x', encapsulate: true })
