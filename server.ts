import { randomBytes } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import closeWithGrace from 'close-with-grace'
import configPlugin, { splitList, type Env } from './plugins/config.js'
import streamGateway, { type GatewayOptions } from './app.js'

/** A misconfiguration the operator must fix; printed without a stack trace. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

interface UpstreamChoice {
  gemini: GatewayOptions['gemini']
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

function chooseKeys (env: Env): Pick<GatewayOptions, 'apiKeys' | 'adminApiKeys'> {
  const apiKeys = splitList(env.API_KEYS)
  const adminApiKeys = splitList(env.ADMIN_API_KEYS)
  if (apiKeys.length > 0 || adminApiKeys.length > 0) return { apiKeys, adminApiKeys }
  if (env.NODE_ENV === 'production') {
    throw new ConfigError('API_KEYS (or ADMIN_API_KEYS) must be set when NODE_ENV=production: the gateway never runs open')
  }
  const generated = randomBytes(24).toString('base64url')
  const host = env.HOST === '0.0.0.0' || env.HOST === '::' ? 'localhost' : env.HOST
  // Written once to the terminal, not through the logger, so the key stays out of log pipelines.
  process.stdout.write([
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

export async function startServer (): Promise<FastifyInstance> {
  const app = Fastify({
    logger: {
      level: process.env.LOG_LEVEL ?? 'info',
      redact: ['req.headers["x-api-key"]', 'req.headers.authorization']
    }
  })
  await app.register(configPlugin)
  const env = app.config
  app.log.level = env.LOG_LEVEL

  const upstream = await chooseUpstream(app, env)
  app.addHook('onClose', upstream.close)
  await app.register(streamGateway, {
    ...chooseKeys(env),
    gemini: upstream.gemini,
    defaultModel: env.DEFAULT_MODEL,
    metrics: { bearerToken: env.METRICS_TOKEN }
  })

  closeWithGrace({ delay: 30_000 }, async ({ err }) => {
    if (err !== undefined) app.log.error({ err }, 'closing after an error')
    await app.close()
  })
  await app.listen({ port: env.PORT, host: env.HOST })
  return app
}

startServer().catch((error: unknown) => {
  process.stderr.write(`amrikyy gateway failed to start: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
})
