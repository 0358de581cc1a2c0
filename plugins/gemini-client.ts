import fp from 'fastify-plugin'
import { createRestGeminiClient } from '../gemini/rest-client.js'
import { createKeyPool, type PooledKey } from '../gemini/key-pool.js'
import { DEFAULT_BREAKER, withCircuitBreaker, type BreakerOptions } from '../gemini/circuit-breaker.js'
import { provide } from './services.js'
import type { GeminiClient, GeminiClientOptions } from '../gemini/types.js'
// The metrics plugin declares the `metrics` service this plugin reports key states to, when it is there.
import type {} from './metrics.js'

export * from '../gemini/types.js'
export { UpstreamError, type UpstreamErrorCode } from '../gemini/upstream-error.js'

/** One of several Gemini keys: its value and the name logs and metrics call it by (default: its position, 1, 2, …). */
export type GeminiKeyOption = string | { name: string, key: string }

/**
 * How the gateway reaches Gemini: options for one of its own clients, or a client of the host's own. With
 * `apiKeys` (two or more), calls are spread over them and a key Gemini refuses or rations is passed over.
 */
export type GeminiPluginOptions = (GeminiClientOptions & {
  apiKeys?: readonly GeminiKeyOption[] | undefined
  /** A circuit breaker per model and key; unset: none, every call goes to Gemini as before. */
  breaker?: Partial<BreakerOptions> | undefined
}) | { client: GeminiClient }

/** The names of the pooled keys of these options, in order; empty for one key. */
export function pooledKeyNames (options: GeminiPluginOptions): string[] {
  if (isOwnClient(options) || options.apiKeys === undefined || options.apiKeys.length < 2) return []
  return options.apiKeys.map((key, index) => typeof key === 'string' ? String(index + 1) : key.name)
}

function pooledClients (options: GeminiClientOptions & { apiKeys: readonly GeminiKeyOption[] }, build: (options: GeminiClientOptions) => GeminiClient): PooledKey[] {
  const names = new Set<string>()
  return options.apiKeys.map((entry, index) => {
    const { name, key } = typeof entry === 'string' ? { name: String(index + 1), key: entry } : entry
    if (typeof key !== 'string' || key === '') throw new Error(`gemini-client: key ${index + 1} of option "apiKeys" must be a non-empty string`)
    if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,32}$/.test(name) || names.has(name)) throw new Error(`gemini-client: key ${index + 1} of option "apiKeys" needs a unique name of 1 to 32 letters, digits or ._-`)
    names.add(name)
    return { name, client: build({ ...options, apiKey: key }) }
  })
}

function breakerOptions (given: Partial<BreakerOptions>): BreakerOptions {
  const options = { ...DEFAULT_BREAKER, ...given }
  for (const name of ['failures', 'windowMs', 'coolDownMs', 'trials'] as const) {
    if (!Number.isInteger(options[name]) || options[name] < 1) throw new Error(`gemini-client: option "breaker.${name}" must be a positive integer`)
  }
  return options
}

function keyValue (entry: GeminiKeyOption): string {
  return typeof entry === 'string' ? entry : entry.key
}

function isOwnClient (options: GeminiPluginOptions): options is { client: GeminiClient } {
  return typeof options.client === 'object' && options.client !== null
}

declare module './services.js' {
  interface GatewayServices {
    gemini?: GeminiClient
  }
}

export default fp<GeminiPluginOptions>(async function geminiClientPlugin (app, options) {
  if (isOwnClient(options)) {
    const { streamGenerate, countTokens } = options.client
    if (typeof streamGenerate !== 'function' || typeof countTokens !== 'function') {
      throw new Error('gemini-client: option "client" must be "sdk", "rest" or a GeminiClient (streamGenerate and countTokens)')
    }
    provide(app, 'gemini', options.client)
    return
  }
  const pool = options.apiKeys !== undefined && options.apiKeys.length > 1 ? options.apiKeys : undefined
  if (pool === undefined && (typeof options.apiKey !== 'string' || options.apiKey === '')) {
    throw new Error('gemini-client: option "apiKey" must be a non-empty string')
  }
  for (const name of ['maxEventChars', 'maxErrorBodyBytes'] as const) {
    const value = options[name]
    if (value !== undefined && !(Number.isInteger(value) && value >= 1)) throw new Error(`gemini-client: option "${name}" must be an integer >= 1`)
  }
  const choice = options.client ?? 'rest'
  if (choice !== 'sdk' && choice !== 'rest') {
    throw new Error('gemini-client: option "client" must be "sdk" or "rest"')
  }
  let build: (options: GeminiClientOptions) => GeminiClient
  if (choice === 'rest') {
    build = clientOptions => {
      const client = createRestGeminiClient(clientOptions)
      app.addHook('onClose', async () => { await client.close() })
      return client
    }
  } else {
    // Loaded only when chosen: the SDK alone adds about 20 MiB to the process.
    const { createSdkGeminiClient } = await import('../gemini/sdk-client.js')
    build = createSdkGeminiClient
  }
  const metrics = app.amrikyy?.metrics
  const breaker = options.breaker === undefined ? undefined : breakerOptions(options.breaker)
  const unbroken = build
  if (breaker !== undefined) {
    // Each key's client gets its own breakers: an upstream is a model on a key.
    let position = 0
    build = clientOptions => {
      position++
      const key = pool === undefined ? '1' : pooledKeyNames(options)[position - 1] ?? String(position)
      return withCircuitBreaker(unbroken(clientOptions), breaker, (model, state) => {
        metrics?.circuitState(key, model, state)
        const fields = { geminiKey: key, model, circuit: state }
        if (state === 'open') app.log.warn({ ...fields, coolDownMs: breaker.coolDownMs }, 'circuit opened: Gemini is failing for this model; calls are answered at once')
        else app.log.info(fields, state === 'half-open' ? 'circuit half-open: trial calls go to Gemini' : 'circuit closed: calls go to Gemini again')
      })
    }
  }
  if (pool === undefined) {
    const only = options.apiKeys?.[0]
    provide(app, 'gemini', build(only === undefined ? options : { ...options, apiKey: keyValue(only) }))
    return
  }
  provide(app, 'gemini', createKeyPool(pooledClients({ ...options, apiKeys: pool }, build), {
    onStateChange ({ name, position }, state, why) {
      metrics?.upstreamKeyState(name, state)
      // The position and name only: a key's value never reaches a log.
      if (state === 'out') app.log.error({ geminiKey: name, position, upstreamStatus: why.status }, 'Gemini refused this key; it is out of the pool until the gateway restarts')
      else if (state === 'resting') app.log.warn({ geminiKey: name, position, restMs: why.restMs }, 'Gemini key out of quota; resting it')
      else app.log.info({ geminiKey: name, position }, 'Gemini key serving again')
    }
  }))
}, { name: 'amrikyy-gemini-client', fastify: '5.x' })
