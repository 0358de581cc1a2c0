// Upstream failures, classified by the code that saw them: the transport (by undici's and the
// system's error codes), the HTTP status, the event parser. What a failure means for the caller
// (may it retry, may the gateway retry, which metric label) follows from its code alone.

import { capped, keyRedactor, redactedJson, RETRY_INFO, type GoogleErrorBody } from './upstream-text.js'

export type UpstreamErrorCode =
  /** The connection could not be made, or dropped before the answer ended. */
  | 'network'
  /** The upstream took too long to answer (its own transport deadline, not the relay's timeouts). */
  | 'timeout'
  /** The gateway itself aborted the call. */
  | 'aborted'
  /** Gemini answered with an HTTP error status (4xx, 5xx), or an error object inside its stream. */
  | 'http_status'
  /** An answer the protocol does not allow: bad JSON, an event of the wrong shape, an unexpected status. */
  | 'malformed'
  /** More than the gateway holds for one stream (one event, or the whole answer). */
  | 'too_large'
  /** Refused before it was sent, such as a model name no Gemini client sends. */
  | 'invalid_request'
  /** The gateway's own process ran out of file descriptors: never Gemini's fault. */
  | 'out_of_descriptors'

const RETRYABLE_STATUSES = new Set([408, 429, 500, 502, 503, 504])

/** Codes whose failure may go away on its own, so a client may send the same request again. */
const RECOVERABLE: Record<UpstreamErrorCode, boolean> = {
  network: true,
  timeout: true,
  aborted: true,
  http_status: false,
  malformed: true,
  too_large: false,
  invalid_request: false,
  out_of_descriptors: true
}

export interface UpstreamErrorDetails {
  status?: number | undefined
  retryAfterMs?: number | undefined
  /** Overrides what the code says, for a failure of a kind that does not go away by itself. */
  recoverable?: boolean
  /** Overrides what the code says: a key pool's failure of one key, which another key may not share. */
  retryable?: boolean
  /** Google's error body, already key-redacted. */
  googleError?: GoogleErrorBody | undefined
  cause?: unknown
}

/** An upstream failure with a message that is safe to show a client. */
export class UpstreamError extends Error {
  override readonly name = 'UpstreamError'
  readonly code: UpstreamErrorCode
  /** The HTTP status Gemini answered with, for `http_status` only. */
  readonly status: number | undefined
  /** The same request may succeed later, so a client may retry it. */
  readonly recoverable: boolean
  /** The gateway itself may retry it, as long as nothing reached the client yet. */
  readonly retryable: boolean
  /** How long Gemini asked us to wait before retrying, when it said. */
  readonly retryAfterMs: number | undefined
  /**
   * For `http_status` (before the stream or inside it): Google's error body as it came, key-redacted, so that the
   * passthrough can answer with Gemini's own body and status. Undefined when the body was not Google's shape.
   */
  readonly googleError: GoogleErrorBody | undefined

  constructor (code: UpstreamErrorCode, message: string, details: UpstreamErrorDetails = {}) {
    super(message, { cause: details.cause })
    this.code = code
    this.status = details.status
    const transient = code === 'network' || code === 'timeout' || (code === 'http_status' && RETRYABLE_STATUSES.has(details.status ?? 0))
    this.recoverable = details.recoverable ?? (code === 'http_status' ? transient : RECOVERABLE[code])
    this.retryable = details.retryable ?? transient
    this.retryAfterMs = details.retryAfterMs
    this.googleError = details.googleError
  }

  /** The `status` label of amrikyy_upstream_errors_total. */
  get metricLabel (): string {
    return this.code === 'http_status' ? String(this.status) : this.code
  }
}

/** Gemini says how long to back off in a google.rpc.RetryInfo detail, e.g. `"retryDelay": "37s"`. */
export function retryDelayOf (body: GoogleErrorBody | undefined): number | undefined {
  for (const detail of body?.error.details ?? []) {
    if ((detail as { '@type'?: unknown } | null)?.['@type'] !== RETRY_INFO) continue
    const delay = (detail as { retryDelay?: unknown }).retryDelay
    const seconds = typeof delay === 'string' && /^\d+(\.\d+)?s$/.test(delay) ? Number(delay.slice(0, -1)) : undefined
    if (seconds !== undefined) return seconds * 1000
  }
  return undefined
}

/**
 * Gemini's error status. Only Google's own error shape is believed for the message: a proxy's page or any
 * other body may name internal hosts.
 */
export function httpStatusError (status: number, body: GoogleErrorBody | undefined, secret: string, retryAfterHeaderMs?: number, cause?: unknown): UpstreamError {
  const redact = keyRedactor(secret)
  const message = body === undefined ? `Gemini answered with status ${status}` : capped(redact(body.error.message))
  const googleError = body === undefined ? undefined : redactedJson(body, redact)
  return new UpstreamError('http_status', message, { status, retryAfterMs: retryDelayOf(body) ?? retryAfterHeaderMs, googleError, cause })
}

export function malformedStream (cause?: unknown): UpstreamError {
  return new UpstreamError('malformed', 'Gemini sent a malformed stream', { cause })
}

/** An answer that is neither success nor an error status (a 1xx or 3xx the client cannot follow). */
export function unexpectedAnswer (cause?: unknown): UpstreamError {
  return new UpstreamError('malformed', 'Gemini request failed', { recoverable: false, cause })
}

export function invalidRequest (cause?: unknown): UpstreamError {
  return new UpstreamError('invalid_request', 'Gemini request failed', { cause })
}

export function abortedCall (cause?: unknown): UpstreamError {
  return new UpstreamError('aborted', 'Gemini request was aborted', { cause })
}

export function tooLarge (message: string): UpstreamError {
  return new UpstreamError('too_large', message)
}

/** Codes of errors that mean our own call was wrong: a bug to report, not a network failure to retry. */
const PROGRAMMING_ERROR_CODES = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE', 'ERR_INVALID_URL'])
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

function codesOf (error: unknown): string[] {
  const codes: string[] = []
  for (let current = error, depth = 0; current instanceof Error && depth < 8; current = current.cause, depth++) {
    const code = (current as NodeJS.ErrnoException).code
    if (typeof code === 'string') codes.push(code)
  }
  return codes
}

/**
 * A failure thrown by the HTTP transport while sending a request or reading its answer. Everything the
 * transport throws is a network failure except a call it refused as wrong, which is rethrown as the bug it is.
 */
export function transportError (error: unknown, signal: AbortSignal): UpstreamError {
  if (signal.aborted) return abortedCall(error)
  const codes = codesOf(error)
  if (codes.some(code => PROGRAMMING_ERROR_CODES.has(code))) throw error
  if (codes.some(code => code === 'EMFILE' || code === 'ENFILE')) {
    return new UpstreamError('out_of_descriptors', 'The gateway is out of file descriptors; retry shortly', { cause: error })
  }
  if (codes.some(code => TIMEOUT_CODES.has(code))) return new UpstreamError('timeout', 'Gemini did not answer in time', { cause: error })
  return new UpstreamError('network', 'Connection to Gemini failed', { cause: error })
}
