// Safety stops over the wire (issue 14): a conversation request's error event names the harm categories
// behind a SAFETY finish or a prompt blocked for SAFETY; a seed request's error event stays the seed's.
// Both Gemini clients read them from the same events.

import t, { type Test } from 'tap'
import { answerFor, UNSAFE_ANSWER_TRIGGER } from '../emulator/server.js'
import { buildGateway, chunkEvent, listenOnLoopback, openStream, postStream, startEmulator, startGateway } from './support/gateway.js'
import { startScriptedServer } from './support/scripted-server.js'

const CLIENTS = ['rest', 'sdk'] as const
const SAFETY_STOP = 'Gemini stopped generating: SAFETY'
const SSE = { 'content-type': 'text/event-stream' }

function sseEvent (value: unknown): string {
  return `data: ${JSON.stringify(value)}\r\n\r\n`
}

function rating (category: string, probability: string, blocked?: boolean): Record<string, unknown> {
  return { category: `HARM_CATEGORY_${category}`, probability, ...(blocked === undefined ? {} : { blocked }) }
}

function textEvent (text: string, candidate: Record<string, unknown> = {}): string {
  return sseEvent({ candidates: [{ content: { parts: [{ text }], role: 'model' }, index: 0, ...candidate }], modelVersion: 'gemini-2.5-flash' })
}

/** A gateway on `client` streaming from a scripted upstream, without heartbeats unless asked for. */
async function gatewayOn (t: Test, upstream: string, client: 'rest' | 'sdk', heartbeatMs = 0): Promise<string> {
  return await listenOnLoopback(await buildGateway(t, upstream, { gemini: { apiKey: 'k', baseUrl: upstream, client }, stream: { heartbeatMs } }))
}

t.test('the emulator\'s [[unsafe]] answer: the text sent stays, then the blocked category, on both clients', async t => {
  const pace = { chunkCount: 4, defaultMaxTokens: 12 }
  const emulator = await startEmulator(t, pace)
  const prompt = `tell me ${UNSAFE_ANSWER_TRIGGER} things`
  for (const client of CLIENTS) {
    const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'k', baseUrl: emulator.url, client }, stream: { heartbeatMs: 0 } })
    const conversation = answerFor({ system: 'be safe', turns: [{ role: 'user', text: prompt }] }, undefined, pace)
    t.equal(await (await postStream(url, { prompt, system: 'be safe' })).text(),
      chunkEvent(conversation.deltas[0]!, 1) +
      `data: {"error":"${SAFETY_STOP}","recoverable":false,"finishReason":"SAFETY","blockedCategories":["HARM_CATEGORY_DANGEROUS_CONTENT"]}\n\n`,
      `${client}: a conversation's error event names the category`)
    const seed = answerFor(prompt, undefined, pace)
    t.equal(await (await postStream(url, { prompt })).text(),
      chunkEvent(seed.deltas[0]!, 1) + `data: {"error":"${SAFETY_STOP}","recoverable":false}\n\n`,
      `${client}: a seed request's error event is the seed's`)
  }
})

t.test('a SAFETY finish on its own event: every category Gemini marked blocked, once each, in its order', async t => {
  const upstream = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, SSE)
    response.write(textEvent('Once upon'))
    // Google's SAFETY finish may come without content; the marks win over a higher unmarked rating.
    response.end(sseEvent({
      candidates: [{
        finishReason: 'SAFETY',
        index: 0,
        // Each category once; a rating without one names nothing.
        safetyRatings: [rating('HATE_SPEECH', 'MEDIUM', true), rating('HARASSMENT', 'HIGH', false), { probability: 'HIGH', blocked: true },
          rating('SEXUALLY_EXPLICIT', 'LOW', true), rating('HATE_SPEECH', 'HIGH', true)]
      }],
      usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 2, totalTokenCount: 5 }
    }))
  })
  for (const client of CLIENTS) {
    const url = await gatewayOn(t, upstream, client)
    t.equal(await (await postStream(url, { prompt: 'tell a story', system: 'for children' })).text(),
      chunkEvent('Once upon', 1) +
      `data: {"error":"${SAFETY_STOP}","recoverable":false,"finishReason":"SAFETY","blockedCategories":["HARM_CATEGORY_HATE_SPEECH","HARM_CATEGORY_SEXUALLY_EXPLICIT"]}\n\n`,
      client)
  }
})

t.test('a SAFETY finish without ratings, or with none above NEGLIGIBLE, names no category', async t => {
  const finishes = [
    { finishReason: 'SAFETY' },
    { finishReason: 'SAFETY', safetyRatings: [rating('HARASSMENT', 'NEGLIGIBLE'), rating('HATE_SPEECH', 'HARM_PROBABILITY_UNSPECIFIED')] }
  ]
  let next = 0
  const upstream = await startScriptedServer(t, (_request, response) => {
    response.writeHead(200, SSE)
    response.end(textEvent('Once upon', finishes[next++ % finishes.length]))
  })
  for (const client of CLIENTS) {
    const url = await gatewayOn(t, upstream, client)
    for (let i = 0; i < finishes.length; i++) {
      t.equal(await (await postStream(url, { prompt: 'tell a story', system: 'for children' })).text(),
        chunkEvent('Once upon', 1) + `data: {"error":"${SAFETY_STOP}","recoverable":false,"finishReason":"SAFETY"}\n\n`, `${client}, case ${i}`)
    }
  }
})

t.test('a prompt blocked for SAFETY after the stream opened: its likeliest categories, as Google marks none blocked', async t => {
  let release = Promise.withResolvers<void>()
  const upstream = await startScriptedServer(t, async (_request, response) => {
    response.writeHead(200, SSE)
    response.flushHeaders()
    // The block arrives once the gateway's heartbeat has opened the client's stream.
    await release.promise
    response.end(sseEvent({
      promptFeedback: {
        blockReason: 'SAFETY',
        safetyRatings: [rating('SEXUALLY_EXPLICIT', 'NEGLIGIBLE'), rating('HATE_SPEECH', 'LOW'), rating('HARASSMENT', 'MEDIUM'), rating('DANGEROUS_CONTENT', 'MEDIUM')]
      },
      usageMetadata: { promptTokenCount: 7, totalTokenCount: 7 },
      modelVersion: 'gemini-2.5-flash'
    }))
  })
  const bodyOf = async (url: string, request: unknown): Promise<string> => {
    release = Promise.withResolvers<void>()
    const stream = await openStream(url, request)
    const ended = new Promise(resolve => stream.response.once('end', resolve))
    await stream.waitFor(': ping\n\n')
    release.resolve()
    await ended
    // Heartbeats may repeat while the block is on its way; the events are exact.
    return stream.received().replaceAll(': ping\n\n', '')
  }
  for (const client of CLIENTS) {
    const url = await gatewayOn(t, upstream, client, 20)
    t.equal(await bodyOf(url, { prompt: 'hi', system: 'be safe' }),
      'data: {"error":"Gemini blocked the prompt: SAFETY","recoverable":false,"blockReason":"SAFETY","blockedCategories":["HARM_CATEGORY_HARASSMENT","HARM_CATEGORY_DANGEROUS_CONTENT"]}\n\n',
      `${client}: a conversation's error event`)
    t.equal(await bodyOf(url, { prompt: 'hi' }), 'data: {"error":"Gemini blocked the prompt: SAFETY","recoverable":false}\n\n', `${client}: the seed's`)
  }
})

t.test('malformed safety ratings on a safety stop are a malformed stream; ratings on other events are not read', async t => {
  const cases: Array<[name: string, ratings: unknown, body: string]> = [
    ['not an array', { category: 'HARM_CATEGORY_HARASSMENT' }, 'data: {"error":"Gemini sent a malformed stream","recoverable":true}\n\n'],
    ['an entry not an object', ['HARM_CATEGORY_HARASSMENT'], 'data: {"error":"Gemini sent a malformed stream","recoverable":true}\n\n'],
    ['a category not a string', [{ category: 7, probability: 'HIGH', blocked: true }], 'data: {"error":"Gemini sent a malformed stream","recoverable":true}\n\n'],
    ['blocked not a boolean', [{ category: 'HARM_CATEGORY_HARASSMENT', blocked: 'yes' }], 'data: {"error":"Gemini sent a malformed stream","recoverable":true}\n\n'],
    ['a probability not a string', [{ category: 'HARM_CATEGORY_HARASSMENT', probability: 4 }], 'data: {"error":"Gemini sent a malformed stream","recoverable":true}\n\n'],
    ['a category that is no enum name', [{ category: 'harm <script>', blocked: true }],
      chunkEvent(' a', 2) + `data: {"error":"${SAFETY_STOP}","recoverable":false,"finishReason":"SAFETY","blockedCategories":["OTHER"]}\n\n`]
  ]
  let next = 0
  const upstream = await startScriptedServer(t, (_request, response) => {
    const [, safetyRatings] = cases[next++ % cases.length]!
    response.writeHead(200, SSE)
    response.write(textEvent('Once upon', { safetyRatings: 'not read' }))
    response.end(textEvent(' a', { finishReason: 'SAFETY', safetyRatings }))
  })
  for (const client of CLIENTS) {
    const url = await gatewayOn(t, upstream, client)
    for (const [name, , body] of cases) {
      t.equal(await (await postStream(url, { prompt: 'tell a story', system: 'for children' })).text(), chunkEvent('Once upon', 1) + body, `${client}: ${name}`)
    }
  }
})
