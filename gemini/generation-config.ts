// The gateway's generation options and turns as Gemini names them. One mapping serves both clients: the
// REST client writes it in the field order @google/genai uses, and the SDK client hands it to the SDK.

import type { GenerationOptions } from '../schemas/stream.js'
import type { ContentTurn, CountedContents, FunctionDeclaration, GenerationRequest, ToolChoice } from './types.js'

export type GeminiPart =
  | { text: string }
  | { inlineData: { mimeType: string, data: string } }
  | { functionCall: { args: Record<string, unknown>, id?: string, name: string }, thoughtSignature?: string }
  | { functionResponse: { id?: string, name: string, response: Record<string, unknown> } }

/**
 * A turn's parts: its text (when there is any), its files as inlineData, the model's calls, then the answers to
 * them. Each part's fields are in the order @google/genai writes them (a functionCall's `args`, `id`, `name`; the
 * part's `thoughtSignature` after it), so both clients send the same bytes.
 */
export function partsOf (turn: ContentTurn): GeminiPart[] {
  const parts: GeminiPart[] = turn.text === '' ? [] : [{ text: turn.text }]
  for (const { mimeType, data } of turn.attachments ?? []) parts.push({ inlineData: { mimeType, data } })
  for (const call of turn.functionCalls ?? []) {
    const functionCall = call.id === undefined ? { args: call.args, name: call.name } : { args: call.args, id: call.id, name: call.name }
    parts.push(call.thoughtSignature === undefined ? { functionCall } : { functionCall, thoughtSignature: call.thoughtSignature })
  }
  for (const answer of turn.functionResponses ?? []) {
    const functionResponse = answer.id === undefined
      ? { name: answer.name, response: answer.response }
      : { id: answer.id, name: answer.name, response: answer.response }
    parts.push({ functionResponse })
  }
  return parts
}

/** Every turn of a request, oldest first: its `contents`, or its history and then the new user turn with the files. */
export function turnsOf (request: GenerationRequest): ContentTurn[] {
  if (request.contents !== undefined) return [...request.contents]
  const prompt: ContentTurn = request.attachments === undefined
    ? { role: 'user', text: request.prompt }
    : { role: 'user', text: request.prompt, attachments: request.attachments }
  return [...request.history ?? [], prompt]
}

/** A seed request: a bare prompt, sent as a string through the SDK and counted as one. */
export function isBarePrompt (request: GenerationRequest): boolean {
  return request.contents === undefined && request.history === undefined && request.attachments === undefined
}

/**
 * What a request's prompt tokens are counted from: the bare prompt for a seed request, else its turns with the
 * files. The SDK cannot count a system instruction on the Gemini Developer API, so it is not counted.
 */
export function countedContentsOf (request: GenerationRequest): CountedContents {
  return isBarePrompt(request) ? request.prompt : turnsOf(request)
}

/** Gemini's `tools`: one Tool holding every declaration, each parameter schema as `parametersJsonSchema`. */
export function geminiToolsOf (tools: readonly FunctionDeclaration[] | undefined): Array<{ functionDeclarations: Array<Record<string, unknown>> }> | undefined {
  if (tools === undefined) return undefined
  const functionDeclarations = tools.map(({ name, description, parameters }) => {
    const declaration: Record<string, unknown> = { name }
    if (description !== undefined) declaration.description = description
    if (parameters !== undefined) declaration.parametersJsonSchema = parameters
    return declaration
  })
  return [{ functionDeclarations }]
}

/** Gemini's `toolConfig`, `allowedFunctionNames` before `mode` as the SDK writes them. */
export function geminiToolConfigOf (choice: ToolChoice | undefined): { functionCallingConfig: { allowedFunctionNames?: string[], mode: ToolChoice['mode'] } } | undefined {
  if (choice === undefined) return undefined
  const { mode, allowedFunctionNames } = choice
  return { functionCallingConfig: allowedFunctionNames === undefined ? { mode } : { allowedFunctionNames: [...allowedFunctionNames], mode } }
}

export interface GeminiGenerationConfig {
  /** `generationConfig`, its fields in the SDK's order, unset ones left out. */
  generationConfig: Record<string, unknown>
  /** `safetySettings`, a field of the request itself. */
  safetySettings: GenerationOptions['safetySettings']
}

export function geminiConfigOf (options: GenerationOptions | undefined): GeminiGenerationConfig {
  const config: Record<string, unknown> = {}
  if (options === undefined) return { generationConfig: config, safetySettings: undefined }
  const set = (name: string, value: unknown): void => { if (value !== undefined && value !== null) config[name] = value }
  set('temperature', options.temperature)
  set('topP', options.topP)
  set('topK', options.topK)
  set('maxOutputTokens', options.maxOutputTokens)
  set('stopSequences', options.stopSequences)
  set('presencePenalty', options.presencePenalty)
  set('frequencyPenalty', options.frequencyPenalty)
  set('seed', options.seed)
  set('responseMimeType', options.responseMimeType)
  // A JSON Schema, which Gemini takes as `responseJsonSchema` (its `responseSchema` is an OpenAPI subset).
  set('responseJsonSchema', options.responseSchema)
  const thinking = options.thinking
  if (thinking !== undefined) {
    const thinkingConfig: Record<string, unknown> = {}
    if (thinking.budget !== undefined) thinkingConfig.thinkingBudget = thinking.budget
    if (thinking.includeThoughts !== undefined) thinkingConfig.includeThoughts = thinking.includeThoughts
    config.thinkingConfig = thinkingConfig
  }
  return { generationConfig: config, safetySettings: options.safetySettings }
}
