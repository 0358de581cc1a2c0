// OpenAI's Chat Completions and Models APIs on the gateway's keys, limits, metrics and relay, so that any
// OpenAI client works with only its base URL and key changed. Every answer but a 2xx is in OpenAI's shape.

import fp from 'fastify-plugin'
import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { StreamRelay } from '../../relay/relay.js'
import { relaySettings, type RelayOptions } from '../../relay/settings.js'
import { UpstreamError } from '../../gemini/upstream-error.js'
import { ChatCompletionRequest, ChatCompletionResponses, ModelAnswers, ModelListAnswers, type OpenAIModel } from '../../schemas/openai.js'
import { ATTACHMENTS_MAX_ITEMS, DEFAULT_ATTACHMENTS_MAX_BYTES } from '../../schemas/stream.js'
import type { ListedModel } from '../../schemas/models.js'
import { callerOf } from '../../plugins/auth.js'
import { promptEstimate, withOutputCap } from '../../plugins/key-budgets.js'
import { apiServices } from '../api-services.js'
import { parseJsonBody, refuseOtherCharsets } from '../json-body.js'
import { bodyLimitFor } from '../stream-request.js'
import { BODY_LIMIT } from '../stream.js'
import { chatConversationOf, generationOf } from './chat-request.js'
import { chatCompletionSse, chatCompletionWhole, newCompletionIdentity } from './chat-format.js'
import { modelNotFound, OpenAIError, openAIErrorHandler } from './errors.js'
import type {} from '../../plugins/resumable-streams.js'

export interface OpenAIRoutesOptions extends RelayOptions {
  defaultModel: string
  /** Decoded bytes all files of one request may hold together, as on the stream route. Default 20 MiB. */
  attachmentsMaxBytes?: number | undefined
}

/** A model name as Gemini's clients send one (schemas/stream.ts): anything else names no model. */
const MODEL_NAME = /^(?!.*\.\.)(models\/)?[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$/

function openAIModelOf (model: ListedModel): OpenAIModel {
  return { id: model.id, object: 'model', created: 0, owned_by: model.aliasOf === undefined ? 'google' : 'amrikyy' }
}

const openAIRoutes: FastifyPluginAsyncTypebox<OpenAIRoutesOptions> = async (app, options) => {
  const settings = relaySettings(options)
  const attachmentsMaxBytes = options.attachmentsMaxBytes ?? DEFAULT_ATTACHMENTS_MAX_BYTES
  app.setValidatorCompiler(TypeBoxValidatorCompiler)
  app.setErrorHandler(openAIErrorHandler)
  app.removeContentTypeParser(['text/plain', 'application/json'])
  app.addContentTypeParser('application/json', { parseAs: 'string' }, function parseChatBody (request, body, done) {
    parseJsonBody(request, body as string, done)
  })
  const { auth: { identifyBearerCaller, refuseUnidentified }, gemini, metrics, lifecycle, models, budgets, rateLimitHooks, refuseWhileDraining } = apiServices(app, 'amrikyy-openai-routes')

  const resumableStreams = app.amrikyy?.resumable
  const hooks = [identifyBearerCaller, ...rateLimitHooks, refuseUnidentified]
  const security: Array<Record<string, string[]>> = [{ bearer: [] }, { apiKey: [] }]

  app.post('/v1/chat/completions', {
    schema: {
      summary: 'OpenAI Chat Completions, answered by Gemini (streamed with `stream: true`)',
      security,
      body: ChatCompletionRequest,
      response: ChatCompletionResponses
    },
    bodyLimit: bodyLimitFor(BODY_LIMIT, attachmentsMaxBytes, ATTACHMENTS_MAX_ITEMS),
    config: { disableMetrics: true },
    onRequest: [refuseWhileDraining, ...hooks],
    preParsing: refuseOtherCharsets
  }, async function chatCompletions (request, reply) {
    await refuseWhileDraining()
    const chat = chatConversationOf(request.body, attachmentsMaxBytes)
    const requested = request.body.model
    if (!MODEL_NAME.test(requested)) throw modelNotFound(requested)
    const caller = callerOf(request)
    const choice = models.resolveFor(requested, caller)
    if (choice.refusal !== undefined) throw modelNotFound(requested)
    const model = choice.model
    const generation = withOutputCap(generationOf(chat, model), caller?.policy.maxOutputTokens)
    const admission = await budgets?.admit(request, reply, model, () => ({ promptTokens: promptEstimate(generation), maxOutputTokens: generation.options?.maxOutputTokens }))
    const identity = newCompletionIdentity(model)
    const format = chat.stream ? chatCompletionSse(identity, chat.includeUsage) : chatCompletionWhole(identity)
    // Only a streamed answer can be picked up again; a whole one is a single JSON body.
    const resumable = chat.stream ? resumableStreams?.streamFor(request, caller, request.body.resumable, 'openai', format) : undefined
    const recorder = metrics.beginStream({ api: 'openai', agent: chat.agent, model, key: caller?.id })
    const context = { gemini, recorder: admission?.charging(recorder) ?? recorder, lifecycle, log: request.log, settings, allowsModel: models.allowsFor(caller), resumable }
    return await new StreamRelay(context, reply, generation, format).run()
  })

  async function listed (request: FastifyRequest, reply: FastifyReply): Promise<ListedModel[]> {
    // A caller that leaves stops waiting; the shared fetch goes on for the others.
    const left = new AbortController()
    reply.raw.once('close', () => { if (!reply.raw.writableFinished) left.abort() })
    try {
      return await models.list(left.signal, callerOf(request))
    } catch (error) {
      if (!(error instanceof UpstreamError)) throw error
      const why = error.code === 'aborted' && !left.signal.aborted ? 'Gemini did not answer in time' : error.message
      throw new OpenAIError(502, `Failed to list models: ${why}`, 'api_error', null, 'upstream_error')
    }
  }

  app.get('/v1/models', {
    schema: { summary: 'The models a caller may name, in OpenAI\'s list shape', security, response: ModelListAnswers },
    onRequest: hooks
  }, async function listModels (request, reply) {
    const all = await listed(request, reply)
    return { object: 'list' as const, data: all.map(openAIModelOf) }
  })

  app.get('/v1/models/:model', {
    schema: {
      summary: 'One model a caller may name, in OpenAI\'s shape',
      security,
      params: Type.Object({ model: Type.String() }),
      response: ModelAnswers
    },
    onRequest: hooks
  }, async function getModel (request, reply) {
    const all = await listed(request, reply)
    const found = all.find(model => model.id === request.params.model)
    if (found === undefined) throw modelNotFound(request.params.model)
    return openAIModelOf(found)
  })
}

export default fp(openAIRoutes, {
  name: 'amrikyy-openai-routes',
  fastify: '5.x',
  encapsulate: true,
  dependencies: ['amrikyy-auth', 'amrikyy-metrics', 'amrikyy-gemini-client', 'amrikyy-lifecycle', 'amrikyy-models']
})
