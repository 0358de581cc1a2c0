import fp from 'fastify-plugin'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { UpstreamError } from '../gemini/upstream-error.js'
import { ModelListResponses } from '../schemas/models.js'
import { refusals } from '../schemas/refusals.js'
import { need } from '../plugins/services.js'
// Each service's type comes with the plugin that provides it.
import { callerOf } from '../plugins/auth.js'
import type {} from '../plugins/models.js'
import type {} from '../plugins/rate-limit.js'

/** GET /api/models: the models a caller may name, for the same keys and on the same budget as the stream route. */
const modelsRoute: FastifyPluginAsyncTypebox = async app => {
  const { identifyCaller, requireCaller } = need(app, 'auth', 'amrikyy-auth')
  const models = need(app, 'models', 'amrikyy-models')
  const rateLimit = app.amrikyy?.rateLimit
  const rateLimitHooks = rateLimit === undefined ? [] : [rateLimit]

  app.get('/api/models', {
    schema: {
      summary: 'The models a caller may name in POST /api/stream, aliases included',
      security: [{ apiKey: [] }],
      response: ModelListResponses
    },
    onRequest: [identifyCaller, ...rateLimitHooks, requireCaller]
  }, async function listModels (request, reply) {
    // A caller that leaves stops waiting; the shared fetch goes on for the others.
    const left = new AbortController()
    reply.raw.once('close', () => { if (!reply.raw.writableFinished) left.abort() })
    try {
      return { models: await models.list(left.signal, callerOf(request)) }
    } catch (error) {
      if (!(error instanceof UpstreamError)) throw error
      // The shared fetch is bounded: aborted and not by this caller means Gemini took too long.
      throw refusals.modelListFailed(error.code === 'aborted' && !left.signal.aborted ? 'Gemini did not answer in time' : error.message)
    }
  })
}

export default fp(modelsRoute, {
  name: 'amrikyy-models-route',
  fastify: '5.x',
  encapsulate: true,
  dependencies: ['amrikyy-auth', 'amrikyy-models']
})
