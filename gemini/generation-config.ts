// The gateway's generation options as Gemini names them. One mapping serves both clients: the REST
// client writes it in the field order @google/genai uses, and the SDK client hands it to the SDK.

import type { GenerationOptions } from '../schemas/stream.js'

export interface GeminiGenerationConfig {
  /** `generationConfig`, its fields in the SDK's order, unset ones left out. */
  generationConfig: Record<string, unknown>
  /** `safetySettings`, a field of the request itself. */
  safetySettings: GenerationOptions['safetySettings']
}

export function geminiConfigOf (options: GenerationOptions | undefined): GeminiGenerationConfig {
  const config: Record<string, unknown> = {}
  if (options === undefined) return { generationConfig: config, safetySettings: undefined }
  const set = (name: string, value: unknown): void => { if (value !== undefined && value !== null) config[name] = value }
  set('temperature', options.temperature)
  set('topP', options.topP)
  set('topK', options.topK)
  set('maxOutputTokens', options.maxOutputTokens)
  set('stopSequences', options.stopSequences)
  set('presencePenalty', options.presencePenalty)
  set('frequencyPenalty', options.frequencyPenalty)
  set('seed', options.seed)
  set('responseMimeType', options.responseMimeType)
  // A JSON Schema, which Gemini takes as `responseJsonSchema` (its `responseSchema` is an OpenAPI subset).
  set('responseJsonSchema', options.responseSchema)
  const thinking = options.thinking
  if (thinking !== undefined) {
    const thinkingConfig: Record<string, unknown> = {}
    if (thinking.budget !== undefined) thinkingConfig.thinkingBudget = thinking.budget
    if (thinking.includeThoughts !== undefined) thinkingConfig.includeThoughts = thinking.includeThoughts
    config.thinkingConfig = thinkingConfig
  }
  return { generationConfig: config, safetySettings: options.safetySettings }
}
