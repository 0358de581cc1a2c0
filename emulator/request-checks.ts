// Reading a request and the checks Google makes on it: body size, JSON, API key, contents and
// generationConfig, each failure worded as Google words it.

import type { IncomingMessage } from 'node:http'
import type { GenerationOptions } from './answer.js'
import { invalidKeyError, missingKeyError, type GoogleError } from './google-errors.js'

export const MAX_BODY_BYTES = 20 * 1024 * 1024
const VALID_ROLES = new Set(['user', 'model', 'function', 'tool'])

/** The whole body; 'too-large' past MAX_BODY_BYTES; undefined when the client went away first. */
export function readBody (req: IncomingMessage): Promise<Buffer | 'too-large' | undefined> {
  return new Promise(resolve => {
    const chunks: Buffer[] = []
    let size = 0
    let done = false
    const finish = (value: Buffer | 'too-large' | undefined): void => {
      if (done) return
      done = true
      resolve(value)
    }
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_BODY_BYTES) finish('too-large')
      else if (!done) chunks.push(chunk)
    })
    req.on('end', () => finish(Buffer.concat(chunks)))
    req.on('error', () => finish(undefined))
    req.on('close', () => finish(undefined))
  })
}

export function parseJson (raw: Buffer): { ok: true; value: unknown } | { ok: false; message: string } {
  try {
    return { ok: true, value: JSON.parse(raw.toString('utf8')) as unknown }
  } catch (err) {
    return { ok: false, message: err instanceof Error ? err.message : String(err) }
  }
}

export function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function headerValue (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/** The error for a missing or wrong key (from x-goog-api-key or ?key=), undefined when it is accepted. */
export function apiKeyProblem (req: IncomingMessage, path: string, expected: string | undefined): GoogleError | undefined {
  const header = req.headers['x-goog-api-key']
  const fromQuery = new URLSearchParams(path.split('?')[1] ?? '').get('key')
  const key = (Array.isArray(header) ? header[0] : header) ?? fromQuery ?? ''
  if (key === '') return missingKeyError()
  if (expected !== undefined && key !== expected) return invalidKeyError()
  return undefined
}

/** Text parts of all contents, joined with '\n'. */
export function promptOf (body: unknown): string {
  if (!isObject(body) || !Array.isArray(body.contents)) return ''
  const texts: string[] = []
  for (const content of body.contents) {
    if (!isObject(content) || !Array.isArray(content.parts)) continue
    for (const part of content.parts) if (isObject(part) && typeof part.text === 'string') texts.push(part.text)
  }
  return texts.join('\n')
}

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
  return undefined
}

/** A GenerateContentRequest's sampling options, or the message of the 400 its body gets. */
export function generateRequestOf (body: unknown): GenerationOptions | string {
  if (!isObject(body)) return '* GenerateContentRequest.contents: contents is not specified'
  const contentsError = body.contents === undefined
    ? '* GenerateContentRequest.contents: contents is not specified'
    : contentsProblem(body.contents, 'GenerateContentRequest')
  if (contentsError) return contentsError
  return generationOptionsOf(body.generationConfig)
}

/** The sampling options the answer depends on, or an error message. */
function generationOptionsOf (config: unknown): GenerationOptions | string {
  if (config === undefined) return {}
  if (!isObject(config)) return 'Invalid JSON payload received. generationConfig: expected an object.'
  const out: GenerationOptions = {}
  for (const key of ['temperature', 'topP', 'topK', 'maxOutputTokens'] as const) {
    const value = config[key]
    if (value === undefined || value === null) continue
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      return `Invalid value at 'generation_config.${snake(key)}', "${String(value)}"`
    }
    out[key] = value
  }
  if (out.maxOutputTokens !== undefined && !(Number.isInteger(out.maxOutputTokens) && out.maxOutputTokens >= 1)) {
    return `* GenerateContentRequest.generation_config.max_output_tokens: must be a positive integer, got ${out.maxOutputTokens}`
  }
  return out
}

function snake (name: string): string {
  return name.replace(/[A-Z]/g, c => `_${c.toLowerCase()}`)
}
