// The exact SSE bytes POST /api/stream sends (see the stream API contract), for the tests, the bench
// and the soak to compare a gateway's answer with byte for byte.

import type { Static } from 'typebox'
import type { ErrorEvent } from '../../schemas/stream.js'

export interface TokenCounts {
  promptTokens: number
  completionTokens: number
}

export function dataEvent (payload: unknown): string {
  return `data: ${JSON.stringify(payload)}\n\n`
}

export function chunkEvent (chunk: string, index: number): string {
  return dataEvent({ chunk, index })
}

export function errorEvent (error: string, recoverable: boolean): string {
  return dataEvent({ error, recoverable } satisfies Static<typeof ErrorEvent>)
}

/** The chunk events of `deltas`, numbered from 1. */
export function chunkEvents (deltas: readonly string[]): string {
  return deltas.map((delta, i) => chunkEvent(delta, i + 1)).join('')
}

/** The whole body of a completed stream: one chunk event per delta, then the completion event. */
export function expectedStreamBody (deltas: readonly string[], usage: TokenCounts): string {
  return chunkEvents(deltas) + dataEvent({
    complete: true,
    totalChunks: deltas.length,
    fullText: deltas.join(''),
    usage: { promptTokens: usage.promptTokens, completionTokens: usage.completionTokens, totalTokens: usage.promptTokens + usage.completionTokens }
  })
}
