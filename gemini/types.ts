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
  /** Functions the model may call: `"tools":[{"functionDeclarations":[...]}]`. */
  tools?: readonly FunctionDeclaration[] | undefined
  /** `"toolConfig":{"functionCallingConfig":{...}}`. */
  toolChoice?: ToolChoice | undefined
  /**
   * The whole conversation, oldest first, ending with the new user turn. When set, `prompt`, `history` and
   * `attachments` are ignored (callers pass `prompt: ''`), and the token count follows these turns.
   */
  contents?: readonly ContentTurn[] | undefined
  /**
   * A caller's own streamGenerateContent body (the Gemini passthrough): when set, the REST client POSTs `body`
   * verbatim to `<base>/<apiVersion>/models/<model>:streamGenerateContent?alt=sse` instead of building one from
   * the fields above, and every delta carries its event's payload (`event`). The SDK client refuses it.
   */
  forwarded?: { apiVersion: string, body: string } | undefined
}

/** A call forwarded as the caller wrote it (the Gemini passthrough): everything but the key is the caller's. */
export interface ForwardedCall {
  /** 'v1' | 'v1beta' | 'v1alpha', from the caller's path. */
  apiVersion: string
  /** After the version: `models/gemini-2.5-flash:generateContent`, `models/gemini-2.5-flash:countTokens`, `models`, `models/gemini-2.5-flash`. */
  path: string
  method: 'GET' | 'POST'
  /** Query parameters to forward (pageSize, pageToken, alt); the route never passes a key here. */
  query?: Readonly<Record<string, string>> | undefined
  /** The JSON body exactly as the caller sent it (POST only). */
  body?: string | undefined
}

/** Gemini's answer to a forwarded call, whatever its status. */
export interface ForwardedAnswer {
  status: number
  /** Gemini's content-type header, when it sent one. */
  contentType: string | undefined
  /** The whole body as Gemini sent it, with the gateway's own Gemini key redacted wherever it appears. */
  body: string
}

/** One function the model may call; `parameters` is a JSON Schema object, sent as `parametersJsonSchema`. */
export interface FunctionDeclaration { name: string, description?: string | undefined, parameters?: Record<string, unknown> | undefined }
/** Gemini's functionCallingConfig. */
export interface ToolChoice { mode: 'AUTO' | 'ANY' | 'NONE' | 'VALIDATED', allowedFunctionNames?: readonly string[] | undefined }
/** A call the model made. `thoughtSignature` travels on the call's part, beside `functionCall`, on the wire. */
export interface FunctionCall { id?: string | undefined, name: string, args: Record<string, unknown>, thoughtSignature?: string | undefined }
/** What a called function returned, sent back in a user turn. */
export interface FunctionResponse { id?: string | undefined, name: string, response: Record<string, unknown> }

/**
 * One turn as Gemini gets it: its text part (only when `text` is not ''), then its files as inlineData, then the
 * model's calls as functionCall parts, then the answers to them as functionResponse parts.
 */
export interface ContentTurn extends Turn {
  attachments?: readonly Attachment[] | undefined
  /** Model turns: the calls the model made. */
  functionCalls?: readonly FunctionCall[] | undefined
  /** User turns: what the called functions returned. */
  functionResponses?: readonly FunctionResponse[] | undefined
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
  /** On an event that stops for safety (finish or block reason `SAFETY`): the harm categories that stopped it. */
  blockedCategories?: string[] | undefined
  /** The functionCall parts of this event's candidate 0, in order. */
  functionCalls?: FunctionCall[] | undefined
  /**
   * Forwarded streams only: the event's data payload exactly as Gemini sent it (the JSON text after `data: `),
   * for the passthrough to relay byte for byte. A forwarded stream yields one delta per event, in order.
   */
  event?: string | undefined
}

/** One model as Gemini's models.list and models.get describe it, reduced to what the gateway shows. */
export interface ModelInfo {
  /** The model's id, without the `models/` prefix: what a request names. */
  id: string
  displayName?: string | undefined
  description?: string | undefined
  inputTokenLimit?: number | undefined
  outputTokenLimit?: number | undefined
  /** Gemini's methods for it (`generateContent`, `countTokens`, ...), when it said. */
  supportedActions?: readonly string[] | undefined
  thinking?: boolean | undefined
}

/** Models read from Gemini's list at most: far above the few dozen it serves, so a runaway list stays bounded. */
export const MAX_LISTED_MODELS = 1000
/** Models asked for per page of models.list: a page stays well inside the 64 KiB a small answer may take. */
export const MODEL_LIST_PAGE_SIZE = 25

export interface GeminiClient {
  /**
   * Resolves once the upstream accepted the request. Every upstream failure, then and while reading, is an
   * UpstreamError; anything else thrown is a bug of the gateway's own.
   */
  streamGenerate: (request: GenerationRequest, signal: AbortSignal) => Promise<AsyncIterator<GenerationDelta>>
  countTokens: (model: string, contents: CountedContents, signal: AbortSignal) => Promise<number>
  /**
   * Gemini's models.list, every page (up to MAX_LISTED_MODELS). Optional, so that a host's own client
   * written before it still serves streams; the models route answers without it as with a failed call.
   */
  listModels?: (signal: AbortSignal) => Promise<ModelInfo[]>
  /** Gemini's models.get; an unknown model is an UpstreamError with status 404. Optional, as listModels. */
  getModel?: (name: string, signal: AbortSignal) => Promise<ModelInfo>
  /**
   * Sends a caller's call as written, with the gateway's key (x-goog-api-key) and the client's own headers, none of
   * the caller's. Any status is an answer, not an error; a transport failure is an UpstreamError, and so is a body
   * over `maxForwardedBodyBytes` (too_large). Optional, as listModels; the SDK client has none.
   */
  forward?: (call: ForwardedCall, signal: AbortSignal) => Promise<ForwardedAnswer>
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
  /** Bytes of a forwarded call's answer the gateway holds; a longer one is refused as too large. Default 32 MiB. */
  maxForwardedBodyBytes?: number | undefined
}

/** Far above any real event: Gemini's largest ones carry a generated image inline, a few MiB of base64. */
export const DEFAULT_MAX_EVENT_CHARS = 8 * 1024 * 1024
/** A generateContent answer may carry several generated images inline, each a few MiB of base64. */
export const DEFAULT_MAX_FORWARDED_BODY_BYTES = 32 * 1024 * 1024
