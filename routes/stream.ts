import fp from 'fastify-plugin'
import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { parseJsonBody, refuseOtherCharsets } from './json-body.js'
import { contractSse, conversationSse } from './contract-sse.js'
import { StreamRelay } from '../relay/relay.js'
import { relaySettings, type RelayOptions } from '../relay/settings.js'
import { ATTACHMENTS_MAX_BYTES_LIMIT, ATTACHMENTS_MAX_ITEMS, CONVERSATION_MAX_CHARS, DEFAULT_ATTACHMENTS_MAX_BYTES, PROMPT_MAX_LENGTH, RESPONSE_SCHEMA_MAX_BYTES, RESPONSE_SCHEMA_MAX_DEPTH, StreamRequest, StreamResponses } from '../schemas/stream.js'
import { attachmentBytes, bodyLimitFor, conversationTooLong, isConversation, schemaTooLarge, unpaddedAttachment } from './stream-request.js'
import { attachmentDataRule, refusals } from '../schemas/refusals.js'
import { need } from '../plugins/services.js'
// Each service's type comes with the plugin that provides it.
import { callerOf } from '../plugins/auth.js'
import { promptEstimate, withOutputCap } from '../plugins/key-budgets.js'
import type {} from '../plugins/gemini-client.js'
import type {} from '../plugins/lifecycle.js'
import type {} from '../plugins/metrics.js'
import type {} from '../plugins/models.js'
import type {} from '../plugins/rate-limit.js'
import type {} from '../plugins/resumable-streams.js'

export interface StreamRouteOptions extends RelayOptions {
  defaultModel: string
  /** Decoded bytes all attachments of one request may hold together; the body limit grows by their base64. Default 20 MiB. */
  attachmentsMaxBytes?: number | undefined
}

function attachmentsCapOf (value: number | undefined): number {
  if (value === undefined) return DEFAULT_ATTACHMENTS_MAX_BYTES
  if (!Number.isInteger(value) || value < 0 || value > ATTACHMENTS_MAX_BYTES_LIMIT) {
    throw new Error(`stream route: option "attachmentsMaxBytes" must be an integer from 0 to ${ATTACHMENTS_MAX_BYTES_LIMIT}`)
  }
  return value
}

/**
 * Room for a maximal prompt, system instruction and history even when every character is escaped: an
 * astral character (one code point) is two `\uXXXX` escapes, 12 bytes; the rest of the body fits in 64 KiB.
 */
export const BODY_LIMIT = (PROMPT_MAX_LENGTH + CONVERSATION_MAX_CHARS) * 12 + 64 * 1024

function hasAttachments (body: unknown): boolean {
  return typeof body === 'object' && body !== null && Array.isArray((body as { attachments?: unknown }).attachments)
}

const streamRoute: FastifyPluginAsyncTypebox<StreamRouteOptions> = async (app, options) => {
  const settings = relaySettings(options)
  const attachmentsMaxBytes = attachmentsCapOf(options.attachmentsMaxBytes)
  app.setValidatorCompiler(TypeBoxValidatorCompiler)
  // The contract speaks JSON only; Fastify would otherwise hand a text/plain body to validation.
  app.removeContentTypeParser(['text/plain', 'application/json'])
  // The room past the text fields' is for attachments only: a bigger body without them is refused as always.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, function parseStreamBody (request, body, done) {
    parseJsonBody(request, body as string, (error, value) => {
      if (Buffer.byteLength(body as string) > BODY_LIMIT && (error !== null || !hasAttachments(value))) return done(refusals.bodyTooLarge())
      done(error, value)
    })
  })
  const { identifyCaller, requireCaller } = need(app, 'auth', 'amrikyy-auth')
  const gemini = need(app, 'gemini', 'amrikyy-gemini-client')
  const metrics = need(app, 'metrics', 'amrikyy-metrics')
  const lifecycle = need(app, 'lifecycle', 'amrikyy-lifecycle')
  // The rate limiter and the model policy are optional.
  const rateLimit = app.amrikyy?.rateLimit
  const models = app.amrikyy?.models
  const budgets = app.amrikyy?.budgets
  const resumableStreams = app.amrikyy?.resumable
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
    bodyLimit: bodyLimitFor(BODY_LIMIT, attachmentsMaxBytes, ATTACHMENTS_MAX_ITEMS),
    // fastify-metrics would time a whole stream as one request and miss disconnects; we record our own.
    config: { disableMetrics: true },
    onRequest: [refuseWhileDraining, identifyCaller, ...rateLimitHooks, requireCaller],
    preParsing: refuseOtherCharsets
  }, async function streamHandler (request, reply) {
    // The body may have arrived after draining began: no stream may start that the drain does not track.
    await refuseWhileDraining()
    const { prompt, system, history, attachments, options: generation, agent } = request.body
    if (conversationTooLong(system, history)) throw refusals.conversationTooLong(CONVERSATION_MAX_CHARS)
    if (schemaTooLarge(generation?.responseSchema)) throw refusals.invalidBody(`options.responseSchema must be at most ${RESPONSE_SCHEMA_MAX_BYTES} bytes and ${RESPONSE_SCHEMA_MAX_DEPTH} levels deep`)
    const unpadded = unpaddedAttachment(attachments)
    if (unpadded !== undefined) throw refusals.invalidBody(attachmentDataRule(`attachments.${unpadded}.data`))
    if (attachmentBytes(attachments) > attachmentsMaxBytes) throw refusals.attachmentsTooLarge(attachmentsMaxBytes)
    const requested = request.body.model ?? options.defaultModel
    const caller = callerOf(request)
    // An alias becomes its target, which is what Gemini is asked for and what the metrics label.
    const choice = models?.resolveFor(requested, caller) ?? { model: requested }
    if (choice.refusal !== undefined) throw choice.refusal
    const model = choice.model
    const asked = withOutputCap({ model, prompt, system, history, attachments, options: generation }, caller?.policy.maxOutputTokens)
    const admission = await budgets?.admit(request, reply, model, () => ({ promptTokens: promptEstimate(asked), maxOutputTokens: asked.options?.maxOutputTokens }))
    const format = isConversation(request.body) ? conversationSse : contractSse
    const resumable = resumableStreams?.streamFor(request, caller, request.body.resumable, 'stream', format)
    const recorder = metrics.beginStream({ agent, model, key: caller?.id })
    const context = { gemini, recorder: admission?.charging(recorder) ?? recorder, lifecycle, log: request.log, settings, allowsModel: models?.allowsFor(caller), resumable }
    return await new StreamRelay(context, reply, asked, format).run()
  })
}

export default fp(streamRoute, {
  name: 'amrikyy-stream-route',
  fastify: '5.x',
  // Keeps the route's validator and content-type parsers to itself while declaring what it needs.
  encapsulate: true,
  dependencies: ['amrikyy-auth', 'amrikyy-metrics', 'amrikyy-gemini-client', 'amrikyy-lifecycle']
})
