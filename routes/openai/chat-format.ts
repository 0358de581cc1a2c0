// OpenAI's Chat Completions answer as two wire formats of the relay: `chat.completion.chunk` events ending
// with `data: [DONE]` (`stream: true`), and one `chat.completion` object, built from the same upstream
// stream. Each request gets its own format, holding the completion's identity and what was sent so far.

import { randomBytes, randomUUID } from 'node:crypto'
import type { FunctionCall } from '../../gemini/types.js'
import type { StreamCompletion, StreamFailure, WholeAnswer, WireFormat } from '../../relay/wire-format.js'
import type { ReportedUsage } from '../../schemas/stream.js'
import { HEARTBEAT, SSE_HEADERS } from '../contract-sse.js'
import { OpenAIError } from './errors.js'

/** One id and one creation time per completion, as OpenAI gives every chunk of one answer. */
export interface CompletionIdentity {
  id: string
  created: number
  model: string
}

export function newCompletionIdentity (model: string): CompletionIdentity {
  return { id: `chatcmpl-${randomUUID().replaceAll('-', '')}`, created: Math.floor(Date.now() / 1000), model }
}

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter'

/** Gemini's finish reasons that OpenAI's clients know as a content filter's stop, not as a failure. */
const CONTENT_FILTER_REASONS = new Set(['SAFETY', 'RECITATION', 'BLOCKLIST', 'PROHIBITED_CONTENT', 'SPII', 'IMAGE_SAFETY'])

export function isContentFilter (failure: StreamFailure): boolean {
  return failure.finishReason !== undefined && CONTENT_FILTER_REASONS.has(failure.finishReason)
}

function finishReasonOf (completion: StreamCompletion): FinishReason {
  if (completion.finishReason === 'MAX_TOKENS') return 'length'
  return completion.functionCalls.length > 0 ? 'tool_calls' : 'stop'
}

/** The ids the gateway gives calls Gemini sent without one; never sent back to Gemini (chat-request.ts). */
export const GATEWAY_CALL_ID = /^call_[0-9a-f]{24}$/

export interface OpenAIToolCall {
  id: string
  type: 'function'
  function: { name: string, arguments: string }
  /** Where Gemini's own OpenAI-compatible endpoint puts a call's thought signature, for the client to send back. */
  extra_content?: { google: { thought_signature: string } }
}

export function openAIToolCallOf (call: FunctionCall): OpenAIToolCall {
  return {
    id: call.id ?? `call_${randomBytes(12).toString('hex')}`,
    type: 'function',
    function: { name: call.name, arguments: JSON.stringify(call.args) },
    ...(call.thoughtSignature === undefined ? {} : { extra_content: { google: { thought_signature: call.thoughtSignature } } })
  }
}

export interface OpenAIUsage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  prompt_tokens_details: { cached_tokens: number }
  completion_tokens_details: { reasoning_tokens: number }
}

/** Gemini's usage in OpenAI's names; completion tokens include the thinking, as both bill them. */
export function openAIUsageOf (usage: ReportedUsage | undefined): OpenAIUsage | undefined {
  if (usage === undefined) return undefined
  return {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.totalTokens,
    prompt_tokens_details: { cached_tokens: usage.cachedTokens ?? 0 },
    completion_tokens_details: { reasoning_tokens: usage.thoughtsTokens ?? 0 }
  }
}

/** A failure as OpenAI's error: the status its SDKs map to their error classes, and its type and code. */
export function openAIErrorOfFailure (failure: StreamFailure): OpenAIError {
  switch (failure.kind) {
    case 'internal': return new OpenAIError(500, 'Internal Server Error', 'server_error', null, 'internal_error')
    case 'shutdown':
    case 'unavailable': return new OpenAIError(503, failure.message, 'server_error', null, 'service_unavailable')
    case 'timeout': return new OpenAIError(504, failure.message, 'server_error', null, 'timeout')
    case 'upstream': break
  }
  if (failure.blockReason !== undefined) return new OpenAIError(400, failure.message, 'invalid_request_error', 'messages', 'content_filter')
  switch (failure.upstream?.status) {
    case 400: return new OpenAIError(400, failure.message, 'invalid_request_error', null, 'invalid_request')
    case 404: return new OpenAIError(404, failure.message, 'invalid_request_error', 'model', 'model_not_found')
    case 429: return new OpenAIError(429, failure.message, 'rate_limit_error', null, 'rate_limit_exceeded')
    case 503: return new OpenAIError(503, failure.message, 'server_error', null, 'upstream_unavailable')
    default: return new OpenAIError(502, failure.message, 'api_error', null, 'upstream_error')
  }
}

function refusalOf (failure: StreamFailure): WholeAnswer {
  const error = openAIErrorOfFailure(failure)
  return { status: error.statusCode, body: error.body }
}

/** `chat.completion.chunk` events; with `includeUsage`, every chunk carries `"usage":null` and one last chunk the usage. */
export function chatCompletionSse (identity: CompletionIdentity, includeUsage: boolean): WireFormat {
  const head = `data: {"id":"${identity.id}","object":"chat.completion.chunk","created":${identity.created},"model":${JSON.stringify(identity.model)},"choices":[`
  const tail = includeUsage ? ',"usage":null}\n\n' : '}\n\n'
  // Built once: the per-chunk frame is three concatenations and one JSON.stringify of the text.
  const contentHead = `${head}{"index":0,"delta":{"content":`
  const contentTail = `},"logprobs":null,"finish_reason":null}]${tail}`
  let roleSent = false

  const choiceFrame = (delta: object, finishReason: FinishReason | null): string =>
    `${head}${JSON.stringify({ index: 0, delta, logprobs: null, finish_reason: finishReason })}]${tail}`

  /** The role goes in the first delta, whatever it carries. */
  const opening = (): string => {
    if (roleSent) return ''
    roleSent = true
    return choiceFrame({ role: 'assistant', content: '' }, null)
  }

  const ending = (finishReason: FinishReason, usage: ReportedUsage | undefined): string => {
    const usageFrame = includeUsage
      ? `${head}],"usage":${JSON.stringify(openAIUsageOf(usage) ?? null)}}\n\n`
      : ''
    return `${opening()}${choiceFrame({}, finishReason)}${usageFrame}data: [DONE]\n\n`
  }

  let callIndex = 0
  /** Each call as OpenAI streams one: its index, id and name first, then its arguments. */
  const callFrames = (call: FunctionCall): string => {
    const { function: { name, arguments: args }, ...identity } = openAIToolCallOf(call)
    const index = callIndex++
    return choiceFrame({ tool_calls: [{ index, ...identity, function: { name, arguments: '' } }] }, null) +
      choiceFrame({ tool_calls: [{ index, function: { arguments: args } }] }, null)
  }

  return {
    head: () => ({ status: 200, headers: SSE_HEADERS }),
    chunk: text => `${opening()}${contentHead}${JSON.stringify(text)}${contentTail}`,
    thought: text => `${opening()}${choiceFrame({ reasoning_content: text }, null)}`,
    functionCalls: calls => opening() + calls.map(callFrames).join(''),
    heartbeat: () => HEARTBEAT,
    completion: completion => ending(finishReasonOf(completion), completion.usage),
    error: failure => {
      if (isContentFilter(failure)) return ending('content_filter', failure.usage)
      // OpenAI's SDKs raise an event with `error` as an APIError; no [DONE] follows, so no client takes it as whole.
      return `data: ${JSON.stringify(openAIErrorOfFailure(failure).body)}\n\n`
    },
    refusal: failure => {
      if (!isContentFilter(failure)) return refusalOf(failure)
      return { status: 200, headers: SSE_HEADERS, body: ending('content_filter', failure.usage) }
    }
  }
}

interface WholeMessage {
  role: 'assistant'
  content: string | null
  refusal: null
  reasoning_content?: string
  tool_calls?: OpenAIToolCall[]
}

/** One `chat.completion` object: nothing is sent until the answer is whole, so every failure is a plain error answer. */
export function chatCompletionWhole (identity: CompletionIdentity): WireFormat {
  let reasoning = ''
  const body = (content: string, finishReason: FinishReason, usage: ReportedUsage | undefined, calls: readonly FunctionCall[] = []): string => {
    const message: WholeMessage = {
      role: 'assistant',
      // OpenAI's content of an answer that only calls functions is null.
      content: content === '' && calls.length > 0 ? null : content,
      refusal: null,
      ...(reasoning === '' ? {} : { reasoning_content: reasoning }),
      ...(calls.length === 0 ? {} : { tool_calls: calls.map(openAIToolCallOf) })
    }
    const openAIUsage = openAIUsageOf(usage)
    return JSON.stringify({
      id: identity.id,
      object: 'chat.completion',
      created: identity.created,
      model: identity.model,
      choices: [{ index: 0, message, logprobs: null, finish_reason: finishReason }],
      ...(openAIUsage === undefined ? {} : { usage: openAIUsage })
    })
  }
  return {
    head: () => ({ status: 200, headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' } }),
    chunk: () => undefined,
    thought: text => {
      reasoning += text
      return undefined
    },
    functionCalls: () => undefined,
    heartbeat: () => undefined,
    completion: completion => body(completion.fullText, finishReasonOf(completion), completion.usage, completion.functionCalls),
    // Never sent: nothing is written before the completion, so a failure is always a refusal.
    error: failure => JSON.stringify(openAIErrorOfFailure(failure).body),
    refusal: failure => {
      if (!isContentFilter(failure)) return refusalOf(failure)
      return { status: 200, headers: { 'content-type': 'application/json; charset=utf-8' }, body: body(failure.fullText ?? '', 'content_filter', failure.usage) }
    }
  }
}
