import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { answerFor } from '../emulator/server.js'
import { USER_KEY, expectedStreamBody, parseEvents, postStream, startEmulator, startGateway } from './support/gateway.js'

const run = promisify(execFile)
const PACE = { chunkCount: 6, defaultMaxTokens: 30 }
const FIXTURES = new URL('./fixtures/seed-examples/', import.meta.url)

async function example (t: Test, file: string, url: string): Promise<string> {
  const source = await readFile(new URL(file, FIXTURES), 'utf8')
  const dir = await mkdtemp(join(tmpdir(), 'seed-example-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const path = join(dir, file)
  await writeFile(path, source.replaceAll('http://localhost:5000', url).replaceAll('YOUR_KEY', USER_KEY))
  return path
}

/** The first Python on this machine that has `requests`, as the contract's example needs. */
async function pythonWithRequests (): Promise<string | undefined> {
  for (const candidate of ['python3', '/usr/bin/python3']) {
    try {
      await run(candidate, ['-c', 'import requests'])
      return candidate
    } catch {}
  }
  return undefined
}

t.test('the contract\'s client examples work unchanged', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)

  t.test('curl', async t => {
    const { stdout } = await run('bash', [await example(t, 'curl.sh', url)])
    const answer = answerFor('Write a haiku about AI', undefined, PACE)
    t.equal(stdout, expectedStreamBody(answer.deltas, answer))
  })

  t.test('JavaScript fetch', async t => {
    const { stdout } = await run(process.execPath, [await example(t, 'fetch.mjs', url)])
    const answer = answerFor('Tell me a story', undefined, PACE)
    t.equal(stdout, answer.deltas.map(delta => `${delta}\n`).join(''))
  })

  const python = await pythonWithRequests()
  // .ci/run installs python3-requests, so CI always runs this one.
  t.test('Python requests', { skip: python === undefined ? 'no python3 with the requests package on this machine' : false }, async t => {
    if (python === undefined) return
    const { stdout } = await run(python, [await example(t, 'requests_example.py', url)], { env: { ...process.env, PYTHONIOENCODING: 'utf-8' } })
    t.equal(stdout, answerFor('Explain quantum computing', undefined, PACE).deltas.join(''))
  })
})

/** The example's request body with conversation fields added; its reading code stays as the contract wrote it. */
async function conversationExample (t: Test, file: string, url: string, from: string, to: string): Promise<string> {
  const path = await example(t, file, url)
  const source = await readFile(path, 'utf8')
  t.ok(source.includes(from), `${file} still has its body`)
  await writeFile(path, source.replace(from, to))
  return path
}

t.test('the contract\'s client examples read a conversation request\'s stream (thoughts, new completion fields) unchanged', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const extra = { model: 'gemini-2.5-flash', system: 'Answer as a pirate.', history: [{ role: 'user', text: 'hi' }, { role: 'model', text: 'Ahoy.' }], options: { thinking: { includeThoughts: true } } }

  /** What the gateway streams for the body: its chunks, and proof that thought events came too. */
  async function chunksOf (body: Record<string, unknown>): Promise<string[]> {
    const events = parseEvents(await (await postStream(url, { ...body, ...extra })).text()) as Array<{ chunk?: string, thought?: string, finishReason?: string }>
    t.ok(events.some(event => typeof event.thought === 'string'), 'the stream has thought events')
    t.equal(events.at(-1)?.finishReason, 'STOP', 'and a conversation completion')
    return events.flatMap(event => event.chunk === undefined ? [] : [event.chunk])
  }

  t.test('JavaScript fetch', async t => {
    const chunks = await chunksOf({ prompt: 'Tell me a story', agent: 'storyteller' })
    const path = await conversationExample(t, 'fetch.mjs', url, "agent: 'storyteller'", `agent: 'storyteller', ...${JSON.stringify(extra)}`)
    const { stdout } = await run(process.execPath, [path])
    t.equal(stdout, chunks.map(chunk => `${chunk}\n`).join(''), 'the answer\'s chunks, no thought among them')
  })

  const python = await pythonWithRequests()
  t.test('Python requests', { skip: python === undefined ? 'no python3 with the requests package on this machine' : false }, async t => {
    if (python === undefined) return
    const chunks = await chunksOf({ prompt: 'Explain quantum computing', agent: 'explainer' })
    const path = await conversationExample(t, 'requests_example.py', url, "'agent': 'explainer'", `'agent': 'explainer', **json.loads(${JSON.stringify(JSON.stringify(extra))})`)
    const { stdout } = await run(python, [path], { env: { ...process.env, PYTHONIOENCODING: 'utf-8' } })
    t.equal(stdout, chunks.join(''), 'the answer\'s chunks, no thought among them')
  })
})
