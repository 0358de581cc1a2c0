import fp from 'fastify-plugin'
import fastifySwagger from '@fastify/swagger'

/** The public API: the stream, the models a caller may name in it, its usage, the OpenAI-compatible routes, the management API. */
const PUBLIC_PATHS = ['/api/stream', '/api/stream/:streamId', '/api/models', '/api/usage', '/v1/chat/completions', '/v1/models', '/v1/models/:model', '/admin/keys', '/admin/keys/:name', '/admin/usage']

export interface OpenApiOptions {
  /** Where the JSON document is served. Default `/api/docs/json`. */
  path?: string
  version?: string
}

/**
 * The OpenAPI 3 document of every route registered after this plugin, built from their TypeBox
 * schemas. Register it before the gateway.
 */
export default fp<OpenApiOptions>(async function openApiPlugin (app, options) {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Amrikyy stream gateway',
        description: 'Streams Google Gemini answers as Server-Sent Events.',
        version: options.version ?? '0.0.0'
      },
      components: {
        securitySchemes: {
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
          bearer: { type: 'http', scheme: 'bearer', description: 'The same keys as X-API-Key, as OpenAI clients send them' },
          management: { type: 'http', scheme: 'bearer', description: 'MANAGEMENT_API_KEY, the operators\' secret of /admin' }
        }
      }
    },
    // Only the public API: metrics, probes and the playground stay out of the document.
    transform: ({ schema, url }) => ({ schema: PUBLIC_PATHS.some(path => url.endsWith(path)) ? schema : { ...schema, hide: true }, url })
  })
  app.get(options.path ?? '/api/docs/json', { schema: { hide: true }, logLevel: 'warn' }, async () => app.swagger())
}, { name: 'amrikyy-openapi', fastify: '5.x' })
