import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import fc from 'fast-check'
import t from 'tap'
import { GEMINI_MODELS } from '../plugins/metrics.js'
import { USER_KEY, parseEvents, startEmulator, startGateway } from './support/gateway.js'

interface RawAnswer {
  status: number
  contentType: string | undefined
  body: string
}

/** Sends bytes exactly as given, so the test controls what reaches the parser. */
async function sendRaw (url: string, body: Buffer | string, headers: Record<string, string>): Promise<RawAnswer> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/api/stream`, { method: 'POST', headers: { 'content-length': String(Buffer.byteLength(body)), ...headers } }, response => {
      const pieces: Buffer[] = []
      response.on('data', (piece: Buffer) => pieces.push(piece))
      response.on('end', () => { resolve({ status: response.statusCode ?? 0, contentType: response.headers['content-type'], body: Buffer.concat(pieces).toString('utf8') }) })
      response.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Every answer is a JSON error with a 4xx status, or a 200 SSE stream that ends in one completion or error event. */
function checkAnswer (answer: RawAnswer): void {
  if (answer.status === 200) {
    if (answer.contentType !== 'text/event-stream') throw new Error(`200 with ${answer.contentType}`)
    const events = parseEvents(answer.body) as Array<Record<string, unknown>>
    const last = events.at(-1)
    if (last === undefined || (last.complete !== true && typeof last.error !== 'string')) throw new Error(`stream without an end: ${answer.body.slice(-200)}`)
    return
  }
  if (answer.status < 400 || answer.status >= 500) throw new Error(`status ${answer.status}: ${answer.body}`)
  if (answer.contentType !== 'application/json; charset=utf-8') throw new Error(`${answer.status} with ${answer.contentType}`)
  const parsed = JSON.parse(answer.body) as { error?: unknown }
  if (typeof parsed.error !== 'string' || parsed.error === '') throw new Error(`error body without a message: ${answer.body}`)
}

t.test('generated bodies and headers always get a 4xx JSON error or a well-formed stream', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 4 })
  // Like Google, the emulator answers a model it does not serve with a 404 (the gateway's 500): with the
  // catalogue as the allow-list, every made-up name is the gateway's own 400 instead.
  const { url } = await startGateway(t, emulator, { rateLimit: false, stream: { retry: { attempts: 1 } }, models: { allowedModels: GEMINI_MODELS } })

  const jsonish = fc.oneof(
    fc.record({
      prompt: fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.string({ unit: 'binary', maxLength: 50 })),
      model: fc.option(fc.oneof(fc.string(), fc.constantFrom('gemini-2.5-flash', 'models/gemini-pro', '../x', 'a?b')), { nil: undefined }),
      options: fc.option(fc.record({
        temperature: fc.option(fc.oneof(fc.double(), fc.string()), { nil: undefined }),
        topP: fc.option(fc.double(), { nil: undefined }),
        topK: fc.option(fc.oneof(fc.integer(), fc.double()), { nil: undefined }),
        maxOutputTokens: fc.option(fc.integer({ min: -5, max: 6 }), { nil: undefined })
      }, { requiredKeys: [] }), { nil: undefined }),
      agent: fc.option(fc.string({ unit: 'binary', maxLength: 80 }), { nil: undefined })
    }, { requiredKeys: [] }).map(body => JSON.stringify(body)),
    fc.json(),
    fc.string({ unit: 'binary', maxLength: 200 })
  )
  const headers = fc.record({
    'content-type': fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'application/jsonx'),
    'x-api-key': fc.constantFrom(USER_KEY, '', 'wrong', `${USER_KEY} `),
    'x-request-id': fc.stringMatching(/^[ -~]{0,40}$/)
  })

  await t.resolves(fc.assert(fc.asyncProperty(jsonish, headers, async (body, requestHeaders) => {
    checkAnswer(await sendRaw(url, body, requestHeaders))
  }), { numRuns: 300 }), '300 generated requests answered correctly')
})

t.test('hand-picked hostile bodies', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 4 })
  const { url } = await startGateway(t, emulator, { rateLimit: false })
  const json = { 'content-type': 'application/json', 'x-api-key': USER_KEY }
  const cases: Array<[name: string, body: Buffer | string, status: number]> = [
    ['deep nesting', `{"prompt":"hi","options":${'['.repeat(50_000)}${']'.repeat(50_000)}}`, 400],
    ['invalid UTF-8 inside the prompt', Buffer.concat([Buffer.from('{"prompt":"bad '), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]), 200],
    ['control characters in agent', '{"prompt":"hi","agent":"a\\u0000b"}', 400],
    ['newline in agent', '{"prompt":"hi","agent":"poet\\nX-Injected: 1"}', 400],
    ['prompt at the limit', JSON.stringify({ prompt: 'x'.repeat(32_000) }), 200],
    ['prompt over the limit', JSON.stringify({ prompt: 'x'.repeat(32_001) }), 400],
    ['duplicate keys', '{"prompt":"","prompt":"second"}', 200],
    ['prototype pollution', '{"prompt":"hi","__proto__":{"admin":true}}', 400],
    ['constructor pollution', '{"prompt":"hi","constructor":{"prototype":{"x":1}}}', 400],
    ['a lone surrogate in the prompt', '{"prompt":"\\ud800 hi"}', 200]
  ]
  for (const [name, body, status] of cases) {
    const answer = await sendRaw(url, body, json)
    t.equal(answer.status, status, `${name}: ${answer.body.slice(0, 120)}`)
    t.doesNotThrow(() => { checkAnswer(answer) }, name)
  }
  t.equal(({} as Record<string, unknown>).admin, undefined, 'Object.prototype untouched')
})

t.test('malformed HTTP (a control character in a header) gets a JSON 400, and the server stays up', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 1 })
  const { url } = await startGateway(t, emulator)
  const { port } = new URL(url)
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => {
      socket.end('POST /api/stream HTTP/1.1\r\nHost: x\r\nX-Api-Key: a\u0001b\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}')
    })
    let text = ''
    socket.on('data', (data: Buffer) => { text += data.toString() })
    socket.on('close', () => { resolve(text) })
    socket.on('error', reject)
  })
  t.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/)
  t.match(answer, /content-type: application\/json/i)
  t.match(answer.slice(answer.indexOf('\r\n\r\n') + 4), /^\{"error":"Bad Request"/)
  t.equal((await fetch(`${url}/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body: '{"prompt":"still up"}' })).status, 200)
})
