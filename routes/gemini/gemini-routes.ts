// Gemini's own REST API under /gemini, for the clients that already speak it (@google/genai, the Vercel AI SDK's
// Google provider): the caller's gateway key is checked and spends its budget, the gateway's Gemini key goes
// upstream instead, the body goes as the caller wrote it, and the answer comes back as Gemini sent it.

import { setTimeout as wait } from 'node:timers/promises'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { StreamRelay } from '../../relay/relay.js'
import { retryDelay } from '../../relay/retry.js'
import { relaySettings, seconds, type RelayOptions } from '../../relay/settings.js'
import { retryDelayOf, UpstreamError } from '../../gemini/upstream-error.js'
import { googleErrorOf as googleBodyOf } from '../../gemini/upstream-text.js'
import type { ForwardedAnswer, ForwardedCall, GeminiClient } from '../../gemini/types.js'
import { ATTACHMENTS_MAX_ITEMS, DEFAULT_ATTACHMENTS_MAX_BYTES } from '../../schemas/stream.js'
import type { GeminiMethod } from '../../plugins/metrics.js'
import { modelId } from '../../plugins/models.js'
import { callerOf } from '../../plugins/auth.js'
import { cappedOutput, promptEstimate, type TokenAsk } from '../../plugins/key-budgets.js'
import type { StreamRecorder } from '../../plugins/metrics.js'
import { apiServices } from '../api-services.js'
import { refuseOtherCharsets } from '../json-body.js'
import { bodyLimitFor } from '../stream-request.js'
import { BODY_LIMIT } from '../stream.js'
import { geminiPassthroughSse } from './gemini-sse.js'
import { GoogleError, googleErrorHandler, invalidJson, notFound } from './errors.js'

export interface GeminiRoutesOptions extends RelayOptions {
  /** Decoded bytes of inline files one request may hold, as on the stream route; the body limit grows by them. Default 20 MiB. */
  attachmentsMaxBytes?: number | undefined
}

const API_VERSIONS = new Set(['v1', 'v1beta', 'v1alpha'])
/** `gemini-2.5-flash:streamGenerateContent`: a model name as Gemini's clients send one, then the method. */
const MODEL_METHOD = /^([a-zA-Z0-9][a-zA-Z0-9._-]{0,127}):([a-zA-Z]+)$/
const MODEL_NAME = /^(?!.*\.\.)[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$/
const POST_METHODS = new Set<GeminiMethod>(['streamGenerateContent', 'generateContent', 'countTokens'])
/** Query parameters Gemini's list takes; every other one (the caller's `key` above all) stays here. */
const LIST_PARAMETERS = ['pageSize', 'pageToken']

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The passthrough method of a GET route, for amrikyy_gemini_calls_total. */
    geminiMethod?: GeminiMethod
  }
}

interface VersionParams { version: string }
interface TargetParams extends VersionParams { target: string }

function versionOf (params: VersionParams): string {
  if (!API_VERSIONS.has(params.version)) throw notFound()
  return params.version
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Only Gemini's own model ids of its list are shown, when the allow-list is set, as on GET /api/models. */
function listAllowed (answer: ForwardedAnswer, allows: (id: string) => boolean): ForwardedAnswer {
  if (answer.status !== 200) return answer
  let value: unknown
  try {
    value = JSON.parse(answer.body)
  } catch {
    return answer
  }
  if (!isRecord(value) || !Array.isArray(value.models)) return answer
  const models = value.models.filter((model: unknown) => isRecord(model) && typeof model.name === 'string' && allows(modelId(model.name)))
  return { ...answer, body: JSON.stringify({ ...value, models }) }
}

function generationConfigOf (value: unknown): Record<string, unknown> | undefined {
  return isRecord(value) && isRecord(value.generationConfig) ? value.generationConfig : undefined
}

function askedOutput (config: Record<string, unknown> | undefined): number | undefined {
  return typeof config?.maxOutputTokens === 'number' ? config.maxOutputTokens : undefined
}

/** The body with `generationConfig.maxOutputTokens` lowered to the key's cap, or set to it; the only rewrite of a body. */
function withOutputCapIn (body: string, cap: number): string {
  const value: unknown = JSON.parse(body)
  if (!isRecord(value)) return body
  const config = generationConfigOf(value)
  return JSON.stringify({ ...value, generationConfig: { ...config, maxOutputTokens: cappedOutput(askedOutput(config), cap) } })
}

/** What a forwarded body asks of its key's budgets. */
function tokenAskOf (body: string): TokenAsk {
  const value: unknown = JSON.parse(body)
  return { promptTokens: promptEstimate(value), maxOutputTokens: askedOutput(generationConfigOf(value)) }
}

/** The usage a unary generateContent answer reports, in the gateway's names. */
function usageOf (answer: ForwardedAnswer): { promptTokens: number, completionTokens: number, totalTokens: number } | undefined {
  try {
    const value: unknown = JSON.parse(answer.body)
    const usage = isRecord(value) ? value.usageMetadata : undefined
    if (!isRecord(usage) || typeof usage.promptTokenCount !== 'number') return undefined
    const candidates = typeof usage.candidatesTokenCount === 'number' ? usage.candidatesTokenCount : 0
    const thoughts = typeof usage.thoughtsTokenCount === 'number' ? usage.thoughtsTokenCount : 0
    const total = typeof usage.totalTokenCount === 'number' ? usage.totalTokenCount : usage.promptTokenCount + candidates + thoughts
    return { promptTokens: usage.promptTokenCount, completionTokens: candidates + thoughts, totalTokens: total }
  } catch {
    return undefined
  }
}

async function geminiRoutes (app: FastifyInstance, options: GeminiRoutesOptions): Promise<void> {
  const settings = relaySettings(options)
  const attachmentsMaxBytes = options.attachmentsMaxBytes ?? DEFAULT_ATTACHMENTS_MAX_BYTES
  app.setErrorHandler(googleErrorHandler)
  app.setNotFoundHandler(async () => { throw notFound() })
  app.removeContentTypeParser(['text/plain', 'application/json'])
  // The body is forwarded as it came: it is only checked to be JSON, never rebuilt.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, function parseForwardedBody (_request, body, done) {
    try {
      JSON.parse(body as string)
    } catch {
      return done(invalidJson())
    }
    done(null, body)
  })
  const { auth: { identifyGoogleCaller, refuseUnidentified }, gemini, metrics, lifecycle, models, budgets, rateLimitHooks, refuseWhileDraining } = apiServices(app, 'amrikyy-gemini-routes')

  function forwarding (): GeminiClient & { forward: NonNullable<GeminiClient['forward']> } {
    const forward = gemini.forward
    if (forward === undefined) throw new GoogleError(501, 'This gateway\'s Gemini client cannot forward requests: use its REST client')
    return { ...gemini, forward }
  }

  /** The model to call for a requested one, after the aliases, the allow-list and the caller's own models. */
  function modelFor (request: FastifyRequest, requested: string): string {
    if (!MODEL_NAME.test(requested)) throw notFound()
    const choice = models.resolveFor(requested, callerOf(request))
    if (choice.refusal !== undefined) throw new GoogleError(403, `Model not allowed: ${requested}`)
    return modelId(choice.model)
  }

  /** The method of each POST, known once its path is read; the route's config names the GET ones. */
  const methods = new WeakMap<FastifyRequest, GeminiMethod>()
  app.addHook('onResponse', async (request, reply) => {
    const method = methods.get(request) ?? request.routeOptions.config.geminiMethod
    if (method !== undefined) metrics.geminiCall(method, reply.statusCode)
  })

  /**
   * A unary call forwarded within the relay's bounds: its total timeout, its retries of a failure that may pass
   * (nothing was answered yet, so always before the first byte), the drain, and the client leaving.
   */
  async function forwardWithin (call: ForwardedCall, reply: FastifyReply, onFailedTry: (label: string) => void): Promise<ForwardedAnswer> {
    const { forward } = forwarding()
    const stop = new AbortController()
    let why: GoogleError | undefined
    const end = (error: GoogleError): void => { why ??= error; stop.abort() }
    reply.raw.once('close', () => { if (!reply.raw.writableFinished) end(new GoogleError(499, 'The client went away')) })
    const untrack = lifecycle.track({ interrupt: message => { end(new GoogleError(503, message)) } })
    const timer = setTimeout(() => { end(new GoogleError(504, `Gemini did not answer within ${seconds(settings.timeouts.totalMs)}`)) }, settings.timeouts.totalMs)
    let waited = 0
    /** Waits before another try; false when the policy allows none. */
    const backOff = async (failure: UpstreamError, attempt: number): Promise<boolean> => {
      onFailedTry(failure.metricLabel)
      const delay = retryDelay(failure, attempt, settings.retry)
      if (delay === undefined || waited + delay > settings.retry.maxTotalWaitMs) return false
      waited += delay
      await wait(delay, undefined, { signal: stop.signal }).catch(() => {})
      if (why !== undefined) throw why
      return true
    }
    try {
      for (let attempt = 1; ; attempt++) {
        let answer: ForwardedAnswer
        try {
          answer = await forward(call, stop.signal)
        } catch (error) {
          if (why !== undefined) throw why
          if (!(error instanceof UpstreamError)) throw error
          if (await backOff(error, attempt)) continue
          throw new GoogleError(error.code === 'timeout' ? 504 : 502, error.message)
        }
        if (answer.status < 400) return answer
        const failure = new UpstreamError('http_status', `Gemini answered with status ${answer.status}`, { status: answer.status, retryAfterMs: retryDelayOf(googleBodyOf(answer.body)) })
        if (!await backOff(failure, attempt)) return answer
      }
    } finally {
      clearTimeout(timer)
      untrack()
    }
  }

  const hooks = [identifyGoogleCaller, ...rateLimitHooks, refuseUnidentified]
  const bodyLimit = bodyLimitFor(BODY_LIMIT, attachmentsMaxBytes, ATTACHMENTS_MAX_ITEMS)

  app.post<{ Params: TargetParams, Body: string }>('/gemini/:version/models/:target', {
    schema: { hide: true },
    bodyLimit,
    config: { disableMetrics: true, geminiMethod: 'unknown' },
    onRequest: [refuseWhileDraining, ...hooks],
    preParsing: refuseOtherCharsets
  }, async function forwardPost (request, reply) {
    await refuseWhileDraining()
    const apiVersion = versionOf(request.params)
    const match = MODEL_METHOD.exec(request.params.target)
    const method = match?.[2] as GeminiMethod | undefined
    if (match === null || method === undefined || !POST_METHODS.has(method)) throw notFound()
    methods.set(request, method)
    const model = modelFor(request, match[1]!)
    const sent = typeof request.body === 'string' ? request.body : '{}'
    if (method === 'countTokens') return await forwardUnary({ apiVersion, method: 'POST', path: `models/${model}:${method}`, body: sent }, reply)
    const cap = callerOf(request)?.policy.maxOutputTokens
    const body = cap === undefined ? sent : withOutputCapIn(sent, cap)
    const admission = await budgets?.admit(request, reply, model, () => tokenAskOf(body))
    const begun = metrics.beginStream({ api: 'gemini', model, key: callerOf(request)?.id })
    const recorder = admission?.charging(begun) ?? begun
    if (method === 'streamGenerateContent') {
      const context = { gemini: forwarding(), recorder, lifecycle, log: request.log, settings }
      return await new StreamRelay(context, reply, { model, prompt: '', forwarded: { apiVersion, body } }, geminiPassthroughSse).run()
    }
    return await forwardUnary({ apiVersion, method: 'POST', path: `models/${model}:${method}`, body }, reply, recorder)
  })

  /** A generateContent (counted as a stream, with `recorder`) or countTokens call, answered as Gemini answered it. */
  async function forwardUnary (call: ForwardedCall, reply: FastifyReply, recorder?: StreamRecorder): Promise<FastifyReply> {
    try {
      const answer = await forwardWithin(call, reply, label => { if (recorder === undefined) metrics.upstreamError(label); else recorder.upstreamError(label) })
      recorder?.end(answer.status < 400 ? 'completed' : 'failed', usageOf(answer))
      return await reply.code(answer.status).header('content-type', answer.contentType ?? 'application/json; charset=UTF-8').send(answer.body)
    } catch (error) {
      recorder?.end(error instanceof GoogleError && error.code === 499 ? 'cancelled' : 'failed')
      throw error
    }
  }

  async function forwardGet (request: FastifyRequest<{ Params: VersionParams }>, reply: FastifyReply, path: string): Promise<FastifyReply> {
    const apiVersion = versionOf(request.params)
    const query: Record<string, string> = {}
    const asked = request.query as Record<string, unknown>
    for (const name of LIST_PARAMETERS) if (typeof asked[name] === 'string') query[name] = asked[name]
    const answer = await forwardWithin({ apiVersion, method: 'GET', path, query }, reply, label => { metrics.upstreamError(label) })
    const caller = callerOf(request)
    const narrowed = caller !== null && caller.policy.models !== undefined
    const shown = path === 'models' && (models.configured || narrowed) ? listAllowed(answer, models.allowsFor(caller)) : answer
    return await reply.code(shown.status).header('content-type', shown.contentType ?? 'application/json; charset=UTF-8').send(shown.body)
  }

  app.get<{ Params: VersionParams }>('/gemini/:version/models', {
    schema: { hide: true },
    config: { geminiMethod: 'models.list' },
    onRequest: hooks
  }, async function listModels (request, reply) {
    return await forwardGet(request, reply, 'models')
  })

  app.get<{ Params: TargetParams }>('/gemini/:version/models/:target', {
    schema: { hide: true },
    config: { geminiMethod: 'models.get' },
    onRequest: hooks
  }, async function getModel (request, reply) {
    return await forwardGet(request, reply, `models/${modelFor(request, request.params.target)}`)
  })

  // Anything else under /gemini is a path Google does not serve, answered as Google answers it.
  app.all('/gemini/*', { schema: { hide: true } }, async () => { throw notFound() })
}

export default fp(geminiRoutes, {
  name: 'amrikyy-gemini-routes',
  fastify: '5.x',
  encapsulate: true,
  dependencies: ['amrikyy-auth', 'amrikyy-metrics', 'amrikyy-gemini-client', 'amrikyy-lifecycle', 'amrikyy-models']
})
