import { thinkingOf, thoughtDeltas, type Conversation } from '../../emulator/server.js'

export interface ExpectedThoughts {
  /** The thought summary's deltas, one a thought event. */
  deltas: string[]
  /** The thinking tokens the usage reports. */
  tokens: number
}

/**
 * What the emulator thinks for `conversation` on a thinking model with `thinkingConfig`: the
 * summary it streams when thoughts are included, split as its README says (a quarter of the
 * answer's events, at least one), and the thinking tokens it reports either way.
 */
export function expectedThoughts (conversation: Conversation, chunkCount: number, thinkingConfig: object = { includeThoughts: true }, model = 'gemini-2.5-flash'): ExpectedThoughts {
  const thinking = thinkingOf({ thinkingConfig }, model, conversation, false)
  if (typeof thinking === 'string') throw new Error(`the emulator refuses this thinking: ${thinking}`)
  const events = Math.max(1, Math.floor(chunkCount / 4))
  return { deltas: thinking.includeThoughts ? thoughtDeltas(conversation, thinking.tokens, events) : [], tokens: thinking.tokens }
}
