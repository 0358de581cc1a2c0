import fp from 'fastify-plugin'
import type { Socket } from 'node:net'
import { refusals } from '../schemas/refusals.js'

export interface ConnectionLimitOptions {
  /** Client connections the server keeps open at once; past it a new one is answered 503 and closed. Default 10,000. */
  maxConnections?: number
}

export const DEFAULT_MAX_CONNECTIONS = 10_000

const REFUSAL_BODY = JSON.stringify(refusals.tooManyConnections().body)
const REFUSAL = [
  'HTTP/1.1 503 Service Unavailable',
  'Content-Type: application/json; charset=utf-8',
  `Content-Length: ${Buffer.byteLength(REFUSAL_BODY)}`,
  'Retry-After: 1',
  'Connection: close',
  '',
  REFUSAL_BODY
].join('\r\n')

/** How long a refused socket may stay to let the client read the refusal. */
const REFUSAL_LINGER_MS = 1_000

/**
 * Bounds the connections of the whole server, so that a flood of slow or idle clients exhausts this
 * limit (answered with a clear 503) before it exhausts the process's file descriptors, where every
 * upstream call would fail too.
 */
export default fp<ConnectionLimitOptions>(async function connectionLimit (app, { maxConnections = DEFAULT_MAX_CONNECTIONS }) {
  if (!Number.isInteger(maxConnections) || maxConnections < 1) throw new Error('connection limit: option "maxConnections" must be a positive integer')
  let open = 0
  let refused = 0
  app.server.on('connection', (socket: Socket) => {
    if (open >= maxConnections) {
      refused++
      // Stop Node's HTTP parser from reading a request that will not be served, then say why.
      socket.pause()
      socket.end(REFUSAL)
      setTimeout(() => { socket.destroy() }, REFUSAL_LINGER_MS).unref()
      if (refused === 1 || refused % 1000 === 0) app.log.warn({ maxConnections, refused }, 'connection limit reached; new connections refused with 503')
      return
    }
    open++
    socket.once('close', () => { open-- })
  })
}, { name: 'amrikyy-connection-limit', fastify: '5.x' })
