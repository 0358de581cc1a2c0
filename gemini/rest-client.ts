// A direct Gemini REST streaming client: the same requests and the same outcomes as the
// @google/genai client (gemini/sdk-client.ts), without the SDK's per-read web `Response` objects.
// It speaks the wire protocol of docs/gemini-wire-protocol.md over an undici keep-alive pool, and
// classifies each failure where it sees it; test/gemini-rest-client.test.ts proves both clients
// report the same outcomes.

import { createRequire } from 'node:module'
import { Agent, type Dispatcher } from 'undici'
import { toDelta } from './delta.js'
import { geminiConfigOf, geminiToolConfigOf, geminiToolsOf, partsOf, turnsOf, type GeminiPart } from './generation-config.js'
import { eventTooLarge, SseSplitter } from './sse-splitter.js'
import { googleErrorAsSentOf, isJsonContentType, ownKeyRedactor, readSmallBody } from './upstream-text.js'
import { DEFAULT_MAX_EVENT_CHARS, DEFAULT_MAX_FORWARDED_BODY_BYTES, MAX_LISTED_MODELS, MODEL_LIST_PAGE_SIZE, type CountedContents, type ForwardedAnswer, type ForwardedCall, type GeminiClient, type GeminiClientOptions, type GenerationDelta, type GenerationRequest, type ModelInfo } from './types.js'
import { abortedCall, httpStatusError, invalidRequest, malformedStream, tooLarge, transportError, unexpectedAnswer, UpstreamError } from './upstream-error.js'

export const DEFAULT_GEMINI_BASE_URL = 'https://generativelanguage.googleapis.com'
/** @google/genai 3.x's default API version for the Gemini Developer API (2.x used v1beta). */
export const DEFAULT_API_VERSION = 'v1'

// By the package's own name, so it resolves the same from dist/ and from the sources.
const { version } = createRequire(import.meta.url)('amrikyy-stream-gateway/package.json') as { version: string }
const CLIENT_LABEL = `amrikyy-gateway-rest/${version} gl-node/${process.version}`

export interface RestGeminiClient extends GeminiClient {
  listModels: NonNullable<GeminiClient['listModels']>
  getModel: NonNullable<GeminiClient['getModel']>
  forward: NonNullable<GeminiClient['forward']>
  /** Closes the connection pool. */
  close: () => Promise<void>
}

/**
 * The failure an error object inside a 200 stream stands for, or undefined when it is not one. Like the SDK,
 * an error object without a numeric 4xx/5xx code is an (empty) answer, not a failure.
 */
function streamErrorOf (value: unknown, secret: string): UpstreamError | undefined {
  if (value === null || typeof value !== 'object' || !('error' in value)) return undefined
  const error = (value as { error: unknown }).error
  if (error === null || typeof error !== 'object') return undefined
  const { code } = error as { code?: unknown }
  if (typeof code !== 'number' || code < 400 || code >= 600) return undefined
  return httpStatusError(code, googleErrorAsSentOf(JSON.stringify(value)), secret)
}

/** Retry-After in seconds or as an HTTP date, in milliseconds from now; undefined when absent or unreadable. */
export function retryAfterMs (header: string | string[] | undefined, now = Date.now()): number | undefined {
  const value = Array.isArray(header) ? header[0] : header
  if (value === undefined || value.trim() === '') return undefined
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/** The model path segment, with the SDK's `models/` prefix rule and its client-side name checks. */
export function modelPath (model: string): string {
  if (model === '') throw invalidRequest(new Error('model is required and must be a string'))
  if (model.includes('..') || model.includes('?') || model.includes('&')) throw invalidRequest(new Error('invalid model parameter'))
  return model.startsWith('models/') || model.startsWith('tunedModels/') ? model : `models/${model}`
}

/** The API versions Gemini serves, and so the only ones a forwarded call may name. */
const FORWARDED_API_VERSIONS = new Set(['v1', 'v1beta', 'v1alpha'])
/** A resource path and method as Gemini names them; no dot segments, encodings, queries or fragments. */
const FORWARDED_PATH = /^(?:models|tunedModels)(?:\/[A-Za-z0-9_-][A-Za-z0-9._-]*)?(?::[A-Za-z]+)?$/

/** The caller's version, checked, since it becomes part of the upstream path. */
function forwardedVersion (apiVersion: string): string {
  if (!FORWARDED_API_VERSIONS.has(apiVersion)) throw invalidRequest(new Error(`unknown API version ${JSON.stringify(apiVersion)}`))
  return apiVersion
}

/** The path and query of a forwarded call after the base path, or invalid_request for one Gemini has no such resource for. */
function forwardedTarget (call: ForwardedCall): string {
  const version = forwardedVersion(call.apiVersion)
  if (!FORWARDED_PATH.test(call.path) || call.path.includes('..')) throw invalidRequest(new Error('invalid forwarded path'))
  const query = new URLSearchParams()
  for (const [name, value] of Object.entries(call.query ?? {})) {
    // The route strips the caller's key; one arriving here would reach Google beside the gateway's.
    if (name.toLowerCase() === 'key') throw invalidRequest(new Error('a forwarded call carries no key'))
    query.append(name, value)
  }
  const search = query.toString()
  return `/${version}/${call.path}${search === '' ? '' : `?${search}`}`
}

interface Content { parts: GeminiPart[], role: 'user' | 'model' }

/** Gemini's `contents`, as the SDK builds them from a text or from turns (a turn's files after its text). */
export function contentsOf (contents: CountedContents): Content[] {
  return typeof contents === 'string'
    ? [{ parts: [{ text: contents }], role: 'user' }]
    : contents.map(turn => ({ parts: partsOf(turn), role: turn.role }))
}

/** The request body the SDK sends for a conversation with a config object (generationConfig always present). */
export function generateContentBody (request: GenerationRequest): string {
  const { generationConfig, safetySettings } = geminiConfigOf(request.options)
  const contents = contentsOf(turnsOf(request))
  // The SDK makes a text system instruction a user-role content.
  const systemInstruction = request.system === undefined ? undefined : { parts: [{ text: request.system }], role: 'user' }
  const tools = geminiToolsOf(request.tools)
  const toolConfig = geminiToolConfigOf(request.toolChoice)
  // The SDK's order of the request's fields; unset ones are left out.
  return JSON.stringify({ contents, systemInstruction, safetySettings, tools, toolConfig, generationConfig })
}

const stringOrNothing = (value: unknown): string | undefined => typeof value === 'string' ? value : undefined
const numberOrNothing = (value: unknown): number | undefined => typeof value === 'number' ? value : undefined

/**
 * A model of Gemini's list or get answer, reduced to ModelInfo; undefined when it has no `models/` name. Gemini
 * names its methods `supportedGenerationMethods`, the SDK renames them `supportedActions`: the caller says which.
 */
export function modelInfoOf (value: unknown, actions: unknown): ModelInfo | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const model = value as Record<string, unknown>
  if (typeof model.name !== 'string' || !model.name.startsWith('models/')) return undefined
  const supported = Array.isArray(actions) ? actions.filter((action): action is string => typeof action === 'string') : undefined
  return {
    id: model.name.slice('models/'.length),
    displayName: stringOrNothing(model.displayName),
    description: stringOrNothing(model.description),
    inputTokenLimit: numberOrNothing(model.inputTokenLimit),
    outputTokenLimit: numberOrNothing(model.outputTokenLimit),
    supportedActions: supported,
    thinking: typeof model.thinking === 'boolean' ? model.thinking : undefined
  }
}

export function createRestGeminiClient (options: GeminiClientOptions): RestGeminiClient {
  const base = new URL(options.baseUrl ?? DEFAULT_GEMINI_BASE_URL)
  const basePath = base.pathname.endsWith('/') ? base.pathname.slice(0, -1) : base.pathname
  const apiVersion = options.apiVersion ?? DEFAULT_API_VERSION
  const prefix = apiVersion === '' ? basePath : `${basePath}/${apiVersion}`
  const origin = base.origin
  // Like the SDK's dispatcher: no client-side timeouts; the server bounds a request.
  const pool = new Agent({ headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 4_000 })
  const headers = {
    'content-type': 'application/json',
    'user-agent': CLIENT_LABEL,
    'x-goog-api-client': CLIENT_LABEL,
    'x-goog-api-key': options.apiKey
  }
  const maxEventChars = options.maxEventChars ?? DEFAULT_MAX_EVENT_CHARS
  const maxErrorBodyBytes = options.maxErrorBodyBytes
  const maxForwardedBodyBytes = options.maxForwardedBodyBytes ?? DEFAULT_MAX_FORWARDED_BODY_BYTES
  // Forwarded answers are relayed as sent: only the gateway's own key is taken out of them.
  const redactOwnKey = ownKeyRedactor(options.apiKey)

  /** Reads a small body (an error, a token count) up to the cap, then lets go of the connection. */
  async function readCapped (response: Dispatcher.ResponseData, signal: AbortSignal): Promise<string> {
    try {
      return await readSmallBody(response.body, maxErrorBodyBytes)
    } catch (error) {
      throw transportError(error, signal)
    } finally {
      // Past the cap the rest is not read: the connection goes, rather than draining a runaway body.
      response.body.destroy()
    }
  }

  /** Sends a request and returns the 2xx response; any other answer becomes the error it stands for. */
  async function send (path: string, body: string | undefined, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    if (signal.aborted) throw abortedCall()
    let response: Dispatcher.ResponseData
    try {
      response = await pool.request({ origin, path, method: body === undefined ? 'GET' : 'POST', headers, body, signal })
    } catch (error) {
      throw transportError(error, signal)
    }
    const status = response.statusCode
    if (status >= 200 && status < 300) return response
    const text = await readCapped(response, signal)
    if (status < 400 || status >= 600) throw unexpectedAnswer()
    // Only Google's own error shape is kept: whatever else the body says stays here.
    const googleError = isJsonContentType(response.headers['content-type']) ? googleErrorAsSentOf(text) : undefined
    throw httpStatusError(status, googleError, options.apiKey, retryAfterMs(response.headers['retry-after']))
  }

  /** A small JSON answer (a token count, a page of models), read up to the cap. */
  async function sendForJson (path: string, body: string | undefined, signal: AbortSignal): Promise<unknown> {
    const answer = await readCapped(await send(path, body, signal), signal)
    try {
      return JSON.parse(answer)
    } catch (error) {
      throw malformedStream(error)
    }
  }

  /** A forwarded call's whole answer, up to the cap: past it the connection goes and the call is too large. */
  async function readForwarded (response: Dispatcher.ResponseData, signal: AbortSignal): Promise<string> {
    const tooLong = (): UpstreamError => tooLarge(`Gemini sent an answer larger than ${maxForwardedBodyBytes} bytes`)
    const pieces: Buffer[] = []
    let size = 0
    try {
      if (Number(response.headers['content-length']) > maxForwardedBodyBytes) throw tooLong()
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        size += chunk.length
        if (size > maxForwardedBodyBytes) throw tooLong()
        pieces.push(chunk)
      }
    } catch (error) {
      // Destroyed unread, the body reports its own abort: nobody is left to hear it.
      response.body.on('error', () => {}).destroy()
      throw error instanceof UpstreamError ? error : transportError(error, signal)
    }
    return Buffer.concat(pieces, size).toString('utf8')
  }

  return {
    async streamGenerate (request, signal) {
      const forwarded = request.forwarded
      const version = forwarded === undefined ? undefined : forwardedVersion(forwarded.apiVersion)
      const path = version === undefined
        ? `${prefix}/${modelPath(request.model)}:streamGenerateContent?alt=sse`
        : `${basePath}/${version}/${modelPath(request.model)}:streamGenerateContent?alt=sse`
      const response = await send(path, forwarded?.body ?? generateContentBody(request), signal)
      const reads = response.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>
      const decoder = new TextDecoder('utf-8')
      const splitter = new SseSplitter(maxEventChars)
      const ready: GenerationDelta[] = []
      let failure: UpstreamError | undefined
      let ended = false

      /** Reads until at least one delta is ready, the body ended, or a failure is due after the ready deltas. */
      const fill = async (): Promise<void> => {
        while (ready.length === 0 && failure === undefined && !ended) {
          let read: IteratorResult<Buffer>
          try {
            read = await reads.next()
          } catch (error) {
            failure = transportError(error, signal)
            return
          }
          if (read.done === true) {
            ended = true
            if (splitter.hasUnterminatedEvent) failure = malformedStream()
            return
          }
          const text = decoder.decode(read.value, { stream: true })
          // The SDK also checks each network read as a whole for a bare JSON error object.
          if (text.trimStart().startsWith('{')) {
            try {
              const whole = streamErrorOf(JSON.parse(text), options.apiKey)
              if (whole !== undefined) { failure = whole; return }
            } catch {}
          }
          for (const payload of splitter.push(text)) {
            let value: unknown
            try {
              value = JSON.parse(payload)
            } catch (error) {
              failure = malformedStream(error)
              break
            }
            const streamError = streamErrorOf(value, options.apiKey)
            if (streamError !== undefined) { failure = streamError; break }
            try {
              const delta = toDelta(value)
              // The passthrough relays the payload itself, so the key is taken out of it here, like from any body.
              if (forwarded !== undefined) delta.event = redactOwnKey(payload)
              ready.push(delta)
            } catch (error) {
              failure = error as UpstreamError
              break
            }
          }
          if (failure === undefined && splitter.overLimit) failure = eventTooLarge(maxEventChars)
        }
      }

      return {
        async next (): Promise<IteratorResult<GenerationDelta>> {
          await fill()
          const delta = ready.shift()
          if (delta !== undefined) return { done: false, value: delta }
          if (failure !== undefined) {
            // Like the SDK, a failed stream lets go of its connection.
            response.body.destroy()
            throw failure
          }
          return { done: true, value: undefined }
        },
        async return (): Promise<IteratorResult<GenerationDelta>> {
          response.body.destroy()
          return { done: true, value: undefined }
        }
      }
    },

    async countTokens (model, contents, signal) {
      const path = `${prefix}/${modelPath(model)}:countTokens`
      const result = await sendForJson(path, JSON.stringify({ contents: contentsOf(contents) }), signal)
      const totalTokens = typeof result === 'object' && result !== null && 'totalTokens' in result ? result.totalTokens : undefined
      return typeof totalTokens === 'number' ? totalTokens : 0
    },

    async listModels (signal) {
      const models: ModelInfo[] = []
      let pageToken: string | undefined
      do {
        const query = new URLSearchParams({ pageSize: String(MODEL_LIST_PAGE_SIZE), ...(pageToken === undefined ? {} : { pageToken }) })
        const page = await sendForJson(`${prefix}/models?${query.toString()}`, undefined, signal)
        if (typeof page !== 'object' || page === null) throw malformedStream()
        const { models: listed = [], nextPageToken } = page as { models?: unknown, nextPageToken?: unknown }
        // proto3 JSON leaves an empty list out.
        if (!Array.isArray(listed)) throw malformedStream()
        for (const raw of listed) {
          const model = modelInfoOf(raw, (raw as { supportedGenerationMethods?: unknown } | null)?.supportedGenerationMethods)
          if (model !== undefined && models.length < MAX_LISTED_MODELS) models.push(model)
        }
        pageToken = typeof nextPageToken === 'string' && nextPageToken !== '' ? nextPageToken : undefined
      } while (pageToken !== undefined && models.length < MAX_LISTED_MODELS)
      return models
    },

    async getModel (name, signal) {
      const raw = await sendForJson(`${prefix}/${modelPath(name)}`, undefined, signal)
      const model = modelInfoOf(raw, (raw as { supportedGenerationMethods?: unknown } | null)?.supportedGenerationMethods)
      if (model === undefined) throw malformedStream()
      return model
    },

    async forward (call, signal) {
      const target = forwardedTarget(call)
      if (call.method === 'GET' && call.body !== undefined) throw invalidRequest(new Error('a GET carries no body'))
      if (signal.aborted) throw abortedCall()
      let response: Dispatcher.ResponseData
      try {
        response = await pool.request({ origin, path: `${basePath}${target}`, method: call.method, headers, body: call.body, signal })
      } catch (error) {
        throw transportError(error, signal)
      }
      const contentType = response.headers['content-type']
      const answer: ForwardedAnswer = {
        status: response.statusCode,
        contentType: Array.isArray(contentType) ? contentType[0] : contentType,
        body: redactOwnKey(await readForwarded(response, signal))
      }
      return answer
    },

    async close () {
      await pool.close()
    }
  }
}
