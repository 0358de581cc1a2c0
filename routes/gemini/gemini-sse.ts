// Gemini's own stream as the passthrough's wire format: every upstream event relayed as Gemini sent it (its
// payload, in Gemini's CRLF framing), nothing added when Gemini ended the answer itself, and Google's error
// event or error answer when the gateway ended it (a timeout, a dropped connection, a shutdown).

import type { StreamFailure, WholeAnswer, WireFormat } from '../../relay/wire-format.js'
import { refusals } from '../../schemas/refusals.js'
import { HEARTBEAT } from '../contract-sse.js'
import type { GoogleErrorBody } from '../../gemini/upstream-text.js'
import { GoogleError } from './errors.js'

const SSE_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache, no-transform', 'x-accel-buffering': 'no' }

function sseEvent (payload: string): string {
  return `data: ${payload}\r\n\r\n`
}

/** A failure Gemini's events already told the client: a finish or block reason it sent. */
function toldByGemini (failure: StreamFailure): boolean {
  return failure.finishReason !== undefined || failure.blockReason !== undefined
}

/** Gemini's own error body when it sent one, else the gateway's in Google's shape. */
export function googleFailureOf (failure: StreamFailure): GoogleErrorBody {
  const sent = failure.upstream?.googleError
  if (sent !== undefined) return sent
  switch (failure.kind) {
    case 'internal': return new GoogleError(500, refusals.internal().body.error).body
    case 'shutdown':
    case 'unavailable': return new GoogleError(503, failure.message).body
    case 'timeout': return new GoogleError(504, failure.message).body
    case 'upstream': return new GoogleError(failure.upstream?.status ?? 502, failure.message).body
  }
}

export const geminiPassthroughSse: WireFormat = {
  head: () => ({ status: 200, headers: SSE_HEADERS }),
  // Never called: the relay sends every event through `event`.
  chunk: () => undefined,
  thought: () => undefined,
  functionCalls: () => undefined,
  event: sseEvent,
  // Gemini's SDKs drop SSE comments (docs/gemini-wire-protocol.md §3.2).
  heartbeat: () => HEARTBEAT,
  completion: () => '',
  error: failure => toldByGemini(failure) ? '' : sseEvent(JSON.stringify(googleFailureOf(failure))),
  refusal: (failure): WholeAnswer => {
    const body = googleFailureOf(failure)
    // The HTTP status Gemini answered with, else the one its body names, when it is one an answer may have.
    const status = failure.upstream?.status ?? body.error.code
    return { status: status >= 400 && status < 600 ? status : 502, headers: { 'content-type': 'application/json; charset=utf-8' }, body }
  }
}
