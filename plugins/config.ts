import fp from 'fastify-plugin'
import fastifyEnv from '@fastify/env'
import { Type, type Static } from 'typebox'
import { TIME_WINDOW_PATTERN } from './rate-limit.js'

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000

// What @fastify/proxy-addr compiles: an address, a CIDR, or one of its named ranges. Fastify 5.12 also takes a
// hop count but then trusts no peer at all (it cannot check who sent the hops), so a number is refused here.
const TRUST_PROXY_ENTRY = '(loopback|linklocal|uniquelocal|[0-9a-fA-F.:]*[.:][0-9a-fA-F.:]*(/[0-9]{1,3})?)'
const TRUST_PROXY_PATTERN = `^(true|false|\\s*${TRUST_PROXY_ENTRY}(\\s*,\\s*${TRUST_PROXY_ENTRY})*\\s*,?\\s*)$`

/** Every environment variable the standalone server reads; the plugins themselves take options only. */
export const EnvSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 5000 }),
  HOST: Type.String({ default: '0.0.0.0' }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(level => Type.Literal(level)), { default: 'info' }),
  GEMINI_API_KEY: Type.Optional(Type.String({ minLength: 1 })),
  GEMINI_BASE_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  GEMINI_CLIENT: Type.Union([Type.Literal('sdk'), Type.Literal('rest')], { default: 'rest' }),
  DEFAULT_MODEL: Type.String({ minLength: 1, default: 'gemini-2.0-flash-exp' }),
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
  HEARTBEAT_INTERVAL_MS: Type.Integer({ minimum: 0, default: 15_000 }),
  STREAM_FIRST_CHUNK_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 60_000 }),
  STREAM_IDLE_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 30_000 }),
  STREAM_TOTAL_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 600_000 }),
  STREAM_CLIENT_STALL_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 30_000 }),
  /** Receiving one whole request (headers and body); never bounds the streamed answer. */
  REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 1, default: DEFAULT_REQUEST_TIMEOUT_MS }),
  /** Open client connections per process; past it new ones get a 503 and are closed. */
  MAX_CONNECTIONS: Type.Integer({ minimum: 1, default: 10_000 }),
  /** Per-address counters the in-memory limiter holds for callers without a valid key (default in the plugin). */
  RATE_LIMIT_MAX_ADDRESSES: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Comma-separated model ids that get their own metric label; unset: the known Gemini models. */
  METRICS_MODELS: Type.Optional(Type.String({ minLength: 1 })),
  /** Comma-separated agent names that always keep their metric label. */
  METRICS_AGENTS: Type.Optional(Type.String({ minLength: 1 })),
  UPSTREAM_RETRY_ATTEMPTS: Type.Integer({ minimum: 1, default: 3 }),
  /** Characters of one upstream SSE event before the stream is refused as too large. */
  GEMINI_MAX_EVENT_CHARS: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Characters of one whole answer before the stream is refused as too large. */
  STREAM_MAX_ANSWER_CHARS: Type.Optional(Type.Integer({ minimum: 1 })),
  API_KEYS_FILE: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  RATE_LIMIT_MAX: Type.Integer({ minimum: 1, default: 100 }),
  RATE_LIMIT_ADMIN_MAX: Type.Integer({ minimum: 1, default: 1000 }),
  RATE_LIMIT_WINDOW: Type.String({ pattern: TIME_WINDOW_PATTERN, default: '15 minutes' }),
  RATE_LIMIT_ON_REDIS_ERROR: Type.Union([Type.Literal('open'), Type.Literal('closed')], { default: 'open' }),
  /** Serves the browser playground at /playground. Unset: on unless NODE_ENV=production. */
  PLAYGROUND: Type.Optional(Type.Boolean())
})
export type Env = Static<typeof EnvSchema>

declare module 'fastify' {
  interface FastifyInstance {
    config: Env
  }
}

/** Fastify's `trustProxy` from TRUST_PROXY's text. */
export function trustProxyOf (value: string | undefined): boolean | string[] {
  if (value === undefined || value === 'false') return false
  return value === 'true' ? true : splitList(value)
}

export function splitList (value: string): string[] {
  return value.split(',').map(item => item.trim()).filter(item => item !== '')
}

export default fp(async function configPlugin (app) {
  await app.register(fastifyEnv, { schema: EnvSchema, dotenv: false })
}, { name: 'amrikyy-config', fastify: '5.x' })
