import Fastify from 'fastify'
import t from 'tap'
import streamGateway, { openApiPlugin } from '../index.js'
import { USER_KEY } from './support/gateway.js'

interface OpenApiDocument {
  openapi: string
  paths: Record<string, Record<string, {
    security?: unknown[]
    requestBody?: { content: Record<string, { schema: { required?: string[], properties?: Record<string, unknown>, additionalProperties?: boolean } }> }
    responses: Record<string, { description?: string, content?: Record<string, { example?: unknown, schema: { required?: string[], anyOf?: unknown[] } }> }>
  }>>
  components: { securitySchemes: Record<string, unknown> }
}

t.test('the OpenAPI document describes the request, the SSE answer and every error body', async t => {
  const app = Fastify({ logger: false })
  t.teardown(async () => { await app.close() })
  await app.register(openApiPlugin, { version: '1.2.3' })
  await app.register(streamGateway, { apiKeys: [USER_KEY], gemini: { apiKey: 'k', baseUrl: 'http://127.0.0.1:9' } })
  const response = await app.inject({ method: 'GET', url: '/api/docs/json' })
  t.equal(response.statusCode, 200)
  const document = response.json<OpenApiDocument>()
  t.equal(document.openapi, '3.0.3')
  t.same(Object.keys(document.paths).sort(), ['/api/models', '/api/stream', '/api/stream/{streamId}', '/api/usage', '/v1/chat/completions', '/v1/models', '/v1/models/{model}'], 'only the public API; metrics and probes stay out')
  const chat = document.paths['/v1/chat/completions']?.post
  t.same(chat?.security, [{ bearer: [] }, { apiKey: [] }], 'the OpenAI routes take a Bearer key or X-API-Key')
  t.same(Object.keys(chat?.responses ?? {}), ['200', '400', '401', '403', '404', '413', '415', '429', '500', '502', '503', '504'])
  t.same(Object.keys(chat?.responses['200']?.content ?? {}), ['application/json', 'text/event-stream'])
  t.same(chat?.requestBody?.content['application/json']?.schema?.required, ['model', 'messages'])
  t.same(document.components.securitySchemes.bearer, { type: 'http', scheme: 'bearer', description: 'The same keys as X-API-Key, as OpenAI clients send them' })
  const listing = document.paths['/api/models']?.get
  t.same(listing?.security, [{ apiKey: [] }])
  t.same(Object.keys(listing?.responses ?? {}), ['200', '401', '403', '429', '502', '503'])
  t.same(listing?.responses['502']?.content?.['application/json']?.example, { error: 'Failed to list models', message: 'Gemini answered with status 503' })
  const resuming = document.paths['/api/stream/{streamId}']?.get
  t.same(resuming?.security, [{ apiKey: [] }, { bearer: [] }])
  t.same(Object.keys(resuming?.responses ?? {}), ['200', '400', '401', '403', '404', '410', '429', '503'])
  t.same(resuming?.responses['404']?.content?.['application/json']?.example, { error: 'Not Found: no resumable stream with this id.' })
  const operation = document.paths['/api/stream']?.post
  t.same(operation?.security, [{ apiKey: [] }])
  t.same(document.components.securitySchemes.apiKey, { type: 'apiKey', in: 'header', name: 'X-API-Key' })

  const body = operation?.requestBody?.content['application/json']?.schema
  t.same(body?.required, ['prompt'])
  t.same(Object.keys(body?.properties ?? {}).sort(), ['agent', 'attachments', 'history', 'model', 'options', 'prompt', 'resumable', 'system'])
  t.equal(body?.additionalProperties, false)

  const stream = operation?.responses['200']?.content?.['text/event-stream']?.schema
  t.equal(stream?.anyOf?.length, 4, 'chunk, thought, completion and error events')
  const examples = Object.fromEntries(Object.entries(operation?.responses ?? {})
    .filter(([status]) => status !== '200')
    .map(([status, answer]) => [status, answer.content?.['application/json']?.example]))
  t.same(examples, {
    400: { error: 'Prompt is required' },
    401: { error: 'Unauthorized: API key is missing.' },
    403: { error: 'Forbidden: Invalid API key.' },
    413: { error: 'Request body is too large' },
    415: { error: 'Unsupported Media Type: send the body as application/json' },
    429: { error: 'Too Many Requests', message: 'You have exceeded the request limit. Please try again later.' },
    500: { error: 'Failed to start stream', message: 'Resource has been exhausted (e.g. check quota).' },
    503: { error: 'Service Unavailable', message: 'The gateway is shutting down; retry the request' }
  })
  for (const [status, answer] of Object.entries(operation?.responses ?? {})) {
    if (status !== '200') t.same(answer.content?.['application/json']?.schema.required, ['error'], `${status} body schema`)
  }
})

t.test('with a management token the document describes the management API under its own scheme', async t => {
  const app = Fastify({ logger: false })
  t.teardown(async () => { await app.close() })
  await app.register(openApiPlugin)
  await app.register(streamGateway, { apiKeys: [USER_KEY], gemini: { apiKey: 'k', baseUrl: 'http://127.0.0.1:9' }, management: { token: 'management-secret-0123456789' } })
  const document = (await app.inject({ method: 'GET', url: '/api/docs/json' })).json<OpenApiDocument>()
  t.same(Object.keys(document.paths).filter(path => path.startsWith('/admin')).sort(), ['/admin/keys', '/admin/keys/{name}', '/admin/usage'])
  t.same(document.paths['/admin/keys']?.post?.security, [{ management: [] }])
  t.match(document.components.securitySchemes.management, { type: 'http', scheme: 'bearer' })
  t.same(Object.keys(document.paths['/admin/keys']?.post?.requestBody?.content['application/json']?.schema.properties ?? {}).sort(),
    ['disabled', 'expiresAt', 'maxConcurrentStreams', 'maxOutputTokens', 'models', 'name', 'requestsPerWindow', 'role', 'tokensPerDay', 'tokensPerMinute', 'usdPerDay'])
})
