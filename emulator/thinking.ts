// Thinking: which models think, the checks Google makes on generationConfig.thinkingConfig for the
// model a request names, and the deterministic thought summary a thinking answer carries.
//
// A thought "token" is a word, as for answers: thoughtsTokenCount is the number of words of the
// thought summary, whether or not the request asked to see it (includeThoughts).

import { countTokens } from './answer.js'
import { type Conversation, promptTextOf } from './conversation.js'
import { isObject } from './json.js'

export interface Thinking {
  /** How many thought words (tokens) the answer spends; 0 when the model does not think. */
  tokens: number
  /** Whether the thought summary is sent as `thought: true` parts. */
  includeThoughts: boolean
}

export const NO_THINKING: Thinking = { tokens: 0, includeThoughts: false }

interface ModelThinking {
  /** Budgets accepted besides -1 (dynamic) and, when it can be turned off, 0. */
  min: number
  max: number
  canTurnOff: boolean
  /** Flash-Lite does not think unless asked to. */
  thinksByDefault: boolean
}

const INT32_MAX = 2_147_483_647
/** The dynamic budget (-1) spends this many thought words at most, fewer for a short prompt. */
const DYNAMIC_MAX_WORDS = 256

/**
 * How a model thinks, from its id: the 2.5 family and newer (gemini-3...) think, older ones do not.
 * The ranges are Google's published ones for 2.5 Pro (128..32768, cannot turn off), Flash
 * (0..24576) and Flash-Lite (512..24576, off by default).
 */
export function modelThinking (model: string): ModelThinking | undefined {
  const m = /^gemini-(\d+)(?:\.(\d+))?-/.exec(`${model}-`)
  if (!m) return undefined
  const version = Number(m[1]) + Number(m[2] ?? 0) / 10
  if (version < 2.5) return undefined
  if (/-pro(-|$)/.test(model)) return { min: 128, max: 32768, canTurnOff: false, thinksByDefault: true }
  if (/-flash-lite(-|$)/.test(model)) return { min: 512, max: 24576, canTurnOff: true, thinksByDefault: false }
  return { min: 1, max: 24576, canTurnOff: true, thinksByDefault: true }
}

/**
 * The thinking of a generation for this model and generationConfig, or the message of the 400 it
 * gets. A thinking model thinks when the request has a thinkingConfig (without `thinkingBudget: 0`),
 * and, with `thinkByDefault`, also when it has none, as Google's 2.5 models do.
 */
export function thinkingOf (config: unknown, model: string, conversation: Conversation, thinkByDefault: boolean): Thinking | string {
  const raw = isObject(config) ? config.thinkingConfig : undefined
  const capability = modelThinking(model)
  if (raw === undefined || raw === null) {
    const thinks = capability !== undefined && capability.thinksByDefault && thinkByDefault
    return thinks ? { tokens: thoughtWords(conversation, undefined), includeThoughts: false } : NO_THINKING
  }
  if (!isObject(raw)) return `Invalid value at 'generation_config.thinking_config' (TYPE_MESSAGE), ${JSON.stringify(raw)}`
  const budget = raw.thinkingBudget ?? undefined
  if (budget !== undefined && !(typeof budget === 'number' && Number.isInteger(budget) && Math.abs(budget) <= INT32_MAX)) {
    return `Invalid value at 'generation_config.thinking_config.thinking_budget' (TYPE_INT32), ${JSON.stringify(budget)}`
  }
  const include = raw.includeThoughts ?? undefined
  if (include !== undefined && typeof include !== 'boolean') {
    return `Invalid value at 'generation_config.thinking_config.include_thoughts' (TYPE_BOOL), ${JSON.stringify(include)}`
  }
  if (capability === undefined) {
    if (budget !== undefined && budget !== 0) {
      return 'Unable to submit request because thinking is not supported by this model. ' +
        'Learn more: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini'
    }
    return NO_THINKING
  }
  if (budget === 0) {
    if (!capability.canTurnOff) return 'Budget 0 is invalid. This model only works in thinking mode.'
    return NO_THINKING
  }
  if (budget !== undefined && budget !== -1 && !(budget >= capability.min && budget <= capability.max)) {
    return `The thinking budget (${budget}) is invalid. Please choose a value between ${capability.min} and ${capability.max}.`
  }
  if (budget === undefined && !capability.thinksByDefault) return NO_THINKING
  return { tokens: thoughtWords(conversation, budget === -1 ? undefined : budget), includeThoughts: include === true }
}

/** The dynamic amount grows with the prompt; a positive budget bounds it. */
function thoughtWords (conversation: Conversation, budget: number | undefined): number {
  const dynamic = Math.min(DYNAMIC_MAX_WORDS, 24 + 4 * countTokens(promptTextOf(conversation)))
  return budget === undefined ? dynamic : Math.min(dynamic, budget)
}

const FILLER = [
  'I', 'will', 'weigh', 'what', 'the', 'user', 'wants', 'and', 'how', 'to', 'answer', 'it', 'clearly',
  'first', 'then', 'check', 'each', 'step', 'before', 'writing', 'a', 'short', 'reply', 'that', 'fits'
]

/**
 * The thought summary, `tokens` words spread over `events` deltas: a bold heading, the user's last
 * turn quoted, then a fixed plan. Derived from the prompt alone, so it is the same on every call.
 */
export function thoughtDeltas (conversation: Conversation, tokens: number, events: number): string[] {
  const last = (conversation.turns.at(-1)?.text ?? '').split(/\s+/).filter(w => w.length > 0).slice(0, 8)
  const words = ['**Considering', 'the', 'request**', 'The', 'user', 'asks:', ...last.map((w, i) => i === 0 ? `"${w}` : w)]
  if (last.length > 0) words[words.length - 1] += '"'
  for (let i = 0; words.length < tokens; i++) words.push(FILLER[i % FILLER.length]!)
  words.length = tokens
  const count = Math.min(Math.max(1, events), tokens)
  const deltas: string[] = []
  for (let e = 0, next = 0; e < count; e++) {
    const size = Math.floor(tokens / count) + (e < tokens % count ? 1 : 0)
    let delta = ''
    for (let i = next; i < next + size; i++) delta += (i === 0 ? '' : i === 3 ? '\n\n' : ' ') + words[i]!
    deltas.push(delta)
    next += size
  }
  return deltas
}
