import envSchema from 'env-schema'
import { Type, type Static } from 'typebox'
import { DEFAULT_MODEL } from '../app.js'
import { DEFAULT_MAX_CONNECTIONS } from '../plugins/connection-limit.js'
import { createModelPolicy, isModelName, isModelPattern, modelId, type ModelsOptions } from '../plugins/models.js'
import { DEFAULT_ADMIN_MAX, DEFAULT_MAX, DEFAULT_TIME_WINDOW, parseTimeWindow } from '../plugins/rate-limit.js'
import { DEFAULT_RELAY_SETTINGS, fallbackMap } from '../relay/settings.js'
import { DEFAULT_BREAKER } from '../gemini/circuit-breaker.js'
import { ATTACHMENTS_MAX_BYTES_LIMIT, DEFAULT_ATTACHMENTS_MAX_BYTES } from '../schemas/stream.js'
import { ConfigError } from './config-error.js'
import { POLICY_COUNT_MAX, type KeyPolicy } from '../schemas/key-policy.js'
import { DEFAULT_RETENTION_DAYS } from '../plugins/key-budgets-store.js'
import { DEFAULT_GRACE_MS, DEFAULT_MAX_EVENTS, DEFAULT_RETENTION_MS } from '../plugins/resumable-streams.js'

// Each default the gateway's parts also apply lives with the part that applies it; the ones written here are the
// standalone server's own.
const { timeouts, heartbeatMs, retry } = DEFAULT_RELAY_SETTINGS
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

// What @fastify/proxy-addr compiles: an address, a CIDR, or one of its named ranges. Fastify 5.12 also takes a
// hop count but then trusts no peer at all (it cannot check who sent the hops), so a number is refused here.
const TRUST_PROXY_ENTRY = '(loopback|linklocal|uniquelocal|[0-9a-fA-F.:]*[.:][0-9a-fA-F.:]*(/[0-9]{1,3})?)'
const TRUST_PROXY_PATTERN = `^(true|false|\\s*${TRUST_PROXY_ENTRY}(\\s*,\\s*${TRUST_PROXY_ENTRY})*\\s*,?\\s*)$`

/** Every environment variable the standalone server reads, validated before anything is built; the plugins themselves take options only. */
export const EnvSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 5000 }),
  HOST: Type.String({ default: '0.0.0.0' }),
  LOG_LEVEL: Type.Union(LOG_LEVELS.map(level => Type.Literal(level)), { default: 'info' }),
  GEMINI_API_KEY: Type.Optional(Type.String({ minLength: 1 })),
  /** Several Gemini keys, separated by commas, each a key or `name=key`; calls are spread over them. */
  GEMINI_API_KEYS: Type.Optional(Type.String({ minLength: 1 })),
  /** The same list in a file, a key (or `name=key`) a line. */
  GEMINI_API_KEYS_FILE: Type.Optional(Type.String({ minLength: 1 })),
  GEMINI_BASE_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  GEMINI_CLIENT: Type.Union([Type.Literal('sdk'), Type.Literal('rest')], { default: 'rest' }),
  DEFAULT_MODEL: Type.String({ minLength: 1, default: DEFAULT_MODEL }),
  API_KEYS: Type.String({ default: '' }),
  ADMIN_API_KEYS: Type.String({ default: '' }),
  EMULATOR_CHUNK_DELAY_MS: Type.Integer({ minimum: 0, default: 30 }),
  METRICS_TOKEN: Type.Optional(Type.String({ minLength: 1 })),
  METRICS_PORT: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
  /**
   * Behind a reverse proxy: comma-separated addresses/CIDRs of the proxies (or proxy-addr's names `loopback`,
   * `linklocal`, `uniquelocal`) whose X-Forwarded-For is believed, or `true`, which believes the left-most entry,
   * the one the client writes: only behind a proxy that replaces the header.
   */
  TRUST_PROXY: Type.Optional(Type.String({ pattern: TRUST_PROXY_PATTERN })),
  SHUTDOWN_TIMEOUT_MS: Type.Integer({ minimum: 0, default: 30_000 }),
  HEARTBEAT_INTERVAL_MS: Type.Integer({ minimum: 0, default: heartbeatMs }),
  STREAM_FIRST_CHUNK_TIMEOUT_MS: Type.Integer({ minimum: 1, default: timeouts.firstChunkMs }),
  STREAM_IDLE_TIMEOUT_MS: Type.Integer({ minimum: 1, default: timeouts.idleMs }),
  STREAM_TOTAL_TIMEOUT_MS: Type.Integer({ minimum: 1, default: timeouts.totalMs }),
  STREAM_CLIENT_STALL_TIMEOUT_MS: Type.Integer({ minimum: 1, default: timeouts.clientStallMs }),
  /** Receiving one whole request (headers and body); never bounds the streamed answer. */
  REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 30_000 }),
  /** Open client connections per process; past it new ones get a 503 and are closed. */
  MAX_CONNECTIONS: Type.Integer({ minimum: 1, default: DEFAULT_MAX_CONNECTIONS }),
  /** Per-address counters the in-memory limiter holds for callers without a valid key (default in the plugin). */
  RATE_LIMIT_MAX_ADDRESSES: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Comma-separated model ids that get their own metric label; unset: the known Gemini models. */
  METRICS_MODELS: Type.Optional(Type.String({ minLength: 1 })),
  /** Comma-separated model names or `*` patterns callers may name; unset: any model. */
  ALLOWED_MODELS: Type.Optional(Type.String({ minLength: 1 })),
  /** Comma-separated `name=target` pairs: a request for `name` calls `target`. */
  MODEL_ALIASES: Type.Optional(Type.String({ minLength: 1 })),
  /** Comma-separated agent names that always keep their metric label. */
  METRICS_AGENTS: Type.Optional(Type.String({ minLength: 1 })),
  UPSTREAM_RETRY_ATTEMPTS: Type.Integer({ minimum: 1, default: retry.attempts }),
  /** Failures of one model on one key within CIRCUIT_BREAKER_WINDOW_MS that open its circuit; unset: no breaker. */
  CIRCUIT_BREAKER_FAILURES: Type.Optional(Type.Integer({ minimum: 1 })),
  CIRCUIT_BREAKER_WINDOW_MS: Type.Integer({ minimum: 1, default: DEFAULT_BREAKER.windowMs }),
  CIRCUIT_BREAKER_COOLDOWN_MS: Type.Integer({ minimum: 1, default: DEFAULT_BREAKER.coolDownMs }),
  CIRCUIT_BREAKER_TRIALS: Type.Integer({ minimum: 1, default: DEFAULT_BREAKER.trials }),
  /** Chains of fallback models, `a>b>c`, comma-separated: a call failing before its first chunk moves down its chain. */
  MODEL_FALLBACKS: Type.Optional(Type.String({ minLength: 1 })),
  /** Characters of one upstream SSE event before the stream is refused as too large. */
  GEMINI_MAX_EVENT_CHARS: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Characters of one whole answer before the stream is refused as too large. */
  STREAM_MAX_ANSWER_CHARS: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Decoded bytes all attachments of one request may hold together; its base64 stays within Gemini's 100 MB a request. */
  ATTACHMENTS_MAX_BYTES: Type.Integer({ minimum: 0, maximum: ATTACHMENTS_MAX_BYTES_LIMIT, default: DEFAULT_ATTACHMENTS_MAX_BYTES }),
  API_KEYS_FILE: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  RATE_LIMIT_MAX: Type.Integer({ minimum: 1, default: DEFAULT_MAX }),
  RATE_LIMIT_ADMIN_MAX: Type.Integer({ minimum: 1, default: DEFAULT_ADMIN_MAX }),
  /** Read by the rate-limit plugin's own parser (see `RULES`). */
  RATE_LIMIT_WINDOW: Type.String({ default: DEFAULT_TIME_WINDOW }),
  RATE_LIMIT_ON_REDIS_ERROR: Type.Union([Type.Literal('open'), Type.Literal('closed')], { default: 'open' }),
  /** The price table as JSON: model → { "prompt", "completion", "cached" } US dollars per million tokens. */
  MODEL_PRICES: Type.Optional(Type.String({ minLength: 1 })),
  /** The same table in a JSON file. */
  MODEL_PRICES_FILE: Type.Optional(Type.String({ minLength: 1 })),
  /** Days each key's hourly usage record is kept (GET /admin/usage). */
  USAGE_RETENTION_DAYS: Type.Integer({ minimum: 1, maximum: 3660, default: DEFAULT_RETENTION_DAYS }),
  /** The operators' secret of the management API (/admin/keys); unset: the API is off. */
  MANAGEMENT_API_KEY: Type.Optional(Type.String({ minLength: 16 })),
  /** Defaults of every key whose policy sets none: tokens per calendar minute and per UTC day, streams open at once. */
  TOKEN_LIMIT_PER_MINUTE: Type.Optional(Type.Integer({ minimum: 1, maximum: POLICY_COUNT_MAX })),
  TOKEN_LIMIT_PER_DAY: Type.Optional(Type.Integer({ minimum: 1, maximum: POLICY_COUNT_MAX })),
  MAX_CONCURRENT_STREAMS_PER_KEY: Type.Optional(Type.Integer({ minimum: 1, maximum: POLICY_COUNT_MAX })),
  /** Every stream is resumable unless its request says `"resumable": false`. */
  RESUMABLE_STREAMS: Type.Boolean({ default: false }),
  /** How long a resumable stream's events are kept after its last one (in Redis with REDIS_URL, else in memory). */
  RESUME_RETENTION_MS: Type.Integer({ minimum: 1, default: DEFAULT_RETENTION_MS }),
  /** How long a resumable stream whose client left goes on waiting for a reader before it is aborted. */
  RESUME_GRACE_MS: Type.Integer({ minimum: 1, default: DEFAULT_GRACE_MS }),
  /** Events kept per resumable stream; a resume from before the oldest kept one gets 410. */
  RESUME_MAX_EVENTS: Type.Integer({ minimum: 1, default: DEFAULT_MAX_EVENTS }),
  /** Serves the browser playground at /playground. Unset: on unless NODE_ENV=production. */
  PLAYGROUND: Type.Optional(Type.Boolean())
})
export type Env = Static<typeof EnvSchema>

/** Fastify's `trustProxy` from TRUST_PROXY's text. */
export function trustProxyOf (value: string | undefined): boolean | string[] {
  if (value === undefined || value === 'false') return false
  return value === 'true' ? true : splitList(value)
}

export function splitList (value: string): string[] {
  return value.split(',').map(item => item.trim()).filter(item => item !== '')
}

/** ALLOWED_MODELS as a list of names and patterns; throws when an entry is neither. */
export function allowedModelsOf (value: string): string[] {
  const entries = splitList(value)
  if (entries.length === 0 || !entries.every(isModelPattern)) throw new Error('not model names or patterns')
  return entries
}

/** MODEL_ALIASES as a map; throws when a pair is not `name=target` of model names, or a name comes twice. */
export function modelAliasesOf (value: string): Record<string, string> {
  const aliases: Record<string, string> = {}
  for (const pair of splitList(value)) {
    const [name = '', target = '', ...rest] = pair.split('=').map(part => part.trim())
    if (rest.length > 0 || !isModelName(name) || !isModelName(target) || Object.hasOwn(aliases, modelId(name))) throw new Error('not name=target pairs')
    aliases[modelId(name)] = target
  }
  if (Object.keys(aliases).length === 0) throw new Error('no pairs')
  return aliases
}

/** The policy of keys that set none of their own, from TOKEN_LIMIT_PER_MINUTE, TOKEN_LIMIT_PER_DAY and MAX_CONCURRENT_STREAMS_PER_KEY. */
export function defaultKeyPolicyOf (env: Pick<Env, 'TOKEN_LIMIT_PER_MINUTE' | 'TOKEN_LIMIT_PER_DAY' | 'MAX_CONCURRENT_STREAMS_PER_KEY'>): KeyPolicy {
  return {
    ...(env.TOKEN_LIMIT_PER_MINUTE === undefined ? {} : { tokensPerMinute: env.TOKEN_LIMIT_PER_MINUTE }),
    ...(env.TOKEN_LIMIT_PER_DAY === undefined ? {} : { tokensPerDay: env.TOKEN_LIMIT_PER_DAY }),
    ...(env.MAX_CONCURRENT_STREAMS_PER_KEY === undefined ? {} : { maxConcurrentStreams: env.MAX_CONCURRENT_STREAMS_PER_KEY })
  }
}

/** MODEL_FALLBACKS's chains: `a>b>c,d>e` → [[a, b, c], [d, e]]. */
export function fallbackChainsOf (value: string): string[][] {
  return splitList(value).map(chain => chain.split('>').map(model => modelId(model.trim())))
}

/** The models plugin's options from ALLOWED_MODELS and MODEL_ALIASES (checked by loadEnv). */
export function modelsOptionsOf (env: Pick<Env, 'ALLOWED_MODELS' | 'MODEL_ALIASES'>): ModelsOptions {
  return {
    ...(env.ALLOWED_MODELS === undefined ? {} : { allowedModels: allowedModelsOf(env.ALLOWED_MODELS) }),
    ...(env.MODEL_ALIASES === undefined ? {} : { aliases: modelAliasesOf(env.MODEL_ALIASES) })
  }
}

/** What the model variables say together: every alias's target and DEFAULT_MODEL allowed. */
function modelsProblem (env: Env): string | undefined {
  const options = modelsOptionsOf(env)
  const allowList = createModelPolicy({ allowedModels: options.allowedModels })
  for (const [name, target] of Object.entries(options.aliases ?? {})) {
    if (!allowList.allows(modelId(target))) return `MODEL_ALIASES maps ${name} to ${modelId(target)}, which ALLOWED_MODELS does not allow`
  }
  if (createModelPolicy(options).resolve(env.DEFAULT_MODEL).refusal !== undefined) {
    return `DEFAULT_MODEL ${env.DEFAULT_MODEL} is not allowed by ALLOWED_MODELS: allow it, or map it in MODEL_ALIASES to an allowed model`
  }
  return undefined
}

type Rule = string | { rule: string, accepts: (value: string) => boolean }

/** What a variable must be, where its schema alone would make an unreadable message (a pattern) or cannot say it. */
const RULES: Partial<Record<keyof Env, Rule>> = {
  GEMINI_BASE_URL: 'must be an http:// or https:// URL',
  REDIS_URL: 'must be a redis:// or rediss:// URL',
  TRUST_PROXY: 'must be true, false, or the comma-separated addresses or CIDRs of the proxies (or loopback, linklocal, uniquelocal); a hop count is not accepted',
  RATE_LIMIT_WINDOW: { rule: 'must be milliseconds or a duration such as "15 minutes"', accepts: value => accepted(() => parseTimeWindow(value)) },
  ALLOWED_MODELS: {
    rule: 'must be comma-separated model names or * patterns, such as "gemini-2.5-*,gemini-2.0-flash"',
    accepts: value => accepted(() => allowedModelsOf(value))
  },
  MODEL_FALLBACKS: {
    rule: 'must be comma-separated chains of two or more model ids joined by >, such as "gemini-2.5-pro>gemini-2.5-flash>gemini-2.5-flash-lite", each model with one fallback and no chain coming back to itself',
    accepts: value => accepted(() => fallbackMap(fallbackChainsOf(value)))
  },
  MODEL_ALIASES: {
    rule: 'must be comma-separated name=target pairs of model names, each name once, such as "gemini-2.0-flash-exp=gemini-2.5-flash"',
    accepts: value => accepted(() => modelAliasesOf(value))
  }
}

function accepted (check: () => unknown): boolean {
  try {
    check()
    return true
  } catch {
    return false
  }
}

interface PropertySchema { type?: string, anyOf?: Array<{ const?: unknown }>, minimum?: number, maximum?: number, minLength?: number }

function ruleOf (name: keyof Env): string {
  const own = RULES[name]
  if (own !== undefined) return typeof own === 'string' ? own : own.rule
  const schema = EnvSchema.properties[name] as PropertySchema
  if (schema.anyOf !== undefined) return `must be one of ${schema.anyOf.map(option => String(option.const)).join(', ')}`
  if (schema.type === 'integer') {
    return schema.maximum === undefined ? `must be an integer >= ${schema.minimum ?? 0}` : `must be an integer from ${schema.minimum ?? 0} to ${schema.maximum}`
  }
  if (schema.type === 'boolean') return 'must be true or false'
  return schema.minLength === 1 ? 'must not be empty' : 'is invalid'
}

/**
 * The environment, checked against `EnvSchema` with its defaults applied, as @fastify/env would but before Fastify is
 * built. A bad value is a ConfigError naming each bad variable and its rule; values are never quoted back, since
 * some of them are secrets.
 */
export function loadEnv (source: NodeJS.ProcessEnv): Env {
  let env: Env | undefined
  const bad = new Set<keyof Env>()
  try {
    env = envSchema<Env>({ schema: EnvSchema, data: { ...source }, env: false, dotenv: false })
  } catch (error) {
    const errors = (error as { errors?: Array<{ instancePath: string }> }).errors
    if (errors === undefined) throw error
    for (const { instancePath } of errors) bad.add(instancePath.split('/')[1] as keyof Env)
  }
  for (const [name, rule] of Object.entries(RULES) as Array<[keyof Env, Rule]>) {
    const value = source[name]
    if (typeof rule !== 'string' && value !== undefined && !bad.has(name) && !rule.accepts(value)) bad.add(name)
  }
  if (env === undefined || bad.size > 0) {
    throw new ConfigError([...bad].map(name => `${name} ${ruleOf(name)}`).join('; '))
  }
  const problem = modelsProblem(env)
  if (problem !== undefined) throw new ConfigError(problem)
  return env
}
