// Every refusal of the gateway's routes, defined once: its code, HTTP status and the contract's body.
// Hooks and handlers throw them, the error handler sends them, the rate limiter builds its 429 from
// here, and the OpenAPI document takes its examples from here, so none of them can drift apart.

import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyReply } from 'fastify'
import { Type, type Static } from 'typebox'

export const ErrorBody = Type.Object({
  error: Type.String(),
  message: Type.Optional(Type.String())
}, { description: 'Every non-2xx answer of the gateway' })
export type ErrorBody = Static<typeof ErrorBody>

export const PROMPT_REQUIRED = 'Prompt is required'
export const MODEL_NAME_RULE = 'model must be a Gemini model name: up to 128 letters, digits, ".", "_" or "-", optionally after "models/", without ".."'
/** The 400 for attachment data that is not base64; `field` is as the validator names it (`attachments.0.data`). */
export const attachmentDataRule = (field: string): string => `${field} must be base64: the standard alphabet (A-Z, a-z, 0-9, + and /), padded with = to a multiple of 4 characters`
export const SHUTTING_DOWN_MESSAGE = 'The gateway is shutting down; retry the request'

/** A refusal the gateway answers with; thrown from a hook or handler, the error handler sends its body. */
export class Refusal extends Error {
  override name = 'Refusal'
  constructor (
    readonly code: string,
    readonly statusCode: number,
    readonly body: ErrorBody,
    readonly headers: OutgoingHttpHeaders = {},
    cause?: unknown,
    /** What the other APIs' error bodies say, where the contract's body is kept short and fixed. */
    readonly detail?: string
  ) {
    super(body.message ?? body.error, { cause })
  }

  /** Answers with this refusal directly, for hooks that must not depend on the host's error handler. */
  async sendWith (reply: FastifyReply): Promise<FastifyReply> {
    return await reply.code(this.statusCode).headers(this.headers).send(this.body)
  }
}

export const refusals = {
  /** The body does not match the schema; `message` names the field. */
  invalidBody: (message: string) => new Refusal('AMRIKYY_INVALID_BODY', 400, { error: message }),
  conversationTooLong: (maxChars: number) => new Refusal('AMRIKYY_CONVERSATION_TOO_LONG', 400, { error: `system and history may hold at most ${maxChars} characters together` }),
  promptRequired: () => new Refusal('AMRIKYY_PROMPT_REQUIRED', 400, { error: PROMPT_REQUIRED }),
  malformedJson: () => new Refusal('AMRIKYY_MALFORMED_JSON', 400, { error: 'Malformed JSON in request body' }),
  forbiddenField: (field: string) => new Refusal('AMRIKYY_FORBIDDEN_FIELD', 400, { error: `Forbidden field in request body: ${field}` }),
  missingKey: () => new Refusal('AMRIKYY_API_KEY_MISSING', 401, { error: 'Unauthorized: API key is missing.' }),
  invalidKey: () => new Refusal('AMRIKYY_API_KEY_INVALID', 403, { error: 'Forbidden: Invalid API key.' }),
  /** A known key past its policy's `expiresAt`. */
  expiredKey: () => new Refusal('AMRIKYY_API_KEY_EXPIRED', 403, { error: 'Forbidden: API key expired.' }),
  /** A known key its policy marks `disabled`. */
  disabledKey: () => new Refusal('AMRIKYY_API_KEY_DISABLED', 403, { error: 'Forbidden: API key disabled.' }),
  /** The attachments' decoded bytes together are over the configured cap. */
  attachmentsTooLarge: (maxBytes: number) => new Refusal('AMRIKYY_ATTACHMENTS_TOO_LARGE', 413, { error: `attachments may hold at most ${maxBytes} bytes together (decoded)` }),
  bodyTooLarge: () => new Refusal('AMRIKYY_BODY_TOO_LARGE', 413, { error: 'Request body is too large' }),
  notJson: () => new Refusal('AMRIKYY_NOT_JSON', 415, { error: 'Unsupported Media Type: send the body as application/json' }),
  notUtf8: () => new Refusal('AMRIKYY_NOT_UTF8', 415, { error: 'Unsupported Media Type: send the body as application/json in UTF-8' }),
  tooManyRequests: () => new Refusal('AMRIKYY_TOO_MANY_REQUESTS', 429, {
    error: 'Too Many Requests',
    message: 'You have exceeded the request limit. Please try again later.'
  }),
  /** A key's token budget has no room for the stream; /api/stream keeps the contract's 429 body. */
  tokenBudgetExceeded: (budget: 'tokensPerMinute' | 'tokensPerDay', limit: number, headers: OutgoingHttpHeaders) => new Refusal('AMRIKYY_TOKEN_BUDGET_EXCEEDED', 429, {
    error: 'Too Many Requests',
    message: 'You have exceeded the request limit. Please try again later.'
  }, headers, undefined, `Token budget exceeded: this API key may use ${limit} tokens ${budget === 'tokensPerMinute' ? 'per minute' : 'per day (UTC)'}; retry after ${String(headers['retry-after'])} s`),
  /** A key's usdPerDay has no room for the stream; /api/stream keeps the contract's 429 body. */
  spendingLimitExceeded: (usdPerDay: number, headers: OutgoingHttpHeaders) => new Refusal('AMRIKYY_SPENDING_LIMIT_EXCEEDED', 429, {
    error: 'Too Many Requests',
    message: 'You have exceeded the request limit. Please try again later.'
  }, headers, undefined, `Spending limit exceeded: this API key may spend $${usdPerDay} per day (UTC); retry after ${String(headers['retry-after'])} s`),
  /** A key with a spending limit asks for a model the price table does not price. */
  unpricedModel: (model: string) => new Refusal('AMRIKYY_UNPRICED_MODEL', 400, { error: `No price is known for model ${model}, and this API key has a spending limit (usdPerDay)` }),
  /** A key's maxConcurrentStreams are all open. */
  tooManyStreams: (limit: number, headers: OutgoingHttpHeaders) => new Refusal('AMRIKYY_TOO_MANY_STREAMS', 429, {
    error: 'Too Many Requests',
    message: `Too many concurrent streams: this API key may have ${limit} open at once; retry when one ends.`
  }, headers),
  /** Token budgets fail closed because their shared store cannot be reached. */
  budgetsUnavailable: (cause?: unknown) => new Refusal('AMRIKYY_BUDGETS_UNAVAILABLE', 503, {
    error: 'Service Unavailable',
    message: 'Token budgets are unavailable; try again later.'
  }, {}, cause),
  /** The rate limiter fails closed because its shared store cannot be reached. */
  rateLimitUnavailable: (cause?: unknown) => new Refusal('AMRIKYY_RATE_LIMIT_UNAVAILABLE', 503, {
    error: 'Service Unavailable',
    message: 'Rate limiting is unavailable; try again later.'
  }, {}, cause),
  shuttingDown: () => new Refusal('AMRIKYY_SHUTTING_DOWN', 503, { error: 'Service Unavailable', message: SHUTTING_DOWN_MESSAGE }, { connection: 'close' }),
  /** Past MAX_CONNECTIONS; answered on the raw socket, before Fastify sees a request. */
  tooManyConnections: () => new Refusal('AMRIKYY_TOO_MANY_CONNECTIONS', 503, { error: 'Service Unavailable', message: 'Too many open connections; retry shortly' }),
  /** A stream that could not start: Gemini failed, or a timeout ran out, before the first chunk. */
  streamFailed: (message: string) => new Refusal('AMRIKYY_STREAM_FAILED', 500, { error: 'Failed to start stream', message }),
  /** A model the allow-list (ALLOWED_MODELS) does not name, after aliases were applied. */
  modelNotAllowed: (model: string) => new Refusal('AMRIKYY_MODEL_NOT_ALLOWED', 400, { error: `Model not allowed: ${model}` }),
  /** Gemini's model list could not be read: Gemini failed or did not answer in time. */
  modelListFailed: (message: string) => new Refusal('AMRIKYY_MODEL_LIST_FAILED', 502, { error: 'Failed to list models', message }),
  /** The gateway cannot serve the stream now (draining, out of file descriptors). */
  streamUnavailable: (message: string) => new Refusal('AMRIKYY_STREAM_UNAVAILABLE', 503, { error: 'Service Unavailable', message }),
  internal: () => new Refusal('AMRIKYY_INTERNAL', 500, { error: 'Internal Server Error' }),
  managementTokenMissing: () => new Refusal('AMRIKYY_MANAGEMENT_TOKEN_MISSING', 401, { error: 'Unauthorized: send the management token as Authorization: Bearer <MANAGEMENT_API_KEY>.' }),
  managementTokenInvalid: () => new Refusal('AMRIKYY_MANAGEMENT_TOKEN_INVALID', 403, { error: 'Forbidden: Invalid management token.' }),
  /** Keys can be created, changed and revoked only where every instance reads them. */
  managementNeedsRedis: () => new Refusal('AMRIKYY_MANAGEMENT_NEEDS_REDIS', 503, { error: 'Service Unavailable', message: 'Managed keys need the shared store: set REDIS_URL.' }),
  /** An unknown or expired stream id, or another key's stream: the same answer, so that none can be told apart. */
  streamNotFound: () => new Refusal('AMRIKYY_STREAM_NOT_FOUND', 404, { error: 'Not Found: no resumable stream with this id.' }),
  /** The stream is known, but its log no longer holds the event after the one to resume from (RESUME_MAX_EVENTS). */
  streamEventsGone: (after: number) => new Refusal('AMRIKYY_STREAM_EVENTS_GONE', 410, { error: `Gone: the events after event ${after} are no longer kept.` }),
  invalidResumePoint: () => new Refusal('AMRIKYY_INVALID_RESUME_POINT', 400, { error: 'Last-Event-ID must be <streamId>:<n> of this stream, and after a whole number' }),
  keyNotFound: (name: string) => new Refusal('AMRIKYY_KEY_NOT_FOUND', 404, { error: `No managed key named ${name}` }),
  keyNameTaken: (name: string) => new Refusal('AMRIKYY_KEY_NAME_TAKEN', 409, { error: `A key named ${name} already exists` }),
  /** Keys of the keys file and the environment change only where they are written. */
  keyReadOnly: (name: string) => new Refusal('AMRIKYY_KEY_READ_ONLY', 409, { error: `The key ${name} comes from the configuration (API_KEYS_FILE or the environment) and is read-only here` }),
  metricsToken: () => new Refusal('AMRIKYY_METRICS_TOKEN', 401, { error: 'Unauthorized: metrics token is missing or invalid.' })
} as const

/** The OpenAPI description of an error answer, its example taken from the refusal itself. */
export function refusalSchema (description: string, example: Refusal): ReturnType<typeof Type.Object> {
  return Type.Object({ error: Type.String(), message: Type.Optional(Type.String()) }, { description, examples: [example.body] })
}

/** The answers of every route behind a key, as the OpenAPI document describes them. */
export const keyRefusalSchemas = {
  401: refusalSchema('No X-API-Key header (or, where the route takes one, Bearer key)', refusals.missingKey()),
  403: refusalSchema('Unknown, expired or disabled API key', refusals.invalidKey()),
  429: refusalSchema('Rate limit exceeded; see Retry-After', refusals.tooManyRequests())
}
