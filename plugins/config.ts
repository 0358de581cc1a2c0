import fp from 'fastify-plugin'
import fastifyEnv from '@fastify/env'
import { Type, type Static } from 'typebox'

/** Every environment variable the standalone server reads; the plugins themselves take options only. */
export const EnvSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 5000 }),
  HOST: Type.String({ default: '0.0.0.0' }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(level => Type.Literal(level)), { default: 'info' }),
  GEMINI_API_KEY: Type.Optional(Type.String({ minLength: 1 })),
  GEMINI_BASE_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  DEFAULT_MODEL: Type.String({ minLength: 1, default: 'gemini-2.0-flash-exp' }),
  API_KEYS: Type.String({ default: '' }),
  ADMIN_API_KEYS: Type.String({ default: '' }),
  EMULATOR_CHUNK_DELAY_MS: Type.Integer({ minimum: 0, default: 30 }),
  METRICS_TOKEN: Type.Optional(Type.String({ minLength: 1 }))
})
export type Env = Static<typeof EnvSchema>

declare module 'fastify' {
  interface FastifyInstance {
    config: Env
  }
}

export function splitList (value: string): string[] {
  return value.split(',').map(item => item.trim()).filter(item => item !== '')
}

export default fp(async function configPlugin (app) {
  await app.register(fastifyEnv, { schema: EnvSchema, dotenv: false })
}, { name: 'amrikyy-config', fastify: '5.x' })
