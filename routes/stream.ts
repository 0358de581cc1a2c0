import fp from 'fastify-plugin'
import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { parseJsonBody, refuseOtherCharsets } from './json-body.js'
import { contractSse, conversationSse } from './contract-sse.js'
import { StreamRelay } from '../relay/relay.js'
import { relaySettings, type RelayOptions } from '../relay/settings.js'
import { CONVERSATION_MAX_CHARS, PROMPT_MAX_LENGTH, RESPONSE_SCHEMA_MAX_BYTES, RESPONSE_SCHEMA_MAX_DEPTH, StreamRequest, StreamResponses } from '../schemas/stream.js'
import { conversationTooLong, isConversation, schemaTooLarge } from './stream-request.js'
import { refusals } from '../schemas/refusals.js'
import { need } from '../plugins/services.js'
// Each service's type comes with the plugin that provides it.
import type {} from '../plugins/auth.js'
import type {} from '../plugins/gemini-client.js'
import type {} from '../plugins/lifecycle.js'
import type {} from '../plugins/metrics.js'
import type {} from '../plugins/models.js'
import type {} from '../plugins/rate-limit.js'

export interface StreamRouteOptions extends RelayOptions {
  defaultModel: string
}

/**
 * Room for a maximal prompt, system instruction and history even when every character is escaped: an
 * astral character (one code point) is two `\uXXXX` escapes, 12 bytes; the rest of the body fits in 64 KiB.
 */
const BODY_LIMIT = (PROMPT_MAX_LENGTH + CONVERSATION_MAX_CHARS) * 12 + 64 * 1024

const streamRoute: FastifyPluginAsyncTypebox<StreamRouteOptions> = async (app, options) => {
  const settings = relaySettings(options)
  app.setValidatorCompiler(TypeBoxValidatorCompiler)
  // The contract speaks JSON only; Fastify would otherwise hand a text/plain body to validation.
  app.removeContentTypeParser(['text/plain', 'application/json'])
  app.addContentTypeParser('application/json', { parseAs: 'string' }, parseJsonBody)
  const { identifyCaller, requireCaller } = need(app, 'auth', 'amrikyy-auth')
  const gemini = need(app, 'gemini', 'amrikyy-gemini-client')
  const metrics = need(app, 'metrics', 'amrikyy-metrics')
  const lifecycle = need(app, 'lifecycle', 'amrikyy-lifecycle')
  // The rate limiter and the model policy are optional.
  const rateLimit = app.amrikyy?.rateLimit
  const models = app.amrikyy?.models
  const rateLimitHooks = rateLimit === undefined ? [] : [rateLimit]

  async function refuseWhileDraining (): Promise<void> {
    if (lifecycle.draining) throw refusals.shuttingDown()
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
    onRequest: [refuseWhileDraining, identifyCaller, ...rateLimitHooks, requireCaller],
    preParsing: refuseOtherCharsets
  }, async function streamHandler (request, reply) {
    // The body may have arrived after draining began: no stream may start that the drain does not track.
    await refuseWhileDraining()
    const { prompt, system, history, options: generation, agent } = request.body
    if (conversationTooLong(system, history)) throw refusals.conversationTooLong(CONVERSATION_MAX_CHARS)
    if (schemaTooLarge(generation?.responseSchema)) throw refusals.invalidBody(`options.responseSchema must be at most ${RESPONSE_SCHEMA_MAX_BYTES} bytes and ${RESPONSE_SCHEMA_MAX_DEPTH} levels deep`)
    const requested = request.body.model ?? options.defaultModel
    // An alias becomes its target, which is what Gemini is asked for and what the metrics label.
    const choice = models?.resolve(requested) ?? { model: requested }
    if (choice.refusal !== undefined) throw choice.refusal
    const model = choice.model
    const context = { gemini, recorder: metrics.beginStream({ agent, model }), lifecycle, log: request.log, settings }
    const format = isConversation(request.body) ? conversationSse : contractSse
    return await new StreamRelay(context, reply, { model, prompt, system, history, options: generation }, format).run()
  })
}

export default fp(streamRoute, {
  name: 'amrikyy-stream-route',
  fastify: '5.x',
  // Keeps the route's validator and content-type parsers to itself while declaring what it needs.
  encapsulate: true,
  dependencies: ['amrikyy-auth', 'amrikyy-metrics', 'amrikyy-gemini-client', 'amrikyy-lifecycle']
})
