import type { FastifyPluginAsync } from 'fastify'
import type { GatewayLifecycle } from '../plugins/lifecycle.js'

export interface HealthRouteOptions {
  lifecycle: GatewayLifecycle
}

/** Probes for orchestrators: live while the process serves, ready until it starts draining. */
const healthRoute: FastifyPluginAsync<HealthRouteOptions> = async (app, { lifecycle }) => {
  app.get('/health/live', { logLevel: 'warn', config: { disableMetrics: true } }, async () => ({ status: 'ok' }))
  app.get('/health/ready', { logLevel: 'warn', config: { disableMetrics: true } }, async (_request, reply) => {
    if (lifecycle.draining) return await reply.code(503).send({ status: 'draining', openStreams: lifecycle.openStreams })
    return { status: 'ready', openStreams: lifecycle.openStreams }
  })
}

export default healthRoute
