import fp from 'fastify-plugin'
import fastifyEnv from '@fastify/env'
import { Type, type Static } from 'typebox'
import { TIME_WINDOW_PATTERN } from './rate-limit.js'

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
  /** Behind a reverse proxy: `true`, or comma-separated proxy addresses/CIDRs whose X-Forwarded-For is believed. */
  TRUST_PROXY: Type.Optional(Type.String({ pattern: '^(true|false|[0-9a-fA-F.:/, ]*[.:][0-9a-fA-F.:/, ]*)$' })),
  SHUTDOWN_TIMEOUT_MS: Type.Integer({ minimum: 0, default: 30_000 }),
  HEARTBEAT_INTERVAL_MS: Type.Integer({ minimum: 0, default: 15_000 }),
  STREAM_FIRST_CHUNK_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 60_000 }),
  STREAM_IDLE_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 30_000 }),
  STREAM_TOTAL_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 600_000 }),
  UPSTREAM_RETRY_ATTEMPTS: Type.Integer({ minimum: 1, default: 3 }),
  /** Characters of one upstream SSE event before the stream is refused as too large. */
  GEMINI_MAX_EVENT_CHARS: Type.Integer({ minimum: 1, default: 8 * 1024 * 1024 }),
  /** Characters of one whole answer before the stream is refused as too large. */
  STREAM_MAX_ANSWER_CHARS: Type.Integer({ minimum: 1, default: 8 * 1024 * 1024 }),
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
