import { connect } from 'node:net'
import type { Test } from 'tap'
import { startTcpServer } from './tcp-server.js'

const CHUNK_MARKER = Buffer.from('data: {"chunk"')

export interface ProxyRoute {
  /** Where this connection goes: a `http://host:port` URL. */
  target: string
  /**
   * Cut the connection once this many chunk events have passed to the client, in the middle of the
   * event after them (or at the end of the bytes, when the answer has no more): the half event must
   * be discarded by the client and come again on the resume. Undefined: never cut.
   */
  cutAfterChunks?: number | undefined
}

export interface CuttingProxy {
  url: string
  /** What each connection carried, in the order they were opened. */
  connections: Array<{ request: string, response: string, cut: boolean }>
  /** The request lines (`POST /api/stream HTTP/1.1`, ...) over every connection, in order. */
  requestLines: () => string[]
  /** Resolves once a connection has been cut by the proxy. */
  whenCut: () => Promise<void>
}

/**
 * A real TCP proxy that forwards every byte and cuts the connections `route` says to cut; with `once`, only the
 * first that gets that far (a browser's page and scripts then come through whole, on whichever connections).
 */
export async function startCuttingProxy (t: Test, route: (connection: number) => ProxyRoute, { once = false } = {}): Promise<CuttingProxy> {
  const connections: CuttingProxy['connections'] = []
  const cut = Promise.withResolvers<void>()
  const port = await startTcpServer(t, (client, track) => {
    const record = { request: '', response: '', cut: false }
    const { target, cutAfterChunks } = route(connections.length)
    connections.push(record)
    const { hostname, port: targetPort } = new URL(target)
    const upstream = connect(Number(targetPort), hostname)
    track(upstream)
    const cutBoth = (): void => {
      record.cut = true
      client.destroy()
      upstream.destroy()
      cut.resolve()
    }
    client.on('data', (piece: Buffer) => {
      record.request += piece.toString('latin1')
      upstream.write(piece)
    })
    client.on('end', () => { upstream.end() })
    let passed = Buffer.alloc(0)
    upstream.on('data', (piece: Buffer) => {
      if (record.cut) return
      const before = passed.length
      passed = Buffer.concat([passed, piece])
      const cutting = cutAfterChunks !== undefined && !(once && connections.some(connection => connection.cut))
      const cutAt = cutting ? cutPosition(passed, cutAfterChunks) : -1
      const forward = cutAt === -1 ? piece : piece.subarray(0, Math.max(0, cutAt - before))
      record.response += forward.toString('latin1')
      client.write(forward)
      if (cutAt !== -1) cutBoth()
    })
    upstream.on('end', () => { client.end() })
    client.on('close', () => { upstream.destroy() })
    upstream.on('close', () => { client.destroy() })
  })
  return {
    url: `http://127.0.0.1:${port}`,
    connections,
    requestLines: () => connections.flatMap(({ request }) => request.match(/^(?:GET|POST) \S+ HTTP\/1\.1$/gm) ?? []),
    whenCut: async () => { await cut.promise }
  }
}

/**
 * Where to cut bytes that passed `chunks` chunk events: a few bytes into the chunk event after them;
 * -1 while that event has not arrived.
 */
function cutPosition (passed: Buffer, chunks: number): number {
  let from = 0
  for (let seen = 0; seen <= chunks; seen++) {
    const at = passed.indexOf(CHUNK_MARKER, from)
    if (at === -1) return -1
    from = at + CHUNK_MARKER.length
  }
  return from
}
