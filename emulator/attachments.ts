// Inline files (`inlineData` parts): the checks Google makes on them, what they add to the seed of the
// answer, and the prompt tokens Google counts for them, by modality.

import { createHash } from 'node:crypto'
import { isObject } from './json.js'

export interface InlineMedia {
  mimeType: string
  /** base64, as sent. */
  data: string
}

export interface ModalityCount { modality: string; tokenCount: number }

/** The inline MIME types Google documents (see schemas/stream.ts for the sources). */
export const INLINE_MIME_TYPES: ReadonlySet<string> = new Set([
  'image/png', 'image/jpeg', 'image/webp', 'image/heic', 'image/heif',
  'audio/wav', 'audio/mp3', 'audio/aiff', 'audio/aac', 'audio/ogg', 'audio/flac',
  'video/mp4', 'video/mpeg', 'video/mov', 'video/avi', 'video/x-flv', 'video/mpg', 'video/webm', 'video/wmv', 'video/3gpp',
  'application/pdf', 'text/plain'
])

/** Gemini 2.x: an image up to 384x384 pixels, and each 768x768 tile of a larger one. */
export const IMAGE_TOKENS = 258
const SMALL_IMAGE_PIXELS = 384
const TILE_PIXELS = 768
/** Bytes of an image read for its dimensions: a JPEG's frame header may follow large EXIF blocks. */
const HEADER_BYTES = 192 * 1024
/** The order of Google's ModalityTokenCount list as the emulator sends it. */
const MODALITIES = ['TEXT', 'IMAGE', 'VIDEO', 'AUDIO', 'DOCUMENT']

/**
 * Protobuf's JSON reading of `bytes`: the standard or the URL-safe alphabet, padding optional. Checked by
 * character code: a regular expression with a group per quartet overflows V8's stack on a data of many MiB.
 */
export function isProtobufBase64 (data: string): boolean {
  let end = data.length
  while (end > 0 && data.charCodeAt(end - 1) === 61 /* = */ && data.length - end < 2) end--
  if (end % 4 === 1) return false
  for (let i = 0; i < end; i++) {
    const c = data.charCodeAt(i)
    const ok = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47 || c === 45 || c === 95
    if (!ok) return false
  }
  return end === data.length || data.length % 4 === 0
}

/** The inlineData parts of a Content, in order. */
export function mediaOf (content: unknown): InlineMedia[] {
  if (!isObject(content) || !Array.isArray(content.parts)) return []
  const media: InlineMedia[] = []
  for (const part of content.parts) {
    if (!isObject(part) || !isObject(part.inlineData)) continue
    const { mimeType, data } = part.inlineData
    media.push({ mimeType: typeof mimeType === 'string' ? mimeType : '', data: typeof data === 'string' ? data : '' })
  }
  return media
}

/**
 * The 400 message for the first inlineData Google refuses, undefined when all are accepted. Data that is not
 * base64 fails while the JSON is read, with the field's path from the body's root (`prefix` for a nested
 * request); an unknown type fails later, when the model reads the part.
 */
export function inlineDataProblem (contents: unknown[], prefix: string): string | undefined {
  for (const [i, content] of contents.entries()) {
    if (!isObject(content) || !Array.isArray(content.parts)) continue
    for (const [j, part] of content.parts.entries()) {
      if (!isObject(part) || !isObject(part.inlineData)) continue
      const { data } = part.inlineData
      if (typeof data !== 'string' || !isProtobufBase64(data)) {
        return `Invalid value at '${prefix}contents[${i}].parts[${j}].inline_data.data' (TYPE_BYTES), Base64 decoding failed for ${JSON.stringify(data)}`
      }
    }
  }
  for (const content of contents) {
    for (const { mimeType } of mediaOf(content)) {
      if (!INLINE_MIME_TYPES.has(mimeType)) return `Unsupported MIME type: ${mimeType}`
    }
  }
  return undefined
}

function decode (data: string, maxBytes = Infinity): Buffer {
  const chars = maxBytes === Infinity ? data.length : Math.ceil(maxBytes / 3) * 4
  return Buffer.from(data.length > chars ? data.slice(0, chars) : data, 'base64')
}

/** Width and height from a PNG's IHDR or a JPEG's first frame header; undefined for anything else. */
export function imageSize (bytes: Buffer): { width: number; height: number } | undefined {
  if (bytes.length >= 24 && bytes.readUInt32BE(0) === 0x89504e47 && bytes.toString('latin1', 12, 16) === 'IHDR') {
    return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) }
  }
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return undefined
  let at = 2
  while (at + 9 <= bytes.length) {
    if (bytes[at] !== 0xff) return undefined
    const marker = bytes[at + 1]!
    // SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC) hold the frame's size.
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return { width: bytes.readUInt16BE(at + 7), height: bytes.readUInt16BE(at + 5) }
    }
    at += 2 + bytes.readUInt16BE(at + 2)
  }
  return undefined
}

/** Gemini 2.x's count for an image: 258 up to 384x384, else 258 for each 768x768 tile. */
export function imageTokens (size: { width: number; height: number } | undefined): number {
  if (size === undefined || (size.width <= SMALL_IMAGE_PIXELS && size.height <= SMALL_IMAGE_PIXELS)) return IMAGE_TOKENS
  return Math.max(1, Math.ceil(size.width / TILE_PIXELS)) * Math.max(1, Math.ceil(size.height / TILE_PIXELS)) * IMAGE_TOKENS
}

/** Page objects of a PDF, at least 1: pages inside compressed object streams are not seen. */
function pdfPages (bytes: Buffer): number {
  return Math.max(1, bytes.toString('latin1').match(/\/Type\s*\/Page(?![a-zA-Z])/g)?.length ?? 0)
}

/** One file's modality and prompt tokens. `countText` counts a text/plain file as the prompt's text is counted. */
export function mediaTokens (media: InlineMedia, countText: (text: string) => number): ModalityCount {
  const type = media.mimeType
  if (type.startsWith('image/')) return { modality: 'IMAGE', tokenCount: imageTokens(imageSize(decode(media.data, HEADER_BYTES))) }
  if (type === 'application/pdf') return { modality: 'DOCUMENT', tokenCount: IMAGE_TOKENS * pdfPages(decode(media.data)) }
  if (type === 'text/plain') return { modality: 'TEXT', tokenCount: countText(decode(media.data).toString('utf8')) }
  // Audio and video: Google counts 32 and 263 tokens a second; without decoding them, one image's worth each.
  return { modality: type.startsWith('audio/') ? 'AUDIO' : 'VIDEO', tokenCount: IMAGE_TOKENS }
}

/** The prompt's tokens by modality (TEXT first), for promptTokensDetails; `textTokens` are the text parts'. */
export function promptDetails (media: readonly InlineMedia[], textTokens: number, countText: (text: string) => number): ModalityCount[] {
  const totals = new Map<string, number>([['TEXT', textTokens]])
  for (const file of media) {
    const { modality, tokenCount } = mediaTokens(file, countText)
    totals.set(modality, (totals.get(modality) ?? 0) + tokenCount)
  }
  return MODALITIES.filter(modality => (totals.get(modality) ?? 0) > 0).map(modality => ({ modality, tokenCount: totals.get(modality)! }))
}

/** What the files add to the answer's seed: each one's type and a digest of its bytes, in order. */
export function mediaSeed (media: readonly InlineMedia[]): string[] {
  return media.map(file => `${file.mimeType}:${createHash('sha256').update(file.data).digest('hex').slice(0, 16)}`)
}
