// The safety outcomes a prompt can ask for with a trigger word, so that tests reach Google's two
// safety shapes without a fault: `[[blocked-prompt]]` blocks the prompt (no candidates, the
// `blocked` fault's response), `[[unsafe]]` stops the answer after its first chunk with
// finishReason SAFETY and the candidate's safetyRatings.

import type { Answer } from './answer.js'
import { countWords } from './answer.js'

export const BLOCKED_PROMPT_TRIGGER = '[[blocked-prompt]]'
export const UNSAFE_ANSWER_TRIGGER = '[[unsafe]]'

/** Google's ratings for a block on dangerous content: every category rated, the one that blocked marked. */
export const BLOCKING_SAFETY_RATINGS = [
  { category: 'HARM_CATEGORY_SEXUALLY_EXPLICIT', probability: 'NEGLIGIBLE' },
  { category: 'HARM_CATEGORY_HATE_SPEECH', probability: 'NEGLIGIBLE' },
  { category: 'HARM_CATEGORY_HARASSMENT', probability: 'NEGLIGIBLE' },
  { category: 'HARM_CATEGORY_DANGEROUS_CONTENT', probability: 'HIGH', blocked: true }
]

/** The answer cut to its first delta, finished by SAFETY. */
export function unsafeAnswer (answer: Answer): Answer {
  const first = answer.deltas[0] ?? ''
  return { ...answer, deltas: [first], completionTokens: countWords(first), finishReason: 'SAFETY' }
}
