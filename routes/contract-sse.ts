// The seed contract's wire format (stream-api-quick-reference.md): `data:` events of chunks, then one
// completion or error event; before the first byte, a failure is a JSON answer. A request with only the
// seed's fields gets exactly these bytes; a conversation request (issue 14) gets the same events with
// what Gemini said about how the answer ended: its finish reason, the model and the usage details.

import type { StreamCompletion, StreamFailure, WholeAnswer, WireFormat } from '../relay/wire-format.js'
import { refusals, type Refusal } from '../schemas/refusals.js'

export const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  'x-accel-buffering': 'no'
}

export const HEARTBEAT = ': ping\n\n'

function dataEvent (payload: object): string {
  return `data: ${JSON.stringify(payload)}\n\n`
}

function seedError (failure: StreamFailure): { error: string, recoverable: boolean } {
  return failure.kind === 'internal'
    ? { error: refusals.internal().body.error, recoverable: false }
    : { error: failure.message, recoverable: failure.recoverable }
}

function seedCompletion ({ totalChunks, fullText, usage }: StreamCompletion): object {
  // Only the seed's three counts: the usage details Gemini may report are not part of its contract.
  return usage === undefined
    ? { complete: true, totalChunks, fullText }
    : { complete: true, totalChunks, fullText, usage: { promptTokens: usage.promptTokens, completionTokens: usage.completionTokens, totalTokens: usage.totalTokens } }
}

export const contractSse: WireFormat = {
  head: () => ({ status: 200, headers: SSE_HEADERS }),
  // Same bytes as JSON.stringify({ chunk, index }) without building the object on the hot path.
  chunk: (text, index) => `data: {"chunk":${JSON.stringify(text)},"index":${index}}\n\n`,
  thought: () => undefined,
  // The contract's requests declare no functions, so Gemini calls none.
  functionCalls: () => undefined,
  heartbeat: () => HEARTBEAT,
  completion: completion => dataEvent(seedCompletion(completion)),
  error: failure => dataEvent(seedError(failure)),
  refusal: failure => {
    switch (failure.kind) {
      case 'internal': return answerOf(refusals.internal())
      case 'shutdown':
      case 'unavailable': return answerOf(refusals.streamUnavailable(failure.message))
      default: return answerOf(refusals.streamFailed(failure.message))
    }
  }
}

/** What a conversation request's failure adds to the seed's: why Gemini refused the prompt or cut the answer. */
function whyGeminiStopped (failure: StreamFailure): object {
  return {
    ...(failure.finishReason === undefined ? {} : { finishReason: failure.finishReason }),
    ...(failure.blockReason === undefined ? {} : { blockReason: failure.blockReason }),
    ...(failure.blockedCategories === undefined ? {} : { blockedCategories: failure.blockedCategories })
  }
}

function answerOf (refusal: Refusal): WholeAnswer {
  return { status: refusal.statusCode, body: refusal.body }
}

/** The seed's events for a conversation request, each ending saying how Gemini ended the answer. */
export const conversationSse: WireFormat = {
  ...contractSse,
  // Thought summaries (sent by Gemini only when the request asked for them) are their own events, never chunks.
  thought: text => dataEvent({ thought: text }),
  completion: completion => dataEvent({
    ...seedCompletion(completion),
    ...(completion.usage === undefined ? {} : { usage: completion.usage }),
    finishReason: completion.finishReason,
    model: completion.model
  }),
  error: failure => dataEvent({ ...seedError(failure), ...whyGeminiStopped(failure) }),
  refusal: failure => {
    if (failure.blockReason === undefined) return contractSse.refusal(failure)
    const refusal = refusals.streamFailed(failure.message)
    return { status: refusal.statusCode, body: { ...refusal.body, ...whyGeminiStopped(failure) } }
  }
}
