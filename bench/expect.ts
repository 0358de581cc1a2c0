// What each path must send for a prompt, and the checks that reject a fast wrong answer.
// The gateway's body is fully deterministic, so it is compared byte for byte. The emulator's own
// body carries a random responseId, so a direct or proxied stream is checked event by event.

import { answerFor, type AnswerPace } from '../emulator/answer.js'
import { expectedStreamBody } from '../scripts/shared/expected-stream.js'

export interface ExpectedStream {
  deltas: string[]
  promptTokens: number
  completionTokens: number
  finishReason: string
}

export function expectedStream (prompt: string, pace: AnswerPace): ExpectedStream {
  // The gateway's SDK sends an empty generationConfig, which selects the same answer as none.
  const answer = answerFor(prompt, undefined, pace)
  return {
    deltas: answer.deltas,
    promptTokens: answer.promptTokens,
    completionTokens: answer.completionTokens,
    finishReason: answer.finishReason
  }
}

/** The exact SSE body the gateway must send for this answer (see the stream API contract). */
export function expectedGatewayBody (expected: ExpectedStream): string {
  return expectedStreamBody(expected.deltas, expected)
}

/** Why a gateway body is wrong, or undefined when it is exactly right. */
export function gatewayBodyProblem (body: string, expected: ExpectedStream): string | undefined {
  const want = expectedGatewayBody(expected)
  if (body === want) return undefined
  let at = 0
  while (at < body.length && at < want.length && body[at] === want[at]) at++
  return `gateway body differs from the expected one at character ${at} of ${want.length} (got ${body.length} characters)`
}

interface UpstreamEvent {
  candidates?: Array<{ content?: { parts?: Array<{ text?: string }> }, finishReason?: string }>
  usageMetadata?: { promptTokenCount?: number, candidatesTokenCount?: number, totalTokenCount?: number }
}

/** Why a Gemini SSE body (direct or proxied) is wrong, or undefined when every event is right. */
export function upstreamBodyProblem (body: string, expected: ExpectedStream): string | undefined {
  if (!body.endsWith('\r\n\r\n')) return 'upstream body does not end with an event delimiter'
  const blocks = body.slice(0, -4).split('\r\n\r\n')
  if (blocks.length !== expected.deltas.length) {
    return `upstream body has ${blocks.length} events, expected ${expected.deltas.length}`
  }
  for (let i = 0; i < blocks.length; i++) {
    const block = blocks[i]!
    if (!block.startsWith('data: ')) return `upstream event ${i + 1} is not a data event`
    let event: UpstreamEvent
    try {
      event = JSON.parse(block.slice(6)) as UpstreamEvent
    } catch {
      return `upstream event ${i + 1} is not valid JSON`
    }
    const candidate = event.candidates?.[0]
    const text = (candidate?.content?.parts ?? []).map(part => part.text ?? '').join('')
    if (text !== expected.deltas[i]) return `upstream event ${i + 1} carries the wrong text`
    const last = i === blocks.length - 1
    if (last !== (candidate?.finishReason !== undefined)) return `upstream event ${i + 1} has a misplaced finishReason`
    if (last) {
      if (candidate?.finishReason !== expected.finishReason) return `upstream finishReason ${String(candidate?.finishReason)}, expected ${expected.finishReason}`
      const usage = event.usageMetadata
      const total = expected.promptTokens + expected.completionTokens
      if (usage?.promptTokenCount !== expected.promptTokens || usage.candidatesTokenCount !== expected.completionTokens || usage.totalTokenCount !== total) {
        return 'upstream usage on the last event is wrong'
      }
    }
  }
  return undefined
}
