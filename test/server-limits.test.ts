import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { USER_KEY, buildGateway, listenOnLoopback, startEmulator, waitUntil, within } from './support/gateway.js'
import { startServerProcess } from './support/server-process.js'
import { GatewayLifecycle } from '../plugins/lifecycle.js'
import { Exposition } from './support/prometheus.js'

interface RawConnection {
  socket: Socket
  /** Everything the server sent until it closed the connection. */
  closed: Promise<string>
}

async function rawConnection (url: string, head = ''): Promise<RawConnection> {
  const { port } = new URL(url)
  const socket = connect(Number(port), '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  let received = ''
  socket.on('data', (data: Buffer) => { received += data.toString('utf8') })
  const closed = new Promise<string>(resolve => { socket.once('close', () => { resolve(received) }) })
  socket.on('error', () => {})
  if (head !== '') socket.write(head)
  return { socket, closed }
}

const TIMEOUT_408 = '{"error":"Request Timeout","message":"Client Timeout","statusCode":408}'

function statusAndBody (response: string): { status: string, body: string } {
  const [head = '', body = ''] = response.split('\r\n\r\n')
  return { status: head.split('\r\n')[0] ?? '', body }
}

t.test('receiving a request is bounded: a body that never arrives gets 408 and its socket closed', async t => {
  const emulator = await startEmulator(t)
  const server = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, REQUEST_TIMEOUT_MS: '400' })
  const cases = {
    'a Content-Length never filled, no key, any path': 'POST /anything HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prom',
    'a valid-key stream body sent partly': `POST /api/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: ${USER_KEY}\r\nContent-Length: 40\r\n\r\n{"prompt":`,
    'a chunked body that never ends': `POST /api/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: ${USER_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{"\r\n`,
    'headers that never end': 'GET /health/live HTTP/1.1\r\nHost: x\r\n'
  }
  for (const [name, head] of Object.entries(cases)) {
    const connection = await rawConnection(server.url, head)
    const { status, body } = statusAndBody(await within(5_000, connection.closed, `${name}: the connection to close`))
    t.equal(status, 'HTTP/1.1 408 Request Timeout', name)
    t.equal(body, TIMEOUT_408, name)
  }
  t.equal((await fetch(`${server.url}/health/live`)).status, 200, 'the server stays up')
})

t.test('a streamed answer is not bounded by the request timeout', async t => {
  const emulator = await startEmulator(t, { chunkCount: 8, chunkDelayMs: 150, defaultMaxTokens: 16 })
  const server = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, REQUEST_TIMEOUT_MS: '300' })
  const response = await fetch(`${server.url}/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body: '{"prompt":"p"}' })
  const body = await response.text()
  t.equal(response.status, 200)
  t.match(body, /"complete":true,"totalChunks":8/, 'the whole answer, over four times the request timeout')
})

t.test('connections past MAX_CONNECTIONS get a clear 503 and are closed; the server recovers', async t => {
  const emulator = await startEmulator(t)
  const server = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, MAX_CONNECTIONS: '3', REQUEST_TIMEOUT_MS: '20000' })
  const held = await Promise.all([0, 1, 2].map(async () => await rawConnection(server.url)))
  const over = await rawConnection(server.url, 'GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n')
  const { status, body } = statusAndBody(await within(5_000, over.closed, 'the refused connection to close'))
  t.equal(status, 'HTTP/1.1 503 Service Unavailable')
  t.equal(body, '{"error":"Service Unavailable","message":"Too many open connections; retry shortly"}')
  const logged = /"maxConnections":3,"refused":1,"msg":"connection limit reached; new connections refused with 503"/
  await waitUntil(() => logged.test(server.output()), 5_000, 'the refusal to be logged')
  t.match(server.output(), logged)

  held[0]!.socket.destroy()
  await held[0]!.closed
  // The server learns of the close a moment after the client made it.
  let liveStatus = 0
  for (let attempt = 0; attempt < 50 && liveStatus !== 200; attempt++) {
    const probe = await rawConnection(server.url, 'GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    liveStatus = statusAndBody(await probe.closed).status === 'HTTP/1.1 200 OK' ? 200 : 503
    if (liveStatus !== 200) await sleep(20)
  }
  t.equal(liveStatus, 200, 'a freed slot is served again')
  for (const connection of held) connection.socket.destroy()
})

t.test('SIGTERM with a request whose body never arrives still exits 0', async t => {
  const emulator = await startEmulator(t)
  const server = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, SHUTDOWN_TIMEOUT_MS: '300', REQUEST_TIMEOUT_MS: '60000' })
  const slow = await rawConnection(server.url, `POST /api/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: ${USER_KEY}\r\nContent-Length: 40\r\n\r\n{"prompt":`)
  await sleep(100)
  server.child.kill('SIGTERM')
  t.equal(await within(8_000, server.exited, 'exit'), 0, 'the unfinished request is cut on close, not waited for')
  await within(2_000, slow.closed, 'the slow connection to be closed')
})

t.test('a request whose body arrives after draining began starts no stream', async t => {
  const emulator = await startEmulator(t)
  const lifecycle = new GatewayLifecycle()
  const app = await buildGateway(t, emulator.url, { lifecycle })
  const url = await listenOnLoopback(app)
  const body = '{"prompt":"late"}'
  // The onRequest checks run before this body arrives, while the gateway is not yet draining.
  const late = await rawConnection(url, `POST /api/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: ${USER_KEY}\r\nContent-Length: ${body.length}\r\n\r\n`)
  await sleep(100)
  t.same(await lifecycle.drain(1_000), await lifecycle.drain(1_000), 'the drain is over before the body arrives')
  late.socket.write(body)
  const { status, body: answer } = statusAndBody(await within(5_000, late.closed, 'the late request to be answered'))
  t.equal(status, 'HTTP/1.1 503 Service Unavailable')
  t.equal(answer, '{"error":"Service Unavailable","message":"The gateway is shutting down; retry the request"}')
  t.equal(emulator.requests.length, 0, 'Gemini was never called')
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.equal(scrape.value('amrikyy_active_streams'), 0)
})

t.test('running out of file descriptors is reported as the gateway\'s own 503, never as a Gemini failure', async t => {
  const emulator = await startEmulator(t)
  // A descriptor limit low enough to reach with a few dozen idle connections.
  const server = await startServerProcess(t, {
    LOG_LEVEL: undefined, GEMINI_API_KEY: 'upstream-key', GEMINI_BASE_URL: emulator.url, REQUEST_TIMEOUT_MS: '60000', UPSTREAM_RETRY_ATTEMPTS: '1'
  }, { fileLimit: 80 })
  const url = server.url

  // The stream's own connection first, then idle ones until the server cannot accept any more.
  const streamConnection = await rawConnection(url)
  const idle: RawConnection[] = []
  let refusedAtAccept = false
  for (let i = 0; i < 200 && !refusedAtAccept; i++) {
    const connection = await rawConnection(url)
    idle.push(connection)
    refusedAtAccept = await Promise.race([connection.closed.then(() => true), sleep(50, false)])
  }
  t.ok(refusedAtAccept, 'the process ran out of descriptors')

  const body = '{"prompt":"p"}'
  streamConnection.socket.write(`POST /api/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: ${USER_KEY}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`)
  const { status, body: answer } = statusAndBody(await within(10_000, streamConnection.closed, 'the stream request to be answered'))
  t.equal(status, 'HTTP/1.1 503 Service Unavailable')
  t.equal(answer, '{"error":"Service Unavailable","message":"The gateway is out of file descriptors; retry shortly"}')
  // The start's check of the default model (a models.get, a GET) may have reached Gemini; no generation did.
  t.same(emulator.requests.filter(request => request.method !== 'GET').map(request => request.path), [], 'no generation reached Gemini')

  for (const connection of idle) connection.socket.destroy()
  await Promise.all(idle.map(async connection => await connection.closed))
  await sleep(200)
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.equal(scrape.value('amrikyy_upstream_errors_total'), 0, 'not counted against Gemini')
  t.equal(scrape.value('amrikyy_stream_sessions_failed_total'), 1)
  t.match(server.output(), /"msg":"the process is out of file descriptors: raise its limit or lower MAX_CONNECTIONS"/)
})
