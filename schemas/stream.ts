import { Type, type Static } from 'typebox'
import { keyRefusalSchemas, refusals, refusalSchema } from './refusals.js'

export const PROMPT_MAX_LENGTH = 32_000
/** Characters the system instruction and the earlier turns may hold together. */
export const CONVERSATION_MAX_CHARS = 128_000
export const HISTORY_MAX_TURNS = 100
/** Gemini's generationConfig.topK and seed are int32s: anything outside can never work. */
const INT32_MAX = 2_147_483_647
const INT32_MIN = -2_147_483_648
export const RESPONSE_SCHEMA_MAX_BYTES = 32 * 1024
export const RESPONSE_SCHEMA_MAX_DEPTH = 32
/** Gemini's HarmCategory names that its Developer API takes in safetySettings. */
const HarmCategory = Type.Union([
  Type.Literal('HARM_CATEGORY_HARASSMENT'), Type.Literal('HARM_CATEGORY_HATE_SPEECH'), Type.Literal('HARM_CATEGORY_SEXUALLY_EXPLICIT'),
  Type.Literal('HARM_CATEGORY_DANGEROUS_CONTENT'), Type.Literal('HARM_CATEGORY_CIVIC_INTEGRITY')
])
const HarmBlockThreshold = Type.Union([
  Type.Literal('BLOCK_LOW_AND_ABOVE'), Type.Literal('BLOCK_MEDIUM_AND_ABOVE'), Type.Literal('BLOCK_ONLY_HIGH'), Type.Literal('BLOCK_NONE'), Type.Literal('OFF')
])

export const GenerationOptions = Type.Object({
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
  topP: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  topK: Type.Optional(Type.Integer({ minimum: 1, maximum: INT32_MAX })),
  maxOutputTokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 65_536 })),
  stopSequences: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), {
    maxItems: 5,
    description: 'The answer ends before the first of these it would contain'
  })),
  seed: Type.Optional(Type.Integer({ minimum: INT32_MIN, maximum: INT32_MAX })),
  // Gemini's documented range: [-2.0, 2.0).
  presencePenalty: Type.Optional(Type.Number({ minimum: -2, exclusiveMaximum: 2 })),
  frequencyPenalty: Type.Optional(Type.Number({ minimum: -2, exclusiveMaximum: 2 })),
  responseMimeType: Type.Optional(Type.Union([Type.Literal('text/plain'), Type.Literal('application/json'), Type.Literal('text/x.enum')])),
  responseSchema: Type.Optional(Type.Record(Type.String(), Type.Unknown(), {
    description: `A JSON Schema the answer follows (with responseMimeType application/json), sent as responseJsonSchema; at most ${RESPONSE_SCHEMA_MAX_BYTES} bytes and ${RESPONSE_SCHEMA_MAX_DEPTH} levels deep`
  })),
  thinking: Type.Optional(Type.Object({
    budget: Type.Optional(Type.Integer({ minimum: -1, maximum: 32_768, description: '-1: as the model decides, 0: off, or a token count' })),
    includeThoughts: Type.Optional(Type.Boolean({ description: 'Send thought summaries as their own events' }))
  }, { additionalProperties: false })),
  safetySettings: Type.Optional(Type.Array(Type.Object({
    category: HarmCategory,
    threshold: HarmBlockThreshold
  }, { additionalProperties: false }), { maxItems: HarmCategory.anyOf.length })),
  fallback: Type.Optional(Type.Boolean({ description: 'The gateway\'s own, not Gemini\'s: false keeps the request on its model, never on a fallback of MODEL_FALLBACKS' }))
}, { additionalProperties: false, description: 'Generation options, passed to Gemini as generationConfig (but `fallback`)' })

/**
 * The MIME types Gemini documents for inline data (ai.google.dev/gemini-api/docs: image-understanding
 * "Supported image formats", audio "Supported audio formats", video-understanding "Supported video formats",
 * document-processing: PDF; Vertex AI's document understanding adds text/plain). Anything else Gemini refuses
 * with 400 `Unsupported MIME type: image/gif`, so it is refused here first.
 */
export const ATTACHMENT_MIME_TYPES = [
  'image/png', 'image/jpeg', 'image/webp', 'image/heic', 'image/heif',
  'audio/wav', 'audio/mp3', 'audio/aiff', 'audio/aac', 'audio/ogg', 'audio/flac',
  'video/mp4', 'video/mpeg', 'video/mov', 'video/avi', 'video/x-flv', 'video/mpg', 'video/webm', 'video/wmv', 'video/3gpp',
  'application/pdf', 'text/plain'
] as const
export const ATTACHMENTS_MAX_ITEMS = 16
/**
 * Decoded bytes all attachments of one request may hold by default. Gemini takes up to 100 MB of inline data
 * per request, base64-encoded (Google's blog, January 2026, "Increased file size limits"; 20 MB before); the
 * gateway holds a whole body in memory, so its default is lower and an operator may raise it.
 */
export const DEFAULT_ATTACHMENTS_MAX_BYTES = 20 * 1024 * 1024
/** The most a configured cap may be: its base64 stays within Gemini's 100 MB per request. */
export const ATTACHMENTS_MAX_BYTES_LIMIT = 75_000_000
/**
 * The standard base64 alphabet, then at most two `=`: one character class, so it runs in linear time without
 * backtracking on a string of many MiB (a group per quartet overflows V8's regexp stack). The route checks the
 * padding (a length that is a multiple of 4).
 */
export const BASE64_PATTERN = '^[A-Za-z0-9+/]*={0,2}$'

export const Attachment = Type.Object({
  // An enum, not a union of literals: the validator reports 8 issues at most, one per literal.
  mimeType: Type.Enum(ATTACHMENT_MIME_TYPES),
  data: Type.String({ minLength: 4, pattern: BASE64_PATTERN, description: 'The file\'s bytes, base64 (standard alphabet, padded)' })
}, { additionalProperties: false, description: 'One file of the new user turn, sent to Gemini as inlineData' })
export type Attachment = Static<typeof Attachment>

export const Turn = Type.Object({
  role: Type.Union([Type.Literal('user'), Type.Literal('model')]),
  text: Type.String({ minLength: 1, maxLength: CONVERSATION_MAX_CHARS })
}, { additionalProperties: false, description: 'One earlier turn of the conversation' })
export type Turn = Static<typeof Turn>

export const StreamRequest = Type.Object({
  // `\S` rejects whitespace-only prompts with the same answer as a missing one.
  prompt: Type.String({ minLength: 1, maxLength: PROMPT_MAX_LENGTH, pattern: '\\S' }),
  model: Type.Optional(Type.String({
    // No `..`: Gemini's clients refuse such a name before sending it, so it could only fail.
    pattern: '^(?!.*\\.\\.)(models/)?[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$',
    description: 'Gemini model name, for example gemini-2.0-flash-exp'
  })),
  system: Type.Optional(Type.String({ minLength: 1, maxLength: CONVERSATION_MAX_CHARS, description: 'The system instruction' })),
  history: Type.Optional(Type.Array(Turn, {
    maxItems: HISTORY_MAX_TURNS,
    description: `Earlier turns, oldest first, before \`prompt\` (the new user turn); with \`system\` at most ${CONVERSATION_MAX_CHARS} characters`
  })),
  attachments: Type.Optional(Type.Array(Attachment, {
    maxItems: ATTACHMENTS_MAX_ITEMS,
    description: `Files of the new user turn, after \`prompt\`; at most ${DEFAULT_ATTACHMENTS_MAX_BYTES} decoded bytes together unless the server sets another cap`
  })),
  options: Type.Optional(GenerationOptions),
  agent: Type.Optional(Type.String({
    pattern: '^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$',
    description: 'Caller-chosen identifier used as a metrics label'
  })),
  resumable: Type.Optional(Type.Boolean({
    description: 'Keep the events for a resume after a dropped connection: the answer carries X-Stream-Id and an SSE id on every event (GET /api/stream/{streamId} reads on)'
  }))
}, { additionalProperties: false })
export type StreamRequest = Static<typeof StreamRequest>
export type GenerationOptions = Static<typeof GenerationOptions>

export const Usage = Type.Object({
  promptTokens: Type.Integer(),
  completionTokens: Type.Integer(),
  totalTokens: Type.Integer()
})
export type Usage = Static<typeof Usage>

/** Usage of a conversation request's completion: the seed's three counts and the details Gemini reported. */
export const ReportedUsage = Type.Object({
  ...Usage.properties,
  completionTokens: Type.Integer({ description: 'Answer and thinking tokens, as billed' }),
  thoughtsTokens: Type.Optional(Type.Integer({ description: 'Of completionTokens, those spent thinking' })),
  cachedTokens: Type.Optional(Type.Integer({ description: 'Of promptTokens, those read from the context cache' }))
})
export type ReportedUsage = Static<typeof ReportedUsage>

export const ChunkEvent = Type.Object({
  chunk: Type.String(),
  index: Type.Integer({ minimum: 1 })
}, { description: 'One text delta: `data: {"chunk":"...","index":N}`, N from 1' })
export const CompletionEvent = Type.Object({
  complete: Type.Literal(true),
  totalChunks: Type.Integer(),
  fullText: Type.String(),
  // Gemini reports usage, or the gateway counts it; only when counting fails too is it left out.
  usage: Type.Optional(ReportedUsage),
  finishReason: Type.Optional(Type.String({ description: 'Conversation requests only: Gemini\'s finish reason, STOP or MAX_TOKENS' })),
  model: Type.Optional(Type.String({ description: 'Conversation requests only: the model that answered, as Gemini reported it' }))
}, { description: 'The last event of a successful stream; a request with only the seed\'s fields gets the seed\'s fields and usage counts only' })
export const ThoughtEvent = Type.Object({
  thought: Type.String()
}, { description: 'Conversation requests with options.thinking.includeThoughts only: a thought summary delta, before the chunks, `data: {"thought":"..."}`' })
export const ErrorEvent = Type.Object({
  error: Type.String(),
  recoverable: Type.Boolean({ description: 'True when the same request may succeed later' }),
  finishReason: Type.Optional(Type.String({ description: 'Conversation requests only: why Gemini cut the answer short, e.g. SAFETY' })),
  blockReason: Type.Optional(Type.String({ description: 'Conversation requests only: why Gemini refused the prompt (after a heartbeat opened the stream), e.g. SAFETY' })),
  blockedCategories: Type.Optional(Type.Array(Type.String(), {
    description: 'Conversation requests only, on a SAFETY finish or a prompt blocked for SAFETY: the harm categories that stopped it, e.g. HARM_CATEGORY_DANGEROUS_CONTENT, when Gemini named them'
  }))
}, { description: 'The last event of a stream that failed after it started' })

/** The OpenAPI description of every answer of `POST /api/stream`; 4xx/5xx bodies are also serialized by it. */
export const StreamResponses = {
  200: {
    description: 'A Server-Sent Events stream: thought events when asked for, chunk events, then exactly one completion or error event. Lines starting with `:` are heartbeats.',
    content: { 'text/event-stream': { schema: Type.Union([ChunkEvent, ThoughtEvent, CompletionEvent, ErrorEvent]) } }
  },
  400: refusalSchema('Invalid body: a missing prompt, a wrong type, an out-of-range option or an unknown field', refusals.promptRequired()),
  ...keyRefusalSchemas,
  413: refusalSchema('Body over 1.9 MiB (room for a maximal prompt, system instruction and history with every character JSON-escaped) plus room for the attachments\' cap in base64, or attachments over that cap', refusals.bodyTooLarge()),
  415: refusalSchema('Body is not application/json, or declares a charset other than UTF-8', refusals.notJson()),
  500: Type.Object({
    ...refusalSchema('', refusals.streamFailed('')).properties,
    blockReason: Type.Optional(Type.String({ description: 'Conversation requests only: why Gemini refused the prompt, e.g. SAFETY' })),
    blockedCategories: Type.Optional(Type.Array(Type.String(), { description: 'Conversation requests only, with blockReason SAFETY: the harm categories, when Gemini named them' }))
  }, { description: 'Gemini failed before the first chunk, or refused the prompt', examples: [refusals.streamFailed('Resource has been exhausted (e.g. check quota).').body] }),
  503: refusalSchema('The gateway is draining for shutdown, or rate limiting is unavailable', refusals.shuttingDown())
}

export const StreamResumeResponses = {
  200: {
    description: 'The stream\'s events after the resume point, each after its `id: <streamId>:<n>` line, then the live ones until its completion or error event. Lines starting with `:` are heartbeats.',
    content: { 'text/event-stream': { schema: Type.String() } }
  },
  400: refusalSchema('Last-Event-ID is not `<streamId>:<n>` of this stream, or `after` not a whole number', refusals.invalidResumePoint()),
  ...keyRefusalSchemas,
  404: refusalSchema('No resumable stream with this id for this key: unknown, expired, or another key\'s', refusals.streamNotFound()),
  410: refusalSchema('The events after the resume point are no longer kept (past RESUME_MAX_EVENTS)', refusals.streamEventsGone(0)),
  503: refusalSchema('The gateway is draining for shutdown', refusals.shuttingDown())
}
