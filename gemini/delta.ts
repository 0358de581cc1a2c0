import type { GenerateContentResponse } from '@google/genai'
import type { Usage } from '../schemas/stream.js'
import type { GenerationDelta } from './types.js'

/**
 * Finish and block reasons are Gemini enum names (`STOP`, `SAFETY`, ...) that reach clients and logs
 * inside error messages; anything else an upstream puts there is reported as Gemini's own `OTHER`.
 */
function enumName (value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined
  return typeof value === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(value) ? value : 'OTHER'
}

/** Reduces one Gemini stream event to what the gateway forwards; shared by both clients. */
export function toDelta (response: GenerateContentResponse): GenerationDelta {
  const candidate = response.candidates?.[0]
  let text = ''
  for (const part of candidate?.content?.parts ?? []) {
    // Thought summaries are the model's scratchpad, not the answer.
    if (typeof part.text === 'string' && part.thought !== true) text += part.text
  }
  const metadata = response.usageMetadata
  let usage: Usage | undefined
  if (metadata !== undefined) {
    const promptTokens = metadata.promptTokenCount ?? 0
    // Thinking tokens are billed as output, so they count as completion.
    const completionTokens = (metadata.candidatesTokenCount ?? 0) + (metadata.thoughtsTokenCount ?? 0)
    usage = { promptTokens, completionTokens, totalTokens: metadata.totalTokenCount ?? promptTokens + completionTokens }
  }
  return {
    text,
    usage,
    finishReason: enumName(candidate?.finishReason),
    blockReason: enumName(response.promptFeedback?.blockReason)
  }
}
