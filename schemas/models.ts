import { Type, type Static } from 'typebox'
import { keyRefusalSchemas, refusals, refusalSchema } from './refusals.js'

export const ListedModel = Type.Object({
  id: Type.String({ description: 'What a request names in `model`', examples: ['gemini-2.5-flash'] }),
  aliasOf: Type.Optional(Type.String({ description: 'For an alias (MODEL_ALIASES): the model called instead' })),
  displayName: Type.Optional(Type.String()),
  description: Type.Optional(Type.String()),
  inputTokenLimit: Type.Optional(Type.Integer()),
  outputTokenLimit: Type.Optional(Type.Integer()),
  thinking: Type.Optional(Type.Boolean({ description: 'The model can think (thinking options apply)' }))
}, { additionalProperties: false, description: 'A model a caller may use; an alias carries its target\'s details' })
export type ListedModel = Static<typeof ListedModel>

export const ModelList = Type.Object({
  models: Type.Array(ListedModel)
}, { additionalProperties: false, description: 'The models of Gemini\'s list that generate and ALLOWED_MODELS allows, then the aliases' })
export type ModelList = Static<typeof ModelList>

export const ModelListResponses = {
  200: ModelList,
  ...keyRefusalSchemas,
  502: refusalSchema('Gemini\'s model list could not be read', refusals.modelListFailed('Gemini answered with status 503')),
  503: refusalSchema('Rate limiting is unavailable (RATE_LIMIT_ON_REDIS_ERROR=closed)', refusals.rateLimitUnavailable())
}
