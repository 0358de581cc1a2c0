import { once } from 'node:events'
import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { UpstreamError, toUpstreamError, type GenerationDelta, type GenerationRequest } from '../gemini/types.js'
import type { StreamRecorder } from '../plugins/metrics.js'
import type { Usage } from '../schemas/stream.js'

export interface StreamTimeouts {
  /** From the request to the first chunk event. */
  firstChunkMs: number
  /** Between two upstream events once the answer started. */
  idleMs: number
  /** The whole stream. */
  totalMs: number
  /** How long a client may leave written events unread (its socket buffer full) before the stream is cut. */
  clientStallMs: number
}

export interface RetryPolicy {
  /** Tries in all, the first one included. */
  attempts: number
  baseDelayMs: number
  maxDelayMs: number
  /** Upper bound of all back-off waits of one request; a longer Retry-After ends the retries. */
  maxTotalWaitMs: number
}

export interface RelaySettings {
  timeouts: StreamTimeouts
  /** An SSE comment is sent when nothing was written for this long; 0 turns heartbeats off. */
  heartbeatMs: number
  retry: RetryPolicy
  /** Characters of one answer the relay holds (it sends them all again in `fullText`); past it the stream fails. */
  maxAnswerChars: number
}

type Stop =
  | { kind: 'client-gone' }
  | { kind: 'client-stalled', message: string }
  | { kind: 'timeout', message: string }
  | { kind: 'shutdown', message: string }

const STOPPED = Symbol('stopped')

const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  'x-accel-buffering': 'no'
}

const HEARTBEAT = ': ping\n\n'

/** Finish reasons that mean the answer is whole; any other one means Gemini cut it short. */
const COMPLETE_FINISH_REASONS = new Set(['STOP', 'MAX_TOKENS'])

function chunkEvent (text: string, index: number): string {
  // Same bytes as JSON.stringify({ chunk, index }) without building the object on the hot path.
  return `data: {"chunk":${JSON.stringify(text)},"index":${index}}\n\n`
}

function dataEvent (payload: object): string {
  return `data: ${JSON.stringify(payload)}\n\n`
}

function seconds (ms: number): string {
  return `${Math.round(ms / 100) / 10} s`
}

/**
 * Relays one Gemini stream to one client as SSE: retries the upstream while nothing reached the
 * client, stops everything on disconnect, timeout or shutdown, honours backpressure, and ends
 * every stream with exactly one completion or error (event or JSON answer) and one metric outcome.
 */
export class StreamRelay {
  private readonly upstream = new AbortController()
  private readonly recorder: StreamRecorder
  private stopped: Stop | undefined
  private readonly stopSignal = Promise.withResolvers<typeof STOPPED>()
  private headersSent = false
  private wroteSinceHeartbeat = false
  private index = 0
  private fullText = ''
  private usage: Usage | undefined
  private finishReason: string | undefined
  private blockReason: string | undefined
  private readonly timers: NodeJS.Timeout[] = []
  private idleTimer: NodeJS.Timeout | undefined
  private firstChunkTimer: NodeJS.Timeout | undefined
  private waitedMs = 0
  /** While true the relay waits on the client, not on Gemini: the idle budget is not spent. */
  private awaitingClient = false
  private corked = false

  constructor (
    private readonly app: FastifyInstance,
    private readonly request: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly generation: GenerationRequest,
    agent: string | undefined,
    private readonly settings: RelaySettings
  ) {
    this.recorder = app.gatewayMetrics.beginStream({ agent, model: generation.model })
  }

  private stop (reason: Stop): void {
    if (this.stopped !== undefined) return
    this.stopped = reason
    this.upstream.abort()
    this.stopSignal.resolve(STOPPED)
  }

  /** Settles with `work`, or with STOPPED as soon as the relay stops, without waiting on `work`. */
  private async orStop<T> (work: Promise<T>): Promise<T | typeof STOPPED> {
    // An aborted read may settle much later, or never (nodejs/node#56917): never leave it unhandled.
    work.catch(() => {})
    return await Promise.race([work, this.stopSignal.promise])
  }

  private armTimers (): void {
    const { firstChunkMs, idleMs, totalMs } = this.settings.timeouts
    const after = (ms: number, fire: () => void): NodeJS.Timeout => {
      const timer = setTimeout(fire, ms)
      this.timers.push(timer)
      return timer
    }
    after(totalMs, () => { this.stop({ kind: 'timeout', message: `Gemini did not finish the answer within ${seconds(totalMs)}` }) })
    this.firstChunkTimer = after(firstChunkMs, () => { this.stop({ kind: 'timeout', message: `Gemini sent no answer within ${seconds(firstChunkMs)}` }) })
    this.idleTimer = after(idleMs, () => {
      // Armed from the start but only meaningful once chunks flow; before that the first-chunk timer rules.
      if (this.index > 0 && !this.awaitingClient) this.stop({ kind: 'timeout', message: `Gemini went silent for ${seconds(idleMs)}` })
      else this.idleTimer?.refresh()
    })
    if (this.settings.heartbeatMs > 0) {
      const heartbeat = setInterval(() => { this.heartbeat() }, this.settings.heartbeatMs)
      this.timers.push(heartbeat)
    }
  }

  private heartbeat (): void {
    if (this.stopped !== undefined) return
    if (this.wroteSinceHeartbeat) {
      this.wroteSinceHeartbeat = false
      return
    }
    // A slow first token must not look like a dead connection to proxies with idle timeouts.
    if (!this.headersSent) this.startSse()
    this.reply.raw.write(HEARTBEAT)
  }

  private startSse (): void {
    this.reply.hijack()
    this.headersSent = true
    this.reply.raw.writeHead(200, { ...this.reply.getHeaders(), ...SSE_HEADERS } as OutgoingHttpHeaders)
    this.reply.raw.flushHeaders()
  }

  private async write (event: string): Promise<void> {
    this.wroteSinceHeartbeat = true
    const raw = this.reply.raw
    if (!this.corked) {
      // Events parsed from one upstream read leave in one syscall instead of one each.
      this.corked = true
      raw.cork()
      process.nextTick(this.uncork)
    }
    if (raw.write(event)) return
    // A slow reader: pull nothing more from upstream until the socket drains, so memory stays bounded.
    this.uncork()
    // An event over the high-water mark written while corked reports "full" even when uncorking just
    // handed it all to the kernel: then no `drain` may ever come (Node 22 and 24 differ in which of
    // the response and the socket keep a "needs drain" flag). Only bytes still buffered mean waiting.
    if (raw.writableLength === 0 && (raw.socket?.writableLength ?? 0) === 0) return
    await this.awaitClientDrain()
  }

  private async awaitClientDrain (): Promise<void> {
    const { clientStallMs } = this.settings.timeouts
    this.awaitingClient = true
    const stall = setTimeout(() => {
      this.stop({ kind: 'client-stalled', message: `the client read nothing for ${seconds(clientStallMs)}` })
    }, clientStallMs)
    try {
      await this.orStop(once(this.reply.raw, 'drain'))
    } finally {
      clearTimeout(stall)
      this.awaitingClient = false
      // Gemini's idle budget starts again from the moment the relay asks it for more.
      this.idleTimer?.refresh()
    }
  }

  /**
   * Ends the response with its terminal event. Uncorks first: on Node 22, `end()` on a response still
   * corked by this tick's writes sends an empty body and drops the corked events.
   */
  private end (event: string): void {
    this.uncork()
    this.reply.raw.end(event)
  }

  private readonly uncork = (): void => {
    if (!this.corked) return
    this.corked = false
    this.reply.raw.uncork()
  }

  private resetAnswer (): void {
    this.usage = undefined
    this.finishReason = undefined
    this.blockReason = undefined
  }

  /** Waits before another try when the error and the policy allow one; false when they do not. */
  private async backOff (error: UpstreamError, attempt: number): Promise<boolean> {
    const { attempts, baseDelayMs, maxDelayMs, maxTotalWaitMs } = this.settings.retry
    if (!error.retryable || this.index > 0 || attempt >= attempts) return false
    const exponential = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1))
    // Equal jitter (half fixed, half random) spreads the retries of many clients hit by the same outage.
    const delay = error.retryAfterMs ?? Math.round(exponential / 2 + Math.random() * exponential / 2)
    if (this.waitedMs + delay > maxTotalWaitMs) return false
    this.waitedMs += delay
    this.request.log.info({ attempt, delayMs: delay, upstreamStatus: error.status }, 'retrying Gemini call')
    let timer: NodeJS.Timeout | undefined
    await this.orStop(new Promise(resolve => { timer = setTimeout(resolve, delay) }))
    clearTimeout(timer)
    return this.stopped === undefined
  }

  async run (): Promise<FastifyReply> {
    const raw = this.reply.raw
    raw.once('close', () => { if (!raw.writableFinished) this.stop({ kind: 'client-gone' }) })
    const untrack = this.app.lifecycle.track({ interrupt: message => { this.stop({ kind: 'shutdown', message }) } })
    this.armTimers()
    try {
      return await this.relay()
    } finally {
      for (const timer of this.timers) clearTimeout(timer)
      untrack()
    }
  }

  private async relay (): Promise<FastifyReply> {
    let iterator: AsyncIterator<GenerationDelta> | undefined
    let attempt = 1
    for (;;) {
      try {
        if (iterator === undefined) {
          const opened = await this.orStop(this.app.gemini.streamGenerate(this.generation, this.upstream.signal))
          if (opened === STOPPED) break
          iterator = opened
        }
        const result = await this.orStop(iterator.next())
        if (result === STOPPED || result.done === true) break
        this.idleTimer?.refresh()
        const delta = result.value
        if (delta.usage !== undefined) this.usage = delta.usage
        if (delta.finishReason !== undefined) this.finishReason = delta.finishReason
        if (delta.blockReason !== undefined) this.blockReason = delta.blockReason
        if (delta.text === '') continue
        if (this.fullText.length + delta.text.length > this.settings.maxAnswerChars) {
          const tooLong = new UpstreamError(`Gemini's answer grew past ${this.settings.maxAnswerChars} characters`, { recoverable: false, tooLarge: true })
          this.app.gatewayMetrics.upstreamError(tooLong.metricLabel)
          return await this.fail(tooLong)
        }
        if (this.index === 0) {
          clearTimeout(this.firstChunkTimer)
          if (!this.headersSent) this.startSse()
        }
        this.index++
        this.fullText += delta.text
        this.recorder.chunkSent()
        await this.write(chunkEvent(delta.text, this.index))
        if (this.stopped !== undefined) break
      } catch (caught) {
        if (this.stopped !== undefined) break
        const error = toUpstreamError(caught, '')
        if (error.local) this.request.log.error({ err: caught }, 'the process is out of file descriptors: raise its limit or lower MAX_CONNECTIONS')
        else this.app.gatewayMetrics.upstreamError(error.metricLabel)
        if (await this.backOff(error, attempt)) {
          attempt++
          iterator = undefined
          this.resetAnswer()
          continue
        }
        if (this.stopped !== undefined) break
        return error.local ? await this.fail(error, 503, { error: 'Service Unavailable', message: error.message }) : await this.fail(error)
      }
    }
    if (this.stopped !== undefined) return await this.onStopped(this.stopped)
    return await this.complete()
  }

  private async complete (): Promise<FastifyReply> {
    if (this.blockReason !== undefined) {
      return await this.fail(new UpstreamError(`Gemini blocked the prompt: ${this.blockReason}`, { recoverable: false }))
    }
    if (this.finishReason === undefined) {
      return await this.fail(new UpstreamError('Gemini ended the stream before the answer was complete', { recoverable: true }))
    }
    if (!COMPLETE_FINISH_REASONS.has(this.finishReason)) {
      return await this.fail(new UpstreamError(`Gemini stopped generating: ${this.finishReason}`, { recoverable: false }))
    }
    if (this.usage === undefined) {
      // Gemini normally reports usage on its last event; when it does not, ask it to count rather than guess.
      try {
        const { model, prompt } = this.generation
        const counted = await this.orStop(Promise.all([
          this.app.gemini.countTokens(model, prompt, this.upstream.signal),
          this.fullText === '' ? 0 : this.app.gemini.countTokens(model, this.fullText, this.upstream.signal)
        ]))
        if (counted === STOPPED) return await this.onStopped(this.stopped ?? { kind: 'client-gone' })
        const [promptTokens, completionTokens] = counted
        this.usage = { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens }
      } catch (error) {
        if (this.stopped !== undefined) return await this.onStopped(this.stopped)
        this.request.log.warn({ reason: toUpstreamError(error, '').message }, 'could not count tokens; completion sent without usage')
      }
    }
    if (!this.headersSent) this.startSse()
    const usage = this.usage
    this.end(dataEvent({ complete: true, totalChunks: this.index, fullText: this.fullText, ...(usage === undefined ? {} : { usage }) }))
    this.recorder.end('completed', usage)
    return this.reply
  }

  private async fail (error: UpstreamError, statusBeforeHeaders = 500, bodyBeforeHeaders?: object): Promise<FastifyReply> {
    // Whatever failed, the upstream call ends here: an open one would outlive the stream and hold shutdown.
    this.upstream.abort()
    this.request.log.warn({ upstreamStatus: error.status, chunksSent: this.index, reason: error.message }, 'stream failed')
    this.recorder.end('failed')
    if (!this.headersSent) {
      return await this.reply.code(statusBeforeHeaders).send(bodyBeforeHeaders ?? { error: 'Failed to start stream', message: error.message })
    }
    this.end(dataEvent({ error: error.message, recoverable: error.recoverable }))
    return this.reply
  }

  private async onStopped (stop: Stop): Promise<FastifyReply> {
    switch (stop.kind) {
      case 'client-gone':
        if (!this.headersSent) this.reply.hijack()
        this.recorder.end('cancelled')
        this.request.log.info({ chunksSent: this.index }, 'client disconnected; upstream call aborted')
        return this.reply
      case 'client-stalled':
        // Its buffer is full, so an error event would never be read: cut the connection instead.
        this.recorder.end('cancelled')
        this.request.log.warn({ chunksSent: this.index, reason: stop.message }, 'client stopped reading; stream cut and upstream call aborted')
        this.reply.raw.destroy()
        return this.reply
      case 'timeout':
        this.app.gatewayMetrics.upstreamError('timeout')
        return await this.fail(new UpstreamError(stop.message, { recoverable: true }))
      case 'shutdown':
        return await this.fail(new UpstreamError(stop.message, { recoverable: true }), 503, { error: 'Service Unavailable', message: stop.message })
    }
  }
}
