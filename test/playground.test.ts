// The playground page: its route, when the standalone server serves it, and the page itself driven
// in a real headless Chromium against a live gateway.
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { chromium, type Browser, type Page } from 'playwright-core'
import streamGateway from '../app.js'
import playgroundRoute from '../routes/playground.js'
import { answerFor, type Conversation, type GeminiEmulator } from '../emulator/server.js'
import { USER_KEY, startEmulator, within } from './support/gateway.js'
import { expectedThoughts } from './support/thoughts.js'
import { SERVER, startServerProcess } from './support/server-process.js'
import { startCuttingProxy } from './support/cutting-proxy.js'

const CHROMIUM = '/usr/bin/chromium'
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const DIST_CLIENT = join(ROOT, 'dist', 'client')

/** The gateway with the playground beside it, listening on a loopback port. */
async function startPlaygroundGateway (t: Test, emulator: GeminiEmulator): Promise<{ app: FastifyInstance, url: string }> {
  const app = Fastify({ logger: false, forceCloseConnections: true })
  await app.register(streamGateway, {
    apiKeys: [USER_KEY],
    gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url },
    rateLimit: false
  })
  await app.register(playgroundRoute)
  t.teardown(async () => { await app.close() })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('not listening on TCP')
  return { app, url: `http://127.0.0.1:${address.port}` }
}

/** Sum of a counter over all its label sets, from the Prometheus text. */
function counterTotal (exposition: string, name: string): number {
  let total = 0
  for (const line of exposition.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? (\S+)$/.exec(line)
    if (match?.[1] === name) total += Number(match[2])
  }
  return total
}

t.test('the route serves the page and exactly the browser modules of the built client', async t => {
  const app = Fastify({ logger: false })
  await app.register(playgroundRoute)
  t.teardown(async () => { await app.close() })

  const page = await app.inject({ url: '/playground' })
  t.equal(page.statusCode, 200)
  t.equal(page.headers['content-type'], 'text/html; charset=utf-8')
  t.match(page.headers['content-security-policy'], "script-src 'self'")
  t.match(page.headers['content-security-policy'], "connect-src 'self'")
  t.equal(page.body, readFileSync(join(ROOT, 'playground', 'index.html'), 'utf8'))
  t.match(page.body, '<script type="module" src="/playground/playground.js"></script>')

  const script = await app.inject({ url: '/playground/playground.js' })
  t.equal(script.headers['content-type'], 'text/javascript; charset=utf-8')
  t.match(script.body, "from './client/index.js'")
  t.equal((await app.inject({ url: '/playground/playground.css' })).headers['content-type'], 'text/css; charset=utf-8')

  for (const name of ['index.js', 'sse-parser.js', 'errors.js']) {
    const module = await app.inject({ url: `/playground/client/${name}` })
    t.equal(module.statusCode, 200, name)
    t.equal(module.headers['content-type'], 'text/javascript; charset=utf-8')
    const built = readFileSync(join(DIST_CLIENT, name), 'utf8')
    t.equal(module.body, built.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n'), `${name} is the compiled client`)
  }
  t.equal((await app.inject({ url: '/playground/client/cli.js' })).statusCode, 404, 'the CLI is not served')
  t.equal((await app.inject({ url: '/playground/client/index.js.map' })).statusCode, 404)
  const slash = await app.inject({ url: '/playground/' })
  t.same([slash.statusCode, slash.headers.location], [302, '/playground'])
})

t.test('the route fails at start, naming the folder, when the page is missing', async t => {
  const app = Fastify({ logger: false })
  await t.rejects(async () => { await app.register(playgroundRoute, { pageDir: join(ROOT, 'no-such-folder') }) }, /playground: page file .*no-such-folder.*index\.html is missing/)
  await app.close()
})

async function serverServesPlayground (t: Test, env: Record<string, string>): Promise<number> {
  const server = await startServerProcess(t, { NODE_ENV: undefined, GEMINI_API_KEY: undefined, API_KEYS: 'a-key-for-this-test', EMULATOR_CHUNK_DELAY_MS: '0', ...env }, { startTimeoutMs: 15_000 })
  const status = (await fetch(`${server.url}/playground`)).status
  server.child.kill('SIGTERM')
  await within(10_000, server.exited, 'the server exiting')
  return status
}

t.test('the standalone server serves /playground in development, and in production only with PLAYGROUND=true', { skip: existsSync(SERVER) ? false : 'dist/server.js is missing: build first' }, async t => {
  const production = { NODE_ENV: 'production', GEMINI_API_KEY: 'unused', GEMINI_BASE_URL: 'http://127.0.0.1:9' }
  t.equal(await serverServesPlayground(t, { NODE_ENV: 'development' }), 200, 'development: on')
  t.equal(await serverServesPlayground(t, { NODE_ENV: 'development', PLAYGROUND: 'false' }), 404, 'development, PLAYGROUND=false: off')
  t.equal(await serverServesPlayground(t, production), 404, 'production: off')
  t.equal(await serverServesPlayground(t, { ...production, PLAYGROUND: 'true' }), 200, 'production, PLAYGROUND=true: on')
})

const PACE = { chunkCount: 30, chunkDelayMs: 60, defaultMaxTokens: 90 }

async function answerText (page: Page, selector = '#answer'): Promise<string> {
  return await page.locator(selector).textContent() ?? ''
}

/**
 * Polls the answer from Node. Playwright's waitForFunction evaluates its predicate with eval, which
 * the page's Content-Security-Policy rightly forbids.
 */
async function waitForAnswer (page: Page, accept: (text: string) => boolean, what: string): Promise<string> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const text = await answerText(page)
    if (accept(text)) return text
    if (Date.now() > deadline) throw new Error(`${what} did not happen within 10 s; the answer is ${JSON.stringify(text)}`)
    await sleep(10)
  }
}

async function state (page: Page): Promise<string | null> {
  return await page.locator('#status').getAttribute('data-state')
}

const BROWSER_SKIP = { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (Debian package chromium; .ci/run installs it)` }

/** A page in headless Chromium, closed on teardown; `problems` collects script errors and CSP violations. */
async function openPage (t: Test): Promise<{ browser: Browser, page: Page, problems: string[] }> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(async () => { await browser.close() })
  const page = await browser.newPage({ viewport: { width: 1200, height: 760 } })
  const problems: string[] = []
  page.on('pageerror', error => { problems.push(`page error: ${error.message}`) })
  page.on('console', message => { if (message.type() === 'error') problems.push(`console: ${message.text()}`) })
  return { browser, page, problems }
}

t.test('in headless Chromium: the answer streams in, Stop cancels it, the gateway counts it', BROWSER_SKIP, async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startPlaygroundGateway(t, emulator)
  const { page, problems } = await openPage(t)

  await page.goto(`${url}/playground`)
  t.equal(await page.title(), 'Amrikyy stream playground')

  // A wrong key shows the typed error the client raised in the browser.
  await page.fill('#api-key', 'not-a-key')
  await page.fill('#prompt', 'Write a haiku about AI')
  await page.click('#send')
  await page.waitForSelector('#status[data-state="error"]')
  t.equal(await page.textContent('#status'), 'ForbiddenError: Forbidden: Invalid API key.')
  problems.length = 0 // the browser logs the 403 itself as a failed resource load

  // The whole answer, growing on screen before it completes.
  const options = { temperature: 0.7 }
  const expected = answerFor('Write a haiku about AI', options, PACE)
  await page.fill('#api-key', USER_KEY)
  await page.fill('#temperature', '0.7')
  await page.click('#send')
  const early = await waitForAnswer(page, text => text.length > 0, 'the first chunk')
  t.equal(await state(page), 'streaming')
  const later = await waitForAnswer(page, text => text.length > early.length, 'more text')
  t.equal(await state(page), 'streaming', 'the text grew while the stream was still open')
  t.ok(later.length > early.length && later.startsWith(early))
  await page.waitForSelector('#status[data-state="completed"]', { timeout: 15_000 })
  t.equal(await answerText(page), expected.deltas.join(''), 'the full answer, multi-byte characters and all')
  t.same(await Promise.all(['chunks', 'prompt-tokens', 'completion-tokens', 'total-tokens'].map(async name => await page.textContent(`#stat-${name}`))), ['30', '5', '90', '95'])
  t.match(await page.textContent('#stat-first-chunk'), /^\d+ ms$/)
  t.match(await page.textContent('#stat-total-time'), /^\d+ ms$/)
  t.same((emulator.requests[0]?.body as { generationConfig: unknown }).generationConfig, options)
  t.equal(await page.isHidden('#thoughts-panel'), true, 'no thoughts box unless there are thoughts')
  t.same(await Promise.all(['thoughts-tokens', 'model', 'finish-reason'].map(async name => await page.textContent(`#stat-${name}`))), ['–', '–', '–'], 'a seed request\'s completion has none of these')

  // Stop mid-stream: the connection closes through the gateway to Gemini, and the gateway counts it.
  const stopPrompt = 'Tell me a long story about rivers'
  const stopAnswer = answerFor(stopPrompt, options, PACE).deltas.join('')
  await page.fill('#prompt', stopPrompt)
  await page.click('#send')
  await waitForAnswer(page, text => text.split(' ').length > 6, 'a few words')
  t.equal(await state(page), 'streaming')
  await page.click('#stop')
  await page.waitForSelector('#status[data-state="stopped"]')
  const stopped = await answerText(page)
  t.ok(stopped.length > 0 && stopped.length < stopAnswer.length && stopAnswer.startsWith(stopped), 'a strict prefix of the answer')
  t.match(await page.textContent('#status'), /^Stopped after \d+ chunks?\.$/)
  t.equal(await page.isDisabled('#stop'), true)
  t.equal(await page.isDisabled('#send'), false)

  const upstream = emulator.requests.find(request => request.prompt === stopPrompt)
  if (upstream === undefined) throw new Error('the emulator saw no request for the stopped prompt')
  await within(5000, upstream.closed, 'the upstream request closing')
  t.equal(upstream.clientClosedEarly, true, 'Gemini saw the connection close')

  let metrics = ''
  const scrape = async (): Promise<void> => { metrics = await (await fetch(`${url}/api/metrics`)).text() }
  const deadline = Date.now() + 5000
  for (await scrape(); counterTotal(metrics, 'amrikyy_stream_sessions_cancelled_total') === 0 && Date.now() < deadline; await scrape()) {
    await sleep(20)
  }
  t.equal(counterTotal(metrics, 'amrikyy_stream_sessions_cancelled_total'), 1, 'one cancelled stream')
  t.equal(counterTotal(metrics, 'amrikyy_stream_sessions_completed_total'), 1, 'one completed stream')
  t.equal(counterTotal(metrics, 'amrikyy_stream_sessions_failed_total'), 0)

  // The key lived in the page's memory only.
  t.same(await page.evaluate('[localStorage.length, sessionStorage.length, document.cookie]'), [0, 0, ''])
  t.notMatch(await page.content(), USER_KEY, 'the key is not in the document')
  t.same(problems, [], 'no script errors, no CSP violations')
})

t.test('in headless Chromium: with Show thoughts ticked, the thoughts stream into their own box, apart from the answer', BROWSER_SKIP, async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startPlaygroundGateway(t, emulator)
  const { page, problems } = await openPage(t)
  await page.goto(`${url}/playground`)

  const conversation: Conversation = { system: 'You are a patient physics teacher.', turns: [{ role: 'user', text: 'Why is the sky blue?' }] }
  const answer = answerFor(conversation, undefined, PACE)
  const thoughts = expectedThoughts(conversation, PACE.chunkCount)
  await page.fill('#api-key', USER_KEY)
  await page.fill('#model', 'gemini-2.5-flash')
  await page.fill('#system', conversation.system!)
  await page.fill('#prompt', 'Why is the sky blue?')
  t.equal(await page.isChecked('#show-thoughts'), false, 'off by default')
  await page.check('#show-thoughts')
  await page.click('#send')

  await waitForAnswer(page, text => text.length > 0, 'the first chunk')
  t.equal(await answerText(page, '#thoughts'), thoughts.deltas.join(''), 'every thought is shown before the first chunk')
  await page.waitForSelector('#status[data-state="completed"]', { timeout: 15_000 })
  t.equal(await answerText(page), answer.deltas.join(''), 'the answer holds no thought')
  t.equal(await answerText(page, '#thoughts'), thoughts.deltas.join(''), 'the thoughts, in their own box')
  t.equal(await page.isVisible('#thoughts-panel'), true)
  t.equal(await page.textContent('#thoughts-panel summary'), 'Thoughts')
  t.same(await page.evaluate('document.querySelector("#thoughts-panel").compareDocumentPosition(document.querySelector("#answer")) & Node.DOCUMENT_POSITION_FOLLOWING'), 4, 'the box is above the answer')
  const completionTokens = answer.completionTokens + thoughts.tokens
  t.same(await Promise.all(['chunks', 'prompt-tokens', 'completion-tokens', 'total-tokens', 'thoughts-tokens', 'model', 'finish-reason'].map(async name => await page.textContent(`#stat-${name}`))),
    ['30', String(answer.promptTokens), String(completionTokens), String(answer.promptTokens + completionTokens), String(thoughts.tokens), 'gemini-2.5-flash', 'STOP'])
  const sent = emulator.requests[0]?.body as { systemInstruction: unknown, generationConfig: unknown }
  t.same(sent.systemInstruction, { parts: [{ text: conversation.system }], role: 'user' })
  t.same(sent.generationConfig, { thinkingConfig: { includeThoughts: true } })

  const screenshot = process.env.UPDATE_SCREENSHOT === '1'
    ? join(ROOT, 'docs', 'playground.png')
    : join(mkdtempSync(join(tmpdir(), 'amrikyy-playground-')), 'playground.png')
  mkdirSync(join(screenshot, '..'), { recursive: true })
  await page.screenshot({ path: screenshot, fullPage: true })
  t.comment(`screenshot: ${screenshot}`)

  // The summary element folds the box away without any script of ours.
  await page.click('#thoughts-panel summary')
  t.equal(await page.isVisible('#thoughts'), false, 'collapsed')

  // Unticked: no thoughts asked for, none shown; the system instruction still makes it a conversation.
  await page.uncheck('#show-thoughts')
  await page.click('#send')
  await page.waitForSelector('#status[data-state="completed"]', { timeout: 15_000 })
  t.equal(await page.isHidden('#thoughts-panel'), true)
  t.equal(await answerText(page), answer.deltas.join(''))
  t.same(await Promise.all(['thoughts-tokens', 'model', 'finish-reason'].map(async name => await page.textContent(`#stat-${name}`))), ['–', 'gemini-2.5-flash', 'STOP'])
  t.notMatch(JSON.stringify(emulator.requests[1]?.body), 'thinkingConfig', 'no thinking asked for')

  // A safety stop: the text already sent stays, the status names the blocked category.
  await page.fill('#prompt', 'tell me [[unsafe]] things')
  await page.click('#send')
  await page.waitForSelector('#status[data-state="error"]', { timeout: 15_000 })
  t.equal(await page.textContent('#status'), 'StreamError: Gemini stopped generating: SAFETY (blocked: HARM_CATEGORY_DANGEROUS_CONTENT)')
  t.equal(await page.textContent('#stat-finish-reason'), 'SAFETY')
  t.ok((await answerText(page)).length > 0, 'the text sent before the stop stays')
  t.same(problems, [], 'no script errors, no CSP violations')
})

t.test('in headless Chromium: with Resumable ticked, a stream cut by the network picks up where it left off', BROWSER_SKIP, async t => {
  const pace = { chunkCount: 10, chunkDelayMs: 40, defaultMaxTokens: 40 }
  const emulator = await startEmulator(t, pace)
  const { url } = await startPlaygroundGateway(t, emulator)
  // Once: the page and its scripts come through whole, on whichever connections the browser picks.
  const proxy = await startCuttingProxy(t, () => ({ target: url, cutAfterChunks: 3 }), { once: true })
  const { page, problems } = await openPage(t)
  await page.goto(`${proxy.url}/playground`)

  const prompt = 'Tell me about tunnels'
  const answer = answerFor(prompt, undefined, pace)
  await page.fill('#api-key', USER_KEY)
  await page.fill('#prompt', prompt)
  t.equal(await page.isChecked('#resumable'), false, 'off by default')
  await page.check('#resumable')
  await page.click('#send')
  await page.waitForSelector('#status[data-state="completed"], #status[data-state="error"]', { timeout: 15_000 })
  t.equal(await page.textContent('#status'), 'Completed.')
  t.equal(proxy.connections.filter(connection => connection.cut).length, 1, 'the proxy did cut the stream')
  t.equal(await answerText(page), answer.deltas.join(''), 'the whole answer, nothing missed or repeated')
  t.equal(await page.textContent('#stat-chunks'), String(answer.deltas.length))
  t.equal(emulator.requests.filter(request => request.prompt === prompt).length, 1, 'generated once')
  t.same(problems, ['console: Failed to load resource: net::ERR_INCOMPLETE_CHUNKED_ENCODING'], 'the browser logs the cut itself, and nothing else: no script errors, no CSP violations')
})
