import type { GenerationOptions, Usage } from '../schemas/stream.js'
import { capped, googleErrorOf, keyRedactor, type GoogleErrorBody } from './upstream-text.js'

export interface GenerationRequest {
  model: string
  prompt: string
  options?: GenerationOptions | undefined
}

/** One upstream event, reduced to what the gateway forwards. */
export interface GenerationDelta {
  text: string
  usage?: Usage | undefined
  finishReason?: string | undefined
  blockReason?: string | undefined
}

export interface GeminiClient {
  /** Resolves once the upstream accepted the request; rejects with UpstreamError otherwise. */
  streamGenerate: (request: GenerationRequest, signal: AbortSignal) => Promise<AsyncIterator<GenerationDelta>>
  countTokens: (model: string, text: string, signal: AbortSignal) => Promise<number>
}

export interface GeminiClientOptions {
  apiKey: string
  /** Any Gemini-compatible endpoint, such as the bundled emulator. */
  baseUrl?: string | undefined
  apiVersion?: string | undefined
  /**
   * Which client speaks to Gemini: `sdk` (the @google/genai reference client) or `rest` (the direct
   * REST streaming client, proven equivalent by test/gemini-rest-client.test.ts; about 3.5x less
   * CPU per stream, see bench/results). Default `rest`.
   */
  client?: 'sdk' | 'rest' | undefined
  /** Characters one upstream SSE event may have before the stream is refused as too large. Default 8 Mi. */
  maxEventChars?: number | undefined
  /** Bytes of an upstream error body that are read; the rest is never read. Default 64 KiB. */
  maxErrorBodyBytes?: number | undefined
}

/** Far above any real event: Gemini's largest ones carry a generated image inline, a few MiB of base64. */
export const DEFAULT_MAX_EVENT_CHARS = 8 * 1024 * 1024

/** Upstream sent more than the gateway holds for one stream (one event, or the whole answer). */
export class UpstreamTooLargeError extends Error {
  override name = 'UpstreamTooLargeError'
}

const RETRYABLE_STATUSES = new Set([408, 429, 500, 502, 503, 504])

/** An upstream failure with a message that is safe to show a client. */
export class UpstreamError extends Error {
  readonly status: number | undefined
  /** The same request may succeed later, so a client may retry it. */
  readonly recoverable: boolean
  /** The gateway itself may retry it, as long as nothing reached the client yet. */
  readonly retryable: boolean
  /** How long Gemini asked us to wait before retrying, when it said. */
  readonly retryAfterMs: number | undefined
  readonly aborted: boolean
  /** Refused for its size: counted as `too_large`, never retried. */
  readonly tooLarge: boolean
  /** The gateway's own process failed (out of file descriptors), not Gemini: never an upstream error. */
  readonly local: boolean

  constructor (message: string, options: {
    status?: number | undefined
    recoverable: boolean
    retryable?: boolean
    retryAfterMs?: number | undefined
    aborted?: boolean
    tooLarge?: boolean
    local?: boolean
    cause?: unknown
  }) {
    super(message, { cause: options.cause })
    this.name = 'UpstreamError'
    this.status = options.status
    this.recoverable = options.recoverable
    this.retryable = options.retryable ?? false
    this.retryAfterMs = options.retryAfterMs
    this.aborted = options.aborted ?? false
    this.tooLarge = options.tooLarge ?? false
    this.local = options.local ?? false
  }

  /** The `status` label of amrikyy_upstream_errors_total. */
  get metricLabel (): string {
    return this.tooLarge ? 'too_large' : String(this.status ?? 'network')
  }
}

/** What the SDK's ApiError carries: an HTTP status, and the JSON error body as the message. */
export interface ApiErrorShape extends Error {
  status: number
}

/**
 * Recognises the SDK's ApiError by its shape rather than its class, so that the REST client can
 * raise the same error without loading the SDK at all.
 */
export function isApiError (error: unknown): error is ApiErrorShape {
  return error instanceof Error && error.name === 'ApiError' && typeof (error as Partial<ApiErrorShape>).status === 'number'
}

/** The REST client's twin of the SDK's ApiError: same name, status and message format. */
export class GeminiApiError extends Error implements ApiErrorShape {
  override name = 'ApiError'
  /** From the response's Retry-After header, which the SDK never exposes. */
  constructor (message: string, readonly status: number, readonly retryAfterMs?: number) {
    super(message)
  }
}

/** Gemini says how long to back off in a google.rpc.RetryInfo detail, e.g. `"retryDelay": "37s"`. */
export function retryDelayOf (body: GoogleErrorBody | undefined): number | undefined {
  for (const detail of body?.error.details ?? []) {
    const delay = (detail as { retryDelay?: unknown }).retryDelay
    const seconds = typeof delay === 'string' && /^\d+(\.\d+)?s$/.test(delay) ? Number(delay.slice(0, -1)) : undefined
    if (seconds !== undefined) return seconds * 1000
  }
  return undefined
}

/** The SDK puts the JSON error body in `message`, sometimes behind a "got status: X." prefix. */
function parseApiErrorBody (error: ApiErrorShape): GoogleErrorBody | undefined {
  const start = error.message.indexOf('{')
  return start === -1 ? undefined : googleErrorOf(error.message.slice(start))
}

/** EMFILE or ENFILE anywhere in the cause chain: opening the upstream socket failed in this process. */
function outOfDescriptors (error: unknown): boolean {
  for (let current = error, depth = 0; current instanceof Error && depth < 8; current = current.cause, depth++) {
    const code = (current as NodeJS.ErrnoException).code
    if (code === 'EMFILE' || code === 'ENFILE') return true
  }
  return false
}

export function toUpstreamError (error: unknown, secret: string): UpstreamError {
  if (error instanceof UpstreamError) return error
  if (isApiError(error)) {
    const body = parseApiErrorBody(error)
    // Only Google's own shape is believed: a proxy's page or any other body may name internal hosts.
    const message = body === undefined ? `Gemini answered with status ${error.status}` : capped(keyRedactor(secret)(body.error.message))
    const transient = RETRYABLE_STATUSES.has(error.status)
    return new UpstreamError(message, {
      status: error.status,
      recoverable: transient,
      retryable: transient,
      retryAfterMs: retryDelayOf(body) ?? (error instanceof GeminiApiError ? error.retryAfterMs : undefined),
      cause: error
    })
  }
  if (error instanceof UpstreamTooLargeError) {
    return new UpstreamError(error.message, { recoverable: false, tooLarge: true, cause: error })
  }
  if (error instanceof Error && error.name === 'AbortError') {
    return new UpstreamError('Gemini request was aborted', { recoverable: true, aborted: true, cause: error })
  }
  if (error instanceof SyntaxError || (error instanceof Error && error.message.startsWith('Incomplete JSON segment'))) {
    return new UpstreamError('Gemini sent a malformed stream', { recoverable: true, cause: error })
  }
  if (outOfDescriptors(error)) {
    return new UpstreamError('The gateway is out of file descriptors; retry shortly', { recoverable: true, local: true, cause: error })
  }
  if (error instanceof TypeError) {
    // undici's "fetch failed" (before headers) and "terminated" (mid-stream).
    return new UpstreamError('Connection to Gemini failed', { recoverable: true, retryable: true, cause: error })
  }
  return new UpstreamError('Gemini request failed', { recoverable: false, cause: error })
}
