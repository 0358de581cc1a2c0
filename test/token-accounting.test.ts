// Tokens are counted for every stream from the last running total Gemini sent, as Google bills them:
// a stream that failed or was cancelled after some chunks still pays for what was generated.

import t from 'tap'
import { answerFor } from '../emulator/server.js'
import { setTimeout as sleep } from 'node:timers/promises'
import { openStream, postStream, startEmulator, startGateway, within } from './support/gateway.js'
import { Exposition } from './support/prometheus.js'

const PACE = { chunkCount: 6, defaultMaxTokens: 30 }
const LABELS = { agent: 'counter', model: 'gemini-2.0-flash-exp' }
/** The emulator spreads an answer's tokens evenly over its chunks and reports a running total on each. */
const TOKENS_PER_CHUNK = PACE.defaultMaxTokens / PACE.chunkCount

async function tokens (url: string): Promise<{ prompt: number, completion: number }> {
  const scrape = new Exposition(await (await fetch(`${url}/api/metrics`)).text())
  return {
    prompt: scrape.value('amrikyy_stream_tokens_total', { ...LABELS, type: 'prompt' }),
    completion: scrape.value('amrikyy_stream_tokens_total', { ...LABELS, type: 'completion' })
  }
}

t.test('a stream that fails after two chunks is charged the tokens generated so far', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 500 })
  const response = await postStream(url, { prompt: 'fails mid stream', agent: LABELS.agent })
  t.match(await response.text(), /"recoverable":true/)
  const answer = answerFor('fails mid stream', undefined, PACE)
  const charged = await tokens(url)
  t.equal(charged.prompt, answer.promptTokens, 'the whole prompt')
  t.equal(charged.completion, 2 * TOKENS_PER_CHUNK, 'the two chunks generated')
  t.ok(charged.completion < answer.completionTokens)
})

t.test('a stream whose client leaves after the first chunk is charged the tokens generated so far', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  emulator.addFault({ kind: 'stall', afterChunks: 1 })
  const leaving = await openStream(url, { prompt: 'leaves early', agent: LABELS.agent })
  await leaving.waitFor('"index":1}')
  leaving.disconnect()
  await within(2000, emulator.requests.at(-1)!.closed, 'upstream closed')
  const answer = answerFor('leaves early', undefined, PACE)
  // The gateway records the cancelled stream once it sees the client gone, which may come just after the upstream close.
  let charged = await tokens(url)
  for (let tries = 0; charged.prompt === 0 && tries < 100; tries++) {
    await sleep(20)
    charged = await tokens(url)
  }
  t.equal(charged.prompt, answer.promptTokens, 'the whole prompt')
  t.equal(charged.completion, TOKENS_PER_CHUNK, 'the one chunk generated before the client left')
})

t.test('a completed stream is charged its last running total, not a sum of chunks', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const response = await postStream(url, { prompt: 'completes', agent: LABELS.agent })
  t.match(await response.text(), /"complete":true/)
  const answer = answerFor('completes', undefined, PACE)
  t.same(await tokens(url), { prompt: answer.promptTokens, completion: answer.completionTokens })
})
