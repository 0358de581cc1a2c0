import fp from 'fastify-plugin'
import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorCodes, type FastifyReply, type FastifyRequest } from 'fastify'
import { PROMPT_MAX_LENGTH, StreamRequest, StreamResponses } from '../schemas/stream.js'
import { SHUTTING_DOWN_MESSAGE } from '../plugins/lifecycle.js'
// The rate limiter is optional; its decorator's type comes with the plugin that adds it.
import type {} from '../plugins/rate-limit.js'
import { StreamRelay, type RelaySettings, type RetryPolicy, type StreamTimeouts } from './stream-relay.js'

export type { RetryPolicy, StreamTimeouts }

export interface StreamRouteOptions {
  defaultModel: string
  timeouts?: Partial<StreamTimeouts>
  /** Milliseconds of silence before an SSE comment keeps proxies from closing the stream; 0 disables. Default 15000. */
  heartbeatMs?: number
  retry?: Partial<RetryPolicy>
}

export const DEFAULT_RELAY_SETTINGS: RelaySettings = {
  timeouts: { firstChunkMs: 60_000, idleMs: 30_000, totalMs: 600_000, clientStallMs: 30_000 },
  heartbeatMs: 15_000,
  retry: { attempts: 3, baseDelayMs: 250, maxDelayMs: 4_000, maxTotalWaitMs: 10_000 }
}

/**
 * Room for a maximal prompt even when every character is escaped: an astral character (one of the
 * prompt's code points) is two `\uXXXX` escapes, 12 bytes; the rest of the body fits in 64 KiB.
 */
const BODY_LIMIT = PROMPT_MAX_LENGTH * 12 + 64 * 1024

/** JSON is UTF-8 (RFC 8259); a body declared in another charset would be silently misread. */
const UTF8_CHARSET = /^"?utf-?8"?$/i

function charsetOf (contentType: string | undefined): string | undefined {
  const parameter = contentType?.split(';').slice(1).map(part => part.trim().split('=')).find(([name]) => name?.trim().toLowerCase() === 'charset')
  return parameter?.[1]?.trim()
}

/** The first key that would poison a prototype if merged into an object. Iterative: bodies may nest deeply. */
function poisonedField (root: unknown): string | undefined {
  const pending = [root]
  for (let value = pending.pop(); value !== undefined || pending.length > 0; value = pending.pop()) {
    if (value === null || typeof value !== 'object') continue
    if (Object.hasOwn(value, '__proto__')) return '__proto__'
    const ctor = (value as { constructor?: unknown }).constructor
    if (Object.hasOwn(value, 'constructor') && ctor !== null && typeof ctor === 'object' && Object.hasOwn(ctor, 'prototype')) return 'constructor.prototype'
    pending.push(...Object.values(value))
  }
  return undefined
}

/**
 * Fastify's own JSON parser refuses prototype-poisoning keys too, but as "malformed" JSON; this one
 * says which key it refused. Valid JSON is otherwise parsed as JSON.parse does.
 */
function parseJsonBody (_request: FastifyRequest, body: string, done: (error: Error | null, value?: unknown) => void): void {
  if (body.length === 0) return done(new errorCodes.FST_ERR_CTP_EMPTY_JSON_BODY())
  let value: unknown
  try {
    value = JSON.parse(body)
  } catch {
    return done(new errorCodes.FST_ERR_CTP_INVALID_JSON_BODY())
  }
  const poisoned = poisonedField(value)
  if (poisoned !== undefined) return done(Object.assign(new Error(`Forbidden field in request body: ${poisoned}`), { statusCode: 400 }))
  done(null, value)
}

async function refuseOtherCharsets (request: FastifyRequest): Promise<void> {
  const charset = charsetOf(request.headers['content-type'])
  if (charset !== undefined && !UTF8_CHARSET.test(charset)) {
    throw Object.assign(new Error('Unsupported Media Type: send the body as application/json in UTF-8'), { statusCode: 415 })
  }
}

function checked (name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value < min) throw new Error(`stream route: option "${name}" must be an integer >= ${min}`)
  return value
}

export function relaySettings (options: StreamRouteOptions): RelaySettings {
  const { timeouts, retry, heartbeatMs } = DEFAULT_RELAY_SETTINGS
  return {
    timeouts: {
      firstChunkMs: checked('timeouts.firstChunkMs', options.timeouts?.firstChunkMs, timeouts.firstChunkMs, 1),
      idleMs: checked('timeouts.idleMs', options.timeouts?.idleMs, timeouts.idleMs, 1),
      totalMs: checked('timeouts.totalMs', options.timeouts?.totalMs, timeouts.totalMs, 1),
      clientStallMs: checked('timeouts.clientStallMs', options.timeouts?.clientStallMs, timeouts.clientStallMs, 1)
    },
    heartbeatMs: checked('heartbeatMs', options.heartbeatMs, heartbeatMs, 0),
    retry: {
      attempts: checked('retry.attempts', options.retry?.attempts, retry.attempts, 1),
      baseDelayMs: checked('retry.baseDelayMs', options.retry?.baseDelayMs, retry.baseDelayMs, 0),
      maxDelayMs: checked('retry.maxDelayMs', options.retry?.maxDelayMs, retry.maxDelayMs, 0),
      maxTotalWaitMs: checked('retry.maxTotalWaitMs', options.retry?.maxTotalWaitMs, retry.maxTotalWaitMs, 0)
    }
  }
}

const streamRoute: FastifyPluginAsyncTypebox<StreamRouteOptions> = async (app, options) => {
  const settings = relaySettings(options)
  app.setValidatorCompiler(TypeBoxValidatorCompiler)
  // The contract speaks JSON only; Fastify would otherwise hand a text/plain body to validation.
  app.removeContentTypeParser(['text/plain', 'application/json'])
  app.addContentTypeParser('application/json', { parseAs: 'string' }, parseJsonBody)
  const rateLimitHooks = app.hasDecorator('rateLimitCaller') ? [app.rateLimitCaller] : []

  async function refuseShuttingDown (reply: FastifyReply): Promise<FastifyReply> {
    return await reply.code(503).header('connection', 'close').send({ error: 'Service Unavailable', message: SHUTTING_DOWN_MESSAGE })
  }

  async function refuseWhileDraining (_request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    return app.lifecycle.draining ? await refuseShuttingDown(reply) : undefined
  }

  app.post('/api/stream', {
    schema: {
      summary: 'Stream a Gemini answer as Server-Sent Events',
      security: [{ apiKey: [] }],
      body: StreamRequest,
      response: StreamResponses
    },
    bodyLimit: BODY_LIMIT,
    // fastify-metrics would time a whole stream as one request and miss disconnects; we record our own.
    config: { disableMetrics: true },
    onRequest: [refuseWhileDraining, app.identifyCaller, ...rateLimitHooks, app.requireCaller],
    preParsing: refuseOtherCharsets
  }, async function streamHandler (request, reply) {
    // The body may have arrived after draining began: no stream may start that the drain does not track.
    if (app.lifecycle.draining) return await refuseShuttingDown(reply)
    const { prompt, options: generation, agent } = request.body
    const model = request.body.model ?? options.defaultModel
    return await new StreamRelay(app, request, reply, { model, prompt, options: generation }, agent, settings).run()
  })
}

export default fp(streamRoute, {
  name: 'amrikyy-stream-route',
  fastify: '5.x',
  // Keeps the route's validator and content-type parsers to itself while declaring what it needs.
  encapsulate: true,
  dependencies: ['amrikyy-auth', 'amrikyy-metrics', 'amrikyy-gemini-client', 'amrikyy-lifecycle']
})
