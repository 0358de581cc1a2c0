// Deterministic answers for the emulator.
//
// A "token" is a whitespace-separated word. An answer is a pseudo-random list of English-ish words
// seeded by a hash of the prompt and the sampling options, so the same request always gets the same
// text and a different prompt gets a different one. At fixed positions the text carries the
// characters that break naive SSE/JSON framing: a newline, a blank line, a double quote, a
// backslash, non-ASCII letters and an emoji (a UTF-16 surrogate pair).
//
// A conversation (a system instruction, earlier turns) joins the seed, so it changes the words; a
// single user turn without a system instruction is seeded exactly as a bare prompt always was. Inline
// files join the seed too (attachments.ts), and count into the prompt's tokens.

import { formatDeltas } from './answer-format.js'
import { type ModalityCount, mediaSeed, promptDetails } from './attachments.js'
import { type Conversation, mediaOfConversation, promptTextOf } from './conversation.js'

export interface GenerationOptions {
  maxOutputTokens?: number | undefined
  temperature?: number | undefined
  topP?: number | undefined
  topK?: number | undefined
  /** Accepted, and no part of the seed: the answer is deterministic already. */
  seed?: number | undefined
  /** Accepted; they do not change the answer. */
  presencePenalty?: number | undefined
  frequencyPenalty?: number | undefined
  /** The text ends before the first occurrence of any of them. */
  stopSequences?: string[] | undefined
  /** 'application/json' makes the answer a JSON string; 'text/x.enum' picks one of responseSchema's enum. */
  responseMimeType?: string | undefined
  responseSchema?: unknown
}

export interface AnswerPace {
  chunkCount: number
  defaultMaxTokens: number
}

/** 'SAFETY' only for a prompt with the `[[unsafe]]` trigger (safety.ts). */
export type FinishReason = 'STOP' | 'MAX_TOKENS' | 'SAFETY'

export interface Answer {
  /** Text deltas, one a stream event; concatenated they give the whole answer. */
  deltas: string[]
  promptTokens: number
  /** promptTokensDetails: only for a prompt with inline files, whose tokens it counts by modality. */
  promptDetails?: ModalityCount[] | undefined
  completionTokens: number
  /** 'MAX_TOKENS' when the request's maxOutputTokens set the length (and no stop sequence cut it), else 'STOP'. */
  finishReason: FinishReason
  /** A function call answer's parts (function-calling.ts), sent whole in one event instead of the deltas. */
  calls?: Record<string, unknown>[] | undefined
}

/** No answer is longer than this many words, whatever maxOutputTokens says. */
export const MAX_ANSWER_TOKENS = 4096

const VOCABULARY = [
  'the', 'a', 'of', 'and', 'to', 'in', 'is', 'that', 'for', 'it', 'as', 'with', 'on', 'by', 'this',
  'light', 'sky', 'blue', 'water', 'river', 'stone', 'signal', 'stream', 'model', 'answer', 'token',
  'gateway', 'server', 'client', 'packet', 'window', 'garden', 'mountain', 'ocean', 'cloud', 'engine',
  'quiet', 'bright', 'gentle', 'rapid', 'simple', 'careful', 'distant', 'early', 'late', 'warm',
  'cold', 'small', 'large', 'green', 'golden', 'hidden', 'open', 'steady', 'curious', 'honest',
  'runs', 'flows', 'carries', 'returns', 'waits', 'listens', 'builds', 'measures', 'follows',
  'explains', 'shows', 'keeps', 'moves', 'turns', 'grows', 'holds', 'reads', 'writes', 'sends',
  'because', 'while', 'after', 'before', 'under', 'over', 'between', 'through', 'across', 'without',
  'every', 'some', 'many', 'few', 'each', 'other', 'first', 'last', 'next', 'same',
  'scattering', 'wavelength', 'protocol', 'latency', 'buffer', 'pattern', 'question', 'reason',
  'evening', 'morning', 'harbor', 'lantern', 'meadow', 'thunder', 'whisper', 'journey', 'compass',
]
const NON_ASCII_WORDS = ['café', 'naïve', 'résumé', '—', 'über', 'Zürich', 'façade', 'señor']
const EMOJI = ['🚀', '✨', '🌍', '🙂']
const POSITION_CYCLE = 16

/** Tokens in a text: whitespace-separated words, at least 1 for any non-empty text. */
export function countTokens (text: string): number {
  if (text.length === 0) return 0
  return Math.max(1, countWords(text))
}

export function countWords (text: string): number {
  let words = 0
  for (const w of text.split(/\s+/)) if (w.length > 0) words++
  return words
}

/** How many words an answer has for a requested maxOutputTokens. */
export function answerLength (maxOutputTokens: number | undefined, defaultMaxTokens: number): number {
  const requested = maxOutputTokens ?? defaultMaxTokens
  return Math.min(Math.max(1, Math.floor(requested)), MAX_ANSWER_TOKENS)
}

/**
 * The deterministic answer for a prompt (or a whole conversation) and generation options, as the text
 * deltas a stream sends. With n words and chunkCount c, there are min(n, c) deltas of near-equal word
 * counts, before the response MIME type and the stop sequences shape them (answer-format.ts).
 */
export function answerFor (
  input: string | Conversation,
  generationConfig: GenerationOptions | undefined,
  pace: AnswerPace
): Answer {
  const conversation: Conversation = typeof input === 'string' ? { turns: [{ role: 'user', text: input }] } : input
  const cfg = generationConfig ?? {}
  const n = answerLength(cfg.maxOutputTokens, pace.defaultMaxTokens)
  const seedParts: unknown[] = [
    conversation.turns.at(-1)?.text ?? '', cfg.temperature ?? null, cfg.topP ?? null, cfg.topK ?? null, cfg.maxOutputTokens ?? null
  ]
  if (conversation.system !== undefined || conversation.turns.length > 1) {
    seedParts.push(conversation.system ?? null, conversation.turns.slice(0, -1).map(turn => [turn.role, turn.text]))
  }
  const media = mediaOfConversation(conversation)
  if (media.length > 0) seedParts.push(mediaSeed(media))
  const seed = hash32(JSON.stringify(seedParts))
  const random = mulberry32(seed)
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T

  const words: string[] = []
  const separators: string[] = [] // separators[i] goes before words[i]; separators[0] is ''
  let capitalize = true
  for (let i = 0; i < n; i++) {
    const k = i % POSITION_CYCLE
    let word = pick(VOCABULARY)
    if (k === 1) word = `"${word}"`
    else if (k === 2) word = pick(NON_ASCII_WORDS)
    else if (k === 3) word = `${word}\\${pick(VOCABULARY)}`
    else if (k === 4) word = `${word}${pick(EMOJI)}`
    if (capitalize && /^[a-z]/.test(word)) word = word[0]!.toUpperCase() + word.slice(1)
    capitalize = false
    const endsSentence = i === n - 1 || (k > 4 && random() < 0.15)
    if (endsSentence) {
      word += '.'
      capitalize = true
    }
    words.push(word)
    separators.push(i === 0 ? '' : k === 0 ? '\n\n' : k === 2 ? '\n' : ' ')
  }

  const eventCount = Math.min(Math.max(1, Math.floor(pace.chunkCount)), n)
  const base = Math.floor(n / eventCount)
  const extra = n % eventCount
  const deltas: string[] = []
  let next = 0
  for (let e = 0; e < eventCount; e++) {
    const size = base + (e < extra ? 1 : 0)
    let delta = ''
    for (let i = next; i < next + size; i++) delta += separators[i]! + words[i]!
    next += size
    deltas.push(delta)
  }

  const limited = cfg.maxOutputTokens !== undefined && cfg.maxOutputTokens <= MAX_ANSWER_TOKENS
  const formatted = formatDeltas(deltas, cfg, pick)
  let completionTokens = 0
  for (const delta of formatted.deltas) completionTokens += countWords(delta)
  const prompt = promptCount(conversation)
  return {
    deltas: formatted.deltas,
    promptTokens: prompt.tokens,
    ...(prompt.details === undefined ? {} : { promptDetails: prompt.details }),
    completionTokens,
    finishReason: limited && !formatted.stopped ? 'MAX_TOKENS' : 'STOP'
  }
}

/** The prompt's tokens, text and files; by modality only when there are files. */
export function promptCount (conversation: Conversation): { tokens: number; details?: ModalityCount[] } {
  const text = countTokens(promptTextOf(conversation))
  const media = mediaOfConversation(conversation)
  if (media.length === 0) return { tokens: text }
  const details = promptDetails(media, text, countTokens)
  return { tokens: details.reduce((sum, entry) => sum + entry.tokenCount, 0), details }
}

/** A deterministic `pick`, seeded by the JSON of `parts`. */
export function seededPick (parts: unknown[]): <T>(list: readonly T[]) => T {
  const random = mulberry32(hash32(JSON.stringify(parts)))
  return <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T
}

/** FNV-1a over UTF-16 code units, 32 bits. */
function hash32 (text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

function mulberry32 (seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
