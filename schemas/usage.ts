import { Type, type Static } from 'typebox'
import { keyRefusalSchemas, refusals, refusalSchema } from './refusals.js'

const Budget = Type.Object({
  limit: Type.Union([Type.Integer(), Type.Null()], { description: 'The key\'s budget in this window; null: none' }),
  used: Type.Integer({ description: 'Tokens Gemini reported for the key\'s streams that ended in this window (cancelled and failed ones included)' }),
  reserved: Type.Integer({ description: 'Tokens held by the key\'s streams still running, settled against their real usage when they end' }),
  remaining: Type.Union([Type.Integer(), Type.Null()], { description: 'limit − used − reserved; null without a limit' }),
  resetSeconds: Type.Integer({ description: 'Seconds until the window ends' })
}, { additionalProperties: false })

const DollarBudget = Type.Object({
  limit: Type.Union([Type.Number(), Type.Null()], { description: 'The key\'s usdPerDay; null: none' }),
  used: Type.Number({ description: 'US dollars the key\'s streams that ended today cost, at the price table\'s prices' }),
  reserved: Type.Number(),
  remaining: Type.Union([Type.Number(), Type.Null()]),
  resetSeconds: Type.Integer()
}, { additionalProperties: false })

export const KeyPolicyView = Type.Object({
  tokensPerMinute: Type.Optional(Type.Integer()),
  tokensPerDay: Type.Optional(Type.Integer()),
  usdPerDay: Type.Optional(Type.Number()),
  requestsPerWindow: Type.Optional(Type.Integer()),
  models: Type.Optional(Type.Array(Type.String())),
  maxOutputTokens: Type.Optional(Type.Integer()),
  maxConcurrentStreams: Type.Optional(Type.Integer()),
  expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
  disabled: Type.Optional(Type.Boolean())
}, { additionalProperties: false, description: 'The key\'s policy, its own fields over the gateway\'s defaults' })

export const KeyUsageAnswer = Type.Object({
  key: Type.String({ description: 'The key\'s name (never the key)' }),
  policy: KeyPolicyView,
  tokensPerMinute: Budget,
  tokensPerDay: Budget,
  usdPerDay: Type.Optional(DollarBudget),
  concurrentStreams: Type.Object({
    limit: Type.Union([Type.Integer(), Type.Null()]),
    open: Type.Integer({ description: 'The key\'s streams open now, on every instance (counted only for a key with a budget)' })
  }, { additionalProperties: false })
}, { additionalProperties: false, description: 'The calling key\'s limits, what it used in the current calendar minute and UTC day, and what remains' })
export type KeyUsageAnswer = Static<typeof KeyUsageAnswer>

export const KeyUsageResponses = {
  200: KeyUsageAnswer,
  ...keyRefusalSchemas,
  503: refusalSchema('The shared store cannot be reached', refusals.budgetsUnavailable())
}
