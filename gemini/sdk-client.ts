import { GoogleGenAI, type GenerateContentResponse } from '@google/genai'
import type { Usage } from '../schemas/stream.js'
import { toUpstreamError, type GeminiClient, type GeminiClientOptions, type GenerationDelta } from './types.js'

export function toDelta (response: GenerateContentResponse): GenerationDelta {
  const candidate = response.candidates?.[0]
  let text = ''
  for (const part of candidate?.content?.parts ?? []) {
    // Thought summaries are the model's scratchpad, not the answer.
    if (typeof part.text === 'string' && part.thought !== true) text += part.text
  }
  const metadata = response.usageMetadata
  let usage: Usage | undefined
  if (metadata !== undefined) {
    const promptTokens = metadata.promptTokenCount ?? 0
    // Thinking tokens are billed as output, so they count as completion.
    const completionTokens = (metadata.candidatesTokenCount ?? 0) + (metadata.thoughtsTokenCount ?? 0)
    usage = { promptTokens, completionTokens, totalTokens: metadata.totalTokenCount ?? promptTokens + completionTokens }
  }
  return {
    text,
    usage,
    finishReason: candidate?.finishReason,
    blockReason: response.promptFeedback?.blockReason
  }
}

export function createSdkGeminiClient (options: GeminiClientOptions): GeminiClient {
  const ai = new GoogleGenAI({
    apiKey: options.apiKey,
    ...(options.apiVersion === undefined ? {} : { apiVersion: options.apiVersion }),
    ...(options.baseUrl === undefined ? {} : { httpOptions: { baseUrl: options.baseUrl } })
  })
  return {
    async streamGenerate (request, signal) {
      let stream: AsyncGenerator<GenerateContentResponse>
      try {
        stream = await ai.models.generateContentStream({
          model: request.model,
          contents: request.prompt,
          config: { ...request.options, abortSignal: signal }
        })
      } catch (error) {
        throw toUpstreamError(error, options.apiKey)
      }
      return {
        async next () {
          try {
            const result = await stream.next()
            return result.done === true ? { done: true, value: undefined } : { done: false, value: toDelta(result.value) }
          } catch (error) {
            throw toUpstreamError(error, options.apiKey)
          }
        }
      }
    },
    async countTokens (model, text, signal) {
      try {
        const result = await ai.models.countTokens({ model, contents: text, config: { abortSignal: signal } })
        return result.totalTokens ?? 0
      } catch (error) {
        throw toUpstreamError(error, options.apiKey)
      }
    }
  }
}
