// What the gateway takes from an upstream it does not trust: error bodies read up to a cap, a message
// only from Google's own error shape, every length bounded, and no form of the upstream key.

/** Google's error bodies are a few hundred bytes; a proxy's HTML page or a runaway body is cut here. */
export const DEFAULT_MAX_ERROR_BODY_BYTES = 64 * 1024

/** Long enough for Google's longest quota messages with their links; a longer one is cut. */
export const MAX_MESSAGE_CHARS = 2048

/** Google's JSON error shape, reduced to the fields the gateway reads. */
export interface GoogleErrorBody {
  error: { code: number, message: string, status: string, details?: unknown[] }
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export const RETRY_INFO = 'type.googleapis.com/google.rpc.RetryInfo'

/**
 * The `{"error":{"code","message","status"}}` object in `text`, or undefined for anything else (HTML,
 * text, someone else's JSON). Only RetryInfo details survive: nothing else in a body is ever passed on.
 */
export function googleErrorOf (text: string): GoogleErrorBody | undefined {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  if (!isRecord(value) || !isRecord(value.error)) return undefined
  const { code, message, status, details } = value.error
  if (typeof code !== 'number' || typeof message !== 'string' || typeof status !== 'string') return undefined
  const retryInfo = Array.isArray(details)
    ? details.filter(detail => isRecord(detail) && detail['@type'] === RETRY_INFO).map(detail => ({ '@type': RETRY_INFO, retryDelay: (detail as Record<string, unknown>).retryDelay }))
    : []
  return { error: { code, message, status, ...(retryInfo.length > 0 ? { details: retryInfo } : {}) } }
}

/**
 * Google's `{"error":{"code","message","status","details"}}` object in `text` with every detail as it came (ErrorInfo,
 * Help, BadRequest, ...), for the passthrough to answer with Gemini's own error; undefined for any other body.
 * Only the four fields of Google's shape are kept, so whatever else an upstream adds stays here.
 */
export function googleErrorAsSentOf (text: string): GoogleErrorBody | undefined {
  const reduced = googleErrorOf(text)
  if (reduced === undefined) return undefined
  const { details } = (JSON.parse(text) as { error: { details?: unknown } }).error
  return Array.isArray(details) ? { error: { ...reduced.error, details } } : reduced
}

/** A copy of a JSON value with `redact` applied to every string in it, property names included. */
export function redactedJson<T> (value: T, redact: (text: string) => string): T {
  if (typeof value === 'string') return redact(value) as T
  if (Array.isArray(value)) return value.map(item => redactedJson(item, redact) as unknown) as T
  if (value === null || typeof value !== 'object') return value
  return Object.fromEntries(Object.entries(value).map(([name, item]) => [redact(name), redactedJson(item as unknown, redact)])) as T
}

/**
 * Reads at most `limit` bytes of a body that should be small (an error, a token count) and lets go of
 * the rest: breaking out of the loop destroys a Node stream or cancels a web stream, so a huge body is
 * never drained. A body cut short no longer parses as JSON, which is how a runaway answer shows.
 */
export async function readSmallBody (body: AsyncIterable<Uint8Array>, limit = DEFAULT_MAX_ERROR_BODY_BYTES): Promise<string> {
  const pieces: Uint8Array[] = []
  let size = 0
  for await (const chunk of body) {
    const room = limit - size
    pieces.push(chunk.length > room ? chunk.subarray(0, room) : chunk)
    size += Math.min(chunk.length, room)
    if (size >= limit) break
  }
  return Buffer.concat(pieces).toString('utf8')
}

/** True when a content-type header names JSON, as Google's error answers do. */
export function isJsonContentType (header: string | string[] | null | undefined): boolean {
  const value = Array.isArray(header) ? header.join(', ') : header ?? ''
  return value.toLowerCase().includes('application/json')
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** Anything shaped like a Google API key, whoever's it is. */
const GOOGLE_KEY = /AIza[0-9A-Za-z_-]{35}/g

/**
 * A function that removes the gateway's own upstream key from text in every form a proxy or an echoing server is
 * likely to write it: as is, URL-encoded, in any letter case, and base64 or base64url encoded. Nothing else is
 * touched: for answers relayed as Gemini sent them, where base64 image data may hold key-shaped runs by chance.
 */
export function ownKeyRedactor (secret: string): (text: string) => string {
  const forms = secret === ''
    ? []
    : [...new Set([secret, encodeURIComponent(secret), Buffer.from(secret).toString('base64'), Buffer.from(secret).toString('base64url'),
        Buffer.from(secret).toString('base64').replace(/=+$/, '')])]
  // Longest first, so a form is never half-replaced through a shorter one it contains.
  forms.sort((a, b) => b.length - a.length)
  const pattern = forms.length === 0 ? undefined : new RegExp(forms.map(escapeRegExp).join('|'), 'gi')
  return text => pattern === undefined ? text : text.replace(pattern, '[redacted]')
}

/** ownKeyRedactor, and anything shaped like a Google key besides: for the few words the gateway itself writes. */
export function keyRedactor (secret: string): (text: string) => string {
  const own = ownKeyRedactor(secret)
  return text => own(text).replace(GOOGLE_KEY, '[redacted]')
}

/** Cuts text from upstream to `max` characters, marking the cut. */
export function capped (text: string, max = MAX_MESSAGE_CHARS): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`
}
