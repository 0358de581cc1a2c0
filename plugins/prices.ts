// What the operator says Gemini's models cost, per million tokens, and the cost of a stream's usage by it. Only
// the models of the table have a price: the gateway never guesses one.

import { isModelPattern, modelId, modelMatcher } from './models.js'

/** US dollars per million tokens. `cached` (prompt tokens read from the context cache) defaults to `prompt`. */
export interface ModelPrice {
  prompt: number
  completion: number
  cached?: number
}

/** Model ids or `*` patterns → price; an exact id wins over a pattern, then the first pattern that matches. */
export type PriceTable = Readonly<Record<string, ModelPrice>>

export interface Prices {
  priceOf: (model: string) => ModelPrice | undefined
  /** US dollars of a usage on `model`, or undefined when the model has no price. */
  costOf: (model: string, usage: { promptTokens: number, completionTokens: number, cachedTokens?: number | undefined }) => number | undefined
}

const PRICE_FIELDS = ['prompt', 'completion', 'cached']

/** The table checked: a bad entry is an Error naming it (`where` says where the table came from). */
export function createPrices (table: PriceTable, where = 'prices'): Prices {
  if (typeof table !== 'object' || table === null || Array.isArray(table)) throw new Error(`${where}: must be an object of model → { "prompt", "completion", "cached" } (US dollars per million tokens)`)
  const exact = new Map<string, ModelPrice>()
  const patterns: Array<{ matches: (id: string) => boolean, price: ModelPrice }> = []
  for (const [model, price] of Object.entries(table)) {
    if (!isModelPattern(model)) throw new Error(`${where}: ${JSON.stringify(model)} is not a model name or * pattern`)
    const record = price as unknown as Record<string, unknown>
    if (typeof record !== 'object' || record === null || Object.keys(record).some(field => !PRICE_FIELDS.includes(field))) {
      throw new Error(`${where}: the price of ${model} must be an object of "prompt", "completion" and optionally "cached"`)
    }
    for (const field of PRICE_FIELDS) {
      const value = record[field]
      if (value === undefined && field === 'cached') continue
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new Error(`${where}: "${field}" of ${model} must be a number >= 0 (US dollars per million tokens)`)
    }
    if (model.includes('*')) patterns.push({ matches: modelMatcher([model]), price })
    else exact.set(modelId(model), price)
  }
  const priceOf = (model: string): ModelPrice | undefined => {
    const id = modelId(model)
    return exact.get(id) ?? patterns.find(pattern => pattern.matches(id))?.price
  }
  return {
    priceOf,
    costOf (model, usage) {
      const price = priceOf(model)
      if (price === undefined) return undefined
      const cached = Math.min(usage.cachedTokens ?? 0, usage.promptTokens)
      return ((usage.promptTokens - cached) * price.prompt + cached * (price.cached ?? price.prompt) + usage.completionTokens * price.completion) / 1e6
    }
  }
}
