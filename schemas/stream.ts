import { Type, type Static } from 'typebox'

export const PROMPT_MAX_LENGTH = 32_000

export const GenerationOptions = Type.Object({
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
  topP: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  topK: Type.Optional(Type.Integer({ minimum: 1 })),
  maxOutputTokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 65_536 }))
}, { additionalProperties: false, description: 'Sampling options, passed to Gemini as generationConfig' })

export const StreamRequest = Type.Object({
  // `\S` rejects whitespace-only prompts with the same answer as a missing one.
  prompt: Type.String({ minLength: 1, maxLength: PROMPT_MAX_LENGTH, pattern: '\\S' }),
  model: Type.Optional(Type.String({
    pattern: '^(models/)?[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$',
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

export const ChunkEvent = Type.Object({ chunk: Type.String(), index: Type.Integer({ minimum: 1 }) })
export const CompletionEvent = Type.Object({
  complete: Type.Literal(true),
  totalChunks: Type.Integer(),
  fullText: Type.String(),
  usage: Usage
})
export const ErrorEvent = Type.Object({ error: Type.String(), recoverable: Type.Boolean() })
