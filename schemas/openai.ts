// The OpenAI Chat Completions API as the gateway serves it (platform.openai.com/docs/api-reference/chat):
// the request's fields the gateway reads or accepts, and the answers' shapes for the OpenAPI document.
// Messages are checked field by field by routes/openai/chat-request.ts, whose errors name the field as
// OpenAI's `param` does (`messages[2].content`); the schema only bounds them.

import { Type, type Static } from 'typebox'

/** Messages one request may hold: the stream route's 100 earlier turns, its new one and room for system messages. */
export const MESSAGES_MAX_ITEMS = 128
export const TOOLS_MAX_ITEMS = 128

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(schema: T) => Type.Union([schema, Type.Null()])

export const ChatMessage = Type.Object({
  role: Type.String(),
  content: Type.Optional(Type.Unknown()),
  name: Type.Optional(Type.Unknown()),
  tool_calls: Type.Optional(Type.Unknown()),
  tool_call_id: Type.Optional(Type.Unknown()),
  refusal: Type.Optional(Type.Unknown()),
  // Sent back by clients that keep what a reasoning model answered; Gemini is not shown it again.
  reasoning_content: Type.Optional(Type.Unknown()),
  function_call: Type.Optional(Type.Unknown()),
  audio: Type.Optional(Type.Unknown())
}, { additionalProperties: true, description: 'One message; its fields are checked by role' })

export const ChatCompletionRequest = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 256, description: 'A Gemini model name or alias, as GET /v1/models lists' }),
  messages: Type.Array(ChatMessage, { minItems: 1, maxItems: MESSAGES_MAX_ITEMS }),
  stream: Type.Optional(Nullable(Type.Boolean())),
  stream_options: Type.Optional(Nullable(Type.Object({
    include_usage: Type.Optional(Nullable(Type.Boolean())),
    include_obfuscation: Type.Optional(Nullable(Type.Boolean()))
  }, { additionalProperties: false }))),
  temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 2 }))),
  top_p: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1 }))),
  max_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  max_completion_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  stop: Type.Optional(Nullable(Type.Union([
    Type.String({ minLength: 1, maxLength: 1024 }),
    Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), { maxItems: 5 })
  ]))),
  seed: Type.Optional(Nullable(Type.Integer({ minimum: -2_147_483_648, maximum: 2_147_483_647 }))),
  // OpenAI's range is [-2, 2]; Gemini's is [-2, 2), so 2 itself is refused rather than changed.
  presence_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, exclusiveMaximum: 2 }))),
  frequency_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, exclusiveMaximum: 2 }))),
  response_format: Type.Optional(Nullable(Type.Object({
    type: Type.Union([Type.Literal('text'), Type.Literal('json_object'), Type.Literal('json_schema')]),
    json_schema: Type.Optional(Type.Object({
      name: Type.String({ minLength: 1, maxLength: 64 }),
      description: Type.Optional(Type.String()),
      schema: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      strict: Type.Optional(Nullable(Type.Boolean()))
    }, { additionalProperties: false }))
  }, { additionalProperties: false }))),
  reasoning_effort: Type.Optional(Nullable(Type.Union([
    Type.Literal('none'), Type.Literal('minimal'), Type.Literal('low'), Type.Literal('medium'), Type.Literal('high')
  ]))),
  tools: Type.Optional(Nullable(Type.Array(Type.Unknown(), { maxItems: TOOLS_MAX_ITEMS }))),
  tool_choice: Type.Optional(Nullable(Type.Unknown())),
  parallel_tool_calls: Type.Optional(Nullable(Type.Boolean())),
  user: Type.Optional(Nullable(Type.String({ maxLength: 256 }))),
  // What the gateway cannot honour: accepted at their defaults only (routes/openai/chat-request.ts).
  n: Type.Optional(Nullable(Type.Integer())),
  logprobs: Type.Optional(Nullable(Type.Boolean())),
  top_logprobs: Type.Optional(Nullable(Type.Integer())),
  logit_bias: Type.Optional(Nullable(Type.Record(Type.String(), Type.Number()))),
  modalities: Type.Optional(Nullable(Type.Array(Type.String()))),
  audio: Type.Optional(Nullable(Type.Unknown())),
  prediction: Type.Optional(Nullable(Type.Unknown())),
  web_search_options: Type.Optional(Nullable(Type.Unknown())),
  functions: Type.Optional(Nullable(Type.Unknown())),
  function_call: Type.Optional(Nullable(Type.Unknown())),
  // Accepted and not acted on: they change nothing about the answer.
  store: Type.Optional(Nullable(Type.Boolean())),
  metadata: Type.Optional(Nullable(Type.Record(Type.String(), Type.String()))),
  service_tier: Type.Optional(Nullable(Type.String())),
  prompt_cache_key: Type.Optional(Nullable(Type.String())),
  safety_identifier: Type.Optional(Nullable(Type.String())),
  verbosity: Type.Optional(Nullable(Type.String())),
  // The gateway's own: keep a streamed answer's events for a resume after a dropped connection (GET /api/stream/{id}).
  resumable: Type.Optional(Nullable(Type.Boolean()))
}, { additionalProperties: false })
export type ChatCompletionRequest = Static<typeof ChatCompletionRequest>

export const OpenAIErrorBody = Type.Object({
  error: Type.Object({
    message: Type.String(),
    type: Type.String(),
    param: Type.Union([Type.String(), Type.Null()]),
    code: Type.Union([Type.String(), Type.Null()])
  })
}, { description: 'Every non-2xx answer of the OpenAI-compatible routes, in OpenAI\'s shape' })
export type OpenAIErrorBody = Static<typeof OpenAIErrorBody>

const Usage = Type.Object({
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  total_tokens: Type.Integer(),
  prompt_tokens_details: Type.Object({ cached_tokens: Type.Integer() }),
  completion_tokens_details: Type.Object({ reasoning_tokens: Type.Integer() })
})

const ToolCall = Type.Object({
  id: Type.String(),
  type: Type.Literal('function'),
  function: Type.Object({ name: Type.String(), arguments: Type.String({ description: 'The arguments as a JSON text' }) })
})

const FinishReason = Type.Union([Type.Literal('stop'), Type.Literal('length'), Type.Literal('tool_calls'), Type.Literal('content_filter')])

export const ChatCompletion = Type.Object({
  id: Type.String({ examples: ['chatcmpl-3f1c0e5e9b7d4a2c8e6f0a1b2c3d4e5f'] }),
  object: Type.Literal('chat.completion'),
  created: Type.Integer(),
  model: Type.String(),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    message: Type.Object({
      role: Type.Literal('assistant'),
      content: Type.Union([Type.String(), Type.Null()]),
      refusal: Type.Null(),
      reasoning_content: Type.Optional(Type.String({ description: 'Gemini\'s thought summaries, when reasoning was asked for with a thinking model' })),
      tool_calls: Type.Optional(Type.Array(ToolCall))
    }),
    logprobs: Type.Null(),
    finish_reason: FinishReason
  })),
  usage: Type.Optional(Usage)
}, { description: 'A whole answer (`stream` false or absent)' })

export const ChatCompletionChunk = Type.Object({
  id: Type.String(),
  object: Type.Literal('chat.completion.chunk'),
  created: Type.Integer(),
  model: Type.String(),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    delta: Type.Object({
      role: Type.Optional(Type.Literal('assistant')),
      content: Type.Optional(Type.String()),
      reasoning_content: Type.Optional(Type.String()),
      tool_calls: Type.Optional(Type.Array(Type.Object({ index: Type.Integer(), ...ToolCall.properties })))
    }),
    logprobs: Type.Null(),
    finish_reason: Type.Union([FinishReason, Type.Null()])
  })),
  usage: Type.Optional(Type.Union([Usage, Type.Null()]))
}, { description: 'One event of a streamed answer: `data: {...}`, ending with `data: [DONE]`' })

export const OpenAIModel = Type.Object({
  id: Type.String({ examples: ['gemini-2.5-flash'] }),
  object: Type.Literal('model'),
  created: Type.Integer({ description: 'Unknown for Gemini\'s models: always 0' }),
  owned_by: Type.String({ examples: ['google'] })
}, { additionalProperties: false })
export type OpenAIModel = Static<typeof OpenAIModel>

export const OpenAIModelList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(OpenAIModel)
}, { additionalProperties: false })

const errorAnswer = (description: string): typeof OpenAIErrorBody => Type.Object(OpenAIErrorBody.properties, { description })

const AUTH_ANSWERS = {
  401: errorAnswer('No key in `Authorization: Bearer` or X-API-Key'),
  403: errorAnswer('Unknown key'),
  429: errorAnswer('Rate limit exceeded; see Retry-After'),
  503: errorAnswer('The gateway is draining for shutdown, or rate limiting is unavailable')
}

export const ChatCompletionResponses = {
  200: {
    description: 'A chat.completion object, or with `stream: true` Server-Sent Events of chat.completion.chunk objects ending with `data: [DONE]`',
    content: {
      'application/json': { schema: ChatCompletion },
      'text/event-stream': { schema: ChatCompletionChunk }
    }
  },
  400: errorAnswer('Invalid request: the error names the field in `param`'),
  ...AUTH_ANSWERS,
  404: errorAnswer('The model does not exist or is not allowed'),
  413: errorAnswer('Body or images too large'),
  415: errorAnswer('Body is not JSON in UTF-8'),
  500: errorAnswer('Gemini failed before the answer began'),
  502: errorAnswer('Gemini answered with an error the gateway could not pass on'),
  504: errorAnswer('Gemini did not answer in time')
}

export const ModelListAnswers = {
  200: OpenAIModelList,
  ...AUTH_ANSWERS,
  502: errorAnswer('Gemini\'s model list could not be read')
}

export const ModelAnswers = {
  200: OpenAIModel,
  ...AUTH_ANSWERS,
  404: errorAnswer('No such model, or not allowed'),
  502: errorAnswer('Gemini\'s model list could not be read')
}
