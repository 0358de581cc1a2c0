// The floor the gateway is measured against: a minimal node:http pass-through proxy that forwards
// each request to one upstream over a keep-alive pool and pipes the answer back unchanged, with
// cancellation both ways. No auth, no parsing, no re-framing.
//
//   UPSTREAM_URL=http://127.0.0.1:8090 PORT=8091 HOST=127.0.0.1 node dist/bench/bare-proxy.js

import { Agent, createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'

export interface BareProxy {
  url: string
  close: () => Promise<void>
}

export async function startBareProxy (upstreamUrl: string, port = 0, host = '127.0.0.1'): Promise<BareProxy> {
  const upstream = new URL(upstreamUrl)
  // Idle upstream sockets are dropped before a Node upstream's 5 s keep-alive timeout can close
  // them under a new request (which would surface as a 502).
  const agent = new Agent({ keepAlive: true, maxSockets: Infinity, timeout: 4_000 })

  const server = createServer({ noDelay: true }, (req: IncomingMessage, res: ServerResponse) => {
    const forward = httpRequest({
      agent,
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: { ...req.headers, host: upstream.host }
    }, answer => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
      answer.on('error', () => res.destroy())
    })
    forward.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end()
      else res.destroy()
    })
    // The client left before the answer ended: let the upstream go too.
    res.on('close', () => { if (!res.writableFinished) forward.destroy() })
    req.pipe(forward)
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => { server.off('error', reject); resolve() })
  })
  const address = server.address() as AddressInfo
  return {
    url: `http://${host}:${address.port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
      agent.destroy()
    }
  }
}

const isEntry = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href
if (isEntry) {
  const upstreamUrl = process.env.UPSTREAM_URL
  if (upstreamUrl === undefined || !/^https?:\/\//.test(upstreamUrl)) {
    process.stderr.write('bare-proxy: UPSTREAM_URL must be set to an http:// URL\n')
    process.exit(1)
  }
  const proxy = await startBareProxy(upstreamUrl, Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1')
  process.stdout.write(`bare-proxy listening on ${proxy.url} -> ${upstreamUrl}\n`)
  const stop = (): void => { proxy.close().then(() => process.exit(0), () => process.exit(1)) }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}
