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
   * Called with each thought summary delta as it arrives (asked for with
   * `options.thinking.includeThoughts`); thoughts never reach the chunks. If it throws, the stream
   * is closed and fails with that error.
   */
  onThought?: ((event: ThoughtEvent) => void) | undefined
  /** Aborting it closes the connection; iteration and `completion` then reject with its reason. */
  signal?: AbortSignal | undefined
}

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
}

type Settled = { ok: true } | { ok: false, error: unknown }

function streamUrl (baseUrl: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/api/stream`
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
const BODY_FIELDS = ['prompt', 'model', 'system', 'history', 'attachments', 'options', 'agent'] as const

function requestBody (request: StreamPromptOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {}
  for (const field of BODY_FIELDS) {
    if (request[field] !== undefined) body[field] = request[field]
  }
  return body
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

  async function run (): Promise<CompletionEvent> {
    const signal = controller.signal
    const aborted = whenAborted(signal)
    const url = streamUrl(request.baseUrl)
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'text/event-stream' }
    if (request.apiKey !== undefined) headers['x-api-key'] = request.apiKey
    const body = JSON.stringify(requestBody(request))

    let response: Response
    try {
      response = await raceAbort(fetch(url, { method: 'POST', headers, body, signal }), aborted)
    } catch (error) {
      if (signal.aborted) throw abortReason(signal)
      throw new ConnectionError(`Could not reach the gateway at ${url}: ${failureDetail(error)}`, { cause: error })
    }

    if (!response.ok) {
      let text = ''
      try {
        text = await raceAbort(response.text(), aborted)
      } catch {
        if (signal.aborted) throw abortReason(signal)
      }
      throw errorForResponse(response.status, response.headers, text)
    }
    const contentType = response.headers.get('content-type') ?? ''
    if (!contentType.startsWith('text/event-stream') || response.body === null) {
      await response.body?.cancel().catch(() => {})
      throw new GatewayError(`Expected an event stream, got HTTP ${response.status} ${contentType === '' ? 'without a content type' : contentType}`, { status: response.status })
    }

    const reader = response.body.getReader()
    const parser = new SseParser()
    const release = (): void => { reader.cancel().catch(() => {}) }
    try {
      for (;;) {
        let read: Awaited<ReturnType<typeof reader.read>>
        try {
          read = await raceAbort(reader.read(), aborted)
        } catch (error) {
          if (signal.aborted) throw abortReason(signal)
          throw new StreamError('The connection to the gateway broke before the stream completed', { kind: 'truncated', recoverable: true, status: response.status, cause: error })
        }
        const events = read.done ? parser.end() : parser.feed(read.value)
        for (const event of events) {
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
      release()
    }
    throw new StreamError('The stream ended before the completion event', { kind: 'truncated', recoverable: true, status: response.status })
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
    [Symbol.asyncIterator] () {
      if (iterating) throw new TypeError('A PromptStream can be iterated only once')
      iterating = true
      return iterator
    }
  }
}
