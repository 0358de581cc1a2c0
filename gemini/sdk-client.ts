import { GoogleGenAI, type GenerateContentResponse } from '@google/genai'
import { toDelta } from './delta.js'
import { eventTooLarge, SseSplitter } from './rest-client.js'
import { DEFAULT_MAX_EVENT_CHARS, toUpstreamError, type GeminiClient, type GeminiClientOptions } from './types.js'
import { googleErrorOf, isJsonContentType, readSmallBody } from './upstream-text.js'

/** Statuses whose response may not carry a body (the Response constructor refuses one). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304])

/**
 * The SDK reads an error body or a unary answer whole and an SSE body into one growing buffer that it searches again
 * on every read. This fetch stands between it and the network: an error body is read up to the cap
 * and reduced to Google's error shape, and a stream body is re-framed into whole events, split
 * linearly and capped, so the SDK only ever sees complete, bounded events.
 */
function guardedFetch (maxEventChars: number, maxErrorBodyBytes: number | undefined): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init)
    if (!response.ok) {
      const text = response.body === null ? '' : await readSmallBody(response.body, maxErrorBodyBytes)
      if (NULL_BODY_STATUSES.has(response.status)) return new Response(null, { status: response.status, statusText: response.statusText })
      const googleError = isJsonContentType(response.headers.get('content-type')) ? googleErrorOf(text) : undefined
      return new Response(JSON.stringify(googleError ?? {}), {
        status: response.status,
        statusText: response.statusText,
        headers: { 'content-type': 'application/json' }
      })
    }
    if (response.body === null) return response
    if (!(response.headers.get('content-type') ?? '').includes('text/event-stream')) {
      // A unary answer (a token count) is one small JSON document: read up to the same cap.
      const text = await readSmallBody(response.body, maxErrorBodyBytes)
      return new Response(text, { status: response.status, statusText: response.statusText, headers: response.headers })
    }
    const splitter = new SseSplitter(maxEventChars)
    const decoder = new TextDecoder('utf-8')
    const encoder = new TextEncoder()
    const events = new TransformStream<Uint8Array, Uint8Array>({
      transform (chunk, controller) {
        const text = decoder.decode(chunk, { stream: true })
        // The SDK checks each network read as a whole for a bare JSON error object: keep those reads whole.
        if (text.trimStart().startsWith('{') && !splitter.hasUnterminatedEvent && isErrorObject(text)) {
          controller.enqueue(chunk)
          return
        }
        const payloads = splitter.push(text)
        if (payloads.length > 0) controller.enqueue(encoder.encode(payloads.map(payload => `data: ${payload}\n\n`).join('')))
        if (splitter.overLimit) controller.error(eventTooLarge(maxEventChars))
      },
      flush (controller) {
        const rest = splitter.unterminated() + decoder.decode()
        if (rest !== '') controller.enqueue(encoder.encode(rest))
      }
    })
    return new Response(response.body.pipeThrough(events), { status: response.status, statusText: response.statusText, headers: response.headers })
  }
}

function isErrorObject (text: string): boolean {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === 'object' && value !== null && 'error' in value
  } catch {
    return false
  }
}

export function createSdkGeminiClient (options: GeminiClientOptions): GeminiClient {
  const ai = new GoogleGenAI({
    apiKey: options.apiKey,
    ...(options.apiVersion === undefined ? {} : { apiVersion: options.apiVersion }),
    httpOptions: {
      ...(options.baseUrl === undefined ? {} : { baseUrl: options.baseUrl }),
      fetch: guardedFetch(options.maxEventChars ?? DEFAULT_MAX_EVENT_CHARS, options.maxErrorBodyBytes)
    }
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
