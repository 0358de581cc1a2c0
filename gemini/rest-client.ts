// A direct Gemini REST streaming client: the same requests and the same outcomes as the
// @google/genai client (gemini/sdk-client.ts), without the SDK's per-read web `Response` objects.
// It speaks the wire protocol of /work/shared/gemini-wire-protocol.md over an undici keep-alive
// pool; every failure is shaped by the same `toUpstreamError` the SDK client uses, fed the same
// kind of error the SDK would have thrown, so the two clients cannot drift apart in what they report.

import { Agent, type Dispatcher } from 'undici'
import type { GenerateContentResponse } from '@google/genai'
import { toDelta } from './delta.js'
import { readSmallBody, googleErrorOf, isJsonContentType } from './upstream-text.js'
import { DEFAULT_MAX_EVENT_CHARS, GeminiApiError, UpstreamTooLargeError, toUpstreamError, type GeminiClient, type GeminiClientOptions, type GenerationDelta, type GenerationRequest } from './types.js'

export const DEFAULT_GEMINI_BASE_URL = 'https://generativelanguage.googleapis.com'
/** @google/genai 3.x's default API version for the Gemini Developer API (2.x used v1beta). */
export const DEFAULT_API_VERSION = 'v1'

const CLIENT_LABEL = `amrikyy-gateway-rest/0.1.0 gl-node/${process.version}`

export interface RestGeminiClient extends GeminiClient {
  /** Closes the connection pool. */
  close: () => Promise<void>
}

/**
 * Pieces an SSE body into events the way the SDK does: at the earliest of `\n\n`, `\r\r`, `\r\n\r\n`.
 * Linear in the text pushed: each push searches only its own text (plus the last three characters
 * before it, where a delimiter cut by a read begins), and an unfinished event is kept as pieces,
 * joined once when its delimiter comes, so a huge event is never copied or searched again per read.
 */
export class SseSplitter {
  private pending: string[] = []
  private pendingChars = 0
  /** The last (at most 3) characters of the pending text. */
  private tail = ''
  private scanned = 0
  private over = false

  constructor (private readonly maxEventChars = Infinity) {}

  /** Characters searched for a delimiter so far: at most the characters pushed plus 3 a push. */
  get scannedChars (): number {
    return this.scanned
  }

  /** True once an event grew past `maxEventChars`; nothing more is split after that. */
  get overLimit (): boolean {
    return this.over
  }

  /** Adds decoded text; returns the payloads of the `data:` events it completed, trimmed. */
  push (text: string): string[] {
    const payloads: string[] = []
    if (this.over) return payloads
    const carry = this.tail
    const window = carry === '' ? text : carry + text
    this.scanned += window.length
    let from = 0
    let first = true
    for (;;) {
      const end = earliestDelimiter(window, from)
      if (end === undefined) break
      let event: string
      if (first) {
        // The first event began in earlier reads; its delimiter may begin inside the carried characters.
        const head = this.pending.join('')
        event = end.index >= carry.length ? head + text.slice(0, end.index - carry.length) : head.slice(0, head.length - carry.length + end.index)
        this.pending = []
        this.pendingChars = 0
        first = false
      } else {
        event = window.slice(from, end.index)
      }
      if (event.length > this.maxEventChars) {
        this.over = true
        return payloads
      }
      from = end.index + end.length
      const trimmed = event.trim()
      // Comments, `event:` blocks and anything else that does not start with data: are dropped, as by the SDK.
      if (trimmed.startsWith('data:')) payloads.push(trimmed.slice(5).trim())
    }
    const rest = first ? text : window.slice(from)
    if (rest !== '') {
      this.pending.push(rest)
      this.pendingChars += rest.length
    }
    this.tail = first ? window.slice(-3) : rest.slice(-3)
    if (this.pendingChars > this.maxEventChars) {
      this.over = true
      this.pending = []
    }
    return payloads
  }

  /** True when text that is not whitespace waits for a delimiter that will never come. */
  get hasUnterminatedEvent (): boolean {
    return this.pending.some(piece => /\S/.test(piece))
  }

  /** The text of the unfinished event, as received. */
  unterminated (): string {
    return this.pending.join('')
  }
}

// One native scan finds the earliest delimiter; at any one position at most one of them can match.
const DELIMITER = /\r\n\r\n|\n\n|\r\r/g

function earliestDelimiter (text: string, from: number): { index: number, length: number } | undefined {
  DELIMITER.lastIndex = from
  const match = DELIMITER.exec(text)
  return match === null ? undefined : { index: match.index, length: match[0].length }
}

/** The failure for an event past the cap, worded for whoever reads the stream's error. */
export function eventTooLarge (maxEventChars: number): UpstreamTooLargeError {
  return new UpstreamTooLargeError(`Gemini sent an event larger than ${maxEventChars} characters`)
}

/** The ApiError the SDK throws for an error object inside a 200 stream, or undefined when it is not one. */
function streamErrorOf (value: unknown): GeminiApiError | undefined {
  if (value === null || typeof value !== 'object' || !('error' in value)) return undefined
  const error = (value as { error: unknown }).error
  if (error === null || typeof error !== 'object') return undefined
  const { code, status } = error as { code?: unknown, status?: unknown }
  // Like the SDK: an error object without a numeric 4xx/5xx code is an (empty) answer, not a failure.
  if (typeof code !== 'number' || code < 400 || code >= 600) return undefined
  return new GeminiApiError(`got status: ${String(status)}. ${JSON.stringify(value)}`, code)
}

/** Retry-After in seconds or as an HTTP date, in milliseconds from now; undefined when absent or unreadable. */
export function retryAfterMs (header: string | string[] | undefined, now = Date.now()): number | undefined {
  const value = Array.isArray(header) ? header[0] : header
  if (value === undefined || value.trim() === '') return undefined
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

function abortError (): Error {
  return new DOMException('This operation was aborted', 'AbortError')
}

/** The model path segment, with the SDK's `models/` prefix rule and its client-side name checks. */
export function modelPath (model: string): string {
  if (model === '') throw new Error('model is required and must be a string')
  if (model.includes('..') || model.includes('?') || model.includes('&')) throw new Error('invalid model parameter')
  return model.startsWith('models/') || model.startsWith('tunedModels/') ? model : `models/${model}`
}

/** The request body the SDK sends for a text prompt with a config object (generationConfig always present). */
export function generateContentBody (request: GenerationRequest): string {
  const generationConfig: Record<string, number> = {}
  const options = request.options ?? {}
  // The SDK's field order; unset fields are left out.
  if (options.temperature != null) generationConfig.temperature = options.temperature
  if (options.topP != null) generationConfig.topP = options.topP
  if (options.topK != null) generationConfig.topK = options.topK
  if (options.maxOutputTokens != null) generationConfig.maxOutputTokens = options.maxOutputTokens
  return JSON.stringify({ contents: [{ parts: [{ text: request.prompt }], role: 'user' }], generationConfig })
}

export function createRestGeminiClient (options: GeminiClientOptions): RestGeminiClient {
  const base = new URL(options.baseUrl ?? DEFAULT_GEMINI_BASE_URL)
  const basePath = base.pathname.endsWith('/') ? base.pathname.slice(0, -1) : base.pathname
  const apiVersion = options.apiVersion ?? DEFAULT_API_VERSION
  const prefix = apiVersion === '' ? basePath : `${basePath}/${apiVersion}`
  const origin = base.origin
  // Like the SDK's dispatcher: no client-side timeouts; the server bounds a request.
  const pool = new Agent({ headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 4_000 })
  const headers = {
    'content-type': 'application/json',
    'user-agent': CLIENT_LABEL,
    'x-goog-api-client': CLIENT_LABEL,
    'x-goog-api-key': options.apiKey
  }
  const fail = (error: unknown): Error => toUpstreamError(error, options.apiKey)
  const maxEventChars = options.maxEventChars ?? DEFAULT_MAX_EVENT_CHARS
  const maxErrorBodyBytes = options.maxErrorBodyBytes

  /** Sends a POST and returns the 2xx response; any other answer becomes the error the SDK would report. */
  async function post (path: string, body: string, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    if (signal.aborted) throw fail(abortError())
    let response: Dispatcher.ResponseData
    try {
      response = await pool.request({ origin, path, method: 'POST', headers, body, signal })
    } catch (error) {
      throw fail(signal.aborted ? abortError() : new TypeError('fetch failed', { cause: error }))
    }
    if (response.statusCode >= 200 && response.statusCode < 300) return response
    let text: string
    try {
      text = await readSmallBody(response.body, maxErrorBodyBytes)
    } catch (error) {
      throw fail(signal.aborted ? abortError() : new TypeError('terminated', { cause: error }))
    } finally {
      // Past the cap the rest is not read: the connection goes, rather than draining a runaway body.
      response.body.destroy()
    }
    // Only Google's own error shape is kept: whatever else the body says stays here.
    const googleError = isJsonContentType(response.headers['content-type']) ? googleErrorOf(text) : undefined
    const message = JSON.stringify(googleError ?? {})
    throw fail(response.statusCode >= 400 && response.statusCode < 600
      ? new GeminiApiError(message, response.statusCode, retryAfterMs(response.headers['retry-after']))
      : new Error(message))
  }

  return {
    async streamGenerate (request, signal) {
      let path: string
      try {
        path = `${prefix}/${modelPath(request.model)}:streamGenerateContent?alt=sse`
      } catch (error) {
        throw fail(error)
      }
      const response = await post(path, generateContentBody(request), signal)
      const reads = response.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>
      const decoder = new TextDecoder('utf-8')
      const splitter = new SseSplitter(maxEventChars)
      const ready: GenerationDelta[] = []
      let failure: Error | undefined
      let ended = false

      /** Reads until at least one delta is ready, the body ended, or a failure is due after the ready deltas. */
      const fill = async (): Promise<void> => {
        while (ready.length === 0 && failure === undefined && !ended) {
          let read: IteratorResult<Buffer>
          try {
            read = await reads.next()
          } catch (error) {
            failure = fail(signal.aborted ? abortError() : new TypeError('terminated', { cause: error }))
            return
          }
          if (read.done === true) {
            ended = true
            if (splitter.hasUnterminatedEvent) failure = fail(new Error('Incomplete JSON segment at the end'))
            return
          }
          const text = decoder.decode(read.value, { stream: true })
          // The SDK also checks each network read as a whole for a bare JSON error object.
          if (text.trimStart().startsWith('{')) {
            try {
              const whole = streamErrorOf(JSON.parse(text))
              if (whole !== undefined) { failure = fail(whole); return }
            } catch {}
          }
          for (const payload of splitter.push(text)) {
            let value: unknown
            try {
              value = JSON.parse(payload)
            } catch (error) {
              failure = fail(error)
              break
            }
            const streamError = streamErrorOf(value)
            if (streamError !== undefined) { failure = fail(streamError); break }
            ready.push(toDelta((value ?? {}) as GenerateContentResponse))
          }
          if (failure === undefined && splitter.overLimit) failure = fail(eventTooLarge(maxEventChars))
        }
      }

      return {
        async next (): Promise<IteratorResult<GenerationDelta>> {
          await fill()
          const delta = ready.shift()
          if (delta !== undefined) return { done: false, value: delta }
          if (failure !== undefined) {
            // Like the SDK, a failed stream lets go of its connection.
            response.body.destroy()
            throw failure
          }
          return { done: true, value: undefined }
        },
        async return (): Promise<IteratorResult<GenerationDelta>> {
          response.body.destroy()
          return { done: true, value: undefined }
        }
      }
    },

    async countTokens (model, text, signal) {
      let path: string
      try {
        path = `${prefix}/${modelPath(model)}:countTokens`
      } catch (error) {
        throw fail(error)
      }
      const response = await post(path, JSON.stringify({ contents: [{ parts: [{ text }], role: 'user' }] }), signal)
      let answer: string
      try {
        answer = await readSmallBody(response.body, maxErrorBodyBytes)
      } catch (error) {
        throw fail(signal.aborted ? abortError() : new TypeError('terminated', { cause: error }))
      } finally {
        response.body.destroy()
      }
      let result: unknown
      try {
        result = JSON.parse(answer)
      } catch (error) {
        throw fail(error)
      }
      const totalTokens = typeof result === 'object' && result !== null && 'totalTokens' in result ? result.totalTokens : undefined
      return typeof totalTokens === 'number' ? totalTokens : 0
    },

    async close () {
      await pool.close()
    }
  }
}
