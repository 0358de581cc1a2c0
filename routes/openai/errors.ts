// Errors of the OpenAI-compatible routes in OpenAI's shape, so OpenAI's SDKs raise their own error classes:
// `{"error":{"message","type","param","code"}}`. The gateway's shared refusals (auth, rate limit, body parsing,
// draining) keep their status and get OpenAI's type and code here.

import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { describeValidation, type ValidationIssue } from '../../plugins/errors.js'
import { Refusal, refusals } from '../../schemas/refusals.js'
import type { OpenAIErrorBody } from '../../schemas/openai.js'

export type OpenAIErrorType = 'invalid_request_error' | 'authentication_error' | 'permission_error' | 'not_found_error' | 'rate_limit_error' | 'api_error' | 'server_error'

export class OpenAIError extends Error {
  override name = 'OpenAIError'
  constructor (
    readonly statusCode: number,
    message: string,
    readonly type: OpenAIErrorType,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: OutgoingHttpHeaders = {}
  ) {
    super(message)
  }

  get body (): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } }
  }

  async sendWith (reply: FastifyReply): Promise<FastifyReply> {
    return await reply.code(this.statusCode).headers(this.headers).send(this.body)
  }
}

export const invalidRequest = (message: string, param: string | null, code: string | null = 'invalid_value'): OpenAIError =>
  new OpenAIError(400, message, 'invalid_request_error', param, code)

export const unsupportedParameter = (param: string, why: string): OpenAIError =>
  new OpenAIError(400, `${param} is not supported by this gateway: ${why}`, 'invalid_request_error', param, 'unsupported_parameter')

export const modelNotFound = (model: string): OpenAIError =>
  new OpenAIError(404, `The model \`${model}\` does not exist or you do not have access to it.`, 'invalid_request_error', 'model', 'model_not_found')

/** OpenAI's type and code for each of the gateway's shared refusals; the status and headers stay the refusal's. */
const REFUSAL_KINDS: Record<string, { type: OpenAIErrorType, code: string | null, param?: string }> = {
  AMRIKYY_API_KEY_MISSING: { type: 'authentication_error', code: 'missing_api_key' },
  AMRIKYY_API_KEY_INVALID: { type: 'authentication_error', code: 'invalid_api_key' },
  AMRIKYY_API_KEY_EXPIRED: { type: 'authentication_error', code: 'expired_api_key' },
  AMRIKYY_API_KEY_DISABLED: { type: 'authentication_error', code: 'disabled_api_key' },
  AMRIKYY_TOO_MANY_REQUESTS: { type: 'rate_limit_error', code: 'rate_limit_exceeded' },
  AMRIKYY_TOKEN_BUDGET_EXCEEDED: { type: 'rate_limit_error', code: 'rate_limit_exceeded' },
  AMRIKYY_SPENDING_LIMIT_EXCEEDED: { type: 'rate_limit_error', code: 'insufficient_quota' },
  AMRIKYY_UNPRICED_MODEL: { type: 'invalid_request_error', code: 'model_not_priced', param: 'model' },
  AMRIKYY_TOO_MANY_STREAMS: { type: 'rate_limit_error', code: 'concurrency_limit_exceeded' },
  AMRIKYY_BUDGETS_UNAVAILABLE: { type: 'server_error', code: 'rate_limit_unavailable' },
  AMRIKYY_RATE_LIMIT_UNAVAILABLE: { type: 'server_error', code: 'rate_limit_unavailable' },
  AMRIKYY_SHUTTING_DOWN: { type: 'server_error', code: 'service_unavailable' },
  AMRIKYY_MALFORMED_JSON: { type: 'invalid_request_error', code: 'invalid_json' },
  AMRIKYY_FORBIDDEN_FIELD: { type: 'invalid_request_error', code: 'invalid_value' },
  AMRIKYY_PROMPT_REQUIRED: { type: 'invalid_request_error', code: 'missing_required_parameter', param: 'messages' },
  AMRIKYY_BODY_TOO_LARGE: { type: 'invalid_request_error', code: 'request_too_large' },
  AMRIKYY_NOT_JSON: { type: 'invalid_request_error', code: 'unsupported_media_type' },
  AMRIKYY_NOT_UTF8: { type: 'invalid_request_error', code: 'unsupported_media_type' }
}

/** The empty body: Fastify's refusal says "prompt", which these routes do not have. */
const EMPTY_BODY = 'The request body is empty: send a JSON object with `model` and `messages`'

export function openAIErrorOf (refusal: Refusal): OpenAIError {
  const kind = REFUSAL_KINDS[refusal.code] ?? { type: refusal.statusCode >= 500 ? 'server_error' : 'invalid_request_error', code: null }
  const message = refusal.code === 'AMRIKYY_PROMPT_REQUIRED'
    ? EMPTY_BODY
    : refusal.detail ?? (refusal.body.message === undefined ? refusal.body.error : `${refusal.body.error}: ${refusal.body.message}`)
  return new OpenAIError(refusal.statusCode, message, kind.type, kind.param ?? null, kind.code, refusal.headers)
}

/** OpenAI's `param` for a validator path: `messages[0].content`, `stream_options.include_usage`. */
export function paramOf (instancePath: string): string | null {
  if (instancePath === '') return null
  return instancePath.slice(1).split('/').reduce((param, part) => /^\d+$/.test(part) ? `${param}[${part}]` : param === '' ? part : `${param}.${part}`, '')
}

function validationError (issues: readonly ValidationIssue[]): OpenAIError {
  const unknown = issues.find(issue => issue.keyword === 'additionalProperties')
  const extra = unknown?.params.additionalProperty ?? (unknown?.params.additionalProperties as string[] | undefined)?.[0]
  if (unknown !== undefined && typeof extra === 'string') {
    const param = paramOf(`${unknown.instancePath}/${extra}`) ?? extra
    return invalidRequest(`Unrecognized request argument supplied: ${param}`, param, 'unknown_parameter')
  }
  const missing = issues.find(issue => issue.keyword === 'required')
  const required = (missing?.params.requiredProperties as string[] | undefined)?.[0] ?? missing?.params.missingProperty
  if (missing !== undefined && typeof required === 'string') {
    const param = paramOf(`${missing.instancePath}/${required}`) ?? required
    return invalidRequest(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter')
  }
  const first = issues.find(issue => issue.keyword !== 'anyOf') ?? issues[0]
  const param = first === undefined ? null : paramOf(first.instancePath)
  // describeValidation names the field with dots; OpenAI's param names it with brackets.
  const sentence = describeValidation(issues)
  const named = first === undefined ? sentence : sentence.replace(first.instancePath.slice(1).replaceAll('/', '.'), param ?? '')
  return invalidRequest(`Invalid value: ${named}`, param)
}

/** The error handler of the OpenAI-compatible routes: every answer but a 2xx is in OpenAI's shape. */
export async function openAIErrorHandler (error: FastifyError | Refusal | OpenAIError, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  if (error instanceof OpenAIError) return await error.sendWith(reply)
  if (error instanceof Refusal) return await openAIErrorOf(error).sendWith(reply)
  if (error.validation !== undefined) return await validationError(error.validation as ValidationIssue[]).sendWith(reply)
  switch (error.code) {
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return await openAIErrorOf(refusals.promptRequired()).sendWith(reply)
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return await openAIErrorOf(refusals.malformedJson()).sendWith(reply)
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return await openAIErrorOf(refusals.notJson()).sendWith(reply)
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return await openAIErrorOf(refusals.bodyTooLarge()).sendWith(reply)
  }
  const status = error.statusCode ?? 500
  if (status >= 400 && status < 500) return await new OpenAIError(status, error.message, 'invalid_request_error').sendWith(reply)
  request.log.error({ err: error }, 'unhandled error')
  return await new OpenAIError(500, 'Internal Server Error', 'server_error').sendWith(reply)
}
