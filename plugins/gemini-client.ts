import fp from 'fastify-plugin'
import { createRestGeminiClient } from '../gemini/rest-client.js'
import { provide } from './services.js'
import type { GeminiClient, GeminiClientOptions } from '../gemini/types.js'

export * from '../gemini/types.js'
export { UpstreamError, type UpstreamErrorCode } from '../gemini/upstream-error.js'

/** How the gateway reaches Gemini: options for one of its own clients, or a client of the host's own. */
export type GeminiPluginOptions = GeminiClientOptions | { client: GeminiClient }

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
  if (typeof options.apiKey !== 'string' || options.apiKey === '') {
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
  if (choice === 'rest') {
    const client = createRestGeminiClient(options)
    app.addHook('onClose', async () => { await client.close() })
    provide(app, 'gemini', client)
  } else {
    // Loaded only when chosen: the SDK alone adds about 20 MiB to the process.
    const { createSdkGeminiClient } = await import('../gemini/sdk-client.js')
    provide(app, 'gemini', createSdkGeminiClient(options))
  }
}, { name: 'amrikyy-gemini-client', fastify: '5.x' })
