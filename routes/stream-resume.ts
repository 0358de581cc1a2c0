// GET /api/stream/{streamId}: a client whose connection to a resumable stream dropped reads on from the last event it
// saw (Last-Event-ID, as EventSource sends it, or ?after=<n>), on any instance: the events come from the stream's
// log, replayed and then followed live until the stream's completion or error event.

import { once } from 'node:events'
import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { refusals } from '../schemas/refusals.js'
import { need } from '../plugins/services.js'
import { callerOf } from '../plugins/auth.js'
import type { StreamApi } from '../plugins/metrics.js'
import { DEFAULT_RELAY_SETTINGS } from '../relay/settings.js'
import { HEARTBEAT, SSE_HEADERS } from './contract-sse.js'
import type {} from '../plugins/lifecycle.js'
import type {} from '../plugins/rate-limit.js'
import type {} from '../plugins/resumable-streams.js'

export interface StreamResumeRouteOptions {
  /** Milliseconds of silence before a heartbeat comment; 0 disables. Default as the stream route's, 15000. */
  heartbeatMs?: number | undefined
}

/** What a stream id looks like (the gateway's are UUIDs); anything else is answered as an unknown stream. */
const STREAM_ID = /^[A-Za-z0-9-]{1,64}$/
const EVENT_NUMBER = /^\d{1,15}$/
const STREAM_APIS: ReadonlySet<string> = new Set<StreamApi>(['stream', 'openai', 'gemini'])

/** The event to read after: Last-Event-ID (which a browser's EventSource sends on its own) wins over `?after`. */
function resumePointOf (request: FastifyRequest, streamId: string): number {
  const lastEventId = request.headers['last-event-id']
  if (typeof lastEventId === 'string' && lastEventId !== '') {
    const separator = lastEventId.lastIndexOf(':')
    const n = lastEventId.slice(separator + 1)
    if (separator === -1 || lastEventId.slice(0, separator) !== streamId || !EVENT_NUMBER.test(n)) throw refusals.invalidResumePoint()
    return Number(n)
  }
  const after = (request.query as Record<string, unknown> | undefined)?.after
  if (after === undefined) return 0
  if (typeof after !== 'string' || !EVENT_NUMBER.test(after)) throw refusals.invalidResumePoint()
  return Number(after)
}

const streamResumeRoute: FastifyPluginAsync<StreamResumeRouteOptions> = async (app, options) => {
  const { identifyBearerCaller, requireCaller } = need(app, 'auth', 'amrikyy-stream-resume-route')
  const metrics = need(app, 'metrics', 'amrikyy-stream-resume-route')
  const lifecycle = need(app, 'lifecycle', 'amrikyy-stream-resume-route')
  const { store } = need(app, 'resumable', 'amrikyy-stream-resume-route')
  const heartbeatMs = options.heartbeatMs ?? DEFAULT_RELAY_SETTINGS.heartbeatMs
  // A resume costs a request of the key's rate limit like any other: it is what bounds the readers one key can open.
  const rateLimitHooks = app.amrikyy?.rateLimit === undefined ? [] : [app.amrikyy.rateLimit]

  async function refuseWhileDraining (): Promise<void> {
    if (lifecycle.draining) throw refusals.shuttingDown()
  }

  app.get<{ Params: { streamId: string } }>('/api/stream/:streamId', {
    schema: {
      summary: 'Read on a resumable stream after a dropped connection, from the event after Last-Event-ID (or ?after=<n>)',
      security: [{ apiKey: [] }]
    },
    config: { disableMetrics: true },
    // Bearer too: a stream started on the OpenAI-compatible route resumes here with the same key.
    onRequest: [refuseWhileDraining, identifyBearerCaller, ...rateLimitHooks, requireCaller]
  }, async function resumeStream (request, reply) {
    const { streamId } = request.params
    if (!STREAM_ID.test(streamId)) throw refusals.streamNotFound()
    const after = resumePointOf(request, streamId)
    const caller = callerOf(request)
    const owner = await store.owner(streamId)
    if (owner === undefined || caller === null || owner.caller !== caller.id) throw refusals.streamNotFound()

    const leaving = new AbortController()
    const raw = reply.raw
    raw.once('close', () => { leaving.abort() })
    const events = await store.read(streamId, after, leaving.signal)
    if (events === undefined) throw refusals.streamEventsGone(after)

    const api = STREAM_APIS.has(owner.api) ? owner.api as StreamApi : 'stream'
    metrics.resumed(api)
    request.log.info({ streamId, startedBy: owner.requestId, after }, 'resumed')
    reply.hijack()
    const headers: Record<string, string | number | string[]> = {}
    for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) headers[name] = value
    raw.writeHead(200, { ...headers, ...SSE_HEADERS, 'x-stream-id': streamId })
    raw.flushHeaders()

    const present = store.attend(streamId)
    // On shutdown a reader only loses its connection: it resumes on another instance, the answer is in the log.
    const untrack = lifecycle.track({ interrupt: () => { leaving.abort() } })
    let wrote = false
    const heartbeat = heartbeatMs === 0
      ? undefined
      : setInterval(() => {
        if (!wrote && !raw.destroyed) raw.write(HEARTBEAT)
        wrote = false
      }, heartbeatMs)
    try {
      for await (const event of events) {
        wrote = true
        if (!raw.write(event.frame)) await once(raw, 'drain', { signal: leaving.signal })
      }
    } catch (error) {
      if (!leaving.signal.aborted) request.log.warn({ streamId, reason: error instanceof Error ? error.message : String(error) }, 'a resumed stream could not be read on; the client may resume again')
    } finally {
      clearInterval(heartbeat)
      present()
      untrack()
      raw.end()
    }
    return reply
  })
}

export default fp(streamResumeRoute, {
  name: 'amrikyy-stream-resume-route',
  fastify: '5.x',
  encapsulate: true,
  dependencies: ['amrikyy-auth', 'amrikyy-metrics', 'amrikyy-lifecycle', 'amrikyy-resumable-streams']
})
