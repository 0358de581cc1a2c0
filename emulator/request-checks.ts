// Reading a request and the checks Google makes on it: body size, API key, and a generation
// request's conversation (conversation.ts) and generationConfig (generation-config.ts).

import type { IncomingMessage } from 'node:http'
import type { GenerationOptions } from './answer.js'
import { type Conversation, contentsProblem, conversationOf, systemInstructionProblem, turnOrderProblem } from './conversation.js'
import { type FunctionAnswer, functionAnswersOf, type FunctionCalling, functionCallingOf, functionPartsProblem } from './function-calling.js'
import { generationOptionsOf } from './generation-config.js'
import { isObject } from './json.js'

/** Gemini takes up to 100 MB of base64 inline data a request since January 2026 (20 MB before). */
export const MAX_BODY_BYTES = 100 * 1000 * 1000

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

export function headerValue (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/** The key a request carries (x-goog-api-key, else ?key=), '' when none. */
export function apiKeyOf (req: IncomingMessage, path: string): string {
  const header = req.headers['x-goog-api-key']
  const fromQuery = new URLSearchParams(path.split('?')[1] ?? '').get('key')
  return (Array.isArray(header) ? header[0] : header) ?? fromQuery ?? ''
}

/** Text parts of all contents, joined with '\n': what faults match and the record shows. */
export function promptOf (body: unknown): string {
  if (!isObject(body) || !Array.isArray(body.contents)) return ''
  const texts: string[] = []
  for (const content of body.contents) {
    if (!isObject(content) || !Array.isArray(content.parts)) continue
    for (const part of content.parts) if (isObject(part) && typeof part.text === 'string') texts.push(part.text)
  }
  return texts.join('\n')
}

export interface GenerateRequest {
  conversation: Conversation
  gen: GenerationOptions
  functionCalling: FunctionCalling
  /** The functionResponse parts of the last turn: the model answers them in text. */
  functionAnswers: FunctionAnswer[]
}

/**
 * A GenerateContentRequest's conversation and options, or the message of the 400 its body gets. Only a
 * generation needs the turns in order (alternating, the user's last); countTokens counts any history.
 */
export function generateRequestOf (body: unknown, request = 'GenerateContentRequest', turnsInOrder = true): GenerateRequest | string {
  if (!isObject(body) || body.contents === undefined) return `* ${request}.contents: contents is not specified`
  const problem = contentsProblem(body.contents, request) ??
    systemInstructionProblem(body.systemInstruction, request) ??
    (turnsInOrder ? turnOrderProblem(body.contents as unknown[]) : undefined) ??
    functionPartsProblem(body.contents as unknown[])
  if (problem) return problem
  const functionCalling = functionCallingOf(body)
  if (typeof functionCalling === 'string') return functionCalling
  const gen = generationOptionsOf(body.generationConfig)
  if (typeof gen === 'string') return gen
  return { conversation: conversationOf(body), gen, functionCalling, functionAnswers: functionAnswersOf(body.contents) }
}
