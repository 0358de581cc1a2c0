// A local emulator of the Google Gemini REST API (Developer API, API-key mode), faithful to the wire
// protocol the official @google/genai SDK speaks (see docs/gemini-wire-protocol.md), with
// injectable faults. Node built-ins only.
//
// This file is the server: listening and closing, the record of every request, and the test API of
// GeminiEmulator. Answering one request is respond.ts and generate.ts; the package's './emulator'
// entry is this file, so it re-exports the public names that live elsewhere.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { type EmulatorContext, Exchange, type RecordedRequest, sendError } from './exchange.js'
import { type Fault, FaultQueue, type FaultWhen } from './faults.js'
import { type EmulatorOptions, type Pace, type ResolvedOptions, resolveOptions, validateOptions, validatePace } from './options.js'
import { parseJson } from './json.js'
import { extraModelIds } from './models.js'
import { promptOf, readBody } from './request-checks.js'
import { respond } from './respond.js'
import { parseRoute } from './routes.js'
import { type KeyBehaviour, type KeyUsage, type ModelBehaviour, UpstreamState } from './upstream-state.js'

export { answerFor, countTokens, MAX_ANSWER_TOKENS } from './answer.js'
export type { Answer, AnswerPace, FinishReason, GenerationOptions } from './answer.js'
export { conversationOf, promptTextOf } from './conversation.js'
export { BLOCKED_PROMPT_TRIGGER, UNSAFE_ANSWER_TRIGGER } from './safety.js'
export { modelThinking, thinkingOf, thoughtDeltas } from './thinking.js'
export type { Thinking } from './thinking.js'
export type { Conversation, Turn, TurnRole } from './conversation.js'
export { googleError, googleStatusFor } from './google-errors.js'
export type { EmulatorOptions } from './options.js'
export type { Fault, FaultWhen } from './faults.js'
export type { Rpc } from './routes.js'
export type { RecordedRequest } from './exchange.js'
export { DEFAULT_RETRY_DELAY_SECONDS } from './upstream-state.js'
export type { KeyBehaviour, KeyUsage, ModelBehaviour } from './upstream-state.js'

export class GeminiEmulator {
  readonly requests: RecordedRequest[] = []
  private readonly server: Server
  private readonly options: ResolvedOptions
  private pace: Pace
  private readonly faults = new FaultQueue()
  private readonly upstream: UpstreamState
  private readonly context: EmulatorContext
  private readonly sockets = new Set<Socket>()
  private readonly active = new Set<Exchange>()
  private readonly requestWaiters = new Set<{ n: number; resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>()
  private nextId = 0
  /** Requests since the start or the last reset, recorded or not: what waitForRequests counts. */
  private seen = 0
  private listenPort = 0
  private closing: Promise<void> | undefined

  private constructor (options: EmulatorOptions) {
    this.options = resolveOptions(options)
    this.pace = { chunkCount: this.options.chunkCount, chunkDelayMs: this.options.chunkDelayMs }
    this.upstream = new UpstreamState({ apiKey: this.options.apiKey, keys: this.options.keys, models: this.options.models })
    this.context = {
      upstream: this.upstream,
      defaultMaxTokens: this.options.defaultMaxTokens,
      thinkByDefault: this.options.thinkByDefault,
      extraModels: extraModelIds(this.options.extraModels),
      responseId: this.options.responseId,
      pace: () => this.pace,
      takeFault: (rpc, prompt) => this.faults.take(rpc, prompt)
    }
    this.server = createServer({ noDelay: true })
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket)
      socket.once('close', () => this.sockets.delete(socket))
    })
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => { this.handle(req, res).catch((error: unknown) => { res.destroy(error as Error) }) })
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

  openStreams (): number {
    let open = 0
    for (const x of this.active) if (x.isStream) open++
    return open
  }

  /** chunkCount applies to requests that arrive later; chunkDelayMs also to streams in flight. */
  setPace (pace: { chunkCount?: number; chunkDelayMs?: number }): void {
    validatePace(pace, 'setPace')
    this.pace = { chunkCount: pace.chunkCount ?? this.pace.chunkCount, chunkDelayMs: pace.chunkDelayMs ?? this.pace.chunkDelayMs }
  }

  addFault (fault: Fault, when: FaultWhen = {}): void {
    this.faults.add(fault, when)
  }

  clearFaults (): void { this.faults.clear() }

  /** Replaces a key's behaviour (and accepts it, when only some keys are), its quota starting afresh. */
  setKey (key: string, behaviour: KeyBehaviour): void { this.upstream.setKey(key, behaviour) }

  /** Replaces a model's behaviour, its quota starting afresh. */
  setModel (model: string, behaviour: ModelBehaviour): void { this.upstream.setModel(model, behaviour) }

  /** The key's quota and its per-model quotas, as if nothing had been used. */
  refillQuota (key: string): void { this.upstream.refillQuota(key) }

  refillModelQuota (model: string): void { this.upstream.refillModelQuota(model) }

  /** The requests that carried the key since the start or the last reset, in all and by model. */
  keyUsage (key: string): KeyUsage { return this.upstream.keyUsage(key) }

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
    this.upstream.reset()
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
      await respond(this.context, x, route, raw === 'too-large' ? 'too-large' : parsed)
    } catch (err) {
      this.log(`#${rec.id} emulator error: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
      if (!res.headersSent) sendError(x, 500)
      else res.destroy()
    }
  }
}
