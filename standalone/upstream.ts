import { readFile } from 'node:fs/promises'
import type { FastifyBaseLogger } from 'fastify'
import type { GeminiClientOptions } from '../gemini/types.js'
import type { GeminiKeyOption } from '../plugins/gemini-client.js'
import { ConfigError } from './config-error.js'
import type { Env } from './env.js'

export interface UpstreamChoice {
  gemini: GeminiClientOptions & { apiKeys?: GeminiKeyOption[] }
  close: () => Promise<void>
}

const NAMED_KEY = /^([A-Za-z0-9._-]{1,32})=(.+)$/

/**
 * Gemini keys as GEMINI_API_KEYS and GEMINI_API_KEYS_FILE write them: separated by commas or lines, each a key or
 * `name=key` (a name for logs and metrics; Gemini's keys have no `=`); blank lines and `#` comments are skipped.
 * Errors say where, never what: a line is a secret.
 */
export function geminiKeysOf (text: string, source: string): GeminiKeyOption[] {
  const entries = text.split(/[,\n]/).map(entry => entry.trim()).filter(entry => entry !== '' && !entry.startsWith('#'))
  const keys = entries.map(entry => {
    const named = NAMED_KEY.exec(entry)
    return named === null ? entry : { name: named[1]!, key: named[2]!.trim() }
  })
  const names = keys.map((key, index) => typeof key === 'string' ? String(index + 1) : key.name)
  const repeated = names.findIndex((name, index) => names.indexOf(name) !== index)
  if (repeated !== -1) throw new ConfigError(`${source}: key ${repeated + 1} has the name of an earlier key`)
  if (keys.some((key, index) => keys.findIndex(other => keyValueOf(other) === keyValueOf(key)) !== index)) throw new ConfigError(`${source}: the same key is listed twice`)
  return keys
}

function keyValueOf (key: GeminiKeyOption): string {
  return typeof key === 'string' ? key : key.key
}

async function pooledKeys (env: Env): Promise<GeminiKeyOption[] | undefined> {
  if (env.GEMINI_API_KEYS !== undefined && env.GEMINI_API_KEYS_FILE !== undefined) throw new ConfigError('GEMINI_API_KEYS and GEMINI_API_KEYS_FILE are both set: list the keys once')
  if (env.GEMINI_API_KEYS !== undefined) return geminiKeysOf(env.GEMINI_API_KEYS, 'GEMINI_API_KEYS')
  if (env.GEMINI_API_KEYS_FILE === undefined) return undefined
  let text: string
  try {
    text = await readFile(env.GEMINI_API_KEYS_FILE, 'utf8')
  } catch (error) {
    throw new ConfigError(`GEMINI_API_KEYS_FILE ${env.GEMINI_API_KEYS_FILE}: cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`)
  }
  return geminiKeysOf(text, `GEMINI_API_KEYS_FILE ${env.GEMINI_API_KEYS_FILE}`)
}

/** Gemini itself with a key (or several); without one, in development only, another Gemini-compatible endpoint or the bundled emulator. */
export async function chooseUpstream (log: FastifyBaseLogger, env: Env): Promise<UpstreamChoice> {
  const pooled = await pooledKeys(env)
  if (pooled !== undefined) {
    if (env.GEMINI_API_KEY !== undefined) throw new ConfigError('GEMINI_API_KEY and GEMINI_API_KEYS (or GEMINI_API_KEYS_FILE) are both set: put every key in the list')
    if (pooled.length === 0) throw new ConfigError('GEMINI_API_KEYS lists no keys')
    return { gemini: { apiKey: keyValueOf(pooled[0]!), apiKeys: pooled, baseUrl: env.GEMINI_BASE_URL }, close: async () => {} }
  }
  if (env.GEMINI_API_KEY !== undefined) {
    return { gemini: { apiKey: env.GEMINI_API_KEY, baseUrl: env.GEMINI_BASE_URL }, close: async () => {} }
  }
  if (env.NODE_ENV === 'production') {
    throw new ConfigError('GEMINI_API_KEY must be set when NODE_ENV=production (or GEMINI_API_KEYS; the bundled emulator is for development only)')
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
