// A dependency-free client for the gateway's POST /api/stream, for Node 22+ and browsers alike:
// only fetch, ReadableStream, TextDecoder and AbortSignal are used.

import type { Static } from 'typebox'
import type {
  ChunkEvent as ChunkEventSchema, CompletionEvent as CompletionEventSchema, GenerationOptions as GenerationOptionsSchema,
  ReportedUsage as ReportedUsageSchema, StreamRequest as StreamRequestSchema, ThoughtEvent as ThoughtEventSchema, Usage as UsageSchema
} from '../schemas/stream.js'
import { SseParser, type SseEvent } from './sse-parser.js'
import { ConnectionError, GatewayError, StreamError, errorForResponse } from './errors.js'

export {
  BadRequestError, ConnectionError, ForbiddenError, GatewayError, RateLimitedError,
  StreamError, StreamStartError, UnauthorizedError, parseRetryAfter, type StreamErrorKind
} from './errors.js'
export { SseParser, type SseEvent } from './sse-parser.js'

/** Generation options, passed to Gemini as generationConfig: sampling, stop sequences, JSON mode, thinking, safety. */
export type GenerationOptions = Static<typeof GenerationOptionsSchema>

/** The request body of POST /api/stream, as the gateway's schema defines it. */
type StreamRequest = Static<typeof StreamRequestSchema>

/** One earlier turn of a conversation. */
export type Turn = NonNullable<StreamRequest['history']>[number]

/** A file for the prompt's turn, sent inline: its MIME type and its bytes in base64. */
export interface Attachment {
  mimeType: string
  data: string
}

export interface StreamPromptOptions {
  /** The gateway's origin, e.g. http://localhost:5000 (a path prefix is kept). */
  baseUrl: string
  /** Sent as X-API-Key; omitted when undefined. */
  apiKey?: string | undefined
  /** The new user turn. */
  prompt: StreamRequest['prompt']
  model?: StreamRequest['model'] | undefined
  /** The system instruction. */
  system?: StreamRequest['system'] | undefined
  /** Earlier turns, oldest first, before `prompt`. */
  history?: readonly Turn[] | undefined
  attachments?: readonly Attachment[] | undefined
  options?: GenerationOptions | undefined
  agent?: StreamRequest['agent'] | undefined
  /**
   * Asks the gateway to keep the stream's events so that a dropped connection can pick up where it
   * left off (sent as `"resumable": true`). A gateway may make every stream resumable without it.
   */
  resumable?: boolean | undefined
  /**
   * How a resumable stream (one whose answer carried `X-Stream-Id`) reconnects after its connection
   * drops; `false` never does, and a cut then fails the stream as for any other.
   */
  resume?: ResumePolicy | false | undefined
  /**
   * Called with each thought summary delta as it arrives (asked for with
   * `options.thinking.includeThoughts`); thoughts never reach the chunks. If it throws, the stream
   * is closed and fails with that error.
   */
  onThought?: ((event: ThoughtEvent) => void) | undefined
  /** Aborting it closes the connection; iteration and `completion` then reject with its reason. */
  signal?: AbortSignal | undefined
}

/** Reconnection after a dropped connection: tries in a row without an event, with doubling waits between them. */
export interface ResumePolicy {
  /** Reconnections in a row that bring no event before the stream fails. Default 3. */
  attempts?: number | undefined
  /** The wait before the first reconnection; each failed one doubles it. Default 250 ms. */
  baseDelayMs?: number | undefined
  /** The longest wait between reconnections. Default 4000 ms. */
  maxDelayMs?: number | undefined
}

const DEFAULT_RESUME = { attempts: 3, baseDelayMs: 250, maxDelayMs: 4000 }

/** One text delta: `data: {"chunk":"...","index":N}`, N from 1. */
export type ChunkEvent = Static<typeof ChunkEventSchema>

/** One thought summary delta: `data: {"thought":"..."}`, before the answer's chunks. */
export type ThoughtEvent = Static<typeof ThoughtEventSchema>

/** The seed's three counts. */
export type Usage = Static<typeof UsageSchema>

/** The seed's counts and, on a conversation request, the details Gemini reported. */
export type ReportedUsage = Static<typeof ReportedUsageSchema>

/**
 * The last event of a successful stream. `usage` is absent only when the gateway could not count
 * tokens; `finishReason`, `model` and the usage details come with conversation requests only.
 */
export type CompletionEvent = Static<typeof CompletionEventSchema>

/** One streamed answer: iterate it for the chunks (thoughts go to `onThought` only), await `completion` for the final event. */
export interface PromptStream extends AsyncIterable<ChunkEvent> {
  /** Resolves with the completion event; rejects with the same error the iteration throws. */
  readonly completion: Promise<CompletionEvent>
  /** Closes the connection; iteration and `completion` reject with `reason`. */
  abort: (reason?: unknown) => void
  /** The gateway's `X-Stream-Id` once the answer has started, when the stream is resumable; undefined otherwise. */
  readonly streamId: string | undefined
}

type Settled = { ok: true } | { ok: false, error: unknown }

type EventStreamResponse = Response & { body: ReadableStream<Uint8Array> }

function streamUrl (baseUrl: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/api/stream`
}

function resumeUrl (baseUrl: string, streamId: string): string {
  return `${streamUrl(baseUrl)}/${encodeURIComponent(streamId)}`
}

function abortReason (signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The stream was aborted', 'AbortError')
}

/** A promise that rejects when `signal` aborts; never left unhandled. */
function whenAborted (signal: AbortSignal): Promise<never> {
  const aborted = new Promise<never>((_resolve, reject) => {
    if (signal.aborted) reject(abortReason(signal))
    else signal.addEventListener('abort', () => { reject(abortReason(signal)) }, { once: true })
  })
  aborted.catch(() => {})
  return aborted
}

/** Waits `ms`, or rejects at once with the abort reason: a user who stops must not wait out a backoff. */
async function pause (ms: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(abortReason(signal))
      return
    }
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(abortReason(signal))
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Races a body read with the abort signal: on Node 20 a read of a fetch body aborted after it fully
 * arrived can hang forever (nodejs/node#56917), so an abort must never wait on the read itself.
 */
async function raceAbort<T> (operation: Promise<T>, aborted: Promise<never>): Promise<T> {
  operation.catch(() => {})
  return await Promise.race([operation, aborted])
}

/** Node's fetch says only "fetch failed" and keeps the reason (ECONNREFUSED, ...) in `cause`. */
function failureDetail (error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  return error.cause instanceof Error ? error.cause.message : error.message
}

function parseEventData (event: SseEvent): unknown {
  try {
    return JSON.parse(event.data)
  } catch (error) {
    throw new StreamError(`The gateway sent an event that is not JSON: ${event.data.slice(0, 200)}`, { kind: 'malformed', recoverable: false, body: event.data, cause: error })
  }
}

type ContractEvent =
  | { type: 'chunk', event: ChunkEvent }
  | { type: 'thought', event: ThoughtEvent }
  | { type: 'complete', event: CompletionEvent }
  | { type: 'ignored' }

function isCount (value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0
}

function isOptional<T> (value: unknown, check: (value: unknown) => value is T): value is T | undefined {
  return value === undefined || check(value)
}

function isString (value: unknown): value is string {
  return typeof value === 'string'
}

function isStringList (value: unknown): value is string[] {
  return Array.isArray(value) && value.every(isString)
}

function usageOf (value: unknown): ReportedUsage | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const { promptTokens, completionTokens, totalTokens, thoughtsTokens, cachedTokens } = value as Record<string, unknown>
  if (!isCount(promptTokens) || !isCount(completionTokens) || !isCount(totalTokens) ||
    !isOptional(thoughtsTokens, isCount) || !isOptional(cachedTokens, isCount)) return undefined
  return {
    promptTokens,
    completionTokens,
    totalTokens,
    ...(thoughtsTokens === undefined ? {} : { thoughtsTokens }),
    ...(cachedTokens === undefined ? {} : { cachedTokens })
  }
}

/** The completion event, its fields checked rather than trusted; a wrong one is a malformed stream. */
function completionOf (record: Record<string, unknown>): CompletionEvent {
  const { totalChunks, fullText, usage, finishReason, model } = record
  const checkedUsage = usage === undefined ? undefined : usageOf(usage)
  if (!isCount(totalChunks) || typeof fullText !== 'string' || (usage !== undefined && checkedUsage === undefined) ||
    !isOptional(finishReason, isString) || !isOptional(model, isString)) {
    throw new StreamError('The gateway sent a completion event of the wrong shape', { kind: 'malformed', recoverable: false, body: record })
  }
  return {
    complete: true,
    totalChunks,
    fullText,
    ...(checkedUsage === undefined ? {} : { usage: checkedUsage }),
    ...(finishReason === undefined ? {} : { finishReason }),
    ...(model === undefined ? {} : { model })
  }
}

/** The error event as a StreamError, its conversation fields checked like the completion's. */
function errorEventOf (message: string, record: Record<string, unknown>): StreamError {
  const { finishReason, blockedCategories } = record
  if (!isOptional(finishReason, isString) || !isOptional(blockedCategories, isStringList)) {
    return new StreamError('The gateway sent an error event of the wrong shape', { kind: 'malformed', recoverable: false, body: record })
  }
  return new StreamError(message, { kind: 'error-event', recoverable: record.recoverable === true, body: record, finishReason, blockedCategories })
}

function classify (payload: unknown): ContractEvent {
  if (typeof payload !== 'object' || payload === null) return { type: 'ignored' }
  const record = payload as Record<string, unknown>
  if (typeof record.chunk === 'string' && typeof record.index === 'number') {
    return { type: 'chunk', event: { chunk: record.chunk, index: record.index } }
  }
  if (typeof record.thought === 'string') return { type: 'thought', event: { thought: record.thought } }
  if (record.complete === true) return { type: 'complete', event: completionOf(record) }
  if (typeof record.error === 'string') throw errorEventOf(record.error, record)
  // Events the contract may add later are skipped rather than failing old clients.
  return { type: 'ignored' }
}

/** The body's fields, in the contract's order; a field left undefined is not sent. */
const BODY_FIELDS = ['prompt', 'model', 'system', 'history', 'attachments', 'options', 'agent', 'resumable'] as const

function requestBody (request: StreamPromptOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {}
  for (const field of BODY_FIELDS) {
    if (request[field] !== undefined) body[field] = request[field]
  }
  // `resumable: false` is what the gateway does anyway; leaving it out keeps the seed's body.
  if (body.resumable !== true) delete body.resumable
  return body
}

/** The event's number n from its id `<streamId>:<n>`; undefined for an event without such an id. */
function eventNumber (lastEventId: string): number | undefined {
  const colon = lastEventId.lastIndexOf(':')
  if (colon === -1) return undefined
  const n = Number(lastEventId.slice(colon + 1))
  return Number.isInteger(n) && n > 0 ? n : undefined
}

/** A body that broke or ended before its completion or error event: the one failure a resume can mend. */
interface Truncation {
  truncated: StreamError
}

function resumePolicy (resume: StreamPromptOptions['resume']): Required<ResumePolicy> | undefined {
  if (resume === false) return undefined
  return {
    attempts: resume?.attempts ?? DEFAULT_RESUME.attempts,
    baseDelayMs: resume?.baseDelayMs ?? DEFAULT_RESUME.baseDelayMs,
    maxDelayMs: resume?.maxDelayMs ?? DEFAULT_RESUME.maxDelayMs
  }
}

/** Streams one prompt through the gateway. The request starts at once; chunks are buffered until read. */
export function streamPrompt (request: StreamPromptOptions): PromptStream {
  const controller = new AbortController()
  const external = request.signal
  const forwardAbort = (): void => { controller.abort(external === undefined ? undefined : abortReason(external)) }
  if (external?.aborted === true) forwardAbort()
  else external?.addEventListener('abort', forwardAbort, { once: true })

  const chunks: ChunkEvent[] = []
  let settled: Settled | undefined
  let wakeReader: (() => void) | undefined
  const wake = (): void => {
    const resolve = wakeReader
    wakeReader = undefined
    resolve?.()
  }

  let streamId: string | undefined
  /** The last event id read, sent as Last-Event-ID on a resume; '' until the first one. */
  let lastEventId = ''
  let lastEventNumber = 0
  /** Events read so far, whatever their kind: a resume that brings any has made progress. */
  let eventsRead = 0
  let eventsAtLastResume = 0
  let failedTries = 0

  /** Reads one response's events into the chunk queue, until the completion event or a truncation. */
  async function consume (response: EventStreamResponse, aborted: Promise<never>): Promise<CompletionEvent | Truncation> {
    const signal = controller.signal
    const reader = response.body.getReader()
    const parser = new SseParser()
    try {
      for (;;) {
        let read: Awaited<ReturnType<typeof reader.read>>
        try {
          read = await raceAbort(reader.read(), aborted)
        } catch (error) {
          if (signal.aborted) throw abortReason(signal)
          return { truncated: new StreamError('The connection to the gateway broke before the stream completed', { kind: 'truncated', recoverable: true, status: response.status, cause: error }) }
        }
        const events = read.done ? parser.end() : parser.feed(read.value)
        for (const event of events) {
          const n = eventNumber(event.lastEventId)
          if (n !== undefined) {
            // A replay that overlaps what was already read must not repeat a chunk.
            if (n <= lastEventNumber) continue
            lastEventNumber = n
            lastEventId = event.lastEventId
          }
          eventsRead++
          if (event.event !== 'message') continue
          const outcome = classify(parseEventData(event))
          if (outcome.type === 'chunk') {
            chunks.push(outcome.event)
            wake()
          } else if (outcome.type === 'thought') {
            request.onThought?.(outcome.event)
          } else if (outcome.type === 'complete') {
            return outcome.event
          }
        }
        if (read.done) break
      }
    } finally {
      reader.cancel().catch(() => {})
    }
    return { truncated: new StreamError('The stream ended before the completion event', { kind: 'truncated', recoverable: true, status: response.status }) }
  }

  function headersFor (extra: Record<string, string>): Record<string, string> {
    const headers: Record<string, string> = { accept: 'text/event-stream', ...extra }
    if (request.apiKey !== undefined) headers['x-api-key'] = request.apiKey
    return headers
  }

  async function readErrorText (response: Response, aborted: Promise<never>): Promise<string> {
    try {
      return await raceAbort(response.text(), aborted)
    } catch {
      if (controller.signal.aborted) throw abortReason(controller.signal)
      return ''
    }
  }

  function isEventStream (response: Response): response is EventStreamResponse {
    return (response.headers.get('content-type') ?? '').startsWith('text/event-stream') && response.body !== null
  }

  /**
   * One resume request: the event stream to read on, or why this try failed (`retry` when another
   * try may do better). A refusal with a 4xx is final: the gateway no longer has the stream for us.
   */
  async function resumeOnce (id: string, aborted: Promise<never>): Promise<{ response: EventStreamResponse } | { failure: string, retry: boolean, status?: number, body?: unknown, cause?: unknown }> {
    const signal = controller.signal
    const url = resumeUrl(request.baseUrl, id)
    let response: Response
    try {
      response = await raceAbort(fetch(url, { method: 'GET', headers: headersFor(lastEventId === '' ? {} : { 'last-event-id': lastEventId }), signal }), aborted)
    } catch (error) {
      if (signal.aborted) throw abortReason(signal)
      return { failure: `could not reach the gateway at ${url}: ${failureDetail(error)}`, retry: true, cause: error }
    }
    if (!response.ok) {
      const refusal = errorForResponse(response.status, response.headers, await readErrorText(response, aborted))
      return { failure: `HTTP ${response.status}${refusal.message === `HTTP ${response.status}` ? '' : `: ${refusal.message}`}`, retry: response.status >= 500, status: response.status, body: refusal.body }
    }
    if (!isEventStream(response)) {
      await response.body?.cancel().catch(() => {})
      return { failure: `expected an event stream, got HTTP ${response.status} ${response.headers.get('content-type') ?? 'without a content type'}`, retry: true, status: response.status }
    }
    return { response }
  }

  async function run (): Promise<CompletionEvent> {
    const signal = controller.signal
    const aborted = whenAborted(signal)
    const url = streamUrl(request.baseUrl)
    const body = JSON.stringify(requestBody(request))

    let response: Response
    try {
      response = await raceAbort(fetch(url, { method: 'POST', headers: headersFor({ 'content-type': 'application/json' }), body, signal }), aborted)
    } catch (error) {
      if (signal.aborted) throw abortReason(signal)
      throw new ConnectionError(`Could not reach the gateway at ${url}: ${failureDetail(error)}`, { cause: error })
    }

    if (!response.ok) throw errorForResponse(response.status, response.headers, await readErrorText(response, aborted))
    if (!isEventStream(response)) {
      const contentType = response.headers.get('content-type') ?? ''
      await response.body?.cancel().catch(() => {})
      throw new GatewayError(`Expected an event stream, got HTTP ${response.status} ${contentType === '' ? 'without a content type' : contentType}`, { status: response.status })
    }
    streamId = response.headers.get('x-stream-id') ?? undefined
    const policy = resumePolicy(request.resume)

    let stream = response
    for (;;) {
      const outcome = await consume(stream, aborted)
      if (!('truncated' in outcome)) return outcome
      if (streamId === undefined || policy === undefined) throw outcome.truncated
      // Events without ids give no point to resume from: a replay from the start would repeat them.
      if (eventsRead > 0 && lastEventId === '') throw outcome.truncated
      stream = await reconnect(streamId, policy, outcome.truncated, aborted)
    }
  }

  /** Resumes after a cut, trying again while tries in a row bring no event; the next stream to read on. */
  async function reconnect (id: string, policy: Required<ResumePolicy>, cut: StreamError, aborted: Promise<never>): Promise<EventStreamResponse> {
    // Tries only count in a row: a resume that brought events before it broke earned a fresh set.
    if (eventsRead !== eventsAtLastResume) failedTries = 0
    let last: { failure: string, status?: number, body?: unknown, cause?: unknown } = { failure: cut.message, cause: cut }
    while (failedTries < policy.attempts) {
      await pause(Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** failedTries), controller.signal)
      failedTries++
      eventsAtLastResume = eventsRead
      const attempt = await resumeOnce(id, aborted)
      if ('response' in attempt) return attempt.response
      last = attempt
      if (!attempt.retry) break
    }
    throw new StreamError(`The connection to the gateway broke and the stream could not be resumed: ${last.failure}`, {
      kind: 'truncated',
      recoverable: true,
      ...(last.status === undefined ? {} : { status: last.status }),
      ...(last.body === undefined ? {} : { body: last.body }),
      cause: last.cause ?? cut
    })
  }

  const completion = run().then(
    event => {
      settled = { ok: true }
      return event
    },
    (error: unknown) => {
      settled = { ok: false, error }
      throw error
    }
  ).finally(() => {
    external?.removeEventListener('abort', forwardAbort)
    wake()
  })
  // A caller that only iterates must not crash Node with an unhandled rejection of `completion`.
  completion.catch(() => {})

  let iterating = false
  let iterationOver = false

  const iterator: AsyncIterator<ChunkEvent> = {
    async next () {
      for (;;) {
        if (iterationOver) return { done: true, value: undefined }
        if (controller.signal.aborted && settled?.ok !== true) {
          // Whoever aborted wants no more text, not the chunks still buffered.
          iterationOver = true
          throw settled?.ok === false ? settled.error : abortReason(controller.signal)
        }
        const chunk = chunks.shift()
        if (chunk !== undefined) return { done: false, value: chunk }
        if (settled !== undefined) {
          iterationOver = true
          if (settled.ok) return { done: true, value: undefined }
          throw settled.error
        }
        await new Promise<void>(resolve => { wakeReader = resolve })
      }
    },
    async return () {
      iterationOver = true
      // Leaving the loop early means nobody wants the rest: close the connection.
      if (settled === undefined) controller.abort(new DOMException('The consumer stopped reading the stream', 'AbortError'))
      return { done: true, value: undefined }
    }
  }

  return {
    completion,
    abort: (reason?: unknown) => { controller.abort(reason) },
    get streamId () { return streamId },
    [Symbol.asyncIterator] () {
      if (iterating) throw new TypeError('A PromptStream can be iterated only once')
      iterating = true
      return iterator
    }
  }
}
