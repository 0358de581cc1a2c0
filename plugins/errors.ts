import fp from 'fastify-plugin'
import type { FastifyError } from 'fastify'

export const PROMPT_REQUIRED = 'Prompt is required'
export const MODEL_NAME_RULE = 'model must be a Gemini model name: up to 128 letters, digits, ".", "_" or "-", optionally after "models/", without ".."'
export const TOO_MANY_REQUESTS_BODY = {
  error: 'Too Many Requests',
  message: 'You have exceeded the request limit. Please try again later.'
}
/** Code of the error the rate limiter throws when it fails closed because its shared store cannot be reached. */
export const RATE_LIMIT_UNAVAILABLE_CODE = 'AMRIKYY_RATE_LIMIT_UNAVAILABLE'
export const RATE_LIMIT_UNAVAILABLE_BODY = {
  error: 'Service Unavailable',
  message: 'Rate limiting is unavailable; try again later.'
}

interface ValidationIssue {
  keyword: string
  instancePath: string
  params: Record<string, unknown>
  message?: string
}

function fieldName (instancePath: string): string {
  return instancePath.replace(/^\//, '').replaceAll('/', '.')
}

/** One sentence naming the field, from the validator's list of issues. */
export function describeValidation (issues: readonly ValidationIssue[]): string {
  if (issues.some(issue => issue.instancePath === '/prompt' && ['minLength', 'pattern'].includes(issue.keyword))) return PROMPT_REQUIRED
  if (issues.some(issue => issue.keyword === 'required' && issue.instancePath === '' &&
    (issue.params.requiredProperties as unknown[] | undefined)?.includes('prompt') === true)) return PROMPT_REQUIRED
  if (issues.some(issue => issue.instancePath === '/model' && issue.keyword === 'pattern')) return MODEL_NAME_RULE
  const unknown = issues
    .filter(issue => issue.keyword === 'additionalProperties')
    .flatMap(issue => ((issue.params.additionalProperties as string[] | undefined) ?? [])
      .map(name => fieldName(`${issue.instancePath}/${name}`)))
  if (unknown.length > 0) return `Unknown field${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`
  const first = issues.find(issue => issue.keyword !== 'boolean') ?? issues[0]
  if (first === undefined) return 'Invalid request'
  const field = fieldName(first.instancePath)
  return field === '' ? `Request body ${first.message ?? 'is invalid'}` : `${field} ${first.message ?? 'is invalid'}`
}

/** Shapes every error of the gateway's routes into the contract's `{ "error": ... }` bodies. */
export default fp(async function errorsPlugin (app) {
  app.setErrorHandler(async function gatewayErrorHandler (error: FastifyError, request, reply) {
    if (error.validation !== undefined) {
      return await reply.code(400).send({ error: describeValidation(error.validation as ValidationIssue[]) })
    }
    switch (error.code) {
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
        return await reply.code(400).send({ error: PROMPT_REQUIRED })
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
        return await reply.code(400).send({ error: 'Malformed JSON in request body' })
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return await reply.code(415).send({ error: 'Unsupported Media Type: send the body as application/json' })
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return await reply.code(413).send({ error: 'Request body is too large' })
    }
    const status = error.statusCode ?? 500
    if (status === 429) return await reply.code(429).send(TOO_MANY_REQUESTS_BODY)
    if (error.code === RATE_LIMIT_UNAVAILABLE_CODE) return await reply.code(503).send(RATE_LIMIT_UNAVAILABLE_BODY)
    if (status >= 400 && status < 500) {
      return await reply.code(status).send({ error: error.message })
    }
    request.log.error({ err: error }, 'unhandled error')
    return await reply.code(500).send({ error: 'Internal Server Error' })
  })
}, { name: 'amrikyy-errors', fastify: '5.x' })
