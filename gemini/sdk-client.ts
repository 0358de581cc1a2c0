import { GoogleGenAI, type Content, type GenerateContentConfig, type GenerateContentResponse } from '@google/genai'
import { geminiConfigOf, geminiToolConfigOf, geminiToolsOf, isBarePrompt, partsOf, turnsOf } from './generation-config.js'
import { toDelta } from './delta.js'
import { eventTooLarge, SseSplitter } from './sse-splitter.js'
import { modelInfoOf } from './rest-client.js'
import { DEFAULT_MAX_EVENT_CHARS, MAX_LISTED_MODELS, MODEL_LIST_PAGE_SIZE, type ContentTurn, type GeminiClient, type GeminiClientOptions, type GenerationRequest, type ModelInfo } from './types.js'
import { abortedCall, httpStatusError, invalidRequest, malformedStream, transportError, unexpectedAnswer, UpstreamError } from './upstream-error.js'
import { googleErrorAsSentOf, isJsonContentType, readSmallBody } from './upstream-text.js'

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
      const googleError = isJsonContentType(response.headers.get('content-type')) ? googleErrorAsSentOf(text) : undefined
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

/** What the SDK's ApiError carries: an HTTP status, and the JSON error body as the message. */
interface ApiErrorShape extends Error {
  status: number
}

/** The SDK's ApiError, recognised by its shape so that this file need not reach into the SDK's classes. */
function isApiError (error: unknown): error is ApiErrorShape {
  return error instanceof Error && error.name === 'ApiError' && typeof (error as Partial<ApiErrorShape>).status === 'number'
}

/** Messages of the errors the SDK throws itself, before sending, for a model name it refuses. */
const SDK_REQUEST_CHECKS = ['model is required and must be a string', 'invalid model parameter']

/**
 * Classifies what the SDK threw by the SDK's own conventions. `signal` tells an abort from a failure; an
 * error that none of them explains (a TypeError of our own, say) is rethrown as the bug it is.
 */
function classifySdkError (error: unknown, secret: string, signal: AbortSignal, reading = false): UpstreamError {
  if (error instanceof UpstreamError) return error
  if (isApiError(error)) {
    // The SDK puts the JSON error body in `message`, sometimes behind a "got status: X." prefix.
    const start = error.message.indexOf('{')
    return httpStatusError(error.status, start === -1 ? undefined : googleErrorAsSentOf(error.message.slice(start)), secret, undefined, error)
  }
  if (!(error instanceof Error)) throw error
  if (error.name === 'AbortError') return abortedCall(error)
  if (error instanceof SyntaxError || error.message.startsWith('Incomplete JSON segment')) return malformedStream(error)
  if (SDK_REQUEST_CHECKS.includes(error.message)) return invalidRequest(error)
  // fetch's "fetch failed" (before headers) and "terminated" (mid-stream) carry the transport's error as cause.
  if (error instanceof TypeError && (error.message === 'fetch failed' || error.message === 'terminated')) return transportError(error.cause ?? error, signal)
  // The SDK refuses an answer that is neither success nor an error status (a 3xx, say) with a plain Error.
  if (error.constructor === Error) return unexpectedAnswer(error)
  // While reading the stream the SDK itself walks each event: a TypeError there is its choking on a malformed one.
  if (reading && error instanceof TypeError) return malformedStream(error)
  throw error
}

function sdkConfigOf (request: GenerationRequest, signal: AbortSignal): GenerateContentConfig {
  const { generationConfig, safetySettings } = geminiConfigOf(request.options)
  // Fresh objects: the SDK rewrites a declaration's `parameters` in place.
  const tools = geminiToolsOf(request.tools)
  const toolConfig = geminiToolConfigOf(request.toolChoice)
  return {
    ...generationConfig,
    ...(safetySettings === undefined ? {} : { safetySettings: safetySettings as GenerateContentConfig['safetySettings'] }),
    ...(tools === undefined ? {} : { tools: tools as GenerateContentConfig['tools'] }),
    ...(toolConfig === undefined ? {} : { toolConfig: toolConfig as GenerateContentConfig['toolConfig'] }),
    ...(request.system === undefined ? {} : { systemInstruction: request.system }),
    abortSignal: signal
  }
}

function sdkContents (turns: readonly ContentTurn[]): Content[] {
  return turns.map(turn => ({ role: turn.role, parts: partsOf(turn) }))
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
      // The SDK rebuilds a request body from its own types, dropping or reordering what they do not know: it
      // cannot send a caller's body as written, so a forwarded request is refused before anything is sent.
      if (request.forwarded !== undefined) throw invalidRequest(new Error('the SDK client does not forward requests'))
      let stream: AsyncGenerator<GenerateContentResponse>
      try {
        stream = await ai.models.generateContentStream({
          model: request.model,
          // A bare prompt stays a string, as the seed always sent it; the SDK makes it the same one-part turn.
          contents: isBarePrompt(request) ? request.prompt : sdkContents(turnsOf(request)),
          config: sdkConfigOf(request, signal)
        })
      } catch (error) {
        throw classifySdkError(error, options.apiKey, signal)
      }
      return {
        async next () {
          try {
            const result = await stream.next()
            return result.done === true ? { done: true, value: undefined } : { done: false, value: toDelta(result.value) }
          } catch (error) {
            throw classifySdkError(error, options.apiKey, signal, true)
          }
        }
      }
    },
    async countTokens (model, contents, signal) {
      try {
        const result = await ai.models.countTokens({ model, contents: typeof contents === 'string' ? contents : sdkContents(contents), config: { abortSignal: signal } })
        return result.totalTokens ?? 0
      } catch (error) {
        throw classifySdkError(error, options.apiKey, signal)
      }
    },
    async listModels (signal) {
      const models: ModelInfo[] = []
      try {
        // The pager fetches the next page while Gemini names one.
        for await (const raw of await ai.models.list({ config: { pageSize: MODEL_LIST_PAGE_SIZE, abortSignal: signal } })) {
          const model = modelInfoOf(raw, raw.supportedActions)
          if (model !== undefined) models.push(model)
          if (models.length >= MAX_LISTED_MODELS) break
        }
      } catch (error) {
        // The SDK walks each page itself: a TypeError there is its choking on a malformed one.
        throw classifySdkError(error, options.apiKey, signal, true)
      }
      return models
    },
    async getModel (name, signal) {
      let raw: unknown
      try {
        raw = await ai.models.get({ model: name, config: { abortSignal: signal } })
      } catch (error) {
        throw classifySdkError(error, options.apiKey, signal, true)
      }
      const model = modelInfoOf(raw, (raw as { supportedActions?: unknown }).supportedActions)
      if (model === undefined) throw malformedStream()
      return model
    }
  }
}
