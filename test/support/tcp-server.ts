import { createServer, type Socket } from 'node:net'
import type { Test } from 'tap'

/** A TCP server on a loopback port; every connection it saw is destroyed and the server closed on teardown. Its port. */
export async function startTcpServer (t: Test, onConnection: (socket: Socket, track: (socket: Socket) => void) => void): Promise<number> {
  const sockets = new Set<Socket>()
  const track = (socket: Socket): void => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => { sockets.delete(socket) })
  }
  const server = createServer(socket => {
    track(socket)
    onConnection(socket, track)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise(resolve => server.close(resolve))
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('the server is not listening on TCP')
  return address.port
}
