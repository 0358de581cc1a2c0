// What the response MIME type and the stop sequences do to an answer's deltas. Both work on the text
// as sent, so a stop sequence is found even when it straddles two deltas, and the text stops before it.

import type { GenerationOptions } from './answer.js'

export interface Formatted {
  deltas: string[]
  /** A stop sequence ended the text. */
  stopped: boolean
}

export function formatDeltas (deltas: string[], cfg: GenerationOptions, pick: <T>(list: readonly T[]) => T): Formatted {
  return stopAtSequences(byMimeType(deltas, cfg, pick), cfg.stopSequences ?? [])
}

/**
 * application/json without a schema the emulator can follow: the answer as one JSON string, each
 * delta escaped on its own (escaping is per character, so the pieces still concatenate to valid JSON).
 * text/x.enum with a string enum in responseSchema: one of its values, in one delta.
 */
function byMimeType (deltas: string[], cfg: GenerationOptions, pick: <T>(list: readonly T[]) => T): string[] {
  if (cfg.responseMimeType === 'application/json') {
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
