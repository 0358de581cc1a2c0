import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import fp from 'fastify-plugin'

/** Printable, short, no separators that could forge log fields or headers. */
const ACCEPTABLE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * For `Fastify({ genReqId })`: keeps a caller's well-formed `X-Request-Id` so logs join up across
 * services, and replaces anything else with a fresh UUID.
 */
export function genReqId (request: IncomingMessage): string {
  const presented = request.headers['x-request-id']
  return typeof presented === 'string' && ACCEPTABLE_REQUEST_ID.test(presented) ? presented : randomUUID()
}

/** Returns the request id on every answer of the gateway, streams included, so callers can quote it. */
export default fp(async function requestIdPlugin (app) {
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id)
  })
}, { name: 'amrikyy-request-id', fastify: '5.x' })
