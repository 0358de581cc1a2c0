import { request as httpRequest, type IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Test } from 'tap'
import streamGateway, { type GatewayOptions } from '../../app.js'
import { genReqId } from '../../plugins/request-id.js'
import { GeminiEmulator, type EmulatorOptions } from '../../emulator/server.js'

export { chunkEvent, chunkEvents, errorEvent, expectedStreamBody } from '../../scripts/shared/expected-stream.js'

export const USER_KEY = 'test-user-key-0123456789'
export const ADMIN_KEY = 'test-admin-key-0123456789'

export async function startEmulator (t: Test, options: EmulatorOptions = {}): Promise<GeminiEmulator> {
  // Tests inspect what the gateway sent; a long-lived emulator records nothing by default.
  const emulator = await GeminiEmulator.start({ recordRequests: 10_000, ...options })
  t.teardown(async () => { await emulator.close() })
  return emulator
}

export interface RunningGateway {
  app: FastifyInstance
  url: string
}

/** Builds the gateway as a host would, ready for `inject`, closed on teardown. */
export async function buildGateway (t: Test, upstreamUrl: string, overrides: Partial<GatewayOptions> = {}, host: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, forceCloseConnections: true, genReqId, ...host })
  await app.register(streamGateway, {
    apiKeys: [USER_KEY],
    adminApiKeys: [ADMIN_KEY],
    gemini: { apiKey: 'upstream-secret-key', baseUrl: upstreamUrl },
    ...overrides
  })
  t.teardown(async () => { await app.close() })
  await app.ready()
  return app
}

/** Listens on an ephemeral loopback port and returns the base URL. */
export async function listenOnLoopback (app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('gateway is not listening on TCP')
  return `http://127.0.0.1:${address.port}`
}

/** The gateway listening on an ephemeral loopback port, streaming from `emulator`. */
export async function startGateway (t: Test, emulator: GeminiEmulator, overrides: Partial<GatewayOptions> = {}): Promise<RunningGateway> {
  const app = await buildGateway(t, emulator.url, overrides)
  return { app, url: await listenOnLoopback(app) }
}

export async function postStream (url: string, body: unknown, headers: Record<string, string> = { 'x-api-key': USER_KEY }): Promise<Response> {
  return await fetch(`${url}/api/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
}

/** Parses a complete SSE body made of `data:` events (comment lines ignored). */
export function parseEvents (body: string): unknown[] {
  return body.split('\n\n').filter(block => block.trim() !== '').flatMap(block => {
    const data = block.split('\n').filter(line => line.startsWith('data: ')).map(line => line.slice(6))
    return data.length === 0 ? [] : [JSON.parse(data.join('\n')) as unknown]
  })
}

export interface OpenStream {
  response: IncomingMessage
  /** Resolves with the body text once it contains `marker`. */
  waitFor: (marker: string) => Promise<string>
  received: () => string
  disconnect: () => void
}

/** A streaming POST over node:http whose socket the test can cut at any moment. */
export async function openStream (url: string, body: unknown, apiKey = USER_KEY): Promise<OpenStream> {
  const payload = JSON.stringify(body)
  return await new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/api/stream`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey, 'content-length': Buffer.byteLength(payload) }
    }, response => {
      let text = ''
      const waiters: Array<{ marker: string, resolve: (text: string) => void }> = []
      response.setEncoding('utf8')
      response.on('data', (piece: string) => {
        text += piece
        for (const waiter of waiters.filter(w => text.includes(w.marker))) {
          waiters.splice(waiters.indexOf(waiter), 1)
          waiter.resolve(text)
        }
      })
      response.on('error', () => {})
      resolve({
        response,
        received: () => text,
        waitFor: async marker => await new Promise(resolve => {
          if (text.includes(marker)) resolve(text)
          else waiters.push({ marker, resolve })
        }),
        disconnect: () => { req.destroy() }
      })
    })
    req.on('error', reject)
    req.end(payload)
  })
}

/** Sends a request and destroys its socket after `after` ms, or once `after` settles, without reading any answer. */
export async function postAndHangUp (url: string, body: unknown, after: number | Promise<unknown>): Promise<void> {
  const payload = JSON.stringify(body)
  const req = httpRequest(`${url}/api/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY, 'content-length': Buffer.byteLength(payload) }
  })
  req.on('error', () => {})
  req.end(payload)
  await (typeof after === 'number' ? sleep(after) : after)
  req.destroy()
}

export async function within<T> (ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what} did not happen within ${ms} ms`)) }, ms) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

export async function waitUntil (check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`)
    await sleep(10)
  }
}

/**
 * Sends a stream request on a raw socket, reads until the first chunk event arrived, then stops reading: a client
 * whose socket buffer fills. The socket, and the bytes read (the head and the first events).
 */
export async function postThenStopReading (gatewayUrl: string, body: unknown): Promise<{ socket: Socket, head: string }> {
  const { port } = new URL(gatewayUrl)
  const payload = JSON.stringify(body)
  const socket = connect(Number(port), '127.0.0.1')
  socket.on('error', () => {})
  socket.write(`POST /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-API-Key: ${USER_KEY}\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`)
  const head = await new Promise<string>(resolve => {
    let seen = ''
    const onData = (data: Buffer): void => {
      seen += data.toString('latin1')
      if (!seen.includes('data: {"chunk"')) return
      socket.off('data', onData)
      socket.pause()
      resolve(seen)
    }
    socket.on('data', onData)
  })
  return { socket, head }
}
