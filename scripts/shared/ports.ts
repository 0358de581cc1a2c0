// Loopback ports for the processes the tests, the bench and the scripts start.

import { connect, createServer } from 'node:net'

export const LOOPBACK = '127.0.0.1'

/** A loopback port the system just handed out and took back: free now, though nothing reserves it. */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, LOOPBACK, () => {
      const address = server.address()
      server.close(() => { typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port')) })
    })
  })
}

/** A loopback URL nothing listens on. */
export async function closedPortUrl (): Promise<string> {
  return `http://${LOOPBACK}:${await freePort()}`
}

export async function portAccepts (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const socket = connect(port, LOOPBACK)
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { resolve(false) })
  })
}
