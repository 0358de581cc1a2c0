// One request and its response: the record a test inspects, the waits a fault or the pace puts the
// response in, and the writes, which stop as soon as the client has gone.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Fault } from './faults.js'
import { googleError } from './google-errors.js'
import type { Pace } from './options.js'
import { JSON_TYPE } from './responses.js'
import type { UpstreamState } from './upstream-state.js'

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

/** What an exchange sees of its emulator. */
export interface EmulatorContext {
  /** The keys' and the models' state: which keys are accepted, quotas, overloaded models. */
  readonly upstream: UpstreamState
  readonly defaultMaxTokens: number
  /** Whether the thinking models think when a request has no thinkingConfig, as Google's do. */
  readonly thinkByDefault: boolean
  /** Model ids served besides the catalogue's (the `extraModels` option). */
  readonly extraModels: ReadonlySet<string>
  /** The fixed responseId (the `responseId` option), or undefined for a random one a response. */
  readonly responseId: string | undefined
  /** The pace setPace last set: asked again before every event, so that it reaches the streams in flight. */
  pace (): Pace
  takeFault (rpc: string, prompt: string): Fault | undefined
}

type WaitKind = 'delay' | 'stall' | 'drain'
type WaitResult = 'ok' | 'gone' | 'deadline'

/** Per-request state: the response, its record, and the waits a fault or the pace puts it in. */
export class Exchange {
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
    const buffered = (): boolean => socket !== null && !socket.destroyed && socket.writableLength > 0
    for (let i = 0; i < 200 && buffered(); i++) {
      await new Promise<void>(resolve => setTimeout(resolve, 1))
    }
    if (this.gone) return
    this.destroyedByUs = true
    if (socket) socket.destroy()
    else this.res.destroy()
  }
}

export function sendRaw (x: Exchange, status: number, contentType: string, body: string, headers: Record<string, string> = {}): void {
  if (x.gone || x.res.headersSent) return
  x.res.writeHead(status, { ...headers, 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) })
  x.end(body)
}

export function sendJson (x: Exchange, status: number, value: unknown): void {
  sendRaw(x, status, JSON_TYPE, JSON.stringify(value))
}

export function sendError (x: Exchange, code: number, message?: string, status?: string, details?: unknown[]): void {
  sendJson(x, code, googleError(code, message, status, details))
}
