// The emulator's options: their defaults, and the checks start() and setPace() make up front, with
// errors that name the option.

import { type KeyBehaviour, type ModelBehaviour, validateUpstreamOptions } from './upstream-state.js'

export interface EmulatorOptions {
  /** Interface to listen on. Default '127.0.0.1'. */
  host?: string
  /** Port to listen on. Default 0 (ephemeral). */
  port?: number
  /** Stream events per answer (fewer when the answer has fewer words). Default 8. */
  chunkCount?: number
  /** Delay between stream events, in ms. Default 0. */
  chunkDelayMs?: number
  /** Answer length in words when the request has no maxOutputTokens. Default 64. */
  defaultMaxTokens?: number
  /** When set, a different x-goog-api-key gets 400 API_KEY_INVALID. A missing key is always 403. */
  apiKey?: string
  /**
   * The keys accepted (with apiKey, if set), each with its own quota, or revoked or denied; a different key
   * gets 400 API_KEY_INVALID. Default unset: apiKey alone decides.
   */
  keys?: Record<string, KeyBehaviour>
  /** Models that are overloaded, have a quota, or break their streams. */
  models?: Record<string, ModelBehaviour>
  /**
   * Whether the thinking models (2.5 and newer, but Flash-Lite) think when a request has no
   * thinkingConfig, as Google's do. Default false, so that such answers carry no thought tokens; a
   * request with a thinkingConfig thinks either way.
   */
  thinkByDefault?: boolean
  /** Receives one line per finished request. */
  logger?: (line: string) => void
  /**
   * How many requests `requests` keeps, the oldest dropped first. Default 0: none, so a long-lived
   * emulator holds no history; tests that inspect requests ask for it.
   */
  recordRequests?: number
  /**
   * Model names (a `models/` prefix is ignored; `tunedModels/x` is kept whole) that generate and count tokens
   * besides the catalogue's, without being listed. Default none: like Google, any other model is a 404.
   */
  extraModels?: readonly string[]
  /**
   * The `responseId` of every response, instead of a random one a response: so that two calls with the same
   * request get the same bytes, for tests that compare a relayed answer with a direct one. Default unset (random).
   */
  responseId?: string
}

type Unresolved = 'apiKey' | 'logger' | 'responseId' | 'keys' | 'models'
export type ResolvedOptions = Required<Omit<EmulatorOptions, Unresolved>> & Pick<EmulatorOptions, Unresolved>

export interface Pace { chunkCount: number; chunkDelayMs: number }

export function resolveOptions (options: EmulatorOptions): ResolvedOptions {
  return {
    host: options.host ?? '127.0.0.1',
    port: options.port ?? 0,
    chunkCount: options.chunkCount ?? 8,
    chunkDelayMs: options.chunkDelayMs ?? 0,
    defaultMaxTokens: options.defaultMaxTokens ?? 64,
    thinkByDefault: options.thinkByDefault ?? false,
    apiKey: options.apiKey,
    logger: options.logger,
    recordRequests: options.recordRequests ?? 0,
    extraModels: options.extraModels ?? [],
    responseId: options.responseId,
    keys: options.keys,
    models: options.models
  }
}

export function validateOptions (options: EmulatorOptions): void {
  const { port, host, defaultMaxTokens, apiKey } = options
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new RangeError(`GeminiEmulator: port must be an integer from 0 to 65535, got ${String(port)}`)
  }
  if (host !== undefined && (typeof host !== 'string' || host === '')) {
    throw new TypeError('GeminiEmulator: host must be a non-empty string')
  }
  validatePace(options, 'GeminiEmulator')
  if (defaultMaxTokens !== undefined && !(Number.isInteger(defaultMaxTokens) && defaultMaxTokens >= 1 && defaultMaxTokens <= 4096)) {
    throw new RangeError(`GeminiEmulator: defaultMaxTokens must be an integer from 1 to 4096, got ${String(defaultMaxTokens)}`)
  }
  if (apiKey !== undefined && (typeof apiKey !== 'string' || apiKey === '')) {
    throw new TypeError('GeminiEmulator: apiKey must be a non-empty string when set')
  }
  if (options.thinkByDefault !== undefined && typeof options.thinkByDefault !== 'boolean') {
    throw new TypeError('GeminiEmulator: thinkByDefault must be a boolean when set')
  }
  const { recordRequests } = options
  if (recordRequests !== undefined && !(Number.isInteger(recordRequests) && recordRequests >= 0)) {
    throw new RangeError(`GeminiEmulator: recordRequests must be a non-negative integer, got ${String(recordRequests)}`)
  }
  const { extraModels } = options
  if (extraModels !== undefined && !(Array.isArray(extraModels) && extraModels.every(name => typeof name === 'string' && name !== ''))) {
    throw new TypeError('GeminiEmulator: extraModels must be an array of non-empty model names')
  }
  const { responseId } = options
  if (responseId !== undefined && !(typeof responseId === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(responseId))) {
    throw new TypeError('GeminiEmulator: responseId must be 1 to 64 base64url characters when set')
  }
  validateUpstreamOptions(options.keys, options.models)
}

export function validatePace (pace: { chunkCount?: number; chunkDelayMs?: number }, where: string): void {
  const { chunkCount, chunkDelayMs } = pace
  if (chunkCount !== undefined && !(Number.isInteger(chunkCount) && chunkCount >= 1)) {
    throw new RangeError(`${where}: chunkCount must be a positive integer, got ${String(chunkCount)}`)
  }
  if (chunkDelayMs !== undefined && !(typeof chunkDelayMs === 'number' && Number.isFinite(chunkDelayMs) && chunkDelayMs >= 0)) {
    throw new RangeError(`${where}: chunkDelayMs must be a finite number >= 0, got ${String(chunkDelayMs)}`)
  }
}
