// What the response MIME type and the stop sequences do to an answer's deltas. Both work on the text
// as sent, so a stop sequence is found even when it straddles two deltas, and the text stops before it.

import type { GenerationOptions } from './answer.js'
import { isObject, type Pick, valueFollowing } from './json.js'

export interface Formatted {
  deltas: string[]
  /** A stop sequence ended the text. */
  stopped: boolean
}

export function formatDeltas (deltas: string[], cfg: GenerationOptions, pick: Pick): Formatted {
  return stopAtSequences(byMimeType(deltas, cfg, pick), cfg.stopSequences ?? [])
}

/**
 * application/json with a schema: a value that follows it (json.ts), its text split across as many
 * deltas as the plain answer had. Without one: the answer as one JSON string, each delta escaped on its
 * own (escaping is per character, so the pieces still concatenate to valid JSON).
 * text/x.enum with a string enum in the schema: one of its values, in one delta.
 */
function byMimeType (deltas: string[], cfg: GenerationOptions, pick: Pick): string[] {
  if (cfg.responseMimeType === 'application/json') {
    if (isObject(cfg.responseSchema)) {
      const words = deltas.join('').split(/\s+/).filter(word => word !== '')
      return splitEvenly(JSON.stringify(valueFollowing(cfg.responseSchema, words, pick)), deltas.length)
    }
    const escaped = deltas.map(delta => JSON.stringify(delta).slice(1, -1))
    escaped[0] = `"${escaped[0] ?? ''}`
    escaped[escaped.length - 1] += '"'
    return escaped
  }
  if (cfg.responseMimeType === 'text/x.enum') {
    const values = enumOf(cfg.responseSchema)
    if (values.length > 0) return [pick(values)]
  }
  return deltas
}

/** `count` pieces of near-equal length (fewer for a shorter text), never splitting a surrogate pair. */
function splitEvenly (text: string, count: number): string[] {
  const pieces = Math.max(1, Math.min(count, text.length))
  const out: string[] = []
  let start = 0
  for (let i = 1; i <= pieces; i++) {
    let end = Math.round(text.length * i / pieces)
    if (end < text.length && /[\uDC00-\uDFFF]/.test(text[end]!)) end++
    if (end > start) out.push(text.slice(start, end))
    start = Math.max(start, end)
  }
  return out
}

function enumOf (schema: unknown): string[] {
  if (typeof schema !== 'object' || schema === null || !('enum' in schema) || !Array.isArray(schema.enum)) return []
  return schema.enum.filter((value): value is string => typeof value === 'string')
}

/** Cuts the text before the earliest occurrence of any (non-empty) stop sequence; later deltas are not sent. */
function stopAtSequences (deltas: string[], sequences: string[]): Formatted {
  const text = deltas.join('')
  let cut = -1
  for (const sequence of sequences) {
    if (sequence === '') continue
    const at = text.indexOf(sequence)
    if (at !== -1 && (cut === -1 || at < cut)) cut = at
  }
  if (cut === -1) return { deltas, stopped: false }
  const kept: string[] = []
  let offset = 0
  for (const delta of deltas) {
    if (offset >= cut && kept.length > 0) break
    kept.push(delta.slice(0, Math.max(0, cut - offset)))
    offset += delta.length
  }
  return { deltas: kept, stopped: true }
}
