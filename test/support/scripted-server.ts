import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'

/**
 * A real HTTP server on a loopback port whose answers a test writes byte by byte: for what the
 * gateway itself never sends (a cut stream, heartbeats mid-event, a 429 with a given retry-after).
 */
export async function startScriptedServer (t: Test, answer: (request: IncomingMessage, response: ServerResponse) => void | Promise<void>): Promise<string> {
  const server = createServer((request, response) => {
    request.resume()
    request.on('end', () => {
      Promise.resolve(answer(request, response)).catch(() => { response.destroy() })
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}
