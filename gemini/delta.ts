import type { Usage } from '../schemas/stream.js'
import type { GenerationDelta } from './types.js'
import { malformedStream } from './upstream-error.js'

/**
 * Finish and block reasons are Gemini enum names (`STOP`, `SAFETY`, ...) that reach clients and logs
 * inside error messages; anything else an upstream puts there is reported as Gemini's own `OTHER`.
 */
function enumName (value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined
  return typeof value === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(value) ? value : 'OTHER'
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** An optional field of the given kind; a field of another kind makes the whole event malformed. */
function optional<T> (value: unknown, is: (value: unknown) => value is T): T | undefined {
  if (value === undefined || value === null) return undefined
  if (!is(value)) throw malformedStream(new TypeError('an event field has the wrong type'))
  return value
}

const isArray = (value: unknown): value is unknown[] => Array.isArray(value)
const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value)
const isString = (value: unknown): value is string => typeof value === 'string'
const isBoolean = (value: unknown): value is boolean => typeof value === 'boolean'

function usageOf (metadata: Record<string, unknown>): Usage {
  const promptTokens = optional(metadata.promptTokenCount, isCount) ?? 0
  // Thinking tokens are billed as output, so they count as completion.
  const completionTokens = (optional(metadata.candidatesTokenCount, isCount) ?? 0) + (optional(metadata.thoughtsTokenCount, isCount) ?? 0)
  return { promptTokens, completionTokens, totalTokens: optional(metadata.totalTokenCount, isCount) ?? promptTokens + completionTokens }
}

/**
 * Reduces one parsed Gemini stream event to what the gateway forwards; shared by both clients. An event
 * whose fields have the wrong shape (`"parts": {}`) is a malformed stream, never read as an empty answer.
 */
export function toDelta (event: unknown): GenerationDelta {
  if (event === null) return { text: '', usage: undefined, finishReason: undefined, blockReason: undefined }
  if (!isRecord(event)) throw malformedStream(new TypeError('an event is not a JSON object'))
  const candidate = optional(optional(event.candidates, isArray)?.[0], isRecord)
  const content = optional(candidate?.content, isRecord)
  let text = ''
  let thought: string | undefined
  for (const part of optional(content?.parts, isArray) ?? []) {
    if (!isRecord(part)) throw malformedStream(new TypeError('a part is not a JSON object'))
    const partText = optional(part.text, isString)
    if (partText === undefined) continue
    // Thought summaries are the model's scratchpad, not the answer.
    if (optional(part.thought, isBoolean) === true) thought = (thought ?? '') + partText
    else text += partText
  }
  const metadata = optional(event.usageMetadata, isRecord)
  const delta: GenerationDelta = {
    text,
    usage: metadata === undefined ? undefined : usageOf(metadata),
    finishReason: enumName(candidate?.finishReason),
    blockReason: enumName(optional(event.promptFeedback, isRecord)?.blockReason)
  }
  if (thought !== undefined) delta.thought = thought
  return delta
}
