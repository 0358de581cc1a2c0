import { GoogleGenAI, type GenerateContentResponse } from '@google/genai'
import { toDelta } from './delta.js'
import { toUpstreamError, type GeminiClient, type GeminiClientOptions } from './types.js'

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
