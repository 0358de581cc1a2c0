// The command-line client as users run it: `node dist/client/cli.js` in a child process against a
// live gateway. `npm test` builds dist/ before tap runs.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { answerFor, type Conversation } from '../emulator/server.js'
import { USER_KEY, expectedStreamBody, startEmulator, startGateway, within } from './support/gateway.js'
import { expectedThoughts } from './support/thoughts.js'
import { closedPortUrl } from '../scripts/shared/ports.js'
import { startCuttingProxy } from './support/cutting-proxy.js'

const CLI = fileURLToPath(new URL('../dist/client/cli.js', import.meta.url))
const PACE = { chunkCount: 5, defaultMaxTokens: 20 }
const SUMMARY = /^amrikyy: (\d+) chunks, (\d+) tokens \((\d+) prompt \+ (\d+) completion\), first chunk (\d+) ms, total (\d+) ms\n$/

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

interface RunOptions {
  env?: Record<string, string>
  stdin?: string
  /** Called once stdout has received this text. */
  onStdout?: { includes: string, then: (child: ReturnType<typeof spawn>) => void }
}

async function runCli (args: string[], { env = {}, stdin, onStdout }: RunOptions = {}): Promise<Run> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('AMRIKYY_')))
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...inherited, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
  const stdout: Buffer[] = []
  const stderr: Buffer[] = []
  let triggered = false
  child.stdout.on('data', (piece: Buffer) => {
    stdout.push(piece)
    if (onStdout !== undefined && !triggered && Buffer.concat(stdout).toString('utf8').includes(onStdout.includes)) {
      triggered = true
      onStdout.then(child)
    }
  })
  child.stderr.on('data', (piece: Buffer) => { stderr.push(piece) })
  child.stdin.end(stdin ?? '')
  const [code, signal] = await within(20_000, new Promise<[number | null, NodeJS.Signals | null]>(resolve => {
    child.on('close', (exitCode, exitSignal) => { resolve([exitCode, exitSignal]) })
  }), 'the CLI exiting')
  return { code, signal, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') }
}

if (!existsSync(CLI)) {
  t.fail(`${CLI} is missing: build first (npx tsc -p tsconfig.build.json), as npm test does`)
} else {
  t.test('prints the answer as it arrives and a one-line summary on stderr', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator)
    const answer = answerFor('Write a haiku about AI', undefined, PACE)

    const run = await runCli(['stream', 'Write a haiku about AI', '--url', url], { env: { AMRIKYY_API_KEY: USER_KEY } })
    t.equal(run.code, 0)
    t.equal(run.stdout, answer.deltas.join(''), 'stdout is exactly the answer text, byte for byte')
    const summary = SUMMARY.exec(run.stderr)
    t.ok(summary, `summary line: ${JSON.stringify(run.stderr)}`)
    t.same(summary?.slice(1, 5).map(Number), [5, 25, 5, 20], 'chunks, total, prompt and completion tokens')
    t.ok(Number(summary?.[5]) <= Number(summary?.[6]), 'the first chunk comes no later than the end')
    t.equal(emulator.requests[0]?.headers['x-goog-api-key'], 'upstream-secret-key')
    t.notMatch(run.stderr + run.stdout, USER_KEY, 'the key is never printed')
  })

  t.test('--json prints each raw event as one JSON line; flags and AMRIKYY_URL reach the gateway', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator)
    const options = { temperature: 0.5, topP: 0.8, topK: 20, maxOutputTokens: 9 }
    const answer = answerFor('Tell me a story', options, PACE)

    const run = await runCli([
      'stream', '--json', '--model', 'gemini-2.5-flash', '--agent', 'storyteller',
      '--temperature', '0.5', '--top-p', '0.8', '--top-k', '20', '--max-tokens', '9', 'Tell me a story'
    ], { env: { AMRIKYY_API_KEY: USER_KEY, AMRIKYY_URL: url } })
    t.equal(run.code, 0)
    const sseBody = expectedStreamBody(answer.deltas, answer)
    t.equal(run.stdout, sseBody.replaceAll('data: ', '').replaceAll('\n\n', '\n'), 'the events, one per line')
    t.match(run.stderr, SUMMARY)
    const seen = emulator.requests[0]
    t.equal(seen?.model, 'gemini-2.5-flash')
    t.same((seen?.body as { generationConfig: unknown }).generationConfig, options)
  })

  t.test('--thoughts prints the thought summaries to stderr, framed, before the answer; stdout stays the answer', async t => {
    const pace = { chunkCount: 8, defaultMaxTokens: 32 }
    const emulator = await startEmulator(t, pace)
    const { url } = await startGateway(t, emulator)
    const conversation: Conversation = { system: 'Be brief.', turns: [{ role: 'user', text: 'Why is the sky blue?' }] }
    const answer = answerFor(conversation, undefined, pace)
    const thoughts = expectedThoughts(conversation, pace.chunkCount, { thinkingBudget: 40, includeThoughts: true })
    t.ok(thoughts.deltas.length === 2 && thoughts.tokens === 40, 'two thought events, the budget\'s 40 words')

    const run = await runCli(['stream', '--thoughts', '--thinking-budget', '40', '--model', 'gemini-2.5-flash', '--system', 'Be brief.', 'Why is the sky blue?', '--url', url], { env: { AMRIKYY_API_KEY: USER_KEY } })
    t.equal(run.code, 0)
    t.equal(run.stdout, answer.deltas.join(''), 'stdout is exactly the answer, no thought in it')
    const completion = answer.completionTokens + thoughts.tokens
    const summary = new RegExp(`^amrikyy: 8 chunks, ${answer.promptTokens + completion} tokens \\(${answer.promptTokens} prompt \\+ ${completion} completion, 40 of them thinking\\), ` +
      'model gemini-2\\.5-flash, finished STOP, first chunk \\d+ ms, total \\d+ ms\n$')
    const framed = `Thinking...\n${thoughts.deltas.join('')}\n...done thinking.\n\n`
    t.equal(run.stderr.slice(0, framed.length), framed, 'the thoughts, between Thinking... and ...done thinking.')
    t.match(run.stderr.slice(framed.length), summary, 'then the summary, with the thinking tokens, the model and the finish reason')
    const sent = emulator.requests[0]?.body as { systemInstruction: unknown, generationConfig: unknown }
    t.same(sent.systemInstruction, { parts: [{ text: 'Be brief.' }], role: 'user' })
    t.same(sent.generationConfig, { thinkingConfig: { thinkingBudget: 40, includeThoughts: true } })

    const json = await runCli(['stream', '--json', '--thoughts', '--thinking-budget', '40', '--model', 'gemini-2.5-flash', '--system', 'Be brief.', 'Why is the sky blue?', '--url', url], { env: { AMRIKYY_API_KEY: USER_KEY } })
    t.equal(json.code, 0)
    const lines = json.stdout.split('\n')
    t.same(lines.slice(0, thoughts.deltas.length + answer.deltas.length).map(line => JSON.parse(line) as unknown), [
      ...thoughts.deltas.map(thought => ({ thought })),
      ...answer.deltas.map((chunk, i) => ({ chunk, index: i + 1 }))
    ], '--json: the thought events as lines, then the chunks')
    t.match(JSON.parse(lines.at(-2) ?? ''), { complete: true, finishReason: 'STOP', model: 'gemini-2.5-flash', usage: { thoughtsTokens: 40 } })
    t.match(json.stderr, summary, 'no framing around JSON lines')

    const silent = await runCli(['stream', '--thoughts', 'Why is the sky blue?', '--url', url], { env: { AMRIKYY_API_KEY: USER_KEY } })
    t.equal(silent.code, 0)
    t.match(silent.stderr, /^amrikyy: \d+ chunks, .*, model gemini-2\.0-flash-exp, finished STOP, /, 'a model that does not think: no thoughts, no framing')

    const badBudget = await runCli(['stream', 'hello', '--thinking-budget', '1.5', '--url', url], { env: { AMRIKYY_API_KEY: USER_KEY } })
    t.same([badBudget.code, badBudget.stderr], [2, 'amrikyy: BadRequestError: options.thinking.budget must be integer\n'], 'the gateway names a bad budget')

    const unsafe = await runCli(['stream', '--system', 'be safe', 'tell me [[unsafe]] things', '--url', url], { env: { AMRIKYY_API_KEY: USER_KEY } })
    t.same([unsafe.code, unsafe.stderr], [6, 'amrikyy: StreamError: Gemini stopped generating: SAFETY [blocked: HARM_CATEGORY_DANGEROUS_CONTENT] (not recoverable)\n'], 'a safety stop names the blocked category')
  })

  t.test('--help lists the conversation flags', async t => {
    const run = await runCli(['--help'])
    t.equal(run.code, 0)
    for (const flag of ['--system <text>', '--thinking-budget <n>', '--thoughts']) t.match(run.stdout, `\n  ${flag} `, flag)
  })

  t.test('--resumable picks a cut stream up where it left off: the whole answer, generated once', async t => {
    const pace = { chunkCount: 10, chunkDelayMs: 40, defaultMaxTokens: 40 }
    const emulator = await startEmulator(t, pace)
    const { url } = await startGateway(t, emulator)
    const proxy = await startCuttingProxy(t, () => ({ target: url, cutAfterChunks: 3 }), { once: true })
    const answer = answerFor('survive the tunnel', undefined, pace)

    const run = await runCli(['stream', '--resumable', 'survive the tunnel', '--url', proxy.url], { env: { AMRIKYY_API_KEY: USER_KEY } })
    t.equal(run.code, 0, run.stderr)
    t.equal(run.stdout, answer.deltas.join(''), 'stdout is the answer, nothing missed or repeated')
    t.same(proxy.connections.map(connection => connection.cut), [true, false], 'the stream, cut, and its resume')
    t.equal(emulator.requests.filter(request => request.rpc === 'streamGenerateContent').length, 1)

    const plain = await runCli(['stream', 'survive the tunnel', '--url', (await startCuttingProxy(t, () => ({ target: url, cutAfterChunks: 3 }))).url], { env: { AMRIKYY_API_KEY: USER_KEY } })
    t.equal(plain.code, 6, 'without the flag the cut fails the stream, as before')

    const help = await runCli(['--help'])
    t.match(help.stdout, '\n  --resumable ')
  })

  t.test('reads the prompt from stdin when it is "-"', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator)
    const prompt = 'a prompt with "quotes" and\nlines, Zürich 🚀'
    const run = await runCli(['stream', '-', '--url', url], { env: { AMRIKYY_API_KEY: USER_KEY }, stdin: prompt })
    t.equal(run.code, 0)
    t.equal(emulator.requests[0]?.prompt, prompt)
    t.equal(run.stdout, answerFor(prompt, undefined, PACE).deltas.join(''))
  })

  t.test('exit codes tell usage, auth, rate limit, start and stream failures apart', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator, { rateLimit: { max: 3, timeWindow: '1 minute' } })
    const key = { AMRIKYY_API_KEY: USER_KEY }

    let run = await runCli(['stream', 'hello', '--url', url])
    t.same([run.code, run.stdout, run.stderr], [2, '', 'amrikyy: set AMRIKYY_API_KEY to your gateway API key\n'], 'no key: usage')

    run = await runCli(['stream', '--url', url], { env: key })
    t.equal(run.code, 2, 'no prompt: usage')
    t.match(run.stderr, /^amrikyy: missing prompt\n\nUsage: amrikyy stream/)

    run = await runCli(['stream', 'hello', '--temperature', 'warm', '--url', url], { env: key })
    t.equal(run.code, 2, 'a non-numeric option: usage')
    t.match(run.stderr, /^amrikyy: --temperature must be a number, got "warm"\n/)

    run = await runCli(['stream', 'hello', '--url', url], { env: { AMRIKYY_API_KEY: 'not-a-key' } })
    t.same([run.code, run.stdout, run.stderr], [3, '', 'amrikyy: ForbiddenError: Forbidden: Invalid API key.\n'], '403')
    t.equal(emulator.requests.length, 0, 'refused requests never reach Gemini')

    // The limiter counts per key: three requests pass, the fourth is refused.
    run = await runCli(['stream', ' ', '--url', url], { env: key })
    t.same([run.code, run.stdout, run.stderr], [2, '', 'amrikyy: BadRequestError: Prompt is required\n'], '400')

    // Every attempt fails: the gateway retries a 503 before the first chunk.
    emulator.addFault({ kind: 'http-error', status: 503 }, { match: 'overloaded', times: Infinity })
    run = await runCli(['stream', 'overloaded', '--url', url], { env: key })
    t.same([run.code, run.stdout, run.stderr], [5, '', 'amrikyy: StreamStartError: The model is overloaded. Please try again later.\n'], '500')

    emulator.addFault({ kind: 'stream-error', afterChunks: 2, code: 503 })
    run = await runCli(['stream', 'fails midway', '--url', url], { env: key })
    t.equal(run.code, 6, 'error event')
    t.equal(run.stdout, answerFor('fails midway', undefined, PACE).deltas.slice(0, 2).join(''), 'the text that came before the error')
    t.equal(run.stderr, 'amrikyy: StreamError: The model is overloaded. Please try again later. (recoverable: retrying may succeed)\n')

    run = await runCli(['stream', 'one too many', '--url', url], { env: key })
    t.same([run.code, run.stdout], [4, ''], '429')
    const retry = /^amrikyy: RateLimitedError: Too Many Requests: You have exceeded the request limit\. Please try again later\. \(retry after (\d+) s\)\n$/.exec(run.stderr)
    t.ok(retry, run.stderr)
    t.ok(Number(retry?.[1]) >= 1 && Number(retry?.[1]) <= 60, 'the seconds left of the one-minute window')

    const nowhere = await closedPortUrl()
    run = await runCli(['stream', 'hello', '--url', nowhere], { env: key })
    t.equal(run.code, 1, 'unreachable gateway')
    t.match(run.stderr, `amrikyy: ConnectionError: Could not reach the gateway at ${nowhere}/api/stream: connect ECONNREFUSED`)
  })

  t.test('--json prints the error event too', async t => {
    const emulator = await startEmulator(t, PACE)
    const { url } = await startGateway(t, emulator)
    emulator.addFault({ kind: 'stream-error', afterChunks: 1, code: 500, message: 'Internal failure' })
    const answer = answerFor('json failure', undefined, PACE)
    const run = await runCli(['stream', '--json', 'json failure', '--url', url], { env: { AMRIKYY_API_KEY: USER_KEY } })
    t.equal(run.code, 6)
    const lines = run.stdout.split('\n')
    t.same(lines.slice(0, -2).map(line => JSON.parse(line) as unknown), [{ chunk: answer.deltas[0], index: 1 }])
    const errorEvent = JSON.parse(lines.at(-2) ?? '') as { error: string, recoverable: boolean }
    t.equal(typeof errorEvent.error, 'string')
    t.equal(typeof errorEvent.recoverable, 'boolean')
    t.equal(lines.at(-1), '', 'every line ends with a newline')
  })

  t.test('Ctrl-C stops the stream, closes the connection through to Gemini and exits 130', async t => {
    const emulator = await startEmulator(t, { chunkCount: 30, chunkDelayMs: 60, defaultMaxTokens: 60 })
    const { url } = await startGateway(t, emulator)
    const answer = answerFor('interrupt me', undefined, { chunkCount: 30, defaultMaxTokens: 60 })
    const run = await runCli(['stream', 'interrupt me', '--url', url], {
      env: { AMRIKYY_API_KEY: USER_KEY },
      onStdout: { includes: answer.deltas.slice(0, 2).join(''), then: child => { child.kill('SIGINT') } }
    })
    t.equal(run.code, 130)
    t.equal(run.stderr, 'amrikyy: AbortError: Interrupted\n')
    t.ok(answer.deltas.join('').startsWith(run.stdout) && run.stdout.length < answer.deltas.join('').length, 'a prefix of the answer')
    const upstream = emulator.requests[0]
    if (upstream === undefined) throw new Error('the emulator saw no request')
    await within(5000, upstream.closed, 'the upstream request closing')
    t.equal(upstream.clientClosedEarly, true)
  })
}
