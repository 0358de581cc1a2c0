import t from 'tap'
import { CONVERSATION_MAX_CHARS, PROMPT_MAX_LENGTH } from '../schemas/stream.js'
import { USER_KEY, buildGateway, listenOnLoopback, startEmulator } from './support/gateway.js'
import { Exposition } from './support/prometheus.js'

async function post (url: string, body: string, contentType = 'application/json'): Promise<{ status: number, text: string }> {
  const response = await fetch(`${url}/api/stream`, { method: 'POST', headers: { 'content-type': contentType, 'x-api-key': USER_KEY }, body })
  return { status: response.status, text: await response.text() }
}

/** JSON with every non-ASCII character escaped, as Python's json.dumps does by default. */
function asciiJson (value: unknown): string {
  return JSON.stringify(value).replace(/[\u0080-\uffff]/g, unit => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

t.test('inputs that pass the schema\'s shape but could never work are 400s, never upstream errors', async t => {
  const emulator = await startEmulator(t)
  const url = await listenOnLoopback(await buildGateway(t, emulator.url))
  const cases = [
    { body: '{"prompt":"p","model":"a..b"}', field: /^model must be a Gemini model name: .* without "\.\."$/ },
    { body: '{"prompt":"p","model":"models/../tunedModels/x"}', field: /^model must be a Gemini model name/ },
    { body: '{"prompt":"p","options":{"topK":1e300}}', field: /^options\.topK must be <= 2147483647$/ }
  ]
  for (const { body, field } of cases) {
    const { status, text } = await post(url, body)
    t.equal(status, 400, body)
    t.match((JSON.parse(text) as { error: string }).error, field, body)
  }
  t.equal(emulator.requests.length, 0, 'Gemini was never called')
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  t.equal(scrape.value('amrikyy_upstream_errors_total'), 0, 'our own refusals are not upstream errors')
})

t.test('a maximal prompt is accepted however it is escaped', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 4 })
  const url = await listenOnLoopback(await buildGateway(t, emulator.url))
  const emoji = '\u{1F600}'.repeat(PROMPT_MAX_LENGTH)
  const body = asciiJson({ prompt: emoji, agent: 'python-client', options: { temperature: 0.5 } })
  t.ok(body.length > 380_000, 'twelve bytes a character')
  const { status, text } = await post(url, body)
  t.equal(status, 200)
  t.match(text, /"complete":true/)
  t.equal(emulator.requests[0]?.prompt, emoji, 'Gemini got the prompt as sent')
  const over = await post(url, asciiJson({ prompt: `${emoji}x` }))
  t.same([over.status, JSON.parse(over.text)], [400, { error: 'prompt must not have more than 32000 characters' }], 'one character over is the length error, not 413')
})

t.test('a maximal conversation is accepted however it is escaped', async t => {
  const emulator = await startEmulator(t, { chunkCount: 2, defaultMaxTokens: 4 })
  const url = await listenOnLoopback(await buildGateway(t, emulator.url))
  const emoji = (n: number): string => '\u{1F600}'.repeat(n)
  const half = CONVERSATION_MAX_CHARS / 2
  const body = asciiJson({ prompt: emoji(PROMPT_MAX_LENGTH), system: emoji(half), history: [{ role: 'user', text: emoji(half / 2) }, { role: 'model', text: emoji(half / 2) }] })
  t.ok(body.length > (PROMPT_MAX_LENGTH + CONVERSATION_MAX_CHARS) * 12, 'twelve bytes a character')
  const { status, text } = await post(url, body)
  t.equal(status, 200)
  t.match(text, /"complete":true/)
  const over = await post(url, asciiJson({ prompt: 'p', system: emoji(half), history: [{ role: 'user', text: emoji(half + 1) }] }))
  t.same([over.status, JSON.parse(over.text)], [400, { error: `system and history may hold at most ${CONVERSATION_MAX_CHARS} characters together` }], 'one character over is the length error, not 413')
})

t.test('a charset other than UTF-8 is refused with 415', async t => {
  const emulator = await startEmulator(t, { chunkCount: 1, defaultMaxTokens: 2 })
  const url = await listenOnLoopback(await buildGateway(t, emulator.url))
  for (const charset of ['latin1', 'ISO-8859-1', 'utf-16', '"windows-1252"']) {
    const { status, text } = await post(url, '{"prompt":"caf\u00e9"}', `application/json; charset=${charset}`)
    t.same([status, JSON.parse(text)], [415, { error: 'Unsupported Media Type: send the body as application/json in UTF-8' }], charset)
  }
  for (const charset of ['utf-8', 'UTF-8', 'utf8', '"utf-8"']) {
    t.equal((await post(url, '{"prompt":"caf\u00e9"}', `application/json; charset=${charset}`)).status, 200, charset)
  }
  t.equal(emulator.requests.length, 4, 'only the UTF-8 bodies reached Gemini')
})

t.test('prototype-poisoning keys are named, not called malformed', async t => {
  const emulator = await startEmulator(t)
  const url = await listenOnLoopback(await buildGateway(t, emulator.url))
  t.same(await post(url, '{"prompt":"p","__proto__":{"admin":true}}'), { status: 400, text: '{"error":"Forbidden field in request body: __proto__"}' })
  t.same(await post(url, '{"prompt":"p","constructor":{"prototype":{"admin":true}}}'), { status: 400, text: '{"error":"Forbidden field in request body: constructor.prototype"}' })
  t.same(await post(url, '{"prompt":"p",'), { status: 400, text: '{"error":"Malformed JSON in request body"}' }, 'malformed JSON is still called so')
})
