// A chat conversation as the relay's Gemini request.

import type { GenerationRequest } from '../../gemini/types.js'
import type { ChatConversation } from './chat-request.js'
import { unsupportedParameter } from './errors.js'

export function generationOf (chat: ChatConversation, model: string): GenerationRequest {
  const earlier = chat.turns.slice(0, -1)
  const last = chat.turns.at(-1)!
  if (chat.tools !== undefined) throw unsupportedParameter('tools', 'function calling is not served yet')
  if (chat.turns.some(turn => turn.functionCalls !== undefined || turn.functionResponses !== undefined)) throw unsupportedParameter('messages', 'tool calls are not served yet')
  if (earlier.some(turn => turn.attachments !== undefined)) throw unsupportedParameter('messages', 'files are served on the last user message only')
  return {
    model,
    prompt: last.text,
    ...(chat.system === undefined ? {} : { system: chat.system }),
    ...(earlier.length === 0 ? {} : { history: earlier.map(({ role, text }) => ({ role, text })) }),
    ...(last.attachments === undefined ? {} : { attachments: last.attachments }),
    options: chat.options
  }
}
