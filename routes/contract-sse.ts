// The seed contract's wire format (stream-api-quick-reference.md): `data:` events of chunks, then one
// completion or error event; before the first byte, a failure is a JSON answer. Thoughts are not part
// of the contract and are never sent.

import type { WireFormat } from '../relay/wire-format.js'
import { refusals } from '../schemas/refusals.js'

const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  'x-accel-buffering': 'no'
}

const HEARTBEAT = ': ping\n\n'

function dataEvent (payload: object): string {
  return `data: ${JSON.stringify(payload)}\n\n`
}

export const contractSse: WireFormat = {
  head: () => ({ status: 200, headers: SSE_HEADERS }),
  // Same bytes as JSON.stringify({ chunk, index }) without building the object on the hot path.
  chunk: (text, index) => `data: {"chunk":${JSON.stringify(text)},"index":${index}}\n\n`,
  thought: () => undefined,
  heartbeat: () => HEARTBEAT,
  completion: ({ totalChunks, fullText, usage }) => dataEvent({ complete: true, totalChunks, fullText, ...(usage === undefined ? {} : { usage }) }),
  error: failure => dataEvent(failure.kind === 'internal'
    ? { error: refusals.internal().body.error, recoverable: false }
    : { error: failure.message, recoverable: failure.recoverable }),
  refusal: failure => {
    switch (failure.kind) {
      case 'internal': return answerOf(refusals.internal())
      case 'shutdown':
      case 'unavailable': return answerOf(refusals.streamUnavailable(failure.message))
      default: return answerOf(refusals.streamFailed(failure.message))
    }
  }
}

function answerOf (refusal: ReturnType<typeof refusals.internal>): { status: number, body: unknown } {
  return { status: refusal.statusCode, body: refusal.body }
}
