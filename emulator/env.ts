// Reads the standalone emulator's settings from environment variables, validated up front with
// errors that name the variable. An empty variable counts as unset.

import type { EmulatorOptions } from './server.js'

export const DEFAULT_EMULATOR_PORT = 8090
export const DEFAULT_EMULATOR_HOST = '127.0.0.1'

export class EmulatorEnvError extends Error {
  constructor (readonly variable: string, message: string) {
    super(`${variable} ${message}`)
    this.name = 'EmulatorEnvError'
  }
}

type Env = Record<string, string | undefined>

function read (env: Env, name: string): string | undefined {
  const value = env[name]?.trim()
  return value === undefined || value === '' ? undefined : value
}

function integer (env: Env, name: string, min: number, max: number): number | undefined {
  const raw = read(env, name)
  if (raw === undefined) return undefined
  const n = Number(raw)
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new EmulatorEnvError(name, `must be an integer from ${min} to ${max}, got "${raw}"`)
  }
  return n
}

/**
 * EMULATOR_PORT (default 8090), EMULATOR_HOST (127.0.0.1), EMULATOR_CHUNK_COUNT,
 * EMULATOR_CHUNK_DELAY_MS, EMULATOR_DEFAULT_MAX_TOKENS, EMULATOR_API_KEY.
 * Throws EmulatorEnvError naming the first invalid variable.
 */
export function emulatorOptionsFromEnv (env: Env): EmulatorOptions {
  const options: EmulatorOptions = {
    host: read(env, 'EMULATOR_HOST') ?? DEFAULT_EMULATOR_HOST,
    port: integer(env, 'EMULATOR_PORT', 0, 65535) ?? DEFAULT_EMULATOR_PORT
  }
  if (/\s/.test(options.host ?? '')) {
    throw new EmulatorEnvError('EMULATOR_HOST', `must be a host name or address, got "${options.host ?? ''}"`)
  }
  const chunkCount = integer(env, 'EMULATOR_CHUNK_COUNT', 1, 4096)
  if (chunkCount !== undefined) options.chunkCount = chunkCount
  const chunkDelayMs = integer(env, 'EMULATOR_CHUNK_DELAY_MS', 0, 600_000)
  if (chunkDelayMs !== undefined) options.chunkDelayMs = chunkDelayMs
  const defaultMaxTokens = integer(env, 'EMULATOR_DEFAULT_MAX_TOKENS', 1, 4096)
  if (defaultMaxTokens !== undefined) options.defaultMaxTokens = defaultMaxTokens
  const apiKey = read(env, 'EMULATOR_API_KEY')
  if (apiKey !== undefined) options.apiKey = apiKey
  return options
}

/** EMULATOR_HUGE_EVENT_MATCH: prompts containing it get an endless event after one chunk (the `huge-event` fault), for soaks. */
export function hugeEventMatchFromEnv (env: Env): string | undefined {
  return read(env, 'EMULATOR_HUGE_EVENT_MATCH')
}
