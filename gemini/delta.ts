import type { ReportedUsage } from '../schemas/stream.js'
import type { FunctionCall, GenerationDelta } from './types.js'
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

/** A field of the wrong JSON type makes the whole event malformed; absent (or null) is fine. */
function wrongType (field: string): never {
  throw malformedStream(new TypeError(`an event's ${field} has the wrong type`))
}

function record (value: unknown, field: string): Record<string, unknown> | undefined {
  if (value === undefined || value === null) return undefined
  return isRecord(value) ? value : wrongType(field)
}

function count (value: unknown, field: string): number {
  if (value === undefined || value === null) return 0
  return typeof value === 'number' && Number.isFinite(value) ? value : wrongType(field)
}

function usageOf (metadata: Record<string, unknown>): ReportedUsage {
  const promptTokens = count(metadata.promptTokenCount, 'promptTokenCount')
  const thoughts = metadata.thoughtsTokenCount
  const thoughtsTokens = count(thoughts, 'thoughtsTokenCount')
  // Thinking tokens are billed as output, so they count as completion.
  const completionTokens = count(metadata.candidatesTokenCount, 'candidatesTokenCount') + thoughtsTokens
  const total = metadata.totalTokenCount
  const usage: ReportedUsage = { promptTokens, completionTokens, totalTokens: total === undefined || total === null ? promptTokens + completionTokens : count(total, 'totalTokenCount') }
  if (thoughts !== undefined && thoughts !== null) usage.thoughtsTokens = thoughtsTokens
  const cached = metadata.cachedContentTokenCount
  if (cached !== undefined && cached !== null) usage.cachedTokens = count(cached, 'cachedContentTokenCount')
  return usage
}

/** Gemini's HarmProbability names, least to most likely; any other value ranks below them all. */
const PROBABILITY_RANK = new Map([['NEGLIGIBLE', 1], ['LOW', 2], ['MEDIUM', 3], ['HIGH', 4]])
const NEGLIGIBLE_RANK = 1

/**
 * The categories behind a safety stop, each once: the ratings Gemini marked `blocked`, or, when it marked
 * none (a public transcript of a blocked prompt's ratings shows no mark), those rated most likely above
 * NEGLIGIBLE. Read only on the event that stops for safety, so the chunks before it pay nothing.
 */
function blockedCategoriesOf (ratings: unknown): string[] | undefined {
  if (ratings === undefined || ratings === null) return undefined
  if (!Array.isArray(ratings)) wrongType('safetyRatings')
  const marked = new Set<string>()
  let likeliest = new Set<string>()
  let likeliestRank = NEGLIGIBLE_RANK
  for (const rating of ratings as unknown[]) {
    if (!isRecord(rating)) wrongType('safetyRating')
    const named = rating.category
    if (named !== undefined && named !== null && typeof named !== 'string') wrongType('category')
    const category = enumName(named)
    const blocked = rating.blocked
    if (blocked !== undefined && blocked !== null && typeof blocked !== 'boolean') wrongType('blocked')
    const probability = rating.probability
    if (probability !== undefined && probability !== null && typeof probability !== 'string') wrongType('probability')
    // A rating that names no category cannot say what was blocked.
    if (category === undefined) continue
    if (blocked === true) marked.add(category)
    const rank = PROBABILITY_RANK.get(probability ?? '') ?? 0
    if (rank > likeliestRank) {
      likeliestRank = rank
      likeliest = new Set([category])
    } else if (rank === likeliestRank && rank > NEGLIGIBLE_RANK) likeliest.add(category)
  }
  const categories = marked.size > 0 ? marked : likeliest
  return categories.size > 0 ? [...categories] : undefined
}

function optionalString (value: unknown, field: string): string | undefined {
  if (value === undefined || value === null) return undefined
  return typeof value === 'string' ? value : wrongType(field)
}

/** A functionCall part as the gateway forwards it: a name, an args object (Gemini leaves out an empty one). */
function functionCallOf (value: unknown, part: Record<string, unknown>): FunctionCall {
  if (!isRecord(value)) wrongType('functionCall')
  const name = value.name
  if (typeof name !== 'string') wrongType('functionCall.name')
  const call: FunctionCall = { name, args: record(value.args, 'functionCall.args') ?? {} }
  const id = optionalString(value.id, 'functionCall.id')
  if (id !== undefined) call.id = id
  // The signature is the part's, beside functionCall, and must come back on the same part.
  const signature = optionalString(part.thoughtSignature, 'thoughtSignature')
  if (signature !== undefined) call.thoughtSignature = signature
  return call
}

/**
 * Reduces one parsed Gemini stream event to what the gateway forwards; shared by both clients. An event
 * whose fields have the wrong shape (`"parts": {}`) is a malformed stream, never read as an empty answer.
 * On the per-chunk path: plain checks, no allocation beyond the delta.
 */
export function toDelta (event: unknown): GenerationDelta {
  if (event === null) return { text: '', usage: undefined, finishReason: undefined, blockReason: undefined }
  if (!isRecord(event)) wrongType('root')
  const candidates = event.candidates
  if (candidates !== undefined && candidates !== null && !Array.isArray(candidates)) wrongType('candidates')
  const candidate = record((candidates as unknown[] | undefined | null)?.[0], 'candidate')
  const content = record(candidate?.content, 'content')
  const parts = content?.parts
  if (parts !== undefined && parts !== null && !Array.isArray(parts)) wrongType('parts')
  let text = ''
  let thought: string | undefined
  let functionCalls: FunctionCall[] | undefined
  for (const part of (parts as unknown[] | undefined | null) ?? []) {
    if (!isRecord(part)) wrongType('part')
    const call = part.functionCall
    if (call !== undefined && call !== null) (functionCalls ??= []).push(functionCallOf(call, part))
    const partText = part.text
    if (partText === undefined || partText === null) continue
    if (typeof partText !== 'string') wrongType('text')
    const isThought = part.thought
    if (isThought !== undefined && isThought !== null && typeof isThought !== 'boolean') wrongType('thought')
    // Thought summaries are the model's scratchpad, not the answer.
    if (isThought === true) thought = (thought ?? '') + partText
    else text += partText
  }
  const metadata = record(event.usageMetadata, 'usageMetadata')
  const promptFeedback = record(event.promptFeedback, 'promptFeedback')
  const delta: GenerationDelta = {
    text,
    usage: metadata === undefined ? undefined : usageOf(metadata),
    finishReason: enumName(candidate?.finishReason),
    blockReason: enumName(promptFeedback?.blockReason)
  }
  if (thought !== undefined) delta.thought = thought
  if (functionCalls !== undefined) delta.functionCalls = functionCalls
  const blockedCategories = delta.finishReason === 'SAFETY'
    ? blockedCategoriesOf(candidate?.safetyRatings)
    : delta.blockReason === 'SAFETY' ? blockedCategoriesOf(promptFeedback?.safetyRatings) : undefined
  if (blockedCategories !== undefined) delta.blockedCategories = blockedCategories
  const modelVersion = event.modelVersion
  if (typeof modelVersion === 'string') delta.modelVersion = modelVersion
  return delta
}
