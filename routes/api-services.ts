// What a route of another API (OpenAI's, Gemini's own) needs of the gateway to relay streams as POST /api/stream
// does: the same services, the same rate limit, and the same refusal while draining.

import type { FastifyInstance } from 'fastify'
import { refusals } from '../schemas/refusals.js'
import { need } from '../plugins/services.js'
// Each service's type comes with the plugin that provides it.
import type {} from '../plugins/auth.js'
import type {} from '../plugins/gemini-client.js'
import type {} from '../plugins/key-budgets.js'
import type {} from '../plugins/lifecycle.js'
import type {} from '../plugins/metrics.js'
import type {} from '../plugins/models.js'
import type {} from '../plugins/rate-limit.js'

export function apiServices (app: FastifyInstance, plugin: string) {
  const lifecycle = need(app, 'lifecycle', plugin)
  const rateLimit = app.amrikyy?.rateLimit
  return {
    auth: need(app, 'auth', plugin),
    gemini: need(app, 'gemini', plugin),
    metrics: need(app, 'metrics', plugin),
    models: need(app, 'models', plugin),
    lifecycle,
    /** Token budgets and concurrency per key, when the gateway counts them. */
    budgets: app.amrikyy?.budgets,
    /** The rate limiter's hook, when the gateway limits at all. */
    rateLimitHooks: rateLimit === undefined ? [] : [rateLimit],
    /** Thrown, so that the route's error handler gives it its API's shape. */
    async refuseWhileDraining (): Promise<void> {
      if (lifecycle.draining) throw refusals.shuttingDown()
    }
  }
}
