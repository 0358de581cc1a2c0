// The gateway's generation options and turns as Gemini names them. One mapping serves both clients: the
// REST client writes it in the field order @google/genai uses, and the SDK client hands it to the SDK.

import type { GenerationOptions } from '../schemas/stream.js'
import type { ContentTurn, CountedContents, GenerationRequest } from './types.js'

export type GeminiPart = { text: string } | { inlineData: { mimeType: string, data: string } }

/** A turn's parts: its text, then each file as inlineData, as @google/genai passes parts through unchanged. */
export function partsOf (turn: ContentTurn): GeminiPart[] {
  const parts: GeminiPart[] = [{ text: turn.text }]
  for (const { mimeType, data } of turn.attachments ?? []) parts.push({ inlineData: { mimeType, data } })
  return parts
}

/** Every turn of a request, oldest first; the new user turn, last, carries the attachments. */
export function turnsOf (request: GenerationRequest): ContentTurn[] {
  const prompt: ContentTurn = request.attachments === undefined
    ? { role: 'user', text: request.prompt }
    : { role: 'user', text: request.prompt, attachments: request.attachments }
  return [...request.history ?? [], prompt]
}

/**
 * What a request's prompt tokens are counted from: the bare prompt for a seed request, else its turns with the
 * files. The SDK cannot count a system instruction on the Gemini Developer API, so it is not counted.
 */
export function countedContentsOf (request: GenerationRequest): CountedContents {
  return request.history === undefined && request.attachments === undefined ? request.prompt : turnsOf(request)
}

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
