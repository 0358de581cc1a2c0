// What the stream route checks of a request beyond its schema: bounds across fields, and whether it
// uses anything beyond the seed contract.

import { CONVERSATION_MAX_CHARS, RESPONSE_SCHEMA_MAX_BYTES, RESPONSE_SCHEMA_MAX_DEPTH, type Attachment, type StreamRequest, type Turn } from '../schemas/stream.js'

const SURROGATE_PAIR = /[\uD800-\uDBFF][\uDC00-\uDFFF]/g

/** Characters as the schema's length limits count them: code points. */
function characters (text: string): number {
  return text.length - (text.match(SURROGATE_PAIR)?.length ?? 0)
}

const SEED_OPTIONS = new Set(['temperature', 'topP', 'topK', 'maxOutputTokens'])

/** A request that uses any field beyond the seed contract's; only those get the conversation's events. */
export function isConversation (body: StreamRequest): boolean {
  return body.system !== undefined || body.history !== undefined || body.attachments !== undefined || Object.keys(body.options ?? {}).some(name => !SEED_OPTIONS.has(name))
}

/** Levels of nested objects and arrays, counted without recursion: a schema may nest deeply. */
function depthOf (root: unknown): number {
  let deepest = 0
  const pending: Array<[unknown, number]> = [[root, 1]]
  while (pending.length > 0) {
    const [value, depth] = pending.pop()!
    if (value === null || typeof value !== 'object') continue
    deepest = Math.max(deepest, depth)
    if (deepest > RESPONSE_SCHEMA_MAX_DEPTH) return deepest
    for (const child of Object.values(value)) pending.push([child, depth + 1])
  }
  return deepest
}

export function schemaTooLarge (schema: unknown): boolean {
  return schema !== undefined && (Buffer.byteLength(JSON.stringify(schema)) > RESPONSE_SCHEMA_MAX_BYTES || depthOf(schema) > RESPONSE_SCHEMA_MAX_DEPTH)
}

/** The system instruction and the earlier turns together are bounded, not only each one. */
export function conversationTooLong (system: string | undefined, history: readonly Turn[] | undefined): boolean {
  let chars = system === undefined ? 0 : characters(system)
  for (const turn of history ?? []) chars += characters(turn.text)
  return chars > CONVERSATION_MAX_CHARS
}

/** Bytes a (pattern-checked) base64 string decodes to, counted without decoding it. */
export function decodedBytes (data: string): number {
  const padding = data.endsWith('==') ? 2 : data.endsWith('=') ? 1 : 0
  return Math.floor(data.length / 4) * 3 - padding
}

/** The first attachment whose data is not padded to whole quartets (the schema's pattern checks the alphabet). */
export function unpaddedAttachment (attachments: readonly Attachment[] | undefined): number | undefined {
  const index = attachments?.findIndex(attachment => attachment.data.length % 4 !== 0) ?? -1
  return index === -1 ? undefined : index
}

/** The attachments' decoded bytes together. */
export function attachmentBytes (attachments: readonly Attachment[] | undefined): number {
  let bytes = 0
  for (const attachment of attachments ?? []) bytes += decodedBytes(attachment.data)
  return bytes
}

/**
 * The body limit for an attachments cap: today's room for the text fields, the cap in base64, and each
 * attachment's JSON around its data (`{"mimeType":"…","data":""},`, under 64 bytes). A body past it is
 * refused with 413 as it arrives, before it is buffered whole.
 */
export function bodyLimitFor (textRoom: number, attachmentsMaxBytes: number, maxItems: number): number {
  return textRoom + Math.ceil(attachmentsMaxBytes / 3) * 4 + maxItems * 64
}
