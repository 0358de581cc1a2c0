import fp from 'fastify-plugin'
import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { parseJsonBody, refuseOtherCharsets } from './json-body.js'
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
  /** Characters of one answer before the stream fails as too large. Default 8 Mi. */
  maxAnswerChars?: number
}

export const DEFAULT_RELAY_SETTINGS: RelaySettings = {
  timeouts: { firstChunkMs: 60_000, idleMs: 30_000, totalMs: 600_000, clientStallMs: 30_000 },
  heartbeatMs: 15_000,
  retry: { attempts: 3, baseDelayMs: 250, maxDelayMs: 4_000, maxTotalWaitMs: 10_000 },
  maxAnswerChars: 8 * 1024 * 1024
}

/**
 * Room for a maximal prompt even when every character is escaped: an astral character (one of the
 * prompt's code points) is two `\uXXXX` escapes, 12 bytes; the rest of the body fits in 64 KiB.
 */
const BODY_LIMIT = PROMPT_MAX_LENGTH * 12 + 64 * 1024

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
    },
    maxAnswerChars: checked('maxAnswerChars', options.maxAnswerChars, DEFAULT_RELAY_SETTINGS.maxAnswerChars, 1)
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
