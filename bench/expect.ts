// What each path must send for a prompt, and the checks that reject a fast wrong answer.
// The gateway's body is fully deterministic, so it is compared byte for byte. The emulator's own
// body carries a random responseId, and an OpenAI completion a random id and the time, so a direct,
// proxied or OpenAI stream is checked event by event.

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

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/**
 * Why a resumable stream's body (POST /api/stream with `"resumable": true`) is wrong, or undefined when it is right:
 * with its `id:` lines taken out it is byte for byte the gateway's body, and every event has had one id line,
 * `<streamId>:<n>` with the answer's X-Stream-Id (a UUID) and n = 1, 2, ... in order.
 */
export function resumableBodyProblem (body: string, streamId: string | undefined, expected: ExpectedStream): string | undefined {
  if (streamId === undefined || !UUID.test(streamId)) return `resumable answer has no UUID X-Stream-Id (got ${String(streamId)})`
  const plain = gatewayBodyProblem(body.replace(/^id: [^\n]*\n/gm, ''), expected)
  if (plain !== undefined) return `resumable body without its id lines: ${plain}`
  const events = body.split('\n\n')
  if (events.pop() !== '') return 'resumable body does not end with an event delimiter'
  for (const [i, event] of events.entries()) {
    const want = `id: ${streamId}:${i + 1}\n`
    if (!event.startsWith(want)) return `resumable event ${i + 1} does not start with ${JSON.stringify(want)} (got ${JSON.stringify(event.slice(0, want.length))})`
    if (event.indexOf('\nid: ') >= 0) return `resumable event ${i + 1} has more than one id line`
  }
  return undefined
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

interface ChatChunk {
  id?: unknown
  object?: unknown
  created?: unknown
  model?: unknown
  choices?: Array<{ index?: unknown, delta?: unknown, logprobs?: unknown, finish_reason?: unknown }>
}

const OPENAI_DONE = 'data: [DONE]\n\n'
const OPENAI_OPENING_DELTA = '{"role":"assistant","content":""}'

/** OpenAI's name for how the answer ended, as POST /v1/chat/completions maps Gemini's. */
function openAIFinishReason (finishReason: string): string {
  return finishReason === 'MAX_TOKENS' ? 'length' : 'stop'
}

/**
 * Why a streamed chat completion (POST /v1/chat/completions without include_usage) is wrong, or
 * undefined when it is right: chat.completion.chunk events of one id, created and model, the role
 * first, then one content delta per upstream delta (the relay sends each as it comes), a last chunk
 * with the finish reason, then [DONE].
 */
export function openAIBodyProblem (body: string, expected: ExpectedStream, model: string): string | undefined {
  if (!body.endsWith(OPENAI_DONE)) return 'openai body does not end with data: [DONE]'
  const events = body.slice(0, -OPENAI_DONE.length).split('\n\n')
  if (events.pop() !== '') return 'openai body has a partial event before [DONE]'
  if (events.length !== expected.deltas.length + 2) {
    return `openai body has ${events.length} chunks before [DONE], expected ${expected.deltas.length + 2} (the role, ${expected.deltas.length} of content, the finish)`
  }
  let first: ChatChunk | undefined
  for (const [i, event] of events.entries()) {
    const where = `openai event ${i + 1}`
    if (!event.startsWith('data: ') || event.includes('\n')) return `${where} is not one data line`
    let chunk: ChatChunk
    try {
      chunk = JSON.parse(event.slice(6)) as ChatChunk
    } catch {
      return `${where} is not valid JSON`
    }
    if (chunk.object !== 'chat.completion.chunk') return `${where} is not a chat.completion.chunk`
    first ??= chunk
    if (typeof chunk.id !== 'string' || !chunk.id.startsWith('chatcmpl-')) return `${where} has no chatcmpl- id`
    if (chunk.id !== first.id || chunk.created !== first.created) return `${where} has another id or created than the first chunk`
    if (!Number.isInteger(chunk.created)) return `${where} has no whole created time`
    if (chunk.model !== model) return `${where} names model ${String(chunk.model)}, expected ${model}`
    if ('usage' in chunk) return `${where} carries usage, which was not asked for`
    const choice = chunk.choices?.length === 1 ? chunk.choices[0] : undefined
    if (choice?.index !== 0 || choice.logprobs !== null) return `${where} does not hold exactly one choice 0`
    const delta = JSON.stringify(choice.delta)
    const last = i === events.length - 1
    if (last !== (choice.finish_reason !== null)) return `${where} has a misplaced finish_reason`
    if (i === 0) {
      if (delta !== OPENAI_OPENING_DELTA) return `${where} delta is ${delta}, expected ${OPENAI_OPENING_DELTA}`
    } else if (last) {
      if (delta !== '{}') return `${where} (the last) delta is ${delta}, expected {}`
      const want = openAIFinishReason(expected.finishReason)
      if (choice.finish_reason !== want) return `openai finish_reason ${String(choice.finish_reason)}, expected ${want}`
    } else {
      const content = (choice.delta as { content?: unknown }).content
      if (typeof content !== 'string' || Object.keys(choice.delta as object).length !== 1) return `${where} delta is ${delta}, expected only content`
      if (content !== expected.deltas[i - 1]) return `${where} carries the wrong text`
    }
  }
  return undefined
}
