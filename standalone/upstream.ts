import type { FastifyBaseLogger } from 'fastify'
import type { GeminiClientOptions } from '../gemini/types.js'
import { ConfigError } from './config-error.js'
import type { Env } from './env.js'

export interface UpstreamChoice {
  gemini: GeminiClientOptions
  close: () => Promise<void>
}

/** Gemini itself with a key; without one, in development only, another Gemini-compatible endpoint or the bundled emulator. */
export async function chooseUpstream (log: FastifyBaseLogger, env: Env): Promise<UpstreamChoice> {
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
  const { GeminiEmulator } = await import('../emulator/server.js')
  const emulator = await GeminiEmulator.start({ chunkDelayMs: env.EMULATOR_CHUNK_DELAY_MS })
  log.info({ emulator: emulator.url }, 'GEMINI_API_KEY is not set: streaming from the bundled Gemini emulator')
  return { gemini: { apiKey: 'emulator', baseUrl: emulator.url }, close: async () => { await emulator.close() } }
}
