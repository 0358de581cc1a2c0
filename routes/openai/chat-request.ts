// A Chat Completions request as the Gemini request the relay sends: messages become the system instruction
// and alternating user/model turns, OpenAI's parameters become Gemini's generation options. Every field the
// gateway cannot honour is refused with the field named in `param`, before any upstream call.

import { createHash } from 'node:crypto'
import { ATTACHMENT_MIME_TYPES, ATTACHMENTS_MAX_ITEMS, BASE64_PATTERN, CONVERSATION_MAX_CHARS, PROMPT_MAX_LENGTH, RESPONSE_SCHEMA_MAX_BYTES, RESPONSE_SCHEMA_MAX_DEPTH, type Attachment, type GenerationOptions } from '../../schemas/stream.js'
import type { ChatCompletionRequest } from '../../schemas/openai.js'
import type { FunctionCall, FunctionDeclaration, FunctionResponse, GenerationRequest, ToolChoice } from '../../gemini/types.js'
import { GATEWAY_CALL_ID } from './chat-format.js'
import { decodedBytes, schemaTooLarge } from '../stream-request.js'
import { invalidRequest, OpenAIError, unsupportedParameter } from './errors.js'

/** Gemini's largest output cap; a larger `max_tokens` (clients often send their model's context size) is lowered to it. */
export const MAX_OUTPUT_TOKENS = 65_536
/** Characters all messages' text may hold together: the stream route's prompt and conversation together. */
export const MESSAGES_MAX_CHARS = PROMPT_MAX_LENGTH + CONVERSATION_MAX_CHARS

/**
 * `reasoning_effort` as a Gemini thinking budget, as Gemini's own OpenAI-compatible endpoint maps it
 * (ai.google.dev/gemini-api/docs/openai, "Thinking"): low 1K, medium 8K, high 24K tokens, none turns thinking
 * off; minimal is the smallest budget that endpoint uses, low's.
 */
export const THINKING_BUDGETS = { none: 0, minimal: 1024, low: 1024, medium: 8192, high: 24_576 } as const

/** One Gemini turn built from one or more consecutive messages of the same side. */
export interface ChatTurn {
  role: 'user' | 'model'
  text: string
  attachments?: Attachment[] | undefined
  functionCalls?: FunctionCall[] | undefined
  functionResponses?: FunctionResponse[] | undefined
}

export interface ChatConversation {
  system?: string | undefined
  turns: ChatTurn[]
  tools?: FunctionDeclaration[] | undefined
  toolChoice?: ToolChoice | undefined
  options: GenerationOptions
  /** The `agent` metrics label for `user`. */
  agent?: string | undefined
  stream: boolean
  includeUsage: boolean
}

const AGENT_LABEL = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/
/** Gemini's rule for a function's name (its 400 otherwise): a letter or underscore, then up to 63 more. */
const FUNCTION_NAME = /^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$/
const DATA_URL = /^data:([a-zA-Z0-9.+-]+\/[a-zA-Z0-9.+-]+)((?:;[a-zA-Z0-9-]+=[^;,]*)*);base64,/
const BASE64 = new RegExp(BASE64_PATTERN)
const ALLOWED_MIME_TYPES: ReadonlySet<string> = new Set(ATTACHMENT_MIME_TYPES)
/** Names clients use that Gemini spells otherwise. */
const MIME_SPELLINGS: Record<string, string> = { 'image/jpg': 'image/jpeg', 'audio/mpeg': 'audio/mp3', 'audio/x-wav': 'audio/wav', 'audio/wave': 'audio/wav' }
const AUDIO_FORMATS: Record<string, string> = { wav: 'audio/wav', mp3: 'audio/mp3' }

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** `user` as a bounded label: as it is when it is a label already, else a digest (an email never becomes a label). */
export function agentOf (user: string | null | undefined): string | undefined {
  if (user === undefined || user === null || user === '') return undefined
  return AGENT_LABEL.test(user) ? user : `user-${createHash('sha256').update(user).digest('hex').slice(0, 12)}`
}

class MessageReader {
  chars = 0
  attachmentCount = 0
  attachmentBytes = 0
  /** Tool call id → function name, from the assistant messages read so far. */
  readonly callNames = new Map<string, string>()

  constructor (private readonly attachmentsMaxBytes: number) {}

  text (value: string): string {
    this.chars += value.length
    if (this.chars > MESSAGES_MAX_CHARS) throw invalidRequest(`messages may hold at most ${MESSAGES_MAX_CHARS} characters of text together`, 'messages', 'context_length_exceeded')
    return value
  }

  /** The text of a content that may only hold text: a string, or an array of text parts. */
  textOnly (content: unknown, param: string, allowRefusal = false): string {
    if (typeof content === 'string') return this.text(content)
    if (!Array.isArray(content)) throw invalidRequest(`${param} must be a string or an array of content parts`, param)
    const texts: string[] = []
    for (const [j, part] of content.entries()) {
      const at = `${param}[${j}]`
      if (!isObject(part)) throw invalidRequest(`${at} must be an object`, at)
      if (part.type === 'text' && typeof part.text === 'string') texts.push(this.text(part.text))
      else if (allowRefusal && part.type === 'refusal' && typeof part.refusal === 'string') texts.push(this.text(part.refusal))
      else throw invalidRequest(`${at}.type must be ${allowRefusal ? '"text" or "refusal"' : '"text"'} here, with a string ${allowRefusal ? 'text or refusal' : 'text'}`, `${at}.type`)
    }
    return texts.join('\n')
  }

  attachment (url: string, param: string): Attachment {
    if (/^https?:/i.test(url)) throw invalidRequest(`${param}: the gateway does not fetch URLs; send the file inline as a data: URL (data:image/png;base64,...)`, param, 'invalid_image_url')
    const match = DATA_URL.exec(url)
    if (match === null) throw invalidRequest(`${param} must be a base64 data: URL (data:image/png;base64,...)`, param, 'invalid_image_url')
    const declared = match[1]!.toLowerCase()
    return this.inline(MIME_SPELLINGS[declared] ?? declared, url.slice(match[0].length), param)
  }

  inline (mimeType: string, data: string, param: string): Attachment {
    if (!ALLOWED_MIME_TYPES.has(mimeType)) throw invalidRequest(`${param}: Gemini does not take ${mimeType} inline; use one of ${ATTACHMENT_MIME_TYPES.join(', ')}`, param, 'invalid_image_format')
    if (data.length < 4 || data.length % 4 !== 0 || !BASE64.test(data)) throw invalidRequest(`${param} must hold base64: the standard alphabet (A-Z, a-z, 0-9, + and /), padded with = to a multiple of 4 characters`, param)
    this.attachmentCount++
    this.attachmentBytes += decodedBytes(data)
    if (this.attachmentCount > ATTACHMENTS_MAX_ITEMS) throw invalidRequest(`messages may hold at most ${ATTACHMENTS_MAX_ITEMS} files together`, param)
    if (this.attachmentBytes > this.attachmentsMaxBytes) throw new OpenAIError(413, `messages' files may hold at most ${this.attachmentsMaxBytes} bytes together (decoded)`, 'invalid_request_error', param, 'request_too_large')
    return { mimeType: mimeType as Attachment['mimeType'], data }
  }

  userContent (content: unknown, param: string): Pick<ChatTurn, 'text' | 'attachments'> {
    if (typeof content === 'string') return { text: this.text(content) }
    if (!Array.isArray(content) || content.length === 0) throw invalidRequest(`${param} must be a string or a non-empty array of content parts`, param)
    const texts: string[] = []
    const attachments: Attachment[] = []
    for (const [j, part] of content.entries()) {
      const at = `${param}[${j}]`
      if (!isObject(part)) throw invalidRequest(`${at} must be an object`, at)
      switch (part.type) {
        case 'text':
          if (typeof part.text !== 'string') throw invalidRequest(`${at}.text must be a string`, `${at}.text`)
          texts.push(this.text(part.text))
          break
        case 'image_url': {
          const url = isObject(part.image_url) ? part.image_url.url : undefined
          if (typeof url !== 'string') throw invalidRequest(`${at}.image_url.url must be a string`, `${at}.image_url.url`)
          attachments.push(this.attachment(url, `${at}.image_url.url`))
          break
        }
        case 'input_audio': {
          const audio = isObject(part.input_audio) ? part.input_audio : {}
          const mimeType = AUDIO_FORMATS[String(audio.format)]
          if (mimeType === undefined) throw invalidRequest(`${at}.input_audio.format must be "wav" or "mp3"`, `${at}.input_audio.format`)
          if (typeof audio.data !== 'string') throw invalidRequest(`${at}.input_audio.data must be a base64 string`, `${at}.input_audio.data`)
          attachments.push(this.inline(mimeType, audio.data, `${at}.input_audio.data`))
          break
        }
        case 'file': {
          const file = isObject(part.file) ? part.file : {}
          if (typeof file.file_data !== 'string') throw unsupportedParameter(`${at}.file`, 'send the file inline in file_data as a data: URL; the gateway has no file storage for file_id')
          attachments.push(this.attachment(file.file_data, `${at}.file.file_data`))
          break
        }
        default:
          throw invalidRequest(`${at}.type must be one of "text", "image_url", "input_audio", "file"`, `${at}.type`)
      }
    }
    return { text: texts.join('\n'), ...(attachments.length === 0 ? {} : { attachments }) }
  }

  toolCalls (value: unknown, param: string): FunctionCall[] {
    if (!Array.isArray(value)) throw invalidRequest(`${param} must be an array`, param)
    return value.map((call: unknown, j) => {
      const at = `${param}[${j}]`
      const fn = isObject(call) && call.type === 'function' && isObject(call.function) ? call.function : undefined
      if (fn === undefined || typeof fn.name !== 'string' || !isObject(call)) throw invalidRequest(`${at} must be {"id","type":"function","function":{"name","arguments"}}`, at)
      if (typeof call.id !== 'string' || call.id === '') throw invalidRequest(`${at}.id must be a non-empty string`, `${at}.id`)
      const args = argumentsOf(fn.arguments, `${at}.function.arguments`)
      this.callNames.set(call.id, fn.name)
      this.text(fn.name)
      const signature = signatureOf(call.extra_content)
      return {
        // An id the gateway made up means nothing to Gemini; one Gemini gave goes back to it.
        ...(GATEWAY_CALL_ID.test(call.id) ? {} : { id: call.id }),
        name: fn.name,
        args,
        ...(signature === undefined ? {} : { thoughtSignature: this.text(signature) })
      }
    })
  }

  toolResponse (message: Record<string, unknown>, param: string): FunctionResponse {
    const id = message.tool_call_id
    if (typeof id !== 'string') throw invalidRequest(`${param}.tool_call_id must be a string`, `${param}.tool_call_id`)
    const name = this.callNames.get(id)
    if (name === undefined) throw invalidRequest(`${param}.tool_call_id ${JSON.stringify(id)} answers no tool call of an earlier assistant message`, `${param}.tool_call_id`)
    const text = this.textOnly(message.content, `${param}.content`)
    return { ...(GATEWAY_CALL_ID.test(id) ? {} : { id }), name, response: responseOf(text) }
  }
}

/** A call's thought signature where Gemini's OpenAI-compatible endpoint puts it: `extra_content.google.thought_signature`. */
function signatureOf (extra: unknown): string | undefined {
  const google = isObject(extra) ? extra.google : undefined
  const signature = isObject(google) ? google.thought_signature : undefined
  return typeof signature === 'string' && signature !== '' ? signature : undefined
}

function argumentsOf (value: unknown, param: string): Record<string, unknown> {
  if (value === undefined || value === '') return {}
  if (typeof value !== 'string') throw invalidRequest(`${param} must be a JSON text`, param)
  let parsed: unknown
  try {
    parsed = JSON.parse(value)
  } catch {
    throw invalidRequest(`${param} must be a JSON object`, param)
  }
  if (!isObject(parsed)) throw invalidRequest(`${param} must be a JSON object`, param)
  return parsed
}

/** A tool's answer as Gemini's functionResponse.response, an object: a JSON object as it is, anything else under `result`. */
function responseOf (text: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(text)
    if (isObject(parsed)) return parsed
    return { result: parsed }
  } catch {
    return { result: text }
  }
}

/** Adds a message's part of a turn to the conversation, joining it to the last turn when that one is on the same side. */
function append (turns: ChatTurn[], next: ChatTurn): void {
  const last = turns.at(-1)
  if (last?.role !== next.role) {
    turns.push(next)
    return
  }
  last.text = [last.text, next.text].filter(text => text !== '').join('\n')
  if (next.attachments !== undefined) last.attachments = [...last.attachments ?? [], ...next.attachments]
  if (next.functionCalls !== undefined) last.functionCalls = [...last.functionCalls ?? [], ...next.functionCalls]
  if (next.functionResponses !== undefined) last.functionResponses = [...last.functionResponses ?? [], ...next.functionResponses]
}

function isEmpty (turn: ChatTurn): boolean {
  return turn.text === '' && turn.attachments === undefined && turn.functionCalls === undefined && turn.functionResponses === undefined
}

function conversationOf (messages: ChatCompletionRequest['messages'], attachmentsMaxBytes: number): Pick<ChatConversation, 'system' | 'turns'> {
  const reader = new MessageReader(attachmentsMaxBytes)
  const system: string[] = []
  const turns: ChatTurn[] = []
  for (const [i, message] of messages.entries()) {
    const param = `messages[${i}]`
    switch (message.role) {
      case 'system':
      case 'developer':
        system.push(reader.textOnly(message.content, `${param}.content`))
        break
      case 'user': {
        const turn: ChatTurn = { role: 'user', ...reader.userContent(message.content, `${param}.content`) }
        if (isEmpty(turn)) throw invalidRequest(`${param}.content must not be empty`, `${param}.content`)
        append(turns, turn)
        break
      }
      case 'assistant': {
        const text = message.content === undefined || message.content === null ? '' : reader.textOnly(message.content, `${param}.content`, true)
        const calls = message.tool_calls === undefined || message.tool_calls === null ? [] : reader.toolCalls(message.tool_calls, `${param}.tool_calls`)
        if (message.function_call !== undefined && message.function_call !== null) throw unsupportedParameter(`${param}.function_call`, 'deprecated by OpenAI; use tool_calls')
        const turn: ChatTurn = { role: 'model', text, ...(calls.length === 0 ? {} : { functionCalls: calls }) }
        // An assistant message with nothing in it says nothing to Gemini, which refuses empty turns.
        if (!isEmpty(turn)) append(turns, turn)
        break
      }
      case 'tool':
        append(turns, { role: 'user', text: '', functionResponses: [reader.toolResponse(message, param)] })
        break
      case 'function':
        throw unsupportedParameter(`${param}.role`, '"function" messages are deprecated by OpenAI; use "tool" messages')
      default:
        throw invalidRequest(`${param}.role must be one of "system", "developer", "user", "assistant", "tool"`, `${param}.role`)
    }
  }
  const last = turns.at(-1)
  if (last === undefined) throw invalidRequest('messages must hold at least one user message', 'messages')
  if (last.role !== 'user') throw invalidRequest('The last message must be from the user or a tool: Gemini answers the user\'s turn', `messages[${messages.length - 1}].role`)
  const joined = system.filter(text => text !== '').join('\n')
  return { ...(joined === '' ? {} : { system: joined }), turns }
}

function toolsOf (tools: readonly unknown[] | null | undefined): FunctionDeclaration[] | undefined {
  if (tools === undefined || tools === null || tools.length === 0) return undefined
  const names = new Set<string>()
  return tools.map((tool, i) => {
    const param = `tools[${i}]`
    if (!isObject(tool) || tool.type !== 'function') throw invalidRequest(`${param}.type must be "function": the gateway serves function tools only`, `${param}.type`)
    const fn = tool.function
    if (!isObject(fn) || typeof fn.name !== 'string') throw invalidRequest(`${param}.function.name must be a string`, `${param}.function.name`)
    if (!FUNCTION_NAME.test(fn.name)) throw invalidRequest(`${param}.function.name must start with a letter or underscore and hold at most 64 letters, digits, "_", ".", ":" or "-"`, `${param}.function.name`)
    if (names.has(fn.name)) throw invalidRequest(`${param}.function.name ${fn.name} is declared twice`, `${param}.function.name`)
    names.add(fn.name)
    if (fn.description !== undefined && typeof fn.description !== 'string') throw invalidRequest(`${param}.function.description must be a string`, `${param}.function.description`)
    if (fn.parameters !== undefined && !isObject(fn.parameters)) throw invalidRequest(`${param}.function.parameters must be a JSON Schema object`, `${param}.function.parameters`)
    if (schemaTooLarge(fn.parameters)) throw invalidRequest(`${param}.function.parameters must be at most ${RESPONSE_SCHEMA_MAX_BYTES} bytes and ${RESPONSE_SCHEMA_MAX_DEPTH} levels deep`, `${param}.function.parameters`)
    return { name: fn.name, ...(fn.description === undefined ? {} : { description: fn.description }), ...(fn.parameters === undefined ? {} : { parameters: fn.parameters }) }
  })
}

function namedFunction (value: unknown, declared: ReadonlySet<string>, param: string): string {
  const name = isObject(value) && isObject(value.function) ? value.function.name : undefined
  if (typeof name !== 'string') throw invalidRequest(`${param} must be {"type":"function","function":{"name"}}`, param)
  if (!declared.has(name)) throw invalidRequest(`${param} names ${name}, which tools does not declare`, param)
  return name
}

function toolChoiceOf (choice: unknown, tools: FunctionDeclaration[] | undefined): ToolChoice | undefined {
  if (choice === undefined || choice === null) return undefined
  if (tools === undefined) {
    if (choice === 'none' || choice === 'auto') return undefined
    throw invalidRequest('tool_choice is only allowed when tools are specified', 'tool_choice')
  }
  const declared = new Set(tools.map(tool => tool.name))
  if (choice === 'none') return { mode: 'NONE' }
  if (choice === 'auto') return { mode: 'AUTO' }
  if (choice === 'required') return { mode: 'ANY' }
  if (isObject(choice) && choice.type === 'function') return { mode: 'ANY', allowedFunctionNames: [namedFunction(choice, declared, 'tool_choice')] }
  if (isObject(choice) && choice.type === 'allowed_tools' && isObject(choice.allowed_tools) && Array.isArray(choice.allowed_tools.tools)) {
    const { mode, tools: allowed } = choice.allowed_tools
    if (mode !== 'auto' && mode !== 'required') throw invalidRequest('tool_choice.allowed_tools.mode must be "auto" or "required"', 'tool_choice.allowed_tools.mode')
    const names = allowed.map((tool: unknown, i) => namedFunction(tool, declared, `tool_choice.allowed_tools.tools[${i}]`))
    return { mode: mode === 'required' ? 'ANY' : 'VALIDATED', allowedFunctionNames: names }
  }
  throw invalidRequest('tool_choice must be "none", "auto", "required" or {"type":"function","function":{"name"}}', 'tool_choice')
}

/** The parameters the gateway cannot honour, refused unless they are at their defaults. */
function refuseUnsupported (body: ChatCompletionRequest): void {
  const set = (value: unknown): boolean => value !== undefined && value !== null
  if (set(body.n) && body.n !== 1) throw unsupportedParameter('n', 'Gemini answers with one choice per request here; send n: 1')
  if (body.logprobs === true) throw unsupportedParameter('logprobs', 'log probabilities are not relayed')
  if (set(body.top_logprobs) && body.top_logprobs !== 0) throw unsupportedParameter('top_logprobs', 'log probabilities are not relayed')
  if (set(body.logit_bias) && Object.keys(body.logit_bias!).length > 0) throw unsupportedParameter('logit_bias', 'Gemini has no token biases')
  if (set(body.modalities) && body.modalities!.some(modality => modality !== 'text')) throw unsupportedParameter('modalities', 'the gateway answers in text only')
  if (set(body.audio)) throw unsupportedParameter('audio', 'the gateway answers in text only')
  if (set(body.prediction)) throw unsupportedParameter('prediction', 'Gemini has no predicted outputs')
  if (set(body.web_search_options)) throw unsupportedParameter('web_search_options', 'the gateway runs no web search')
  if (set(body.functions)) throw unsupportedParameter('functions', 'deprecated by OpenAI; use tools')
  if (set(body.function_call)) throw unsupportedParameter('function_call', 'deprecated by OpenAI; use tool_choice')
}

function optionsOf (body: ChatCompletionRequest): GenerationOptions {
  const options: GenerationOptions = {}
  if (body.temperature !== undefined && body.temperature !== null) options.temperature = body.temperature
  if (body.top_p !== undefined && body.top_p !== null) options.topP = body.top_p
  const maxTokens = body.max_completion_tokens ?? body.max_tokens
  if (maxTokens !== undefined && maxTokens !== null) options.maxOutputTokens = Math.min(maxTokens, MAX_OUTPUT_TOKENS)
  if (body.stop !== undefined && body.stop !== null) options.stopSequences = typeof body.stop === 'string' ? [body.stop] : body.stop
  if (body.seed !== undefined && body.seed !== null) options.seed = body.seed
  if (body.presence_penalty !== undefined && body.presence_penalty !== null) options.presencePenalty = body.presence_penalty
  if (body.frequency_penalty !== undefined && body.frequency_penalty !== null) options.frequencyPenalty = body.frequency_penalty
  const format = body.response_format
  if (format?.type === 'json_object') options.responseMimeType = 'application/json'
  if (format?.type === 'json_schema') {
    if (format.json_schema === undefined) throw invalidRequest('response_format.json_schema is required when type is "json_schema"', 'response_format.json_schema', 'missing_required_parameter')
    const schema = format.json_schema.schema
    if (schemaTooLarge(schema)) throw invalidRequest(`response_format.json_schema.schema must be at most ${RESPONSE_SCHEMA_MAX_BYTES} bytes and ${RESPONSE_SCHEMA_MAX_DEPTH} levels deep`, 'response_format.json_schema.schema')
    options.responseMimeType = 'application/json'
    if (schema !== undefined) options.responseSchema = schema
  }
  const effort = body.reasoning_effort
  if (effort !== undefined && effort !== null) {
    // Asking for reasoning is asking to see it: its summaries come as reasoning_content, never as content.
    options.thinking = effort === 'none' ? { budget: 0 } : { budget: THINKING_BUDGETS[effort], includeThoughts: true }
  }
  return options
}

/** The whole request as the gateway serves it, or the OpenAIError that refuses it. */
export function chatConversationOf (body: ChatCompletionRequest, attachmentsMaxBytes: number): ChatConversation {
  refuseUnsupported(body)
  const { system, turns } = conversationOf(body.messages, attachmentsMaxBytes)
  const tools = toolsOf(body.tools)
  const toolChoice = toolChoiceOf(body.tool_choice, tools)
  const agent = agentOf(body.user)
  return {
    ...(system === undefined ? {} : { system }),
    turns,
    ...(tools === undefined ? {} : { tools }),
    ...(toolChoice === undefined ? {} : { toolChoice }),
    options: optionsOf(body),
    ...(agent === undefined ? {} : { agent }),
    stream: body.stream === true,
    includeUsage: body.stream === true && body.stream_options?.include_usage === true
  }
}

/** The relay's Gemini request: the turns are the whole conversation. */
export function generationOf (chat: ChatConversation, model: string): GenerationRequest {
  return {
    model,
    prompt: '',
    contents: chat.turns,
    ...(chat.system === undefined ? {} : { system: chat.system }),
    ...(chat.tools === undefined ? {} : { tools: chat.tools }),
    ...(chat.toolChoice === undefined ? {} : { toolChoice: chat.toolChoice }),
    options: chat.options
  }
}
