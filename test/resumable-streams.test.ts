import t, { type Test } from 'tap'
import { once } from 'node:events'
import { request as httpRequest } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import OpenAI from 'openai'
import { Exposition } from '../scripts/shared/prometheus-text.js'
import { ADMIN_KEY, USER_KEY, buildGateway, listenOnLoopback, openStream, postThenStopReading, parseEvents, postStream, startEmulator, startGateway, waitUntil, within, type RunningGateway } from './support/gateway.js'
import { REDIS_SKIP, redisNamespace, testRedisUrl, type RedisNamespace } from './support/redis.js'
import { runUntilExit, startServerProcess } from './support/server-process.js'
import { startScriptedServer } from './support/scripted-server.js'
import { streamMetrics } from './support/prometheus.js'
import type { GatewayOptions } from '../app.js'
import { GatewayLifecycle } from '../plugins/lifecycle.js'
import type { GeminiEmulator } from '../emulator/server.js'

// Issue 19: a resumable stream's events carry ids and are kept, so that a client whose connection dropped reads on
// from the last event it saw, on any instance, while the answer is generated once.

const STREAM_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** The body without its `id:` lines: what the same stream sends without the opt-in. */
function withoutIds (body: string): string {
  return body.replace(/^id: [^\n]*\n/gm, '')
}

/** The ids of a body's events, in order: `<streamId>:<n>`. */
function idsOf (body: string): string[] {
  return [...body.matchAll(/^id: ([^\n]*)\n/gm)].map(match => match[1]!)
}

async function resume (gateway: RunningGateway, streamId: string, headers: Record<string, string> = {}, query = ''): Promise<Response> {
  return await fetch(`${gateway.url}/api/stream/${streamId}${query}`, { headers: { 'x-api-key': USER_KEY, ...headers } })
}

async function scrape (gateway: RunningGateway): Promise<Exposition> {
  return new Exposition(await (await fetch(`${gateway.url}/api/metrics`)).text())
}

function resumesOf (scrape: Exposition, api = 'stream'): number | undefined {
  return scrape.sample('amrikyy_stream_resumes_total', { api })
}

const prompt = 'Tell me about resumable streams'

/** Starts a resumable stream and cuts its connection once chunk `index` arrived: its id, what was read, the last id read. */
async function startAndCut (url: string, index: number): Promise<{ streamId: string, seen: string, lastEventId: string }> {
  const stream = await openStream(url, { prompt, resumable: true })
  await stream.waitFor(`"index":${index}}`)
  stream.disconnect()
  const seen = stream.received()
  return { streamId: String(stream.response.headers['x-stream-id']), seen, lastEventId: idsOf(seen).at(-1)! }
}

t.test('without the opt-in nothing changes: no stream id, no id lines, and GET on a stream id finds nothing', async t => {
  const emulator = await startEmulator(t)
  const gateway = await startGateway(t, emulator)
  const response = await postStream(gateway.url, { prompt })
  t.equal(response.headers.get('x-stream-id'), null)
  const body = await response.text()
  t.same(idsOf(body), [])
  t.ok(body.startsWith('data: {"chunk":'), 'the seed\'s bytes')
  const lost = await resume(gateway, '00000000-0000-4000-8000-000000000000')
  t.equal(lost.status, 404)
  t.same(await lost.json(), { error: 'Not Found: no resumable stream with this id.' })
})

t.test('opting in (body, header, or the default) adds a stream id and an id per event; the data lines stay byte for byte', async t => {
  const emulator = await startEmulator(t)
  const gateway = await startGateway(t, emulator)
  const plain = await (await postStream(gateway.url, { prompt })).text()

  const byBody = await postStream(gateway.url, { prompt, resumable: true })
  const streamId = byBody.headers.get('x-stream-id') ?? ''
  t.match(streamId, STREAM_ID)
  const body = await byBody.text()
  t.equal(withoutIds(body), plain, 'the data lines are those of the plain stream')
  const events = plain.split('\n\n').filter(block => block !== '').length
  t.same(idsOf(body), Array.from({ length: events }, (_, i) => `${streamId}:${i + 1}`), 'every event, the completion included, numbered from 1')
  t.ok(body.startsWith(`id: ${streamId}:1\ndata: {"chunk":`), 'the id line comes before its data line')

  const byHeader = await postStream(gateway.url, { prompt }, { 'x-api-key': USER_KEY, 'x-resumable': 'true' })
  t.match(byHeader.headers.get('x-stream-id'), STREAM_ID)
  t.equal(withoutIds(await byHeader.text()), plain)

  const byDefault = await startGateway(t, emulator, { resumable: { byDefault: true } })
  const defaulted = await postStream(byDefault.url, { prompt })
  t.match(defaulted.headers.get('x-stream-id'), STREAM_ID, 'RESUMABLE_STREAMS makes every stream resumable')
  t.equal(withoutIds(await defaulted.text()), plain)
  const optedOut = await postStream(byDefault.url, { prompt, resumable: false })
  t.equal(optedOut.headers.get('x-stream-id'), null, 'a request may still opt out')
  t.equal(await optedOut.text(), plain)

  const invalid = await postStream(gateway.url, { prompt, resumable: 'yes' })
  t.equal(invalid.status, 400)
})

t.test('a finished stream replays from any event to its end; Last-Event-ID wins over ?after', async t => {
  const emulator = await startEmulator(t)
  const gateway = await startGateway(t, emulator)
  const started = await postStream(gateway.url, { prompt, resumable: true })
  const streamId = started.headers.get('x-stream-id')!
  const whole = await started.text()
  const blocks = whole.split('\n\n').filter(block => block !== '').map(block => `${block}\n\n`)

  const fromStart = await resume(gateway, streamId)
  t.equal(fromStart.status, 200)
  t.equal(fromStart.headers.get('content-type'), 'text/event-stream')
  t.equal(fromStart.headers.get('x-stream-id'), streamId)
  t.equal(await fromStart.text(), whole, 'with no resume point, the whole stream')
  t.equal(await (await resume(gateway, streamId, { 'last-event-id': `${streamId}:3` }, '?after=1')).text(), blocks.slice(3).join(''), 'the events after event 3')
  t.equal(await (await resume(gateway, streamId, {}, '?after=5')).text(), blocks.slice(5).join(''))
  t.equal(await (await resume(gateway, streamId, {}, `?after=${blocks.length}`)).text(), '', 'after the last event, nothing')
  t.equal(emulator.requests.length, 1, 'the emulator was asked once')

  for (const [headers, query] of [[{ 'last-event-id': 'other-stream:3' }, ''], [{ 'last-event-id': `${streamId}:x` }, ''], [{}, '?after=-1']] as const) {
    const refused = await resume(gateway, streamId, headers, query)
    t.equal(refused.status, 400)
    t.same(await refused.json(), { error: 'Last-Event-ID must be <streamId>:<n> of this stream, and after a whole number' })
  }
  const noKey = await fetch(`${gateway.url}/api/stream/${streamId}`)
  t.equal(noKey.status, 401)
  t.same(await noKey.json(), { error: 'Unauthorized: API key is missing.' })
  const otherKey = await resume(gateway, streamId, { 'x-api-key': ADMIN_KEY })
  t.equal(otherKey.status, 404, 'another key\'s stream is not found, exactly like an unknown one')
  t.same(await otherKey.json(), { error: 'Not Found: no resumable stream with this id.' })
  t.equal(resumesOf(await scrape(gateway)), 4, 'each successful resume counted once')
})

/** Two gateways on the same Redis namespace: what two instances behind a load balancer share. */
async function twoInstances (t: Test, emulator: GeminiEmulator, resumable: GatewayOptions['resumable'] = {}): Promise<[RunningGateway, RunningGateway, RedisNamespace]> {
  const namespace = await redisNamespace(t, 'resume')
  const options = { resumable: { redis: namespace.url, nameSpace: namespace.nameSpace, ...resumable } }
  return [await startGateway(t, emulator, options), await startGateway(t, emulator, options), namespace]
}

t.test('a stream cut after three events resumes on the other instance: the joined bytes are the uninterrupted ones, generated once', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 12, chunkDelayMs: 40 })
  const uninterrupted = await (await postStream((await startGateway(t, emulator)).url, { prompt })).text()
  emulator.requests.length = 0
  const [first, second, { redis, nameSpace, keys }] = await twoInstances(t, emulator)

  const { streamId, seen, lastEventId: lastId } = await startAndCut(first.url, 3)
  t.match(streamId, STREAM_ID)
  t.equal(lastId, `${streamId}:3`)

  const resumed = await resume(second, streamId, { 'last-event-id': lastId })
  t.equal(resumed.status, 200)
  const rest = await within(10_000, resumed.text(), 'the resumed stream to end')
  const joined = seen + rest
  t.equal(withoutIds(joined), uninterrupted, 'no event missed or repeated: the bytes of the stream that was never cut')
  t.same(idsOf(joined), Array.from({ length: idsOf(joined).length }, (_, i) => `${streamId}:${i + 1}`))
  t.equal(emulator.requests.length, 1, 'the emulator saw exactly one upstream request')
  t.equal(emulator.requests[0]!.finished, true, 'and it ran to its end')

  t.same(streamMetrics(await scrape(first)), { completed: 1, active: 0, upstreamErrors: {} }, 'the resumed stream counts as completed, once, and not cancelled')
  t.equal(resumesOf(await scrape(second)), 1)

  // What a stream costs Redis for its retention: its events, about the bytes sent, and a small owner hash.
  t.same(await keys(), [`${nameSpace}{${streamId}}:events`, `${nameSpace}{${streamId}}:owner`], 'one stream key and one owner hash; no reader left present')
  const eventsBytes = Number(await redis.memory('USAGE', `${nameSpace}{${streamId}}:events`))
  const ownerBytes = Number(await redis.memory('USAGE', `${nameSpace}{${streamId}}:owner`))
  const sentBytes = Buffer.byteLength(joined)
  t.ok(eventsBytes < sentBytes * 1.5 + 2048, `MEMORY USAGE: ${eventsBytes} bytes of events for ${sentBytes} bytes sent (${idsOf(joined).length} events), ${ownerBytes} for the owner`)
  const ttl = await redis.pttl(`${nameSpace}{${streamId}}:events`)
  t.ok(ttl > 0 && ttl <= 5 * 60_000, `kept for the retention (${ttl} ms left)`)
})

t.test('abandoned past the grace time: the upstream call is aborted and the stream counted cancelled; a late reader learns it', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 200, chunkDelayMs: 30 })
  const [first, second] = await twoInstances(t, emulator, { graceMs: 600 })
  const { streamId } = await startAndCut(first.url, 2)

  await sleep(100)
  t.equal(emulator.openStreams(), 1, 'within the grace time the answer goes on')
  await within(5000, emulator.requests[0]!.closed, 'the upstream call to be aborted')
  t.equal(emulator.requests[0]!.clientClosedEarly, true, 'the gateway hung up on Gemini')
  t.same(streamMetrics(await scrape(first)), { cancelled: 1, active: 0, upstreamErrors: {} }, 'counted cancelled; no stream left open')

  const late = await within(5000, (await resume(second, streamId, {}, '?after=0')).text(), 'a late reader')
  t.match(late.split('\n\n').filter(Boolean).at(-1), /^id: [^\n]+\ndata: \{"error":"No client resumed the stream within 0\.6 s","recoverable":true\}$/, 'the log ends with the error event')
})

t.test('a reader that comes within the grace time keeps the answer going past it', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 60, chunkDelayMs: 40 })
  // A grace time well above the reader's way in, however loaded the machine, and well below the answer's 2.4 s.
  const [first, second] = await twoInstances(t, emulator, { graceMs: 800 })
  const { streamId, lastEventId } = await startAndCut(first.url, 2)
  await sleep(100)
  const rest = await within(10_000, (await resume(second, streamId, { 'last-event-id': lastEventId })).text(), 'the resumed stream')
  t.match(rest, /"complete":true,"totalChunks":60,/, 'the stream ran to its completion, seconds after the client left')
  t.same(streamMetrics(await scrape(first)), { completed: 1, active: 0, upstreamErrors: {} })
})

t.test('expired, and trimmed: 404 once the retention passed, 410 for events no longer kept', { skip: REDIS_SKIP }, async t => {
  // Paced, so that each event is a write of its own: the cap keeps at least the newest 3 events, and whole writes.
  const emulator = await startEmulator(t, { chunkCount: 8, chunkDelayMs: 20 })
  const [gateway] = await twoInstances(t, emulator, { retentionMs: 300, maxEvents: 3 })
  const started = await postStream(gateway.url, { prompt, resumable: true })
  const streamId = started.headers.get('x-stream-id')!
  const whole = await started.text()
  const gone = await resume(gateway, streamId, {}, '?after=2')
  t.equal(gone.status, 410)
  t.same(await gone.json(), { error: 'Gone: the events after event 2 are no longer kept.' })
  const kept = await resume(gateway, streamId, { 'last-event-id': `${streamId}:6` })
  t.equal(await kept.text(), whole.split('\n\n').filter(Boolean).slice(6).map(block => `${block}\n\n`).join(''), 'the last three events are kept')
  await sleep(400)
  const expired = await resume(gateway, streamId)
  t.equal(expired.status, 404)
  t.same(await expired.json(), { error: 'Not Found: no resumable stream with this id.' })
})

t.test('in memory (no Redis), a stream resumes on its own instance', async t => {
  const emulator = await startEmulator(t, { chunkCount: 12, chunkDelayMs: 30 })
  const gateway = await startGateway(t, emulator)
  const uninterrupted = await (await postStream(gateway.url, { prompt })).text()
  const { streamId, seen, lastEventId } = await startAndCut(gateway.url, 4)
  const rest = await within(10_000, (await resume(gateway, streamId, { 'last-event-id': lastEventId })).text(), 'the resumed stream')
  t.equal(withoutIds(seen + rest), uninterrupted)
  t.equal(emulator.requests.length, 2, 'one request for each stream, none for the resume')
})

t.test('the OpenAI-compatible route takes the same opt-in: the openai package streams as ever, and the stream resumes by id', async t => {
  const emulator = await startEmulator(t, { chunkCount: 10, chunkDelayMs: 20 })
  const gateway = await startGateway(t, emulator)
  const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: USER_KEY, maxRetries: 0 })
  // `resumable` is the gateway's own field; the openai package passes unknown body fields through.
  const { data: stream, response } = await client.chat.completions.create({ model: 'gemini-2.5-flash', messages: [{ role: 'user', content: prompt }], stream: true, resumable: true } as OpenAI.ChatCompletionCreateParamsStreaming).withResponse()
  const streamId = response.headers.get('x-stream-id') ?? ''
  t.match(streamId, STREAM_ID)
  let text = ''
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ''
  t.ok(text.length > 0)

  const replay = await fetch(`${gateway.url}/api/stream/${streamId}`, { headers: { authorization: `Bearer ${USER_KEY}` } })
  t.equal(replay.status, 200, 'a Bearer key resumes its own stream')
  const body = await replay.text()
  t.ok(body.endsWith('data: [DONE]\n\n'))
  const replayed = parseEvents(withoutIds(body).replace('data: [DONE]\n\n', '')) as Array<{ choices: Array<{ delta: { content?: string } }> }>
  t.equal(replayed.map(event => event.choices[0]?.delta.content ?? '').join(''), text, 'the replay holds the answer the openai package read')
  t.equal(resumesOf(await scrape(gateway), 'openai'), 1, 'counted under api="openai"')

  // Cut inside the stream, then read on: the bytes seen and the bytes resumed make the stream's whole replay.
  const cut = await new Promise<{ seen: string, streamId: string }>((resolve, reject) => {
    const payload = JSON.stringify({ model: 'gemini-2.5-flash', messages: [{ role: 'user', content: prompt }], stream: true, resumable: true })
    const req = httpRequest(`${gateway.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${USER_KEY}` } }, res => {
      let seen = ''
      res.setEncoding('utf8')
      res.on('data', (piece: string) => {
        seen += piece
        if ((seen.match(/"content":"[^"]/g) ?? []).length >= 3) {
          req.destroy()
          resolve({ seen, streamId: String(res.headers['x-stream-id']) })
        }
      })
      res.on('error', () => {})
    })
    req.on('error', reject)
    req.end(payload)
  })
  const rest = await within(10_000, (await fetch(`${gateway.url}/api/stream/${cut.streamId}`, { headers: { authorization: `Bearer ${USER_KEY}`, 'last-event-id': idsOf(cut.seen).at(-1)! } })).text(), 'the resumed OpenAI stream')
  const whole = await (await fetch(`${gateway.url}/api/stream/${cut.streamId}`, { headers: { authorization: `Bearer ${USER_KEY}` } })).text()
  t.equal(cut.seen + rest, whole, 'nothing missed or repeated')
  t.ok(whole.startsWith('data: {"id":"chatcmpl-'), 'the first frame\'s id sits on its last event (role, then content)')
})

t.test('the standalone server reads RESUMABLE_STREAMS and RESUME_* and logs each resume with both request ids', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 6 })
  const server = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, REDIS_URL: testRedisUrl(), RESUMABLE_STREAMS: 'true', RESUME_RETENTION_MS: '5000', RESUME_GRACE_MS: '1000', RESUME_MAX_EVENTS: '50' })
  const started = await postStream(server.url, { prompt })
  const streamId = started.headers.get('x-stream-id') ?? ''
  t.match(streamId, STREAM_ID, 'every stream is resumable by default')
  const whole = await started.text()
  const resumed = await resume({ app: undefined as never, url: server.url }, streamId, { 'last-event-id': `${streamId}:2` })
  t.equal(withoutIds(await resumed.text()), withoutIds(whole.split('\n\n').slice(2).join('\n\n')))
  await waitUntil(() => server.output().includes('"msg":"resumed"'), 5000, 'the resumed log line')
  const line = JSON.parse(server.output().split('\n').find(entry => entry.includes('"msg":"resumed"'))!) as Record<string, unknown>
  t.match(line, { streamId, startedBy: started.headers.get('x-request-id'), after: 2, reqId: resumed.headers.get('x-request-id') }, 'the resume\'s own request id and the one that started the stream')
  t.not(line.reqId, line.startedBy)
  t.notMatch(server.output(), new RegExp(USER_KEY), 'no key in the logs')

  for (const [name, value] of [['RESUME_GRACE_MS', '0'], ['RESUME_RETENTION_MS', 'soon'], ['RESUMABLE_STREAMS', 'maybe']]) {
    const refused = await runUntilExit({ [name!]: value })
    t.equal(refused.code, 1, `${name}=${value} stops the start`)
    t.match(refused.stderr, name!, 'naming the variable')
  }
})

t.test('the instance producing a stream dies: its reader on another instance gets the events kept, then the lost-producer error, and ends', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 400, chunkDelayMs: 30 })
  const doomed = await startServerProcess(t, { GEMINI_BASE_URL: emulator.url, REDIS_URL: testRedisUrl(), RESUMABLE_STREAMS: 'true' })
  // The standalone server's key prefix, on the same database: what a second replica would read.
  const survivor = await startGateway(t, emulator, { resumable: { redis: testRedisUrl() } })
  const stream = await openStream(doomed.url, { prompt })
  const streamId = String(stream.response.headers['x-stream-id'])
  await stream.waitFor('"index":3}')
  // The log follows the socket within a write (a turn of the event loop and a Redis round trip).
  await stream.waitFor('"index":5}')
  doomed.child.kill('SIGKILL')
  await doomed.exited
  const started = performance.now()
  const resumed = await resume(survivor, streamId, { 'last-event-id': `${streamId}:2` })
  t.equal(resumed.status, 200)
  const rest = await within(15_000, resumed.text(), 'the reader to be told and let go')
  const events = rest.split('\n\n').filter(Boolean)
  t.match(events[0], new RegExp(`^id: ${streamId}:3\\ndata: \\{"chunk":`), 'the events kept after the resume point first')
  t.match(events.at(-1), new RegExp(`^id: ${streamId}:\\d+\\ndata: \\{"error":"The gateway instance generating this answer stopped before its end; send the request again","recoverable":true\\}$`))
  t.ok(performance.now() - started < 10_000, `told within ${Math.round(performance.now() - started)} ms, not the retention`)
  t.same(emulator.requests.filter(request => request.rpc === 'streamGenerateContent').map(request => request.clientClosedEarly), [true], 'one generation, cut with its instance')
})

t.test('a resumable stream\'s client that stops reading is cut after the stall time, and the answer goes on for its resume', async t => {
  const text = 'x'.repeat(64 * 1024)
  const events = 300
  // Far more than loopback socket buffers hold: a client that stops reading stalls the relay.
  const upstream = await startScriptedServer(t, async (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    for (let i = 0; i < events && !response.destroyed; i++) {
      if (!response.write(`data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text }], role: 'model' }, index: 0 }] })}\r\n\r\n`)) await once(response, 'drain')
    }
    response.end(`data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: '' }], role: 'model' }, finishReason: 'STOP', index: 0 }], usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 9, totalTokenCount: 12 } })}\r\n\r\n`)
  })
  const app = await buildGateway(t, upstream, { stream: { timeouts: { clientStallMs: 300 }, heartbeatMs: 0, maxAnswerChars: 64 * 1024 * 1024 } })
  const url = await listenOnLoopback(app)
  const { socket, head } = await postThenStopReading(url, { prompt: 'a long answer', resumable: true })
  const streamId = /x-stream-id: ([^\r]+)\r\n/i.exec(head)?.[1] ?? ''
  t.match(streamId, STREAM_ID)
  // Past the stall time the gateway cuts the connection: reading again gets what was buffered, then the end.
  await sleep(1500)
  let rest = ''
  socket.on('data', (data: Buffer) => { rest += data.toString('latin1') })
  socket.resume()
  await within(10_000, once(socket, 'close'), 'the stalled client to be cut')
  t.notMatch(head + rest, /"complete":true/, 'the cut client never got the completion')

  const resumed = await within(20_000, (await resume({ app, url }, streamId)).text(), 'the whole answer from the log')
  t.match(resumed, new RegExp(`id: ${streamId}:${events + 1}\\ndata: \\{"complete":true,"totalChunks":${events},`), 'every chunk and the completion, kept while nobody read')
  t.same(streamMetrics(await scrape({ app, url })), { completed: 1, active: 0, upstreamErrors: {} }, 'completed, not cancelled')
})

t.test('a reader on an instance that shuts down is let go, and reads on from another instance', { skip: REDIS_SKIP }, async t => {
  const emulator = await startEmulator(t, { chunkCount: 40, chunkDelayMs: 40 })
  const uninterrupted = await (await postStream((await startGateway(t, emulator)).url, { prompt })).text()
  emulator.requests.length = 0
  const { url: redisUrl, nameSpace } = await redisNamespace(t, 'resume-drain')
  const lifecycle = new GatewayLifecycle()
  const producer = await startGateway(t, emulator, { resumable: { redis: redisUrl, nameSpace } })
  const draining = await startGateway(t, emulator, { resumable: { redis: redisUrl, nameSpace }, lifecycle })

  const { streamId, seen: first, lastEventId } = await startAndCut(producer.url, 2)
  const reading = await resume(draining, streamId, { 'last-event-id': lastEventId })
  const reader = reading.body!.getReader()
  let second = ''
  const decoder = new TextDecoder()
  while (!second.includes('"index":6}')) second += decoder.decode((await reader.read()).value, { stream: true })
  const drained = await lifecycle.drain(100)
  t.same(drained, { finished: 0, interrupted: 1 }, 'the reader was the one stream to interrupt')
  for (let read = await reader.read(); !read.done; read = await reader.read()) second += decoder.decode(read.value, { stream: true })
  t.notMatch(second, /"complete":true/, 'the reader was let go before the end')
  const third = await within(10_000, (await resume(producer, streamId, { 'last-event-id': idsOf(second).at(-1)! })).text(), 'the rest from the other instance')
  t.equal(withoutIds(first + second + third), uninterrupted, 'three connections, one stream: nothing missed or repeated')
  t.equal(emulator.requests.length, 1)
  t.same(streamMetrics(await scrape(producer)), { completed: 1, active: 0, upstreamErrors: {} })
})

t.test('with Redis unreachable a resumable request is served as a plain stream, without a stream id', async t => {
  const emulator = await startEmulator(t)
  const gateway = await startGateway(t, emulator, { resumable: { redis: 'redis://127.0.0.1:1' } })
  const plain = await (await postStream(gateway.url, { prompt })).text()
  const asked = await postStream(gateway.url, { prompt, resumable: true })
  t.equal(asked.status, 200)
  t.equal(asked.headers.get('x-stream-id'), null, 'no stream id that could not be resumed')
  t.equal(await asked.text(), plain, 'the plain stream\'s bytes')
})

t.test('the plugin\'s options are checked by name', async t => {
  const emulator = await startEmulator(t)
  for (const [resumable, message] of [
    [{ graceMs: 0 }, 'resumable streams: option "graceMs" must be a positive integer'],
    [{ retentionMs: 1.5 }, 'resumable streams: option "retentionMs" must be a positive integer'],
    [{ maxEvents: -1 }, 'resumable streams: option "maxEvents" must be a positive integer'],
    [{ redis: 'http://127.0.0.1:6379' }, 'resumable streams: option "redis" must be a redis:// or rediss:// URL or an ioredis client']
  ] as const) {
    await t.rejects(startGateway(t, emulator, { resumable: resumable as GatewayOptions['resumable'] }), { message }, JSON.stringify(resumable))
  }
})
