import fp from 'fastify-plugin'
import type { FastifyError } from 'fastify'
import { attachmentDataRule, MODEL_NAME_RULE, PROMPT_REQUIRED, Refusal, refusals } from '../schemas/refusals.js'

export interface ValidationIssue {
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
  const base64 = issues.find(issue => issue.keyword === 'pattern' && /^\/attachments\/\d+\/data$/.test(issue.instancePath))
  if (base64 !== undefined) return attachmentDataRule(fieldName(base64.instancePath))
  const unknown = issues
    .filter(issue => issue.keyword === 'additionalProperties')
    .flatMap(issue => ((issue.params.additionalProperties as string[] | undefined) ?? [])
      .map(name => fieldName(`${issue.instancePath}/${name}`)))
  if (unknown.length > 0) return `Unknown field${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`
  const first = issues.find(issue => issue.keyword !== 'boolean') ?? issues[0]
  if (first === undefined) return 'Invalid request'
  const field = fieldName(first.instancePath)
  // A union of literals fails once per literal: name them all.
  const allowed = first.keyword === 'enum'
    ? (first.params.allowedValues as unknown[])
    : issues.filter(issue => issue.keyword === 'const' && issue.instancePath === first.instancePath).map(issue => issue.params.allowedValue)
  if (allowed.length > 1) return `${field} must be one of ${allowed.map(value => JSON.stringify(value)).join(', ')}`
  return field === '' ? `Request body ${first.message ?? 'is invalid'}` : `${field} ${first.message ?? 'is invalid'}`
}

/** The refusal a Fastify error of the request's parsing stands for, by its code. */
const FASTIFY_REFUSALS: Record<string, () => Refusal> = {
  FST_ERR_CTP_EMPTY_JSON_BODY: refusals.promptRequired,
  FST_ERR_CTP_INVALID_JSON_BODY: refusals.malformedJson,
  FST_ERR_CTP_INVALID_MEDIA_TYPE: refusals.notJson,
  FST_ERR_CTP_BODY_TOO_LARGE: refusals.bodyTooLarge
}

/** Shapes every error of the gateway's routes into the contract's `{ "error": ... }` bodies. */
export default fp(async function errorsPlugin (app) {
  app.setErrorHandler(async function gatewayErrorHandler (error: FastifyError | Refusal, request, reply) {
    if (error instanceof Refusal) return await error.sendWith(reply)
    if (error.validation !== undefined) return await refusals.invalidBody(describeValidation(error.validation as ValidationIssue[])).sendWith(reply)
    const known = FASTIFY_REFUSALS[error.code]
    if (known !== undefined) return await known().sendWith(reply)
    const status = error.statusCode ?? 500
    // Fastify's own refusals of a request (a 408 for a body too slow, say) keep their status and message.
    if (status >= 400 && status < 500) return await reply.code(status).send({ error: error.message })
    request.log.error({ err: error }, 'unhandled error')
    return await refusals.internal().sendWith(reply)
  })
}, { name: 'amrikyy-errors', fastify: '5.x' })
