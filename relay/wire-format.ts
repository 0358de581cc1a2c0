// What a wire format (the contract's SSE, and the APIs to come) gives the relay: the bytes of each
// event, and the answer of a stream that fails before its first byte. The relay owns everything else:
// the upstream call, retries, timers, cancellation, backpressure and the outcome.

import type { OutgoingHttpHeaders } from 'node:http'
import type { UpstreamError } from '../gemini/upstream-error.js'
import type { FunctionCall } from '../gemini/types.js'
import type { ReportedUsage } from '../schemas/stream.js'

export type FailureKind =
  /** Gemini failed, or refused the answer. */
  | 'upstream'
  /** One of the relay's timeouts ran out. */
  | 'timeout'
  /** The gateway is draining for shutdown. */
  | 'shutdown'
  /** The gateway itself cannot serve right now (out of file descriptors). */
  | 'unavailable'
  /** A bug of the gateway's own: logged with its stack, never retried, never explained to the client. */
  | 'internal'

/** Why a stream ended without its whole answer. */
export interface StreamFailure {
  kind: FailureKind
  /** Safe to show a client. */
  message: string
  /** The same request may succeed later. */
  recoverable: boolean
  /** The upstream failure behind an `upstream` or `unavailable` failure, for formats that map Gemini's status. */
  upstream?: UpstreamError | undefined
  /** Gemini's finish reason when it cut the answer short (`SAFETY`, `RECITATION`, ...). */
  finishReason?: string | undefined
  /** Gemini's reason for refusing the prompt itself (`SAFETY`, `PROHIBITED_CONTENT`, ...). */
  blockReason?: string | undefined
  /** The harm categories behind a SAFETY finish or a prompt blocked for SAFETY, when Gemini named them. */
  blockedCategories?: string[] | undefined
  /** Gemini's last running total before the failure, when it sent one: what the failed stream is billed. */
  usage?: ReportedUsage | undefined
  /** The text relayed before the failure. */
  fullText?: string | undefined
}

export interface StreamCompletion {
  totalChunks: number
  fullText: string
  /** Absent when Gemini reported no usage and counting the tokens failed. */
  usage: ReportedUsage | undefined
  /** The model that answered: Gemini's `modelVersion` when it named one, else the model asked for. */
  model: string
  finishReason: string
  /** The functions the model called, in order; empty when it answered in text only. */
  functionCalls: readonly FunctionCall[]
}

/** A whole (non-streamed) answer, sent through Fastify's reply so the route's hooks and serializer apply. */
export interface WholeAnswer {
  status: number
  headers?: OutgoingHttpHeaders
  body: unknown
}

export interface WireFormat {
  /** The status and headers of a streamed answer, sent just before its first frame. */
  head: () => { status: number, headers: OutgoingHttpHeaders }
  /** The frame of one text delta (`index` from 1); undefined sends nothing now. */
  chunk: (text: string, index: number) => string | undefined
  /** The frame of a thought summary delta; undefined when the format does not carry thoughts. */
  thought: (text: string) => string | undefined
  /** The frame of the function calls of one upstream event; undefined when the format does not carry them. */
  functionCalls: (calls: readonly FunctionCall[]) => string | undefined
  /**
   * For a format that relays Gemini's events as they came (the passthrough): the frame of one event's payload.
   * When set, every upstream event of a forwarded request goes through it, and chunk, thought and functionCalls
   * are not used.
   */
  event?: ((payload: string) => string) | undefined
  /** A frame that keeps idle proxies from closing the connection; undefined when the format has none. */
  heartbeat: () => string | undefined
  /** The last frame of a successful stream. */
  completion: (completion: StreamCompletion) => string
  /** The last frame of a stream that failed after its first frame. */
  error: (failure: StreamFailure) => string
  /** The answer of a stream that failed before anything was sent. */
  refusal: (failure: StreamFailure) => WholeAnswer
}
