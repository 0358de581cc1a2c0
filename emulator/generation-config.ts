// The checks Google makes on a GenerateContentRequest's generationConfig, each failure worded as
// Google words it: a value of the wrong type fails JSON parsing, a value out of range fails validation.

import type { GenerationOptions } from './answer.js'
import { isObject } from './json.js'

const NUMBER_FIELDS = ['temperature', 'topP', 'topK', 'maxOutputTokens', 'presencePenalty', 'frequencyPenalty', 'seed'] as const
const MAX_STOP_SEQUENCES = 5
const INT32_MIN = -2_147_483_648
const INT32_MAX = 2_147_483_647
export const RESPONSE_MIME_TYPES = ['text/plain', 'application/json', 'application/xml', 'application/yaml', 'text/x.enum']

/** The options the answer depends on, or the message of the 400 the request gets. */
export function generationOptionsOf (config: unknown): GenerationOptions | string {
  if (config === undefined || config === null) return {}
  if (!isObject(config)) return 'Invalid JSON payload received. generationConfig: expected an object.'
  const out: GenerationOptions = {}
  for (const key of NUMBER_FIELDS) {
    const value = config[key]
    if (value === undefined || value === null) continue
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      return `Invalid value at 'generation_config.${snake(key)}', "${String(value)}"`
    }
    out[key] = value
  }
  if (out.maxOutputTokens !== undefined && !(Number.isInteger(out.maxOutputTokens) && out.maxOutputTokens >= 1)) {
    return `* GenerateContentRequest.generation_config.max_output_tokens: must be a positive integer, got ${out.maxOutputTokens}`
  }
  if (out.seed !== undefined && !(Number.isInteger(out.seed) && out.seed >= INT32_MIN && out.seed <= INT32_MAX)) {
    return `Invalid value at 'generation_config.seed' (TYPE_INT32), ${out.seed}`
  }
  for (const key of ['presencePenalty', 'frequencyPenalty'] as const) {
    const value = out[key]
    // Half-open: Google refuses exactly 2.0.
    if (value !== undefined && !(value >= -2 && value < 2)) return `${snake(key)} must be in the range [-2.0, 2.0)`
  }
  const stops = stopSequencesOf(config.stopSequences)
  if (typeof stops === 'string') return stops
  if (stops !== undefined) out.stopSequences = stops
  const mime = config.responseMimeType
  if (mime !== undefined && mime !== null) {
    if (typeof mime !== 'string') return `Invalid value at 'generation_config.response_mime_type' (TYPE_STRING), ${JSON.stringify(mime)}`
    if (!RESPONSE_MIME_TYPES.includes(mime)) {
      return '* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are ' +
        '`text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`.'
    }
    out.responseMimeType = mime
  }
  // The JSON Schema field (what the gateway sends) or the OpenAPI-subset one: the answer follows either.
  const schema = config.responseJsonSchema ?? config.responseSchema
  if (schema !== undefined) out.responseSchema = schema
  return out
}

function stopSequencesOf (value: unknown): string[] | string | undefined {
  if (value === undefined || value === null) return undefined
  if (!Array.isArray(value)) return `Invalid value at 'generation_config.stop_sequences' (TYPE_STRING), ${JSON.stringify(value)}`
  const list: unknown[] = value
  for (const item of list) {
    if (typeof item !== 'string') return `Invalid value at 'generation_config.stop_sequences' (TYPE_STRING), ${JSON.stringify(item)}`
  }
  if (list.length > MAX_STOP_SEQUENCES) {
    return `* GenerateContentRequest.generation_config.stop_sequences: the number of stop_sequences must not exceed ${MAX_STOP_SEQUENCES}`
  }
  return list as string[]
}

function snake (name: string): string {
  return name.replace(/[A-Z]/g, c => `_${c.toLowerCase()}`)
}
