import { setTimeout as wait } from 'node:timers/promises'
import type { FastifyBaseLogger, FastifyReply } from 'fastify'
import { tooLarge, UpstreamError } from '../gemini/upstream-error.js'
import type { FunctionCall, GeminiClient, GenerationDelta, GenerationRequest } from '../gemini/types.js'
import { countedContentsOf } from '../gemini/generation-config.js'
import { keyOfFailure } from '../gemini/key-pool.js'
import { modelId } from '../gemini/model-id.js'
import type { GatewayLifecycle } from '../plugins/lifecycle.js'
import type { StreamRecorder } from '../plugins/metrics.js'
import type { ReportedUsage } from '../schemas/stream.js'
import { ClientWriter, type ClientWriterOptions } from './client-writer.js'
import { LoggedClientWriter } from './logged-client-writer.js'
import type { ResumableStream } from '../plugins/resumable-streams.js'
import { refusals } from '../schemas/refusals.js'
import { retryDelay } from './retry.js'
import { seconds, type RelaySettings } from './settings.js'
import type { StreamFailure, WireFormat } from './wire-format.js'

/** What one relayed stream uses of the gateway. */
export interface RelayContext {
  gemini: GeminiClient
  /** This stream's metrics; the relay ends it exactly once. */
  recorder: StreamRecorder
  lifecycle: GatewayLifecycle
  log: FastifyBaseLogger
  settings: RelaySettings
  /** Whether the caller may be answered by a model (its key's `models`, the allow-list); default: any. */
  allowsModel?: ((id: string) => boolean) | undefined
  /** Set for a resumable stream: its events are kept for a reader, and it outlives its client within a grace time. */
  resumable?: ResumableStream | undefined
}

type Stop =
  | { kind: 'client-gone' }
  /** A resumable stream's client left and no reader came within the grace time. */
  | { kind: 'abandoned', message: string }
  | { kind: 'client-stalled', message: string }
  | { kind: 'timeout', message: string }
  | { kind: 'shutdown', message: string }

const STOPPED = Symbol('stopped')

/** Finish reasons that mean the answer is whole; any other one means Gemini cut it short. */
const COMPLETE_FINISH_REASONS = new Set(['STOP', 'MAX_TOKENS'])

/** A model name as Gemini reports one; anything else an upstream puts in `modelVersion` is not passed on. */
const MODEL_VERSION = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/

function upstreamFailure (error: UpstreamError): StreamFailure {
  return { kind: error.code === 'out_of_descriptors' ? 'unavailable' : 'upstream', message: error.message, recoverable: error.recoverable, upstream: error }
}

/**
 * Relays one Gemini stream to one client in a wire format: retries the upstream while nothing reached
 * the client, stops everything on disconnect, timeout or shutdown, honours backpressure, and ends every
 * stream with exactly one completion or failure (last frame or whole answer) and one metric outcome.
 */
export class StreamRelay {
  private readonly upstream = new AbortController()
  private stopped: Stop | undefined
  private readonly stopSignal = Promise.withResolvers<typeof STOPPED>()
  private readonly writer: ClientWriter | LoggedClientWriter
  private index = 0
  private fullText = ''
  private readonly functionCalls: FunctionCall[] = []
  /** Characters of the calls' arguments, counted with the text against maxAnswerChars. */
  private callChars = 0
  /** Set once Gemini sent any of the answer (text, thoughts or calls): from then on a failure is never retried. */
  private answerStarted = false
  private usage: ReportedUsage | undefined
  private modelVersion: string | undefined
  private finishReason: string | undefined
  private blockReason: string | undefined
  private blockedCategories: string[] | undefined
  private readonly timers: NodeJS.Timeout[] = []
  private idleTimer: NodeJS.Timeout | undefined
  private firstChunkTimer: NodeJS.Timeout | undefined
  private waitedMs = 0
  /** The try under way, from 1; retries, key moves and fallbacks each take one. */
  private attempt = 1
  /** Set while an attempt can be given up alone, for its model's fallback (see attemptSignal). */
  private attemptAbort: AbortController | undefined
  /** The first-chunk timeout gave up the attempt under way, rather than the stream. */
  private attemptTimedOut = false
  /** While true the relay waits on the client, not on Gemini: the idle budget is not spent. */
  private awaitingClient = false

  constructor (
    private readonly context: RelayContext,
    private readonly reply: FastifyReply,
    private generation: GenerationRequest,
    private readonly format: WireFormat
  ) {
    const writing: ClientWriterOptions = {
      stallMs: context.settings.timeouts.clientStallMs,
      signal: this.upstream.signal,
      onStall: message => { this.stop({ kind: 'client-stalled', message }) },
      onAwaitingClient: waiting => {
        this.awaitingClient = waiting
        // Gemini's idle budget starts again from the moment the relay asks it for more.
        if (!waiting) this.idleTimer?.refresh()
      }
    }
    const warnLogError = (error: unknown): void => { context.log.warn({ reason: error instanceof Error ? error.message : String(error) }, 'an event could not be kept for resuming') }
    this.writer = context.resumable === undefined
      ? new ClientWriter(reply, writing)
      : new LoggedClientWriter(reply, { ...writing, onLogError: warnLogError }, context.resumable)
  }

  /**
   * The client's connection closed before the end. A plain stream stops; a resumable one whose client got its
   * stream id goes on for a reader, and stops only once none came within the grace time.
   */
  private clientLeft (): void {
    const { writer } = this
    if (!(writer instanceof LoggedClientWriter) || !writer.headersSent || this.stopped !== undefined) {
      this.stop({ kind: 'client-gone' })
      return
    }
    const { graceMs } = this.context.resumable!
    this.context.log.info({ chunksSent: this.index, streamId: writer.streamId, graceMs }, 'client disconnected; the stream goes on for a resume')
    writer.detach(() => { this.stop({ kind: 'abandoned', message: `No client resumed the stream within ${seconds(graceMs)}` }) })
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
    const { settings } = this.context
    const { firstChunkMs, idleMs, totalMs } = settings.timeouts
    const after = (ms: number, fire: () => void): NodeJS.Timeout => {
      const timer = setTimeout(fire, ms)
      this.timers.push(timer)
      return timer
    }
    after(totalMs, () => { this.stop({ kind: 'timeout', message: `Gemini did not finish the answer within ${seconds(totalMs)}` }) })
    this.firstChunkTimer = after(firstChunkMs, () => {
      // With a fallback to go to, only this attempt is given up: the call moves on to the next model.
      if (this.attemptAbort !== undefined && !this.answerStarted && this.attempt < settings.retry.attempts) {
        this.attemptTimedOut = true
        this.attemptAbort.abort()
        this.firstChunkTimer?.refresh()
        return
      }
      this.stop({ kind: 'timeout', message: `Gemini sent no answer within ${seconds(firstChunkMs)}` })
    })
    this.idleTimer = after(idleMs, () => {
      // Armed from the start but only meaningful once text or calls flow; before that the first-chunk timer
      // rules, and a thinking model may go quiet between its thought summaries and its answer.
      if ((this.index > 0 || this.functionCalls.length > 0) && !this.awaitingClient) this.stop({ kind: 'timeout', message: `Gemini went silent for ${seconds(idleMs)}` })
      else this.idleTimer?.refresh()
    })
    if (settings.heartbeatMs > 0) {
      const heartbeat = setInterval(() => { this.heartbeat() }, settings.heartbeatMs)
      this.timers.push(heartbeat)
    }
  }

  private heartbeat (): void {
    if (this.stopped !== undefined) return
    if (this.writer.wroteSinceHeartbeat) {
      this.writer.wroteSinceHeartbeat = false
      return
    }
    const frame = this.format.heartbeat()
    if (frame === undefined) return
    // A slow first token must not look like a dead connection to proxies with idle timeouts.
    this.openOnce()
    this.writer.writeNow(frame)
  }

  private openOnce (): void {
    if (this.writer.headersSent) return
    const { status, headers } = this.format.head()
    this.writer.open(status, headers)
  }

  private resetAnswer (): void {
    this.usage = undefined
    this.finishReason = undefined
    this.blockReason = undefined
    this.blockedCategories = undefined
  }

  /**
   * Moves the call to its model's fallback (MODEL_FALLBACKS) at once, when nothing reached the client, the failure
   * is one another model may not share (quota, overload, a server or transport failure; never a request error),
   * the request did not opt out and the attempts allow one more. A forwarded call stays on the model its caller
   * named.
   */
  private fallBack (error: UpstreamError, attempt: number): boolean {
    const { settings, log } = this.context
    const next = this.nextModel()
    if (next === undefined || this.answerStarted || attempt >= settings.retry.attempts) return false
    const worthy = error.code === 'network' || error.code === 'timeout' || (error.code === 'http_status' && ((error.status ?? 0) === 429 || (error.status ?? 0) >= 500))
    if (!worthy) return false
    log.info({ attempt, from: modelId(this.generation.model), to: next, upstreamStatus: error.status ?? error.code }, 'falling back to another model')
    this.context.recorder.fellBack(modelId(this.generation.model), next)
    this.generation = { ...this.generation, model: next }
    return true
  }

  /** The model this request's call may fall back to, if any. */
  private nextModel (): string | undefined {
    const next = this.context.settings.fallbacks.get(modelId(this.generation.model))
    if (next === undefined || this.generation.options?.fallback === false || this.generation.forwarded !== undefined) return undefined
    return this.context.allowsModel?.(next) === false ? undefined : next
  }

  /** Waits before another try when the error and the policy allow one; false when they do not. */
  private async backOff (error: UpstreamError, attempt: number): Promise<boolean> {
    const { retry } = this.context.settings
    const delay = this.answerStarted ? undefined : retryDelay(error, attempt, retry)
    if (delay === undefined || this.waitedMs + delay > retry.maxTotalWaitMs) return false
    this.waitedMs += delay
    this.context.log.info({ attempt, delayMs: delay, upstreamStatus: error.status }, 'retrying Gemini call')
    try {
      await wait(delay, undefined, { signal: this.upstream.signal })
    } catch {
      return false
    }
    return true
  }

  async run (): Promise<FastifyReply> {
    const raw = this.reply.raw
    raw.once('close', () => { if (!raw.writableFinished) this.clientLeft() })
    const untrack = this.context.lifecycle.track({ interrupt: message => { this.stop({ kind: 'shutdown', message }) } })
    this.armTimers()
    try {
      return await this.relay()
    } finally {
      for (const timer of this.timers) clearTimeout(timer)
      if (this.writer instanceof LoggedClientWriter) this.writer.dispose()
      untrack()
    }
  }

  /** The signal of one attempt: its own, when its model has a fallback the first-chunk timeout may move it to. */
  private attemptSignal (): AbortSignal {
    this.attemptTimedOut = false
    if (this.nextModel() === undefined) {
      this.attemptAbort = undefined
      return this.upstream.signal
    }
    this.attemptAbort = new AbortController()
    return AbortSignal.any([this.upstream.signal, this.attemptAbort.signal])
  }

  private async relay (): Promise<FastifyReply> {
    const { gemini, recorder, log, settings } = this.context
    let iterator: AsyncIterator<GenerationDelta> | undefined
    for (;;) {
      try {
        if (iterator === undefined) {
          const opened = await this.orStop(gemini.streamGenerate(this.generation, this.attemptSignal()))
          if (opened === STOPPED) break
          iterator = opened
        }
        const result = await this.orStop(iterator.next())
        if (result === STOPPED || result.done === true) break
        this.idleTimer?.refresh()
        const delta = result.value
        if (delta.usage !== undefined) this.usage = delta.usage
        if (delta.finishReason !== undefined) this.finishReason = delta.finishReason
        if (delta.modelVersion !== undefined) this.modelVersion = delta.modelVersion
        if (delta.blockReason !== undefined) this.blockReason = delta.blockReason
        if (delta.blockedCategories !== undefined) this.blockedCategories = delta.blockedCategories
        if (delta.event !== undefined && this.format.event !== undefined) {
          const refused = await this.relayEvent(delta, this.format.event(delta.event))
          if (refused !== undefined) return refused
          if (this.stopped !== undefined) break
          continue
        }
        if (delta.thought !== undefined) {
          // A model that shows its thinking is answering: the first-chunk budget no longer applies.
          this.answerBegan()
          const thoughtFrame = this.format.thought(delta.thought)
          if (thoughtFrame !== undefined) await this.send(thoughtFrame)
        }
        if (delta.functionCalls !== undefined && delta.functionCalls.length > 0) {
          const refused = this.takeCalls(delta.functionCalls)
          if (refused !== undefined) return await refused
          const callsFrame = this.format.functionCalls(delta.functionCalls)
          if (callsFrame !== undefined) await this.send(callsFrame)
        }
        if (delta.text === '') continue
        if (this.fullText.length + this.callChars + delta.text.length > settings.maxAnswerChars) return await this.failTooLarge()
        this.answerBegan()
        this.index++
        this.fullText += delta.text
        recorder.chunkSent()
        const frame = this.format.chunk(delta.text, this.index)
        const draining = frame === undefined ? undefined : this.send(frame)
        if (draining !== undefined) await draining
        if (this.stopped !== undefined) break
      } catch (thrown) {
        if (this.stopped !== undefined) break
        let caught = thrown
        if (this.attemptTimedOut) {
          this.attemptTimedOut = false
          caught = new UpstreamError('timeout', `Gemini sent no answer within ${seconds(settings.timeouts.firstChunkMs)}`, { cause: thrown })
        }
        if (!(caught instanceof UpstreamError)) {
          log.error({ err: caught, chunksSent: this.index }, 'stream failed on an unexpected error')
          return await this.fail({ kind: 'internal', message: refusals.internal().body.error, recoverable: false })
        }
        if (caught.code === 'out_of_descriptors') log.error({ err: caught }, 'the process is out of file descriptors: raise its limit or lower MAX_CONNECTIONS')
        else recorder.upstreamError(caught.metricLabel, keyOfFailure(caught))
        const attempt = this.attempt
        // A fallback moves at once; otherwise the same model is tried again after its back-off.
        if (this.fallBack(caught, attempt) || await this.backOff(caught, attempt)) {
          this.attempt++
          iterator = undefined
          this.resetAnswer()
          continue
        }
        if (this.stopped !== undefined) break
        return await this.fail(upstreamFailure(caught))
      }
    }
    if (this.stopped !== undefined) return await this.onStopped(this.stopped)
    return await this.complete()
  }

  /** Relays one forwarded event as it came, keeping the same account of the answer as the other formats. */
  private async relayEvent (delta: GenerationDelta, frame: string): Promise<FastifyReply | undefined> {
    // Bytes of Gemini's answer reach the client from here on: nothing may be retried after them.
    this.answerBegan()
    if (delta.functionCalls !== undefined && delta.functionCalls.length > 0) {
      const refused = this.takeCalls(delta.functionCalls)
      if (refused !== undefined) return await refused
    }
    if (delta.text !== '') {
      if (this.fullText.length + this.callChars + delta.text.length > this.context.settings.maxAnswerChars) return await this.failTooLarge()
      this.index++
      this.fullText += delta.text
      this.context.recorder.chunkSent()
    }
    const draining = this.send(frame)
    if (draining !== undefined) await draining
    return undefined
  }

  private answerBegan (): void {
    if (this.answerStarted) return
    this.answerStarted = true
    clearTimeout(this.firstChunkTimer)
  }

  /** Keeps an event's calls; the failure answer when they grow the answer past its bound. */
  private takeCalls (calls: readonly FunctionCall[]): Promise<FastifyReply> | undefined {
    this.answerBegan()
    for (const call of calls) this.callChars += call.name.length + JSON.stringify(call.args).length
    if (this.fullText.length + this.callChars > this.context.settings.maxAnswerChars) return this.failTooLarge()
    this.functionCalls.push(...calls)
    return undefined
  }

  private async failTooLarge (): Promise<FastifyReply> {
    const answerTooLarge = tooLarge(`Gemini's answer grew past ${this.context.settings.maxAnswerChars} characters`)
    this.context.recorder.upstreamError(answerTooLarge.metricLabel)
    return await this.fail(upstreamFailure(answerTooLarge))
  }

  /** Sends a frame, opening the stream first; a promise only when the client must be waited for. */
  private send (frame: string): Promise<void> | undefined {
    this.openOnce()
    return this.writer.write(frame)
  }

  private answerRefused (message: string, recoverable: boolean, why: Pick<StreamFailure, 'finishReason' | 'blockReason'> = {}): StreamFailure {
    return { kind: 'upstream', message, recoverable, ...why, blockedCategories: this.blockedCategories }
  }

  private async complete (): Promise<FastifyReply> {
    if (this.blockReason !== undefined) return await this.fail(this.answerRefused(`Gemini blocked the prompt: ${this.blockReason}`, false, { blockReason: this.blockReason }))
    if (this.finishReason === undefined) return await this.fail(this.answerRefused('Gemini ended the stream before the answer was complete', true))
    if (!COMPLETE_FINISH_REASONS.has(this.finishReason)) return await this.fail(this.answerRefused(`Gemini stopped generating: ${this.finishReason}`, false, { finishReason: this.finishReason }))
    // A forwarded request is the caller's own: the gateway cannot count it, and its answer is whatever Gemini sent.
    if (this.usage === undefined && this.generation.forwarded === undefined) {
      const counted = await this.countUsage()
      if (counted === STOPPED) return await this.onStopped(this.stopped ?? { kind: 'client-gone' })
      this.usage = counted
    }
    const frame = this.format.completion({
      totalChunks: this.index,
      fullText: this.fullText,
      usage: this.usage,
      model: MODEL_VERSION.test(this.modelVersion ?? '') ? this.modelVersion! : this.generation.model,
      finishReason: this.finishReason,
      functionCalls: this.functionCalls
    })
    this.openOnce()
    this.writer.end(frame)
    this.context.recorder.end('completed', this.usage)
    return this.reply
  }

  /** Gemini normally reports usage on its last event; when it does not, ask it to count rather than guess. */
  private async countUsage (): Promise<ReportedUsage | undefined | typeof STOPPED> {
    const { gemini, log } = this.context
    const { model } = this.generation
    const asked = countedContentsOf(this.generation)
    try {
      const counted = await this.orStop(Promise.all([
        gemini.countTokens(model, asked, this.upstream.signal),
        this.fullText === '' ? 0 : gemini.countTokens(model, this.fullText, this.upstream.signal)
      ]))
      if (counted === STOPPED) return STOPPED
      const [promptTokens, completionTokens] = counted
      return { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens }
    } catch (error) {
      if (this.stopped !== undefined) return STOPPED
      if (error instanceof UpstreamError) log.warn({ reason: error.message }, 'could not count tokens; completion sent without usage')
      else log.error({ err: error }, 'could not count tokens on an unexpected error; completion sent without usage')
      return undefined
    }
  }

  private async fail (reason: StreamFailure): Promise<FastifyReply> {
    // Whatever failed, the upstream call ends here: an open one would outlive the stream and hold shutdown.
    this.upstream.abort()
    const failure: StreamFailure = { ...reason, usage: this.usage, fullText: this.fullText }
    this.context.log.warn({ upstreamStatus: failure.upstream?.status, chunksSent: this.index, reason: failure.message }, 'stream failed')
    // What Gemini generated before the failure is billed: its last running total is counted.
    this.context.recorder.end('failed', this.usage)
    if (!this.writer.headersSent) {
      const answer = this.format.refusal(failure)
      if (answer.headers !== undefined) this.reply.headers(answer.headers)
      return await this.reply.code(answer.status).send(answer.body)
    }
    this.writer.end(this.format.error(failure))
    return this.reply
  }

  private async onStopped (stop: Stop): Promise<FastifyReply> {
    const { recorder, log } = this.context
    switch (stop.kind) {
      case 'client-gone':
        if (!this.writer.headersSent) this.reply.hijack()
        recorder.end('cancelled', this.usage)
        log.info({ chunksSent: this.index }, 'client disconnected; upstream call aborted')
        return this.reply
      case 'abandoned':
        recorder.end('cancelled', this.usage)
        // A reader that comes back before the log expires learns the answer was given up rather than waiting.
        this.writer.end(this.format.error({ kind: 'timeout', message: stop.message, recoverable: true, usage: this.usage, fullText: this.fullText }))
        log.info({ chunksSent: this.index, reason: stop.message }, 'no client came back; upstream call aborted')
        return this.reply
      case 'client-stalled':
        // Its buffer is full, so a last frame would never be read: cut the connection instead.
        recorder.end('cancelled', this.usage)
        log.warn({ chunksSent: this.index, reason: stop.message }, 'client stopped reading; stream cut and upstream call aborted')
        this.reply.raw.destroy()
        return this.reply
      case 'timeout':
        recorder.upstreamError('timeout')
        return await this.fail({ kind: 'timeout', message: stop.message, recoverable: true })
      case 'shutdown':
        return await this.fail({ kind: 'shutdown', message: stop.message, recoverable: true })
    }
  }
}
