import { Type, type Static } from 'typebox'

export const PROMPT_MAX_LENGTH = 32_000
/** Gemini's generationConfig.topK is an int32: anything larger can never work. */
const INT32_MAX = 2_147_483_647

export const GenerationOptions = Type.Object({
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
  topP: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  topK: Type.Optional(Type.Integer({ minimum: 1, maximum: INT32_MAX })),
  maxOutputTokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 65_536 }))
}, { additionalProperties: false, description: 'Sampling options, passed to Gemini as generationConfig' })

export const StreamRequest = Type.Object({
  // `\S` rejects whitespace-only prompts with the same answer as a missing one.
  prompt: Type.String({ minLength: 1, maxLength: PROMPT_MAX_LENGTH, pattern: '\\S' }),
  model: Type.Optional(Type.String({
    // No `..`: Gemini's clients refuse such a name before sending it, so it could only fail.
    pattern: '^(?!.*\\.\\.)(models/)?[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$',
    description: 'Gemini model name, for example gemini-2.0-flash-exp'
  })),
  options: Type.Optional(GenerationOptions),
  agent: Type.Optional(Type.String({
    pattern: '^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$',
    description: 'Caller-chosen identifier used as a metrics label'
  }))
}, { additionalProperties: false })
export type StreamRequest = Static<typeof StreamRequest>
export type GenerationOptions = Static<typeof GenerationOptions>

export const ErrorBody = Type.Object({
  error: Type.String(),
  message: Type.Optional(Type.String())
}, { description: 'Every non-2xx answer of the gateway' })
export type ErrorBody = Static<typeof ErrorBody>

export const Usage = Type.Object({
  promptTokens: Type.Integer(),
  completionTokens: Type.Integer(),
  totalTokens: Type.Integer()
})
export type Usage = Static<typeof Usage>

export const ChunkEvent = Type.Object({
  chunk: Type.String(),
  index: Type.Integer({ minimum: 1 })
}, { description: 'One text delta: `data: {"chunk":"...","index":N}`, N from 1' })
export const CompletionEvent = Type.Object({
  complete: Type.Literal(true),
  totalChunks: Type.Integer(),
  fullText: Type.String(),
  usage: Usage
}, { description: 'The last event of a successful stream' })
export const ErrorEvent = Type.Object({
  error: Type.String(),
  recoverable: Type.Boolean({ description: 'True when the same request may succeed later' })
}, { description: 'The last event of a stream that failed after it started' })

function errorExample (description: string, example: ErrorBody): ReturnType<typeof Type.Object> {
  return Type.Object({ error: Type.String(), message: Type.Optional(Type.String()) }, { description, examples: [example] })
}

/** The OpenAPI description of every answer of `POST /api/stream`; 4xx/5xx bodies are also serialized by it. */
export const StreamResponses = {
  200: {
    description: 'A Server-Sent Events stream: chunk events, then exactly one completion or error event. Lines starting with `:` are heartbeats.',
    content: { 'text/event-stream': { schema: Type.Union([ChunkEvent, CompletionEvent, ErrorEvent]) } }
  },
  400: errorExample('Invalid body: a missing prompt, a wrong type, an out-of-range option or an unknown field', { error: 'Prompt is required' }),
  401: errorExample('No X-API-Key header', { error: 'Unauthorized: API key is missing.' }),
  403: errorExample('Unknown API key', { error: 'Forbidden: Invalid API key.' }),
  413: errorExample('Body over 440 KiB (room for a maximal prompt with every character JSON-escaped)', { error: 'Request body is too large' }),
  415: errorExample('Body is not application/json, or declares a charset other than UTF-8', { error: 'Unsupported Media Type: send the body as application/json' }),
  429: errorExample('Rate limit exceeded; see Retry-After', { error: 'Too Many Requests', message: 'You have exceeded the request limit. Please try again later.' }),
  500: errorExample('Gemini failed before the first chunk', { error: 'Failed to start stream', message: 'Resource has been exhausted (e.g. check quota).' }),
  503: errorExample('The gateway is draining for shutdown, or rate limiting is unavailable', { error: 'Service Unavailable', message: 'The gateway is shutting down; retry the request' })
}
