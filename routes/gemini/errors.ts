// Errors of the Gemini passthrough in Google's shape, `{"error":{"code","message","status"}}`, so that Gemini's SDKs
// raise their usual ApiError: the gateway's shared refusals keep their HTTP status and get Google's status name.

import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { Refusal, refusals } from '../../schemas/refusals.js'
import type { GoogleErrorBody } from '../../gemini/upstream-text.js'

/** The google.rpc status Google pairs with each HTTP status the passthrough answers with. */
const GOOGLE_STATUSES: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  413: 'INVALID_ARGUMENT',
  415: 'INVALID_ARGUMENT',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  501: 'UNIMPLEMENTED',
  502: 'UNAVAILABLE',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED'
}

export function googleStatusOf (code: number): string {
  return GOOGLE_STATUSES[code] ?? (code < 500 ? 'INVALID_ARGUMENT' : 'INTERNAL')
}

export class GoogleError extends Error {
  override name = 'GoogleError'
  constructor (readonly code: number, message: string, readonly headers: OutgoingHttpHeaders = {}) {
    super(message)
  }

  get body (): GoogleErrorBody {
    return { error: { code: this.code, message: this.message, status: googleStatusOf(this.code) } }
  }

  async sendWith (reply: FastifyReply): Promise<FastifyReply> {
    return await reply.code(this.code).headers(this.headers).send(this.body)
  }
}

/** What Google answers a path or method it does not serve. */
export const notFound = (): GoogleError => new GoogleError(404, 'Requested entity was not found.')

/** Google's words for a body that is not JSON. */
export const invalidJson = (): GoogleError => new GoogleError(400, 'Invalid JSON payload received. Unexpected token.')

export function googleErrorOf (refusal: Refusal): GoogleError {
  const message = refusal.detail ?? (refusal.body.message === undefined ? refusal.body.error : `${refusal.body.error}: ${refusal.body.message}`)
  return new GoogleError(refusal.statusCode, message, refusal.headers)
}

/** The passthrough's error handler: every answer but a 2xx in Google's shape. */
export async function googleErrorHandler (error: FastifyError | Refusal | GoogleError, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  if (error instanceof GoogleError) return await error.sendWith(reply)
  if (error instanceof Refusal) return await googleErrorOf(error).sendWith(reply)
  switch (error.code) {
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return await invalidJson().sendWith(reply)
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return await googleErrorOf(refusals.notJson()).sendWith(reply)
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return await googleErrorOf(refusals.bodyTooLarge()).sendWith(reply)
  }
  const status = error.statusCode ?? 500
  if (status >= 400 && status < 500) return await new GoogleError(status, error.message).sendWith(reply)
  request.log.error({ err: error }, 'unhandled error')
  return await new GoogleError(500, 'Internal Server Error').sendWith(reply)
}
