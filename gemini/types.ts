import { ApiError } from '@google/genai'
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
}

const RETRYABLE_STATUSES = new Set([408, 429, 500, 502, 503, 504])

/** An upstream failure with a message that is safe to show a client. */
export class UpstreamError extends Error {
  readonly status: number | undefined
  readonly recoverable: boolean
  readonly aborted: boolean

  constructor (message: string, options: { status?: number | undefined, recoverable: boolean, aborted?: boolean, cause?: unknown }) {
    super(message, { cause: options.cause })
    this.name = 'UpstreamError'
    this.status = options.status
    this.recoverable = options.recoverable
    this.aborted = options.aborted ?? false
  }
}

function messageOfApiError (error: ApiError): string {
  // The SDK puts the JSON error body in `message`, sometimes behind a "got status: X." prefix.
  const json = error.message.slice(error.message.indexOf('{'))
  try {
    const parsed = JSON.parse(json) as { error?: { message?: unknown } }
    if (typeof parsed.error?.message === 'string') return parsed.error.message
  } catch {}
  return `Gemini answered with status ${error.status}`
}

export function toUpstreamError (error: unknown, secret: string): UpstreamError {
  if (error instanceof UpstreamError) return error
  const redact = (text: string): string => secret === '' ? text : text.split(secret).join('[redacted]')
  if (error instanceof ApiError) {
    return new UpstreamError(redact(messageOfApiError(error)), {
      status: error.status,
      recoverable: RETRYABLE_STATUSES.has(error.status),
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
    return new UpstreamError('Connection to Gemini failed', { recoverable: true, cause: error })
  }
  return new UpstreamError('Gemini request failed', { recoverable: false, cause: error })
}
