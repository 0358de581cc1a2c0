// The relay's back-off, decided without HTTP: Gemini's own Retry-After wins, otherwise an
// exponential delay with equal jitter, capped; no further try for an error the gateway may not retry
// or once the attempts are spent.

import t from 'tap'
import { httpStatusError, malformedStream, UpstreamError } from '../gemini/upstream-error.js'
import { retryDelay, type RetryPolicy } from '../relay/retry.js'

const POLICY: RetryPolicy = { attempts: 5, baseDelayMs: 100, maxDelayMs: 1_000, maxTotalWaitMs: 10_000 }
const network = new UpstreamError('network', 'Connection to Gemini failed')

t.test('exponential from the base delay, with equal jitter', async t => {
  const rows: Array<[attempt: number, random: number, delay: number]> = [
    [1, 0, 50], [1, 0.999999, 100], [1, 0.5, 75],
    [2, 0, 100], [2, 0.5, 150],
    [3, 0, 200], [4, 0, 400], [4, 0.999999, 800]
  ]
  for (const [attempt, random, delay] of rows) {
    t.equal(retryDelay(network, attempt, POLICY, () => random), delay, `attempt ${attempt}, random ${random}`)
  }
})

t.test('capped at maxDelayMs', async t => {
  const long = { ...POLICY, attempts: 20 }
  t.equal(retryDelay(network, 10, long, () => 0.999999), 1_000)
  t.equal(retryDelay(network, 10, long, () => 0), 500)
})

t.test('Gemini\'s own delay wins over the back-off', async t => {
  const quota = httpStatusError(429, { error: { code: 429, message: 'quota', status: 'RESOURCE_EXHAUSTED', details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '2.5s' }] } }, '')
  t.equal(retryDelay(quota, 1, POLICY, () => 0), 2_500)
  t.equal(retryDelay(httpStatusError(503, undefined, '', 7_000), 1, POLICY), 7_000, 'from the Retry-After header')
})

t.test('no further try once the attempts are spent', async t => {
  t.equal(retryDelay(network, 4, POLICY, () => 0), 400)
  t.equal(retryDelay(network, 5, POLICY, () => 0), undefined)
  t.equal(retryDelay(network, 1, { ...POLICY, attempts: 1 }), undefined)
})

t.test('no retry for an error the gateway may not retry', async t => {
  const refused: Array<[string, UpstreamError]> = [
    ['400', httpStatusError(400, undefined, '')],
    ['404', httpStatusError(404, undefined, '')],
    ['malformed', malformedStream()],
    ['too large', new UpstreamError('too_large', 'big')],
    ['aborted', new UpstreamError('aborted', 'aborted')],
    ['out of descriptors', new UpstreamError('out_of_descriptors', 'EMFILE')]
  ]
  for (const [name, error] of refused) t.equal(retryDelay(error, 1, POLICY), undefined, name)
  for (const status of [408, 429, 500, 502, 503, 504]) t.equal(retryDelay(httpStatusError(status, undefined, ''), 1, POLICY, () => 0), 50, `${status} is retried`)
})
