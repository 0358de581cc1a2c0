import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import type { GatewayOptions } from '../app.js'
import type { GeminiEmulator } from '../emulator/server.js'
import { buildGateway, listenOnLoopback, parseEvents, postStream, startEmulator } from './support/gateway.js'

const PACE = { chunkCount: 2, defaultMaxTokens: 6 }
const ask = (model: string): unknown => ({ prompt: 'hello', system: 'Be brief.', model })

interface Logged { url: string, logs: () => Array<Record<string, unknown>> }

async function gateway (t: Test, emulator: GeminiEmulator, overrides: Partial<GatewayOptions>): Promise<Logged> {
  const lines: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(chunk.toString()); done() } })
  const app = await buildGateway(t, emulator.url, overrides, { logger: { level: 'info', stream } })
  return { url: await listenOnLoopback(app), logs: () => lines.map(line => JSON.parse(line) as Record<string, unknown>) }
}

async function circuit (url: string, key: string, model: string): Promise<number | undefined> {
  const series = `amrikyy_circuit_state{key="${key}",model="${model}"} `
  const line = (await (await fetch(`${url}/api/metrics`)).text()).split('\n').find(candidate => candidate.startsWith(series))
  return line === undefined ? undefined : Number(line.slice(series.length))
}

const circuitLines = (logs: Array<Record<string, unknown>>): unknown[] => logs.filter(line => typeof line.circuit === 'string').map(line => [line.circuit, line.model, line.level])

t.test('a run of failures opens the model\'s circuit: calls are answered at once, then a trial closes it again', async t => {
  const emulator = await startEmulator(t, { ...PACE, models: { 'gemini-2.5-pro': { unavailable: true } } })
  const { url, logs } = await gateway(t, emulator, {
    gemini: { apiKey: 'k', baseUrl: emulator.url, breaker: { failures: 3, windowMs: 10_000, coolDownMs: 400, trials: 1 } },
    stream: { retry: { attempts: 1 } }
  })
  for (let i = 0; i < 3; i++) {
    const failing = await postStream(url, ask('gemini-2.5-pro'))
    t.equal(failing.status, 500)
    t.match(await failing.text(), /The model is overloaded/)
  }
  t.equal(emulator.requests.length, 3)
  t.equal(await circuit(url, '1', 'gemini-2.5-pro'), 1, 'open')
  const started = performance.now()
  const fast = await postStream(url, ask('gemini-2.5-pro'))
  t.equal(fast.status, 500)
  t.match(await fast.text(), /"message":"Gemini is failing for gemini-2.5-pro; the gateway stops calling it for 1 s"/)
  t.ok(performance.now() - started < 200, 'answered at once')
  t.equal(emulator.requests.length, 3, 'without calling Gemini')
  const other = await postStream(url, ask('gemini-2.5-flash'))
  t.equal(other.status, 200, 'another model\'s circuit is its own')
  await other.text()

  await new Promise(resolve => setTimeout(resolve, 450))
  emulator.setModel('gemini-2.5-pro', {})
  const trial = await postStream(url, ask('gemini-2.5-pro'))
  t.equal(trial.status, 200, 'after the cool-down a trial call goes through')
  await trial.text()
  t.equal(await circuit(url, '1', 'gemini-2.5-pro'), 0, 'and closes the circuit')
  t.same(circuitLines(logs()), [['open', 'gemini-2.5-pro', 40], ['half-open', 'gemini-2.5-pro', 30], ['closed', 'gemini-2.5-pro', 30]], 'a log line on every change')
})

t.test('a failed trial opens the circuit again; request errors never open it', async t => {
  const emulator = await startEmulator(t, { ...PACE, models: { 'gemini-2.5-pro': { unavailable: true } } })
  const { url } = await gateway(t, emulator, {
    gemini: { apiKey: 'k', baseUrl: emulator.url, breaker: { failures: 2, windowMs: 10_000, coolDownMs: 300, trials: 1 } },
    stream: { retry: { attempts: 1 } }
  })
  for (let i = 0; i < 2; i++) await (await postStream(url, ask('gemini-2.5-pro'))).text()
  await new Promise(resolve => setTimeout(resolve, 350))
  await (await postStream(url, ask('gemini-2.5-pro'))).text()
  t.equal(emulator.requests.length, 3, 'the trial went to Gemini')
  t.equal(await circuit(url, '1', 'gemini-2.5-pro'), 1, 'and failed: open again')
  await (await postStream(url, ask('gemini-2.5-pro'))).text()
  t.equal(emulator.requests.length, 3)

  emulator.addFault({ kind: 'http-error', status: 400, body: { error: { code: 400, message: 'Invalid value', status: 'INVALID_ARGUMENT' } } }, { match: 'hello', times: 5 })
  for (let i = 0; i < 5; i++) await (await postStream(url, ask('gemini-2.0-flash'))).text()
  t.equal(await circuit(url, '1', 'gemini-2.0-flash'), undefined, 'five 400s: no circuit at all')
  const served = await postStream(url, { prompt: 'served', model: 'gemini-2.0-flash' })
  t.equal(served.status, 200)
  await served.text()
})

t.test('an open circuit sends the call to the model\'s fallback, or to the next key, without calling the failing upstream', async t => {
  const emulator = await startEmulator(t, { ...PACE, models: { 'gemini-2.5-pro': { unavailable: true } } })
  const { url } = await gateway(t, emulator, {
    gemini: { apiKey: 'k', baseUrl: emulator.url, breaker: { failures: 1, windowMs: 10_000, coolDownMs: 60_000, trials: 1 } },
    stream: { retry: { attempts: 2 }, fallbacks: [['gemini-2.5-pro', 'gemini-2.5-flash']] }
  })
  const first = await postStream(url, ask('gemini-2.5-pro'))
  t.match(parseEvents(await first.text()).at(-1), { complete: true, model: 'gemini-2.5-flash' })
  const second = await postStream(url, ask('gemini-2.5-pro'))
  t.match(parseEvents(await second.text()).at(-1), { complete: true, model: 'gemini-2.5-flash' })
  t.same(emulator.requests.map(request => request.model), ['gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.5-flash'], 'the open circuit is not called again')

  const pooledEmulator = await startEmulator(t, PACE)
  const pooled = await gateway(t, pooledEmulator, {
    gemini: { apiKey: 'unused', apiKeys: ['key-one', 'key-two'], baseUrl: pooledEmulator.url, breaker: { failures: 1, windowMs: 10_000, coolDownMs: 60_000, trials: 1 } }
  })
  pooledEmulator.addFault({ kind: 'http-error', status: 500, body: { error: { code: 500, message: 'Internal error', status: 'INTERNAL' } } }, { match: 'hello' })
  for (let i = 0; i < 3; i++) {
    const response = await postStream(pooled.url, ask('gemini-2.0-flash'))
    t.equal(response.status, 200)
    await response.text()
  }
  t.same(pooledEmulator.requests.map(request => request.headers['x-goog-api-key']), ['key-one', 'key-two', 'key-two', 'key-two'], 'key one\'s open circuit hands its turns to key two at once')
  t.equal(await circuit(pooled.url, '1', 'gemini-2.0-flash'), 1)
})
