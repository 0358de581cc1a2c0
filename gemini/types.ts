import type { Attachment, GenerationOptions, ReportedUsage, Turn } from '../schemas/stream.js'

export interface GenerationRequest {
  model: string
  /** The new user turn. */
  prompt: string
  /** The system instruction. */
  system?: string | undefined
  /** Earlier turns, oldest first. */
  history?: readonly Turn[] | undefined
  /** Files of the new user turn, sent after its text as inlineData parts. */
  attachments?: readonly Attachment[] | undefined
  options?: GenerationOptions | undefined
}

/** One turn as Gemini gets it: its text, then its files (only the new user turn has any). */
export interface ContentTurn extends Turn {
  attachments?: readonly Attachment[] | undefined
}

/** What a token count counts: a text, or turns of a conversation. */
export type CountedContents = string | readonly ContentTurn[]

/** One upstream event, reduced to what the gateway forwards. */
export interface GenerationDelta {
  text: string
  /** Thought summary text of this event, when the model sent any; never part of `text`. */
  thought?: string | undefined
  /** Gemini's running total so far; the last one is what it bills. */
  usage?: ReportedUsage | undefined
  /** The model that answered, as Gemini names it (`modelVersion`); not checked beyond being a string. */
  modelVersion?: string | undefined
  finishReason?: string | undefined
  blockReason?: string | undefined
}

export interface GeminiClient {
  /**
   * Resolves once the upstream accepted the request. Every upstream failure, then and while reading, is an
   * UpstreamError; anything else thrown is a bug of the gateway's own.
   */
  streamGenerate: (request: GenerationRequest, signal: AbortSignal) => Promise<AsyncIterator<GenerationDelta>>
  countTokens: (model: string, contents: CountedContents, signal: AbortSignal) => Promise<number>
}

export interface GeminiClientOptions {
  apiKey: string
  /** Any Gemini-compatible endpoint, such as the bundled emulator. */
  baseUrl?: string | undefined
  apiVersion?: string | undefined
  /**
   * Which client speaks to Gemini: `sdk` (the @google/genai reference client) or `rest` (the direct
   * REST streaming client, proven equivalent by test/gemini-rest-client.test.ts; about 3.5x less
   * CPU per stream, see bench/results). Default `rest`.
   */
  client?: 'sdk' | 'rest' | undefined
  /** Characters one upstream SSE event may have before the stream is refused as too large. Default 8 Mi. */
  maxEventChars?: number | undefined
  /** Bytes of an upstream error body that are read; the rest is never read. Default 64 KiB. */
  maxErrorBodyBytes?: number | undefined
}

/** Far above any real event: Gemini's largest ones carry a generated image inline, a few MiB of base64. */
export const DEFAULT_MAX_EVENT_CHARS = 8 * 1024 * 1024
