// Function calling: the declarations and the functionCallingConfig a request carries, the checks Google
// makes on them and on the function parts of its turns, whether the model calls a function (decided from
// the words of the last user turn, so the same request always gets the same answer), the arguments of the
// call (generated from the declared schema, as JSON mode does), and the text answer to a functionResponse.

import { createHash } from 'node:crypto'
import { type Answer, countWords, seededPick } from './answer.js'
import type { Conversation } from './conversation.js'
import { isObject, valueFollowing } from './json.js'
import type { Thinking } from './thinking.js'

export type FunctionCallingMode = 'AUTO' | 'ANY' | 'NONE' | 'VALIDATED'

export interface Declaration {
  name: string
  description: string
  /** `parametersJsonSchema` (JSON Schema) or `parameters` (Gemini's OpenAPI subset); undefined for none. */
  schema: unknown
}

export interface FunctionCalling {
  declarations: Declaration[]
  mode: FunctionCallingMode
  /** allowedFunctionNames, when the config names any. */
  allowed: string[] | undefined
}

export interface FunctionAnswer { name: string; response: unknown }

const MODES = new Set(['MODE_UNSPECIFIED', 'AUTO', 'ANY', 'NONE', 'VALIDATED'])
/** Google's rule for a declaration's name (at most 64 characters). */
const FUNCTION_NAME = /^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$/
const INVALID_NAME = 'Invalid function name. Must start with a letter or an underscore. ' +
  'Must be a-z, A-Z, 0-9, or contain underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.'
/** Words this long or longer, shared by the user's last turn and a declaration, make AUTO call it. */
const MIN_MATCHING_LETTERS = 4

const protoType = (type: string): string => `type.googleapis.com/google.ai.generativelanguage.v1beta.${type}`

/** The request's function calling, or the message of the 400 it gets. */
export function functionCallingOf (body: Record<string, unknown>): FunctionCalling | string {
  const declarations = declarationsOf(body.tools)
  if (typeof declarations === 'string') return declarations
  const toolConfig = body.toolConfig ?? undefined
  if (toolConfig !== undefined && !isObject(toolConfig)) return `Invalid value at 'tool_config' (${protoType('ToolConfig')}), ${JSON.stringify(toolConfig)}`
  const config = toolConfig?.functionCallingConfig
  if (config === undefined || config === null) return { declarations, mode: 'AUTO', allowed: undefined }
  if (!isObject(config)) return `Invalid value at 'tool_config.function_calling_config' (${protoType('FunctionCallingConfig')}), ${JSON.stringify(config)}`
  const rawMode = config.mode ?? 'MODE_UNSPECIFIED'
  if (typeof rawMode !== 'string' || !MODES.has(rawMode)) {
    return `Invalid value at 'tool_config.function_calling_config.mode' (${protoType('FunctionCallingConfig.Mode')}), ${JSON.stringify(rawMode)}`
  }
  const mode = rawMode === 'MODE_UNSPECIFIED' ? 'AUTO' : rawMode as FunctionCallingMode
  const rawAllowed = config.allowedFunctionNames ?? []
  if (!Array.isArray(rawAllowed) || rawAllowed.some(name => typeof name !== 'string')) {
    return `Invalid value at 'tool_config.function_calling_config.allowed_function_names' (TYPE_STRING), ${JSON.stringify(rawAllowed)}`
  }
  const allowed = rawAllowed as string[]
  if (allowed.length === 0) return { declarations, mode, allowed: undefined }
  const field = '* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names'
  if (mode !== 'ANY' && mode !== 'VALIDATED') return `${field}: allowed_function_names may only be set when mode is ANY or VALIDATED.`
  const declared = new Set(declarations.map(declaration => declaration.name))
  for (const [i, name] of allowed.entries()) {
    if (!declared.has(name)) return `${field}[${i}]: function "${name}" is not declared in tools.`
  }
  return { declarations, mode, allowed }
}

/** Every tool's functionDeclarations, in order; Google lists each invalid name in one message. */
function declarationsOf (tools: unknown): Declaration[] | string {
  if (tools === undefined || tools === null) return []
  if (!Array.isArray(tools)) return `Invalid value at 'tools' (${protoType('Tool')}), ${JSON.stringify(tools)}`
  const declarations: Declaration[] = []
  const invalid: string[] = []
  for (const [t, tool] of tools.entries()) {
    if (!isObject(tool)) return `Invalid value at 'tools[${t}]' (${protoType('Tool')}), ${JSON.stringify(tool)}`
    const listed = tool.functionDeclarations ?? []
    if (!Array.isArray(listed)) return `Invalid value at 'tools[${t}].function_declarations' (${protoType('FunctionDeclaration')}), ${JSON.stringify(listed)}`
    for (const [d, declaration] of listed.entries()) {
      if (!isObject(declaration)) return `Invalid value at 'tools[${t}].function_declarations[${d}]' (${protoType('FunctionDeclaration')}), ${JSON.stringify(declaration)}`
      const { name, description } = declaration
      if (typeof name !== 'string' || !FUNCTION_NAME.test(name)) {
        invalid.push(`  * tools[${t}].function_declarations[${d}].name: [FIELD_INVALID] ${INVALID_NAME}`)
        continue
      }
      declarations.push({ name, description: typeof description === 'string' ? description : '', schema: declaration.parametersJsonSchema ?? declaration.parameters ?? undefined })
    }
  }
  if (invalid.length > 0) return `The GenerateContentRequest proto is invalid:\n${invalid.join('\n')}`
  return declarations
}

/** The 400 message for a functionCall part outside a model turn, or a functionResponse part in one. */
export function functionPartsProblem (contents: unknown[]): string | undefined {
  for (const content of contents) {
    if (!isObject(content) || !Array.isArray(content.parts)) continue
    const byModel = content.role === 'model'
    for (const part of content.parts) {
      if (!isObject(part)) continue
      if (part.functionCall !== undefined && !byModel) {
        return 'Please ensure that function call turn comes immediately after a user turn or after a function response turn.'
      }
      if (part.functionResponse !== undefined && byModel) {
        return 'Please ensure that function response turn comes immediately after a function call turn.'
      }
    }
  }
  return undefined
}

/** The functionResponse parts of the last turn, in order. */
export function functionAnswersOf (contents: unknown): FunctionAnswer[] {
  const last = Array.isArray(contents) ? contents.at(-1) : undefined
  if (!isObject(last) || !Array.isArray(last.parts)) return []
  const answers: FunctionAnswer[] = []
  for (const part of last.parts) {
    if (isObject(part) && isObject(part.functionResponse)) {
      const { name, response } = part.functionResponse
      answers.push({ name: typeof name === 'string' ? name : '', response: response ?? {} })
    }
  }
  return answers
}

/** Lower-case words of a text, camelCase and snake_case split apart. */
function wordsOf (text: string): Set<string> {
  const spaced = text.replace(/(\p{Ll})(\p{Lu})/gu, '$1 $2')
  return new Set((spaced.match(/\p{L}+/gu) ?? []).map(word => word.toLowerCase()).filter(word => word.length >= MIN_MATCHING_LETTERS))
}

function matches (declaration: Declaration, userWords: Set<string>): boolean {
  for (const word of wordsOf(`${declaration.name} ${declaration.description}`)) if (userWords.has(word)) return true
  return false
}

/**
 * The function the model calls, undefined for a text answer. NONE never calls; ANY always does (the first
 * allowed declaration the last user turn matches, else the first allowed one); AUTO and VALIDATED call the
 * first declaration that shares a word of 4+ letters with the last user turn, but never right after a
 * functionResponse, which they answer in text.
 */
export function calledDeclaration (calling: FunctionCalling, conversation: Conversation, answered: boolean): Declaration | undefined {
  if (calling.mode === 'NONE' || calling.declarations.length === 0) return undefined
  const allowed = calling.allowed
  const candidates = allowed === undefined ? calling.declarations : calling.declarations.filter(declaration => allowed.includes(declaration.name))
  const userWords = wordsOf(conversation.turns.at(-1)?.text ?? '')
  const matching = candidates.find(declaration => matches(declaration, userWords))
  if (calling.mode === 'ANY') return matching ?? candidates[0]
  return answered ? undefined : matching
}

/** Tokens of a call: the runs of letters and digits in its name and its arguments' JSON. */
function callTokens (name: string, args: unknown): number {
  return (`${name} ${JSON.stringify(args)}`.match(/[\p{L}\p{N}]+/gu) ?? []).length
}

/**
 * The answer that calls `declaration`: one functionCall part whose args follow its schema, made from the plain
 * answer's words and seeded by the last user turn, finished by STOP. A thinking model signs the part.
 */
export function callAnswer (answer: Answer, declaration: Declaration, conversation: Conversation, thinking: Thinking): Answer {
  const pick = seededPick([conversation.turns.at(-1)?.text ?? '', declaration.name])
  const words = answer.deltas.join('').split(/\s+/).filter(word => word !== '')
  const generated = declaration.schema === undefined ? {} : valueFollowing(declaration.schema, words, pick)
  const args = isObject(generated) ? generated : {}
  const part: Record<string, unknown> = { functionCall: { name: declaration.name, args } }
  if (thinking.tokens > 0) {
    part.thoughtSignature = createHash('sha256').update(`${declaration.name}\n${JSON.stringify(args)}`).digest('base64')
  }
  return { ...answer, deltas: [], calls: [part], completionTokens: callTokens(declaration.name, args), finishReason: 'STOP' }
}

/** A text answer to functionResponse parts: `<name> returned <json>.` for each, then the plain answer. */
export function answerToResponses (answer: Answer, answers: FunctionAnswer[]): Answer {
  const opening = answers.map(({ name, response }) => `${name} returned ${JSON.stringify(response)}.`).join(' ')
  const deltas = answer.deltas.length === 0 ? [opening] : [`${opening} ${answer.deltas[0]}`, ...answer.deltas.slice(1)]
  return { ...answer, deltas, completionTokens: answer.completionTokens + countWords(opening) }
}
