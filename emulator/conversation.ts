// The conversation a request carries: its system instruction and its turns, the checks Google makes
// on their structure, and the text its prompt tokens are counted from.

import { inlineDataProblem, type InlineMedia, mediaOf } from './attachments.js'
import { isObject } from './json.js'

export type TurnRole = 'user' | 'model'

export interface Turn {
  role: TurnRole
  /** The turn's text parts, joined with '\n'. */
  text: string
  /** The turn's inlineData parts, in order; absent when it has none. */
  media?: InlineMedia[]
}

export interface Conversation {
  /** The system instruction's text parts, joined with '\n'; undefined when the request has none. */
  system?: string | undefined
  /** Every turn, oldest first; the last one is the user's prompt. */
  turns: Turn[]
}

const VALID_ROLES = new Set(['user', 'model', 'function', 'tool'])

/** Text parts of a Content, joined with '\n'. */
function textOf (content: unknown): string {
  if (!isObject(content) || !Array.isArray(content.parts)) return ''
  const texts: string[] = []
  for (const part of content.parts) if (isObject(part) && typeof part.text === 'string') texts.push(part.text)
  return texts.join('\n')
}

/**
 * The conversation of a (checked) GenerateContentRequest body. A turn without a role is a user turn,
 * as Google reads it; function and tool turns answer the model, so they count as the user's side.
 */
export function conversationOf (body: unknown): Conversation {
  if (!isObject(body)) return { turns: [] }
  const turns: Turn[] = []
  if (Array.isArray(body.contents)) {
    for (const content of body.contents) {
      const role = isObject(content) && content.role === 'model' ? 'model' : 'user'
      const media = mediaOf(content)
      turns.push(media.length === 0 ? { role, text: textOf(content) } : { role, text: textOf(content), media })
    }
  }
  return isObject(body.systemInstruction) ? { system: textOf(body.systemInstruction), turns } : { turns }
}

/** Every text the prompt tokens count: the system instruction, then every turn, joined with '\n'. */
export function promptTextOf (conversation: Conversation): string {
  const texts = conversation.turns.map(turn => turn.text)
  if (conversation.system !== undefined) texts.unshift(conversation.system)
  return texts.join('\n')
}

/** The 400 message for contents whose shape Google refuses, undefined when they are well formed. */
export function contentsProblem (contents: unknown, request: string): string | undefined {
  if (!Array.isArray(contents) || contents.length === 0) return `* ${request}.contents: contents is not specified`
  for (const [i, content] of contents.entries()) {
    if (!isObject(content)) return `Invalid JSON payload received. ${request}.contents[${i}]: expected an object.`
    if (content.role !== undefined && !VALID_ROLES.has(String(content.role))) {
      return 'Please use a valid role: user, model.'
    }
    if (!Array.isArray(content.parts) || content.parts.length === 0) {
      return `* ${request}.contents[${i}].parts: contents.parts must not be empty.`
    }
  }
  // A nested request's fields are named from the body's root, as Google's JSON reader names them.
  return inlineDataProblem(contents, request.endsWith('.generate_content_request') ? 'generate_content_request.' : '')
}

/** Every inlineData part of the conversation, oldest turn first. */
export function mediaOfConversation (conversation: Conversation): InlineMedia[] {
  return conversation.turns.flatMap(turn => turn.media ?? [])
}

/** The 400 message for a generation whose turns are out of order: they alternate, and the user has the last word. */
export function turnOrderProblem (contents: unknown[]): string | undefined {
  const { turns } = conversationOf({ contents })
  for (let i = 1; i < turns.length; i++) {
    if (turns[i]!.role === turns[i - 1]!.role) return 'Please ensure that multiturn requests alternate between user and model.'
  }
  if (turns.at(-1)?.role !== 'user') return 'Please ensure that multiturn requests ends with a user role or a function response.'
  return undefined
}

/** The 400 message for a systemInstruction Google refuses, undefined when it is absent or well formed. */
export function systemInstructionProblem (value: unknown, request: string): string | undefined {
  if (value === undefined || value === null) return undefined
  if (!isObject(value)) return `Invalid JSON payload received. ${request}.system_instruction: expected an object.`
  if (value.role !== undefined && !VALID_ROLES.has(String(value.role))) return 'Please use a valid role: user, model.'
  if (!Array.isArray(value.parts) || value.parts.length === 0) {
    return `* ${request}.system_instruction.parts: contents.parts must not be empty.`
  }
  return undefined
}
