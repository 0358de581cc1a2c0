import type { GenerationOptions, Usage } from '../schemas/stream.js'

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

  constructor (message: string, options: {
    status?: number | undefined
    recoverable: boolean
    retryable?: boolean
    retryAfterMs?: number | undefined
    aborted?: boolean
    cause?: unknown
  }) {
    super(message, { cause: options.cause })
    this.name = 'UpstreamError'
    this.status = options.status
    this.recoverable = options.recoverable
    this.retryable = options.retryable ?? false
    this.retryAfterMs = options.retryAfterMs
    this.aborted = options.aborted ?? false
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

interface GoogleErrorBody {
  error?: { message?: unknown, details?: unknown }
}

/** Gemini says how long to back off in a google.rpc.RetryInfo detail, e.g. `"retryDelay": "37s"`. */
export function retryDelayOf (body: GoogleErrorBody): number | undefined {
  if (!Array.isArray(body.error?.details)) return undefined
  for (const detail of body.error.details as Array<Record<string, unknown>>) {
    const delay = detail?.['@type'] === 'type.googleapis.com/google.rpc.RetryInfo' ? detail.retryDelay : undefined
    const seconds = typeof delay === 'string' && /^\d+(\.\d+)?s$/.test(delay) ? Number(delay.slice(0, -1)) : undefined
    if (seconds !== undefined) return seconds * 1000
  }
  return undefined
}

function parseApiErrorBody (error: ApiErrorShape): GoogleErrorBody {
  // The SDK puts the JSON error body in `message`, sometimes behind a "got status: X." prefix.
  try {
    const parsed = JSON.parse(error.message.slice(error.message.indexOf('{'))) as unknown
    return typeof parsed === 'object' && parsed !== null ? parsed as GoogleErrorBody : {}
  } catch {
    return {}
  }
}

export function toUpstreamError (error: unknown, secret: string): UpstreamError {
  if (error instanceof UpstreamError) return error
  const redact = (text: string): string => secret === '' ? text : text.split(secret).join('[redacted]')
  if (isApiError(error)) {
    const body = parseApiErrorBody(error)
    const message = typeof body.error?.message === 'string' ? body.error.message : `Gemini answered with status ${error.status}`
    const transient = RETRYABLE_STATUSES.has(error.status)
    return new UpstreamError(redact(message), {
      status: error.status,
      recoverable: transient,
      retryable: transient,
      retryAfterMs: retryDelayOf(body) ?? (error instanceof GeminiApiError ? error.retryAfterMs : undefined),
      cause: error
    })
  }
  if (error instanceof Error && error.name === 'AbortError') {
    return new UpstreamError('Gemini request was aborted', { recoverable: true, aborted: true, cause: error })
  }
  if (error instanceof SyntaxError || (error instanceof Error && error.message.startsWith('Incomplete JSON segment'))) {
    return new UpstreamError('Gemini sent a malformed stream', { recoverable: true, cause: error })
  }
  if (error instanceof TypeError) {
    // undici's "fetch failed" (before headers) and "terminated" (mid-stream).
    return new UpstreamError('Connection to Gemini failed', { recoverable: true, retryable: true, cause: error })
  }
  return new UpstreamError('Gemini request failed', { recoverable: false, cause: error })
}
