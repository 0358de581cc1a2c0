import fp from 'fastify-plugin'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { KeyUsageResponses } from '../schemas/usage.js'
import { policyView } from '../schemas/key-policy.js'
import { refusals } from '../schemas/refusals.js'
import { callerOf } from '../plugins/auth.js'
import { need } from '../plugins/services.js'
// Each service's type comes with the plugin that provides it.
import type {} from '../plugins/key-budgets.js'
import type {} from '../plugins/rate-limit.js'

/** GET /api/usage: what the calling key may spend, what it spent in the current windows and what remains. */
const usageRoute: FastifyPluginAsyncTypebox = async app => {
  const { identifyCaller, requireCaller } = need(app, 'auth', 'amrikyy-auth')
  const budgets = need(app, 'budgets', 'amrikyy-key-budgets')
  const rateLimit = app.amrikyy?.rateLimit
  const rateLimitHooks = rateLimit === undefined ? [] : [rateLimit]

  app.get('/api/usage', {
    schema: {
      summary: 'The calling key\'s limits, its usage in the current minute and day, and what remains',
      security: [{ apiKey: [] }],
      response: KeyUsageResponses
    },
    onRequest: [identifyCaller, ...rateLimitHooks, requireCaller]
  }, async function keyUsage (request) {
    const caller = callerOf(request)!
    let usage
    try {
      usage = await budgets.usage(caller)
    } catch (error) {
      throw refusals.budgetsUnavailable(error)
    }
    return { ...usage, policy: policyView(usage.policy) }
  })
}

export default fp(usageRoute, {
  name: 'amrikyy-usage-route',
  fastify: '5.x',
  encapsulate: true,
  dependencies: ['amrikyy-auth', 'amrikyy-key-budgets']
})
