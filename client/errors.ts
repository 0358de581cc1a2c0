// The gateway's contract errors as classes, so callers branch on `instanceof` rather than on
// status codes and message strings.

/** Base of every error the client raises about the gateway's answer. */
export class GatewayError extends Error {
  override name = 'GatewayError'
  /** HTTP status of the answer, when the gateway answered with one. */
  readonly status: number | undefined
  /** The parsed error body or error event, when there was one. */
  readonly body: unknown

  constructor (message: string, details: { status?: number | undefined, body?: unknown, cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.status = details.status
    this.body = details.body
  }
}

/** 400 (and the other request-shape refusals, 413 and 415): fix the request before retrying. */
export class BadRequestError extends GatewayError {
  override name = 'BadRequestError'
}

/** 401: no API key was sent. */
export class UnauthorizedError extends GatewayError {
  override name = 'UnauthorizedError'
}

/** 403: the API key was not accepted. */
export class ForbiddenError extends GatewayError {
  override name = 'ForbiddenError'
}

/** 429: the caller's rate limit is spent. */
export class RateLimitedError extends GatewayError {
  override name = 'RateLimitedError'
  /** Seconds to wait before retrying, from the `retry-after` header; undefined when it had none. */
  readonly retryAfter: number | undefined

  constructor (message: string, details: { status?: number, body?: unknown, retryAfter?: number | undefined }) {
    super(message, details)
    this.retryAfter = details.retryAfter
  }
}

/** 500 "Failed to start stream": Gemini refused or failed before the first chunk. */
export class StreamStartError extends GatewayError {
  override name = 'StreamStartError'
}

export type StreamErrorKind =
  /** The gateway sent an error event. */
  | 'error-event'
  /** The stream ended, or the connection broke, before a completion event. */
  | 'truncated'
  /** An event that is not one of the contract's. */
  | 'malformed'

/** The stream started, then failed: an error event, a cut connection or an unreadable event. */
export class StreamError extends GatewayError {
  override name = 'StreamError'
  /** Whether the same request may succeed if sent again (the error event's `recoverable`). */
  readonly recoverable: boolean
  readonly kind: StreamErrorKind
  /** Conversation requests: why Gemini cut the answer short (the error event's `finishReason`, e.g. SAFETY). */
  readonly finishReason: string | undefined
  /** The harm categories a safety block named, when the error event lists them. */
  readonly blockedCategories: string[] | undefined

  constructor (message: string, details: {
    kind: StreamErrorKind
    recoverable: boolean
    status?: number
    body?: unknown
    cause?: unknown
    finishReason?: string | undefined
    blockedCategories?: string[] | undefined
  }) {
    super(message, details)
    this.kind = details.kind
    this.recoverable = details.recoverable
    this.finishReason = details.finishReason
    this.blockedCategories = details.blockedCategories
  }
}

/** The gateway could not be reached, or its answer could not be read before the stream started. */
export class ConnectionError extends GatewayError {
  override name = 'ConnectionError'
}

function errorText (body: unknown): { error: string | undefined, message: string | undefined } {
  if (typeof body !== 'object' || body === null) return { error: undefined, message: undefined }
  const { error, message } = body as { error?: unknown, message?: unknown }
  return {
    error: typeof error === 'string' ? error : undefined,
    message: typeof message === 'string' ? message : undefined
  }
}

/** Seconds from a `retry-after` header: delta-seconds or an HTTP date. */
export function parseRetryAfter (header: string | null, now = Date.now()): number | undefined {
  if (header === null) return undefined
  const trimmed = header.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed)
  const date = Date.parse(trimmed)
  if (Number.isNaN(date)) return undefined
  return Math.max(0, Math.ceil((date - now) / 1000))
}

/** The typed error for a non-2xx answer, from its status, headers and (possibly non-JSON) body text. */
export function errorForResponse (status: number, headers: { get: (name: string) => string | null }, bodyText: string): GatewayError {
  let body: unknown = bodyText
  try {
    body = JSON.parse(bodyText)
  } catch {
    // Not JSON (a proxy's HTML page, say): keep the text as the body.
  }
  const { error, message } = errorText(body)
  const text = error === undefined ? `HTTP ${status}` : message === undefined ? error : `${error}: ${message}`
  const details = { status, body }
  switch (status) {
    case 400:
    case 413:
    case 415:
      return new BadRequestError(text, details)
    case 401:
      return new UnauthorizedError(text, details)
    case 403:
      return new ForbiddenError(text, details)
    case 429:
      return new RateLimitedError(text, { ...details, retryAfter: parseRetryAfter(headers.get('retry-after')) })
  }
  if (status === 500 && error === 'Failed to start stream') {
    return new StreamStartError(message ?? error, details)
  }
  return new GatewayError(text, details)
}
