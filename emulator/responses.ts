// The response bodies the emulator builds from an answer: the GenerateContentResponse events of a
// stream, the unary GenerateContentResponse, and the SSE framing, each shaped by the faults that
// change content or framing. Pure: the writes are in generate.ts.

import { countWords, type Answer } from './answer.js'
import type { Fault } from './faults.js'
import { googleError, googleStatusFor } from './google-errors.js'
import { BLOCKING_SAFETY_RATINGS } from './safety.js'

export const JSON_TYPE = 'application/json; charset=UTF-8'

/** The thought summary of a thinking answer: its deltas (none when not sent) and its token count (sent or not). */
export interface Thoughts { deltas: string[]; tokens: number }
const NO_THOUGHTS: Thoughts = { deltas: [], tokens: 0 }

/** Repeated on every event of one response. */
export interface Meta { modelVersion: string; responseId: string }

export type Step =
  | { type: 'event'; text: string; good: boolean }
  | { type: 'stall'; ms: number | undefined }
  | { type: 'drop' }

const NON_TEXT_PART = { functionCall: { name: 'lookup', args: {} } }
const MALFORMED_EVENT = 'data: {"candidates": [ this is not json\r\n\r\n'

export function sseEvent (value: unknown): string {
  return `data: ${JSON.stringify(value)}\r\n\r\n`
}

/** The GenerateContentResponse objects a stream sends, shaped by the content faults. */
export function responseEvents (answer: Answer, meta: Meta, fault: Fault | undefined, thoughts: Thoughts = NO_THOUGHTS): Record<string, unknown>[] {
  if (fault?.kind === 'blocked') {
    return [{
      promptFeedback: { blockReason: 'SAFETY', safetyRatings: BLOCKING_SAFETY_RATINGS },
      usageMetadata: usage(answer, undefined, 0),
      ...meta
    }]
  }
  // A function call comes whole, in one event.
  const pieces: { parts: unknown[]; words: number }[] = answer.calls !== undefined
    ? [{ parts: answer.calls, words: answer.completionTokens }]
    : answer.deltas.map(d => ({ parts: [{ text: d }], words: countWords(d) }))
  if (fault?.kind === 'non-text-part') {
    pieces.splice(1, 0, { parts: [fault.part ?? NON_TEXT_PART], words: 0 })
  }
  // Thinking comes first: the thought events' counts run up to the whole thought total, which every
  // answer event then carries (when the thoughts are not sent, from the first answer event on).
  const thoughtEvents = thoughts.deltas.map(d => ({ parts: [{ text: d, thought: true }], words: countWords(d), thought: true }))
  let thought = 0
  let completion = 0
  const all = [...thoughtEvents, ...pieces.map(piece => ({ ...piece, thought: false }))]
  return all.map((piece, i) => {
    if (piece.thought) thought += piece.words
    else {
      thought = thoughts.tokens
      completion += piece.words
    }
    const last = i === all.length - 1
    return {
      candidates: [{
        content: { parts: piece.parts, role: 'model' },
        ...(last ? { finishReason: answer.finishReason } : {}),
        index: 0,
        ...(last && answer.finishReason === 'SAFETY' ? { safetyRatings: BLOCKING_SAFETY_RATINGS } : {})
      }],
      ...(fault?.kind === 'no-usage' ? {} : { usageMetadata: usage(answer, piece.thought ? undefined : completion, thought) }),
      ...meta
    }
  })
}

/**
 * Google's usageMetadata: counts of zero are left out (proto3 JSON), so an event before the answer has
 * no candidatesTokenCount and an answer without thinking has no thoughtsTokenCount. promptTokensDetails
 * comes before thoughtsTokenCount, as Google sends it, and only for a prompt with files (see attachments.ts).
 */
function usage (answer: Answer, candidates: number | undefined, thoughts: number): Record<string, unknown> {
  const prompt = answer.promptTokens
  return {
    promptTokenCount: prompt,
    ...(candidates === undefined ? {} : { candidatesTokenCount: candidates }),
    totalTokenCount: prompt + (candidates ?? 0) + thoughts,
    ...(answer.promptDetails === undefined ? {} : { promptTokensDetails: answer.promptDetails }),
    ...(thoughts > 0 ? { thoughtsTokenCount: thoughts } : {})
  }
}

/** The stream as a list of writes, stalls and a drop, shaped by the framing/transport faults. */
export function streamSteps (events: Record<string, unknown>[], fault: Fault | undefined): Step[] {
  const good = (list: Record<string, unknown>[]): Step[] => list.map(e => ({ type: 'event', text: sseEvent(e), good: true }))
  const upTo = (k: number): Record<string, unknown>[] => events.slice(0, Math.min(k, events.length))
  switch (fault?.kind) {
    case 'empty-200':
      return []
    case 'done-sentinel':
      return [...good(events), { type: 'event', text: 'data: [DONE]\r\n\r\n', good: false }]
    case 'stream-error': {
      const error = { error: { code: fault.code, message: fault.message ?? googleError(fault.code).error.message, status: fault.status ?? googleStatusFor(fault.code) } }
      return [...good(upTo(fault.afterChunks)), { type: 'event', text: sseEvent(error), good: false }]
    }
    case 'drop':
      return [...good(upTo(fault.afterChunks)), { type: 'drop' }]
    case 'stall':
      return [...good(upTo(fault.afterChunks)), { type: 'stall', ms: fault.ms }, ...good(events.slice(fault.afterChunks))]
    case 'malformed-json':
      return [...good(upTo(fault.afterChunks)), { type: 'event', text: MALFORMED_EVENT, good: false }]
    case 'unterminated': {
      const k = Math.min(fault.afterChunks, events.length - 1)
      return [...good(events.slice(0, k)), { type: 'event', text: `data: ${JSON.stringify(events[k])}`, good: false }]
    }
    default:
      return good(events)
  }
}

export function unaryResponse (answer: Answer, meta: Meta, fault: Fault | undefined, thoughts: Thoughts = NO_THOUGHTS): Record<string, unknown> {
  if (fault?.kind === 'blocked') return responseEvents(answer, meta, fault)[0]!
  const text = answer.deltas.join('')
  const parts: unknown[] = [...(thoughts.deltas.length > 0 ? [{ text: thoughts.deltas.join(''), thought: true }] : []), ...answer.calls ?? [{ text }]]
  if (fault?.kind === 'non-text-part') parts.push(fault.part ?? NON_TEXT_PART)
  const c = answer.completionTokens
  return {
    candidates: [{
      content: { parts, role: 'model' },
      finishReason: answer.finishReason,
      index: 0,
      ...(answer.finishReason === 'SAFETY' ? { safetyRatings: BLOCKING_SAFETY_RATINGS } : {})
    }],
    ...(fault?.kind === 'no-usage' ? {} : { usageMetadata: usage(answer, c, thoughts.tokens) }),
    ...meta
  }
}
