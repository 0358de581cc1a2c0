// Upstream failures are classified by the code that saw them: an event of the wrong shape is a
// malformed stream (never retried as a network error), and an exception nobody expected is the
// gateway's own 500, logged with its stack and never retried.

import t from 'tap'
import type { GeminiClient } from '../gemini/types.js'
import { startScriptedServer } from './support/scripted-server.js'
import { buildGateway, chunkEvent, listenOnLoopback, postStream } from './support/gateway.js'
import { Exposition } from './support/prometheus.js'

const GOOD_EVENT = { candidates: [{ content: { parts: [{ text: 'hi' }], role: 'model' }, index: 0 }] }

/** Events whose fields have the wrong JSON type; each is valid JSON. */
const WRONG_SHAPES: Array<[string, unknown]> = [
  ['parts is an object', { candidates: [{ content: { parts: {}, role: 'model' } }] }],
  ['candidates is an object', { candidates: { 0: {} } }],
  ['a part is a number', { candidates: [{ content: { parts: [1] } }] }],
  ['text is a number', { candidates: [{ content: { parts: [{ text: 5 }] } }] }],
  ['thought is a string', { candidates: [{ content: { parts: [{ text: 'x', thought: 'yes' }] } }] }],
  ['usageMetadata is a string', { ...GOOD_EVENT, usageMetadata: 'many' }],
  ['a token count is a string', { ...GOOD_EVENT, usageMetadata: { promptTokenCount: '3' } }]
]

function sse (event: unknown): string {
  return `data: ${JSON.stringify(event)}\r\n\r\n`
}

async function metricsOf (url: string): Promise<Exposition> {
  return new Exposition(await (await fetch(`${url}/api/metrics`)).text())
}

for (const client of ['rest', 'sdk'] as const) {
  t.test(`${client}: an event of the wrong shape is a malformed stream, tried once`, async t => {
    let calls = 0
    let firstEventGood = false
    let current: unknown
    const upstream = await startScriptedServer(t, (_request, response) => {
      calls++
      response.writeHead(200, { 'content-type': 'text/event-stream' })
      response.end((firstEventGood ? sse(GOOD_EVENT) : '') + sse(current))
    })
    const app = await buildGateway(t, upstream, { gemini: { apiKey: 'k', baseUrl: upstream, client }, stream: { heartbeatMs: 0 } })
    const url = await listenOnLoopback(app)
    for (const [name, event] of WRONG_SHAPES) {
      await t.test(`${name}, as the first event`, async t => {
        current = event
        firstEventGood = false
        calls = 0
        const response = await postStream(url, { prompt: 'p' })
        t.equal(response.status, 500)
        t.equal(await response.text(), JSON.stringify({ error: 'Failed to start stream', message: 'Gemini sent a malformed stream' }))
        t.equal(calls, 1, 'not retried')
      })
      await t.test(`${name}, after a chunk`, async t => {
        current = event
        firstEventGood = true
        calls = 0
        const response = await postStream(url, { prompt: 'p' })
        t.equal(response.status, 200)
        t.equal(await response.text(), chunkEvent('hi', 1) + `data: ${JSON.stringify({ error: 'Gemini sent a malformed stream', recoverable: true })}\n\n`)
        t.equal(calls, 1)
      })
    }
    const metrics = await metricsOf(url)
    t.same(metrics.labelSets('amrikyy_upstream_errors_total'), [{ status: 'malformed' }], 'counted as malformed only')
    t.equal(metrics.value('amrikyy_upstream_errors_total', { status: 'malformed' }), 2 * WRONG_SHAPES.length)
  })
}

t.test('an unexpected exception is a 500 logged with its stack, never retried and never an upstream error', async t => {
  let calls = 0
  const buggy: GeminiClient = {
    async streamGenerate () {
      calls++
      // What a bug looks like: a TypeError, as undici's network failures also are.
      return (undefined as unknown as { iterator: () => AsyncIterator<never> }).iterator()
    },
    async countTokens () { return 0 }
  }
  const logs: string[] = []
  const app = await buildGateway(t, 'http://127.0.0.1:1', { gemini: { client: buggy } },
    { logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } } })
  const url = await listenOnLoopback(app)

  const response = await postStream(url, { prompt: 'p' })
  t.equal(response.status, 500)
  t.equal(await response.text(), '{"error":"Internal Server Error"}')
  t.equal(calls, 1, 'not retried')

  const entries = logs.map(line => JSON.parse(line) as { level: number, msg: string, err?: { type: string, stack: string } })
  const logged = entries.find(entry => entry.msg === 'stream failed on an unexpected error')
  t.equal(logged?.level, 50, 'logged at error level')
  t.equal(logged?.err?.type, 'TypeError')
  t.match(logged?.err?.stack, /TypeError: Cannot read properties of undefined[\s\S]*upstream-classification\.test\.ts/, 'with the stack of the bug')

  const metrics = await metricsOf(url)
  t.same(metrics.labelSets('amrikyy_upstream_errors_total'), [], 'no upstream error counted')
  t.equal(metrics.value('amrikyy_stream_sessions_failed_total', { agent: 'unknown', model: 'gemini-2.0-flash-exp' }), 1)
  t.equal(metrics.value('amrikyy_active_streams', { agent: 'unknown', model: 'gemini-2.0-flash-exp' }), 0)
})

t.test('a host\'s own client must be a GeminiClient', async t => {
  await t.rejects(buildGateway(t, 'http://127.0.0.1:1', { gemini: { client: { streamGenerate: async () => { throw new Error('x') } } as unknown as GeminiClient } }),
    new Error('gemini-client: option "client" must be "sdk", "rest" or a GeminiClient (streamGenerate and countTokens)'))
})
