// Conversations on POST /api/stream (issue 14): a system instruction, earlier turns and the rest of
// Gemini's generation options, validated like the seed's fields and sent as @google/genai sends them.

import t from 'tap'
import { answerFor } from '../emulator/server.js'
import { CONVERSATION_MAX_CHARS, HISTORY_MAX_TURNS } from '../schemas/stream.js'
import { USER_KEY, buildGateway, chunkEvent, listenOnLoopback, parseEvents, postStream, startEmulator, startGateway } from './support/gateway.js'
import { startScriptedServer } from './support/scripted-server.js'

// Nothing listens here: every request below must be refused before the gateway calls Gemini.
const UNREACHABLE_UPSTREAM = 'http://127.0.0.1:9'

t.test('every invalid conversation field is a 400 naming it, before any upstream call', async t => {
  const app = await buildGateway(t, UNREACHABLE_UPSTREAM)
  const deep = (levels: number): unknown => levels === 1 ? { type: 'string' } : { type: 'object', properties: { next: deep(levels - 1) } }
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
    [{ prompt: 'hi', options: { responseMimeType: 'text/html' } }, 'options.responseMimeType must be one of "text/plain", "application/json", "text/x.enum"'],
    [{ prompt: 'hi', options: { responseSchema: [] } }, 'options.responseSchema must be object'],
    [{ prompt: 'hi', options: { responseSchema: deep(33) } }, 'options.responseSchema must be at most 32768 bytes and 32 levels deep'],
    [{ prompt: 'hi', options: { responseSchema: { description: 'x'.repeat(32 * 1024) } } }, 'options.responseSchema must be at most 32768 bytes and 32 levels deep'],
    [{ prompt: 'hi', options: { thinking: { budget: -2 } } }, 'options.thinking.budget must be >= -1'],
    [{ prompt: 'hi', options: { thinking: { includeThoughts: 'yes' } } }, 'options.thinking.includeThoughts must be boolean'],
    [{ prompt: 'hi', options: { thinking: { level: 'high' } } }, 'Unknown field: options.thinking.level'],
    [{ prompt: 'hi', options: { safetySettings: [{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_SOME' }] } },
      'options.safetySettings.0.threshold must be one of "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"']
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

t.test('a conversation\'s completion says how Gemini ended it; a seed request\'s stays the seed\'s', async t => {
  const pace = { chunkCount: 3, defaultMaxTokens: 9 }
  const emulator = await startEmulator(t, pace)
  const { url } = await startGateway(t, emulator)
  const lastEvent = async (body: unknown): Promise<unknown> => parseEvents(await (await postStream(url, body)).text()).at(-1)

  const seed = answerFor('hello there', { temperature: 0.5 }, pace)
  const seedUsage = { promptTokens: seed.promptTokens, completionTokens: seed.completionTokens, totalTokens: seed.promptTokens + seed.completionTokens }
  t.same(await lastEvent({ prompt: 'hello there', options: { temperature: 0.5 } }),
    { complete: true, totalChunks: 3, fullText: seed.deltas.join(''), usage: seedUsage }, 'seed fields only: the seed\'s completion')

  const asked = { system: 'be brief', turns: [{ role: 'user' as const, text: 'hello there' }] }
  const answer = answerFor(asked, undefined, pace)
  t.same(await lastEvent({ prompt: 'hello there', system: 'be brief', model: 'gemini-2.5-flash' }), {
    complete: true,
    totalChunks: 3,
    fullText: answer.deltas.join(''),
    usage: { promptTokens: answer.promptTokens, completionTokens: answer.completionTokens, totalTokens: answer.promptTokens + answer.completionTokens },
    finishReason: 'STOP',
    model: 'gemini-2.5-flash'
  }, 'a conversation: finish reason and model added')

  const limited = answerFor({ turns: [{ role: 'user', text: 'hello there' }] }, { maxOutputTokens: 3, stopSequences: ['zzz'] }, pace)
  const event = await lastEvent({ prompt: 'hello there', options: { maxOutputTokens: 3, stopSequences: ['zzz'] } }) as { finishReason?: string }
  t.equal(event.finishReason, limited.finishReason, 'MAX_TOKENS when the output cap ended it')
  t.equal(limited.finishReason, 'MAX_TOKENS')
})

t.test('a conversation cut short by Gemini ends with its finish reason in the error event, for each reason', async t => {
  // The scripted Gemini finishes with the reason the model's name ends with: `finish-SAFETY`.
  const upstream = await startScriptedServer(t, (request, response) => {
    const finishReason = /finish-([A-Z_]+):/.exec(request.url ?? '')?.[1]
    response.writeHead(200, { 'content-type': 'text/event-stream' })
    response.write(`data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: 'Once upon' }], role: 'model' }, index: 0 }], modelVersion: 'gemini-2.5-flash' })}\r\n\r\n`)
    response.end(`data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text: ' a' }], role: 'model' }, finishReason, index: 0 }], usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 2, totalTokenCount: 5 }, modelVersion: 'gemini-2.5-flash' })}\r\n\r\n`)
  })
  const url = await listenOnLoopback(await buildGateway(t, upstream, { gemini: { apiKey: 'k', baseUrl: upstream }, stream: { heartbeatMs: 0 } }))
  const text = chunkEvent('Once upon', 1) + chunkEvent(' a', 2)
  const seedBody = await (await postStream(url, { prompt: 'tell a story', model: 'finish-SAFETY' })).text()
  t.equal(seedBody, text + 'data: {"error":"Gemini stopped generating: SAFETY","recoverable":false}\n\n', 'the seed\'s error event')
  // Gemini's FinishReason values other than STOP and MAX_TOKENS (generativelanguage v1beta).
  for (const reason of ['SAFETY', 'RECITATION', 'LANGUAGE', 'OTHER', 'BLOCKLIST', 'PROHIBITED_CONTENT', 'SPII', 'MALFORMED_FUNCTION_CALL', 'IMAGE_SAFETY', 'UNEXPECTED_TOOL_CALL']) {
    const conversationBody = await (await postStream(url, { prompt: 'tell a story', model: `finish-${reason}`, system: 'for children' })).text()
    t.equal(conversationBody, text + `data: {"error":"Gemini stopped generating: ${reason}","recoverable":false,"finishReason":"${reason}"}\n\n`, `${reason}: the text sent stays, then the reason`)
  }
  for (const reason of ['STOP', 'MAX_TOKENS']) {
    const events = parseEvents(await (await postStream(url, { prompt: 'tell a story', model: `finish-${reason}`, system: 'for children' })).text())
    t.same(events.at(-1), { complete: true, totalChunks: 2, fullText: 'Once upon a', usage: { promptTokens: 3, completionTokens: 2, totalTokens: 5 }, finishReason: reason, model: 'gemini-2.5-flash' }, `${reason}: a completion`)
  }
})

t.test('thought summaries arrive as their own events, never in a chunk, and are counted as thinking tokens', async t => {
  const pace = { chunkCount: 8, defaultMaxTokens: 32 }
  const emulator = await startEmulator(t, pace)
  const { url } = await startGateway(t, emulator)
  const request = { prompt: 'Why is the sky blue?', model: 'gemini-2.5-flash', options: { thinking: { includeThoughts: true } } }
  const events = parseEvents(await (await postStream(url, request)).text()) as Array<Record<string, unknown>>
  const firstChunk = events.findIndex(event => 'chunk' in event)
  const thoughts = events.filter(event => 'thought' in event)
  t.ok(thoughts.length > 0, 'thought events')
  t.ok(events.slice(0, firstChunk).every(event => 'thought' in event) && events.slice(firstChunk).every(event => !('thought' in event)), 'all before the answer')
  t.ok(thoughts.every(event => typeof event.thought === 'string' && Object.keys(event).length === 1), 'each { "thought": text }')

  const answer = answerFor({ turns: [{ role: 'user', text: request.prompt }] }, undefined, pace)
  const chunks = events.filter(event => 'chunk' in event)
  t.same(chunks.map(event => event.index), chunks.map((_, i) => i + 1), 'chunk indexes count chunks only')
  const completion = events.at(-1) as { totalChunks: number, fullText: string, usage: { promptTokens: number, completionTokens: number, totalTokens: number, thoughtsTokens: number } }
  t.equal(completion.fullText, answer.deltas.join(''), 'the answer without its thoughts')
  t.equal(completion.totalChunks, chunks.length)
  t.ok(completion.usage.thoughtsTokens > 0, 'thinking tokens reported')
  t.equal(completion.usage.completionTokens, answer.completionTokens + completion.usage.thoughtsTokens, 'completion as billed: answer plus thinking')
  t.equal(completion.usage.totalTokens, completion.usage.promptTokens + completion.usage.completionTokens)

  const hidden = parseEvents(await (await postStream(url, { ...request, options: { thinking: { includeThoughts: false } } })).text()) as Array<Record<string, unknown>>
  t.notOk(hidden.some(event => 'thought' in event), 'no thought events unless asked for')
  t.equal((hidden.at(-1) as typeof completion).usage.thoughtsTokens, completion.usage.thoughtsTokens, 'the thinking is still counted')
})

t.test('a SAFETY finish keeps the text sent and names the reason; a blocked prompt is refused before any chunk', async t => {
  const emulator = await startEmulator(t, { chunkCount: 4, defaultMaxTokens: 12 })
  const { url } = await startGateway(t, emulator)
  const unsafe = await (await postStream(url, { prompt: 'tell me [[unsafe]] things', system: 'be safe' })).text()
  const events = parseEvents(unsafe) as Array<Record<string, unknown>>
  t.ok(events.length >= 2 && 'chunk' in events[0]!, 'the text already generated is sent')
  t.same(events.at(-1), { error: 'Gemini stopped generating: SAFETY', recoverable: false, finishReason: 'SAFETY', blockedCategories: ['HARM_CATEGORY_DANGEROUS_CONTENT'] })
  const blocked = await postStream(url, { prompt: 'tell me [[blocked-prompt]] things', system: 'be safe' })
  t.equal(blocked.status, 500)
  t.equal(await blocked.text(), '{"error":"Failed to start stream","message":"Gemini blocked the prompt: SAFETY","blockReason":"SAFETY","blockedCategories":["HARM_CATEGORY_DANGEROUS_CONTENT"]}',
    'a conversation request learns why and for which categories')
  const seedBlocked = await postStream(url, { prompt: 'tell me [[blocked-prompt]] things' })
  t.equal(seedBlocked.status, 500)
  t.equal(await seedBlocked.text(), '{"error":"Failed to start stream","message":"Gemini blocked the prompt: SAFETY"}', 'the seed\'s 500 body stays as it was')
})
