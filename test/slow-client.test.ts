import type { IncomingMessage, ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { USER_KEY, buildGateway, listenOnLoopback, postThenStopReading, startEmulator, within } from './support/gateway.js'
import { Exposition } from './support/prometheus.js'
import { startScriptedServer } from './support/scripted-server.js'

const EVENT_TEXT = 'x'.repeat(64 * 1024)
const EVENT = `data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: EVENT_TEXT }], role: 'model' }, index: 0 }] })}\r\n\r\n`
// Far more than loopback socket buffers hold, so a client that stops reading stalls the relay.
const UPSTREAM_LIMIT_BYTES = 256 * 1024 * 1024

interface EndlessUpstream {
  url: string
  /** Resolves when the gateway closed the upstream connection, with the bytes written by then. */
  closed: Promise<number>
}

async function drainedOrClosed (response: ServerResponse): Promise<void> {
  await new Promise<void>(resolve => {
    const done = (): void => {
      response.off('drain', done)
      response.off('close', done)
      resolve()
    }
    response.once('drain', done)
    response.once('close', done)
  })
}

/** A Gemini stream that never ends by itself: writes as fast as the gateway reads. */
async function startEndlessUpstream (t: Parameters<typeof startScriptedServer>[0]): Promise<EndlessUpstream> {
  const closed = Promise.withResolvers<number>()
  const url = await startScriptedServer(t, async (_request: IncomingMessage, response: ServerResponse) => {
    let written = 0
    response.once('close', () => { closed.resolve(written) })
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    while (!response.destroyed && written < UPSTREAM_LIMIT_BYTES) {
      written += EVENT.length
      if (!response.write(EVENT)) await drainedOrClosed(response)
    }
    response.end()
  })
  return { url, closed: closed.promise }
}

t.test('a client that stops reading is cut by its own limit, never blamed on Gemini', async t => {
  const upstream = await startEndlessUpstream(t)
  // Gemini's idle budget is much shorter than the client's: a relay that spends it while waiting on the client fails here.
  const app = await buildGateway(t, upstream.url, { stream: { timeouts: { idleMs: 150, clientStallMs: 1_500 }, heartbeatMs: 0 } })
  const url = await listenOnLoopback(app)
  const { socket } = await postThenStopReading(url, { prompt: 'a long answer' })
  t.teardown(() => { socket.destroy() })

  const upstreamBytes = await within(10_000, upstream.closed, 'the upstream call to be aborted')
  t.ok(upstreamBytes < UPSTREAM_LIMIT_BYTES, 'the relay stopped pulling from Gemini while the client was stalled')
  await within(5_000, new Promise(resolve => { socket.once('close', resolve); socket.resume() }), 'the client connection to be closed')

  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  const labels = { agent: 'unknown', model: 'gemini-2.0-flash-exp' }
  t.equal(scrape.value('amrikyy_stream_sessions_cancelled_total', labels), 1, 'counted as a cancelled stream')
  t.equal(scrape.value('amrikyy_stream_sessions_failed_total', labels), 0)
  t.equal(scrape.value('amrikyy_upstream_errors_total'), 0, 'no upstream error: Gemini was never silent')
  t.equal(scrape.value('amrikyy_active_streams'), 0)
})

t.test('a client that reads slowly but steadily gets the whole wait it needs', async t => {
  // Each read of the client comes after Gemini's idle budget, yet within its own stall limit.
  const upstream = await startEndlessUpstream(t)
  // Each read drains megabytes of loopback buffers: lift the answer cap out of the way.
  const app = await buildGateway(t, upstream.url, { stream: { timeouts: { idleMs: 100, clientStallMs: 5_000 }, heartbeatMs: 0, maxAnswerChars: 1024 * 1024 * 1024 } })
  const url = await listenOnLoopback(app)
  const { socket } = await postThenStopReading(url, { prompt: 'a long answer' })
  t.teardown(() => { socket.destroy() })
  for (let i = 0; i < 3; i++) {
    await sleep(300)
    socket.resume()
    await sleep(5)
    socket.pause()
  }
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.equal(scrape.value('amrikyy_active_streams'), 1, 'still streaming')
  t.equal(scrape.value('amrikyy_upstream_errors_total'), 0)
  socket.destroy()
  await within(5_000, upstream.closed, 'the upstream call to be aborted once the client left')
})

t.test('one event larger than the response buffer is relayed whole, with no wait for a drain that never comes', async t => {
  const emulator = await startEmulator(t, { chunkCount: 4, defaultMaxTokens: 8 })
  // 250,000 characters: far past the response's 16 KiB high-water mark, so write() reports "full"
  // although loopback takes it all at once.
  emulator.addFault({ kind: 'huge-event', afterChunks: 1, chars: 250_000 })
  const app = await buildGateway(t, emulator.url, { stream: { timeouts: { idleMs: 500 }, heartbeatMs: 0 } })
  const url = await listenOnLoopback(app)
  const response = await fetch(`${url}/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body: '{"prompt":"p"}' })
  const body = await response.text()
  const last = JSON.parse(body.trimEnd().split('\n\n').at(-1)!.slice('data: '.length)) as { complete?: boolean, fullText?: string, error?: string }
  t.equal(last.error, undefined, 'no error event')
  t.equal(last.complete, true)
  t.ok((last.fullText?.length ?? 0) > 250_000, 'the huge event is part of the answer')
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.equal(scrape.value('amrikyy_upstream_errors_total'), 0)
})
