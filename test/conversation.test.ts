// Conversations on POST /api/stream (issue 14): a system instruction, earlier turns and the rest of
// Gemini's generation options, validated like the seed's fields and sent as @google/genai sends them.

import t from 'tap'
import { answerFor } from '../emulator/server.js'
import { CONVERSATION_MAX_CHARS, HISTORY_MAX_TURNS } from '../schemas/stream.js'
import { USER_KEY, buildGateway, parseEvents, postStream, startEmulator, startGateway } from './support/gateway.js'

// Nothing listens here: every request below must be refused before the gateway calls Gemini.
const UNREACHABLE_UPSTREAM = 'http://127.0.0.1:9'

t.test('every invalid conversation field is a 400 naming it, before any upstream call', async t => {
  const app = await buildGateway(t, UNREACHABLE_UPSTREAM)
  const turns = (n: number): unknown[] => Array.from({ length: n }, (_, i) => ({ role: i % 2 === 0 ? 'user' : 'model', text: `turn ${i}` }))
  const cases: Array<[body: unknown, error: string]> = [
    [{ prompt: 'hi', messages: [] }, 'Unknown field: messages'],
    [{ prompt: 'hi', system: 5 }, 'system must be string'],
    [{ prompt: 'hi', system: '' }, 'system must not have fewer than 1 characters'],
    [{ prompt: 'hi', history: {} }, 'history must be array'],
    [{ prompt: 'hi', history: [{ role: 'assistant', text: 'x' }] }, 'history.0.role must be one of "user", "model"'],
    [{ prompt: 'hi', history: [{ role: 'user' }] }, 'history.0 must have required properties text'],
    [{ prompt: 'hi', history: [{ role: 'user', text: 'x', name: 'bob' }] }, 'Unknown field: history.0.name'],
    [{ prompt: 'hi', history: turns(HISTORY_MAX_TURNS + 1) }, `history must not have more than ${HISTORY_MAX_TURNS} items`],
    [{ prompt: 'hi', system: 'x'.repeat(CONVERSATION_MAX_CHARS / 2), history: [{ role: 'user', text: 'x'.repeat(CONVERSATION_MAX_CHARS / 2 + 1) }] },
      `system and history may hold at most ${CONVERSATION_MAX_CHARS} characters together`],
    [{ prompt: 'hi', options: { stopSequences: 'END' } }, 'options.stopSequences must be array'],
    [{ prompt: 'hi', options: { stopSequences: ['a', 'b', 'c', 'd', 'e', 'f'] } }, 'options.stopSequences must not have more than 5 items'],
    [{ prompt: 'hi', options: { stopSequences: [''] } }, 'options.stopSequences.0 must not have fewer than 1 characters'],
    [{ prompt: 'hi', options: { seed: 1.5 } }, 'options.seed must be integer'],
    [{ prompt: 'hi', options: { seed: 2 ** 31 } }, 'options.seed must be <= 2147483647'],
    [{ prompt: 'hi', options: { presencePenalty: 2 } }, 'options.presencePenalty must be < 2'],
    [{ prompt: 'hi', options: { frequencyPenalty: -2.5 } }, 'options.frequencyPenalty must be >= -2'],
    [{ prompt: 'hi', options: { responseMimeType: 'text/html' } }, 'options.responseMimeType must be one of "text/plain", "application/json", "text/x.enum"']
  ]
  for (const [body, error] of cases) {
    const response = await app.inject({ method: 'POST', url: '/api/stream', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, payload: JSON.stringify(body) })
    t.same({ status: response.statusCode, body: response.body }, { status: 400, body: JSON.stringify({ error }) }, JSON.stringify(body).slice(0, 80))
  }
})

t.test('a conversation reaches Gemini as @google/genai sends it, and streams as the contract says', async t => {
  const emulator = await startEmulator(t, { chunkCount: 4, defaultMaxTokens: 12 })
  for (const client of ['rest', 'sdk'] as const) {
    const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client } })
    const response = await postStream(url, {
      prompt: 'and now?',
      system: 'Answer like a pirate',
      history: [{ role: 'user', text: 'hi' }, { role: 'model', text: 'ahoy' }],
      options: { stopSequences: ['END'], seed: 7, presencePenalty: 0.5, frequencyPenalty: -0.5, responseMimeType: 'text/plain' }
    })
    t.equal(response.status, 200, client)
    const events = parseEvents(await response.text()) as Array<{ chunk?: string, complete?: boolean, fullText?: string }>
    const chunks = events.filter(event => event.chunk !== undefined)
    t.ok(chunks.length > 0, `${client}: chunks`)
    t.same(events.at(-1), { ...events.at(-1), complete: true, fullText: chunks.map(event => event.chunk).join('') }, `${client}: the completion holds the chunks`)
    t.equal(JSON.stringify(emulator.requests.at(-1)?.body),
      '{"contents":[{"parts":[{"text":"hi"}],"role":"user"},{"parts":[{"text":"ahoy"}],"role":"model"},{"parts":[{"text":"and now?"}],"role":"user"}],' +
      '"systemInstruction":{"parts":[{"text":"Answer like a pirate"}],"role":"user"},' +
      '"generationConfig":{"stopSequences":["END"],"presencePenalty":0.5,"frequencyPenalty":-0.5,"seed":7,"responseMimeType":"text/plain"}}', `${client}: on the wire`)
  }
})

t.test('system and history change the answer, and a stop sequence ends it, over the wire', async t => {
  const pace = { chunkCount: 4, defaultMaxTokens: 12 }
  const emulator = await startEmulator(t, pace)
  const { url } = await startGateway(t, emulator)
  const fullTextOf = async (body: unknown): Promise<string> => {
    const response = await postStream(url, body)
    t.equal(response.status, 200)
    const last = parseEvents(await response.text()).at(-1) as { complete?: boolean, fullText?: string }
    t.equal(last.complete, true)
    return last.fullText ?? ''
  }
  const history = [{ role: 'user' as const, text: 'hi' }, { role: 'model' as const, text: 'ahoy' }]
  const plain = await fullTextOf({ prompt: 'and now?' })
  const withSystem = await fullTextOf({ prompt: 'and now?', system: 'Answer like a pirate' })
  const withHistory = await fullTextOf({ prompt: 'and now?', history })
  t.equal(plain, answerFor('and now?', undefined, pace).deltas.join(''), 'the seed\'s answer for a prompt alone')
  t.equal(withSystem, answerFor({ system: 'Answer like a pirate', turns: [{ role: 'user', text: 'and now?' }] }, undefined, pace).deltas.join(''))
  t.equal(withHistory, answerFor({ turns: [...history, { role: 'user', text: 'and now?' }] }, undefined, pace).deltas.join(''))
  t.not(withSystem, plain, 'the system instruction changes the answer')
  t.not(withHistory, plain, 'earlier turns change the answer')

  const words = plain.split(' ')
  const stop = words[2]!
  const stopped = await fullTextOf({ prompt: 'and now?', options: { stopSequences: [stop] } })
  t.equal(stopped, plain.slice(0, plain.indexOf(stop)), 'the answer ends before the stop sequence')
})
