// A local emulator of the Google Gemini REST API (Developer API, API-key mode), faithful to the wire
// protocol the official @google/genai SDK speaks (see docs/gemini-wire-protocol.md), with
// injectable faults. Node built-ins only.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { answerFor, countTokens, type Answer } from './answer.js'
import { googleError } from './google-errors.js'
import { type Fault, FaultQueue, type FaultWhen } from './faults.js'
import { findModel, modelsPage } from './models.js'
import { type EmulatorOptions, type Pace, type ResolvedOptions, resolveOptions, validateOptions, validatePace } from './options.js'
import { apiKeyProblem, contentsProblem, generateRequestOf, headerValue, isObject, MAX_BODY_BYTES, parseJson, promptOf, readBody } from './request-checks.js'
import { JSON_TYPE, type Meta, responseEvents, sseEvent, streamSteps, unaryResponse } from './responses.js'
import { parseRoute } from './routes.js'

export { answerFor, countTokens, MAX_ANSWER_TOKENS } from './answer.js'
export type { Answer, AnswerPace, FinishReason, GenerationOptions } from './answer.js'
export { googleError, googleStatusFor } from './google-errors.js'
export type { EmulatorOptions } from './options.js'
export type { Fault, FaultWhen } from './faults.js'
export type { Rpc } from './routes.js'

export interface RecordedRequest {
  id: number
  method: string
  /** Path and query as received, e.g. /v1beta/models/m:streamGenerateContent?alt=sse */
  path: string
  rpc: string | undefined
  /** Without the 'models/' prefix. */
  model: string | undefined
  /** 'v1' | 'v1beta' | 'v1alpha' when the path has one. */
  apiVersion: string | undefined
  headers: Record<string, string | string[] | undefined>
  /** Parsed JSON body; undefined when there is none or it is not JSON. */
  body: unknown
  /** Text parts of all contents, joined with '\n'. */
  prompt: string
  fault: Fault | undefined
  /** HTTP status sent, undefined when no headers went out. */
  status: number | undefined
  startedAt: number
  endedAt: number | undefined
  /** The emulator wrote the whole response. */
  finished: boolean
  /** The client went away before the response finished. */
  clientClosedEarly: boolean
  /** Resolves when the response finished or the socket closed, whichever first. */
  closed: Promise<void>
  /** Well-formed response events written (1 for a unary response body). */
  chunksSent: number
}

type WaitKind = 'delay' | 'stall' | 'drain'
type WaitResult = 'ok' | 'gone' | 'deadline'


/** Per-request state: the response, its record, and the waits a fault or the pace puts it in. */
class Exchange {
  gone = false
  deadlineHit = false
  destroyedByUs = false
  isStream = false
  deadlineTimer: NodeJS.Timeout | undefined
  /** Settles once the latest write has been handed to the socket (or failed). */
  private lastWrite: Promise<void> = Promise.resolve()
  private readonly waiters = new Set<{ kind: WaitKind; settle: (r: WaitResult) => void }>()

  constructor (readonly req: IncomingMessage, readonly res: ServerResponse, readonly rec: RecordedRequest) {}

  /** Waits ms (forever when undefined) unless woken: by release ('ok'), close ('gone') or deadline. */
  wait (kind: WaitKind, ms?: number): Promise<WaitResult> {
    if (this.gone) return Promise.resolve('gone')
    if (this.deadlineHit) return Promise.resolve('deadline')
    return new Promise(resolve => {
      let timer: NodeJS.Timeout | undefined
      const waiter = {
        kind,
        settle: (r: WaitResult) => {
          if (!this.waiters.delete(waiter)) return
          if (timer) clearTimeout(timer)
          resolve(r)
        }
      }
      this.waiters.add(waiter)
      if (ms !== undefined) timer = setTimeout(() => waiter.settle('ok'), ms)
    })
  }

  wake (kinds: readonly WaitKind[] | 'all', result: WaitResult): void {
    for (const w of [...this.waiters]) if (kinds === 'all' || kinds.includes(w.kind)) w.settle(result)
  }

  /** Writes one piece as one write; false when the response can no longer be written. */
  write (text: string): boolean {
    if (this.gone || this.res.destroyed || this.res.writableEnded) return false
    this.lastWrite = new Promise(resolve => { this.res.write(text, () => resolve()) })
    return true
  }

  /** Honours backpressure: resolves when the response buffer drained (or the client went away). */
  async drained (): Promise<void> {
    if (this.gone || !this.res.writableNeedDrain) return
    const onDrain = (): void => this.wake(['drain'], 'ok')
    this.res.once('drain', onDrain)
    await this.wait('drain')
    this.res.off('drain', onDrain)
  }

  end (text?: string): void {
    if (this.gone || this.res.destroyed || this.res.writableEnded) return
    this.res.end(text)
  }

  /**
   * Destroys the socket once what was written so far has reached the kernel. The write callback is the
   * exact signal: the response may hold writes in its own corked buffer, where the socket's
   * writableLength does not count them (Node 24 does).
   */
  async drop (): Promise<void> {
    await this.lastWrite
    const socket = this.res.socket
    for (let i = 0; i < 200 && socket && !socket.destroyed && socket.writableLength > 0; i++) {
      await new Promise<void>(resolve => setTimeout(resolve, 1))
    }
    if (this.gone) return
    this.destroyedByUs = true
    if (socket) socket.destroy()
    else this.res.destroy()
  }
}

export class GeminiEmulator {
  readonly requests: RecordedRequest[] = []
  private readonly server: Server
  private readonly options: ResolvedOptions
  private pace: Pace
  private readonly faults = new FaultQueue()
  private readonly sockets = new Set<Socket>()
  private readonly active = new Set<Exchange>()
  private readonly requestWaiters = new Set<{ n: number; resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>()
  private streamsInFlight = 0
  private nextId = 0
  /** Requests since the start or the last reset, recorded or not: what waitForRequests counts. */
  private seen = 0
  private listenPort = 0
  private closing: Promise<void> | undefined

  private constructor (options: EmulatorOptions) {
    this.options = resolveOptions(options)
    this.pace = { chunkCount: this.options.chunkCount, chunkDelayMs: this.options.chunkDelayMs }
    this.server = createServer({ noDelay: true })
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket)
      socket.once('close', () => this.sockets.delete(socket))
    })
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => { void this.handle(req, res) })
  }

  static async start (options: EmulatorOptions = {}): Promise<GeminiEmulator> {
    validateOptions(options)
    const emulator = new GeminiEmulator(options)
    await emulator.listen()
    return emulator
  }

  get port (): number { return this.listenPort }

  get url (): string {
    let host = this.options.host
    if (host === '0.0.0.0') host = '127.0.0.1'
    else if (host === '::') host = '::1'
    return `http://${host.includes(':') ? `[${host}]` : host}:${this.listenPort}`
  }

  openStreams (): number { return this.streamsInFlight }

  /** chunkCount applies to requests that arrive later; chunkDelayMs also to streams in flight. */
  setPace (pace: { chunkCount?: number; chunkDelayMs?: number }): void {
    validatePace(pace, 'setPace')
    this.pace = { chunkCount: pace.chunkCount ?? this.pace.chunkCount, chunkDelayMs: pace.chunkDelayMs ?? this.pace.chunkDelayMs }
  }

  addFault (fault: Fault, when: FaultWhen = {}): void {
    this.faults.add(fault, when)
  }

  clearFaults (): void { this.faults.clear() }

  releaseStalls (): void {
    for (const x of this.active) x.wake(['stall'], 'ok')
  }

  waitForRequests (n: number, timeoutMs = 5000): Promise<void> {
    if (this.seen >= n) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const waiter = {
        n,
        resolve: () => { clearTimeout(waiter.timer); this.requestWaiters.delete(waiter); resolve() },
        reject: (e: Error) => { clearTimeout(waiter.timer); this.requestWaiters.delete(waiter); reject(e) },
        timer: setTimeout(() => {
          waiter.reject(new Error(`waitForRequests: ${this.seen} of ${n} requests after ${timeoutMs} ms`))
        }, timeoutMs)
      }
      this.requestWaiters.add(waiter)
    })
  }

  reset (): void {
    this.requests.length = 0
    this.seen = 0
    this.faults.clear()
    this.pace = { chunkCount: this.options.chunkCount, chunkDelayMs: this.options.chunkDelayMs }
  }

  close (): Promise<void> {
    this.closing ??= new Promise<void>(resolve => {
      this.server.close(() => resolve())
      for (const socket of this.sockets) socket.destroy()
      this.server.closeAllConnections()
      for (const w of [...this.requestWaiters]) w.reject(new Error('waitForRequests: emulator closed'))
    })
    return this.closing
  }

  private listen (): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject)
        this.listenPort = (this.server.address() as AddressInfo).port
        resolve()
      })
    })
  }

  private log (line: string): void {
    this.options.logger?.(line)
  }

  private record (rec: RecordedRequest): void {
    rec.id = ++this.nextId
    if (this.options.recordRequests > 0) {
      this.requests.push(rec)
      if (this.requests.length > this.options.recordRequests) this.requests.shift()
    }
    this.seen++
    for (const w of [...this.requestWaiters]) if (this.seen >= w.n) w.resolve()
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET'
    const path = req.url ?? '/'
    const route = parseRoute(method, path)
    const closed = Promise.withResolvers<void>()
    const rec: RecordedRequest = {
      id: 0,
      method,
      path,
      rpc: route.rpc,
      model: route.model,
      apiVersion: route.apiVersion,
      headers: req.headers,
      body: undefined,
      prompt: '',
      fault: undefined,
      status: undefined,
      startedAt: performance.now(),
      endedAt: undefined,
      finished: false,
      clientClosedEarly: false,
      closed: closed.promise,
      chunksSent: 0
    }
    const x = new Exchange(req, res, rec)
    this.active.add(x)
    let settled = false
    const settle = (): void => {
      if (settled) return
      settled = true
      x.gone = true
      rec.endedAt = performance.now()
      rec.status = res.headersSent ? res.statusCode : undefined
      if (x.deadlineTimer) clearTimeout(x.deadlineTimer)
      x.wake('all', 'gone')
      this.active.delete(x)
      if (x.isStream) this.streamsInFlight--
      const outcome = rec.finished ? 'finished' : rec.clientClosedEarly ? 'client-closed' : 'dropped'
      this.log(`#${rec.id} ${method} ${path} ${rec.status ?? '-'} ${outcome} chunks=${rec.chunksSent}` +
        `${rec.fault ? ` fault=${rec.fault.kind}` : ''} ${(rec.endedAt - rec.startedAt).toFixed(1)}ms`)
      closed.resolve()
    }
    res.on('finish', () => { rec.finished = true; settle() })
    res.on('close', () => {
      if (!rec.finished && !settled) rec.clientClosedEarly = !x.destroyedByUs
      settle()
    })
    res.on('error', () => {})
    req.on('error', () => {})

    try {
      const raw = await readBody(req)
      let parsed: { ok: true; value: unknown } | { ok: false; message: string } = { ok: true, value: undefined }
      if (raw instanceof Buffer && raw.length > 0) parsed = parseJson(raw)
      if (parsed.ok) {
        rec.body = parsed.value
        rec.prompt = promptOf(parsed.value)
      }
      this.record(rec)
      if (raw === undefined || x.gone) return // the client went away while sending the body

      if (route.kind === 'unknown') {
        return sendError(x, 404, `Method or path not found: ${method} ${path.split('?')[0]}`)
      }
      if (!this.authorised(x)) return
      if (raw === 'too-large') return sendError(x, 400, `Request payload size exceeds the limit: ${MAX_BODY_BYTES} bytes.`)
      if (!parsed.ok) return sendError(x, 400, `Invalid JSON payload received. ${parsed.message}`)

      const query = new URLSearchParams(path.includes('?') ? path.slice(path.indexOf('?') + 1) : '')
      switch (route.kind) {
        case 'list': return this.listModels(x, query)
        case 'get': return this.getModel(x, route.model ?? '', route.apiVersion ?? '')
        case 'countTokens': return this.countTokens(x, parsed.value)
        case 'stream':
        case 'unary': return await this.generate(x, route.kind, route.model ?? '', parsed.value)
      }
    } catch (err) {
      this.log(`#${rec.id} emulator error: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
      if (!res.headersSent) sendError(x, 500)
      else res.destroy()
    }
  }

  private authorised (x: Exchange): boolean {
    const keyError = apiKeyProblem(x.req, x.rec.path, this.options.apiKey)
    if (keyError) sendJson(x, keyError.error.code, keyError)
    return keyError === undefined
  }

  private listModels (x: Exchange, query: URLSearchParams): void {
    const page = modelsPage(query)
    if (!page.ok) return sendError(x, 400, page.message)
    sendJson(x, 200, page.body)
  }

  private getModel (x: Exchange, name: string, apiVersion: string): void {
    const found = findModel(name)
    if (!found) return sendError(x, 404, `models/${name} is not found for API version ${apiVersion}, or is not supported.`)
    sendJson(x, 200, found)
  }

  private countTokens (x: Exchange, body: unknown): void {
    if (!isObject(body)) return sendError(x, 400, '* CountTokensRequest: request body must be a JSON object.')
    const nested = isObject(body.generateContentRequest) ? body.generateContentRequest : undefined
    const contents = body.contents ?? nested?.contents
    if (contents !== undefined) {
      const problem = contentsProblem(contents, 'CountTokensRequest')
      if (problem) return sendError(x, 400, problem)
    }
    const total = countTokens(promptOf({ contents }))
    sendJson(x, 200, { totalTokens: total, promptTokensDetails: [{ modality: 'TEXT', tokenCount: total }] })
  }

  private async generate (x: Exchange, kind: 'stream' | 'unary', modelName: string, body: unknown): Promise<void> {
    if (kind === 'stream') {
      x.isStream = true
      this.streamsInFlight++
    }
    const gen = generateRequestOf(body)
    if (typeof gen === 'string') return sendError(x, 400, gen)

    const rpc = kind === 'stream' ? 'streamGenerateContent' : 'generateContent'
    const fault = this.faults.take(rpc, x.rec.prompt)
    x.rec.fault = fault
    const serverTimeout = Number(headerValue(x.req.headers['x-server-timeout']))
    if (Number.isFinite(serverTimeout) && serverTimeout > 0) {
      x.deadlineTimer = setTimeout(() => {
        x.deadlineHit = true
        x.wake('all', 'deadline')
      }, serverTimeout * 1000)
    }

    const answer = answerFor(x.rec.prompt, gen, { chunkCount: this.pace.chunkCount, defaultMaxTokens: this.options.defaultMaxTokens })
    const meta = { modelVersion: modelName, responseId: randomBytes(16).toString('base64url') }

    if (fault?.kind === 'stall-headers') {
      const r = await x.wait('stall', fault.ms)
      if (r === 'gone') return
      if (r === 'deadline') return sendError(x, 504)
    }
    if (fault?.kind === 'http-error') return sendHttpFault(x, fault)
    if (fault?.kind === 'huge-error') return await sendHugeError(x, fault)
    if (kind === 'stream') return await this.stream(x, answer, meta, fault)
    return await this.unary(x, answer, meta, fault)
  }

  private async stream (x: Exchange, answer: Answer, meta: Meta, fault: Fault | undefined): Promise<void> {
    if (x.gone) return
    const steps = streamSteps(responseEvents(answer, meta, fault), fault)
    x.res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Content-Disposition': 'attachment',
      Vary: 'Origin, X-Origin, Referer',
      'X-Content-Type-Options': 'nosniff'
    })
    x.res.flushHeaders()
    if (fault?.kind === 'huge-event' || fault?.kind === 'endless') return await this.streamHuge(x, answer, meta, fault)
    let written = 0
    for (const step of steps) {
      if (step.type === 'stall') {
        await x.wait('stall', step.ms)
      } else if (step.type === 'drop') {
        return await x.drop()
      } else {
        const delay = this.pace.chunkDelayMs
        if (written > 0 && delay > 0) await x.wait('delay', delay)
        if (x.gone) return
        if (x.deadlineHit) break
        if (!x.write(step.text)) return
        written++
        if (step.good) x.rec.chunksSent++
        await x.drained()
      }
      if (x.gone) return
      if (x.deadlineHit) break
    }
    if (x.deadlineHit && !x.gone) x.write(sseEvent(googleError(504)))
    x.end()
  }

  /** The size faults: one event of `chars` characters (or one that never ends), or deltas that never end. */
  private async streamHuge (x: Exchange, answer: Answer, meta: Meta, fault: Extract<Fault, { kind: 'huge-event' | 'endless' }>): Promise<void> {
    const events = responseEvents(answer, meta, undefined)
    const send = async (text: string, good: boolean): Promise<boolean> => {
      if (!x.write(text)) return false
      if (good) x.rec.chunksSent++
      await x.drained()
      return !x.gone
    }
    if (fault.kind === 'endless') {
      const text = 'endless '.repeat(Math.ceil((fault.chunkChars ?? 16_384) / 8)).slice(0, fault.chunkChars ?? 16_384)
      const event = sseEvent({ candidates: [{ content: { parts: [{ text }], role: 'model' }, index: 0 }], ...meta })
      do {
        if (this.pace.chunkDelayMs > 0 && await x.wait('delay', this.pace.chunkDelayMs) === 'gone') return
      } while (await send(event, true))
      return
    }
    const k = Math.min(fault.afterChunks, events.length)
    for (const event of events.slice(0, k)) if (!await send(sseEvent(event), true)) return
    const opening = `data: {"candidates": [{"content": {"parts": [{"text": "`
    if (!await send(opening, false)) return
    const piece = 'x'.repeat(HUGE_PIECE_CHARS)
    for (let left = fault.chars ?? Infinity; left > 0; left -= HUGE_PIECE_CHARS) {
      if (!await send(left >= HUGE_PIECE_CHARS ? piece : piece.slice(0, left), false)) return
    }
    if (!await send(`"}], "role": "model"}, "index": 0}]}\r\n\r\n`, true)) return
    for (const event of events.slice(k)) if (!await send(sseEvent(event), true)) return
    x.end()
  }

  private async unary (x: Exchange, answer: Answer, meta: Meta, fault: Fault | undefined): Promise<void> {
    const response = unaryResponse(answer, meta, fault)
    const text = JSON.stringify(response)
    switch (fault?.kind) {
      case 'stream-error':
        return sendError(x, fault.code, fault.message, fault.status)
      case 'empty-200':
        return sendRaw(x, 200, JSON_TYPE, '')
      case 'malformed-json':
      case 'unterminated':
        return sendRaw(x, 200, JSON_TYPE, text.slice(0, Math.floor(text.length / 2)))
      case 'drop':
        if (fault.afterChunks > 0) {
          x.res.writeHead(200, { 'Content-Type': JSON_TYPE })
          x.write(text.slice(0, Math.floor(text.length / 2)))
        }
        return await x.drop()
      case 'stall': {
        x.res.writeHead(200, { 'Content-Type': JSON_TYPE })
        x.res.flushHeaders()
        const r = await x.wait('stall', fault.ms)
        if (r === 'gone') return
        if (r === 'deadline') {
          x.destroyedByUs = true
          x.res.destroy()
          return
        }
        x.rec.chunksSent = 1
        return x.end(text)
      }
    }
    if (x.deadlineHit) return sendError(x, 504)
    x.rec.chunksSent = 1
    sendRaw(x, 200, JSON_TYPE, text)
  }
}

function sendRaw (x: Exchange, status: number, contentType: string, body: string, headers: Record<string, string> = {}): void {
  if (x.gone || x.res.headersSent) return
  x.res.writeHead(status, { ...headers, 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) })
  x.end(body)
}

function sendJson (x: Exchange, status: number, value: unknown): void {
  sendRaw(x, status, JSON_TYPE, JSON.stringify(value))
}

function sendError (x: Exchange, code: number, message?: string, status?: string, details?: unknown[]): void {
  sendJson(x, code, googleError(code, message, status, details))
}

const HUGE_PIECE_CHARS = 64 * 1024

/** An error status whose body is `prefix` and then filler, `bytes` long in all or without end, written as the client reads. */
async function sendHugeError (x: Exchange, fault: Extract<Fault, { kind: 'huge-error' }>): Promise<void> {
  if (x.gone) return
  x.res.writeHead(fault.status, { 'Content-Type': fault.contentType ?? 'text/html; charset=UTF-8' })
  const filler = ' '.repeat(HUGE_PIECE_CHARS)
  let left = (fault.bytes ?? Infinity) - Buffer.byteLength(fault.prefix ?? '')
  if (!x.write(fault.prefix ?? '')) return
  for (; left > 0; left -= HUGE_PIECE_CHARS) {
    await x.drained()
    if (x.gone || !x.write(left >= HUGE_PIECE_CHARS ? filler : filler.slice(0, left))) return
  }
  x.end()
}

function sendHttpFault (x: Exchange, fault: Extract<Fault, { kind: 'http-error' }>): void {
  const body = fault.body === undefined
    ? JSON.stringify(googleError(fault.status))
    : typeof fault.body === 'string' ? fault.body : JSON.stringify(fault.body)
  sendRaw(x, fault.status, fault.contentType ?? JSON_TYPE, body, fault.headers)
}
