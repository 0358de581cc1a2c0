import { once } from 'node:events'
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { StreamRequest, type Usage } from '../schemas/stream.js'
import { UpstreamError, toUpstreamError, type GenerationDelta } from '../gemini/types.js'
import type { StreamOutcome } from '../plugins/metrics.js'

export interface StreamRouteOptions {
  defaultModel: string
}

/** Room for a maximal prompt even when every character is escaped. */
const BODY_LIMIT = 256 * 1024

const SSE_HEADERS = {
  'content-type': 'text/event-stream',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  'x-accel-buffering': 'no'
}

/** Finish reasons that mean the answer is whole; any other one means Gemini cut it short. */
const COMPLETE_FINISH_REASONS = new Set(['STOP', 'MAX_TOKENS'])

const CLIENT_GONE = Symbol('client gone')

function chunkEvent (text: string, index: number): string {
  return `data: {"chunk":${JSON.stringify(text)},"index":${index}}\n\n`
}

function dataEvent (payload: object): string {
  return `data: ${JSON.stringify(payload)}\n\n`
}

/** Settles with the next delta, or with CLIENT_GONE as soon as the signal aborts, without waiting on the read. */
async function nextOrGone (iterator: AsyncIterator<GenerationDelta>, gone: Promise<typeof CLIENT_GONE>): Promise<IteratorResult<GenerationDelta> | typeof CLIENT_GONE> {
  const next = iterator.next()
  // An aborted read may settle much later, or never (nodejs/node#56917): never leave it unhandled.
  next.catch(() => {})
  return await Promise.race([next, gone])
}

async function writeEvent (raw: ServerResponse, event: string, gone: Promise<typeof CLIENT_GONE>): Promise<void> {
  if (raw.write(event)) return
  // A slow reader: pull nothing more from upstream until the socket drains.
  await Promise.race([once(raw, 'drain'), gone])
}

const streamRoute: FastifyPluginAsyncTypebox<StreamRouteOptions> = async (app, options) => {
  app.setValidatorCompiler(TypeBoxValidatorCompiler)
  // The contract speaks JSON only; Fastify would otherwise hand a text/plain body to validation.
  app.removeContentTypeParser('text/plain')
  const rateLimitHooks = app.hasDecorator('rateLimitCaller') ? [app.rateLimitCaller] : []

  app.post('/api/stream', {
    schema: { body: StreamRequest },
    bodyLimit: BODY_LIMIT,
    // fastify-metrics would time a whole stream as one request and miss disconnects; we record our own.
    config: { disableMetrics: true },
    onRequest: [app.identifyCaller, ...rateLimitHooks, app.requireCaller]
  }, async function streamHandler (request, reply) {
    const { prompt, options: generation, agent } = request.body
    const model = request.body.model ?? options.defaultModel
    const raw = reply.raw
    const recorder = app.gatewayMetrics.beginStream({ agent, model })
    const upstream = new AbortController()

    let clientGone = false
    const gone = new Promise<typeof CLIENT_GONE>(resolve => {
      raw.once('close', () => {
        if (raw.writableFinished) return
        clientGone = true
        upstream.abort()
        resolve(CLIENT_GONE)
      })
    })

    let headersSent = false
    let index = 0
    let fullText = ''
    let usage: Usage | undefined
    let finishReason: string | undefined
    let blockReason: string | undefined

    const finish = (outcome: StreamOutcome, finalUsage?: Usage): void => {
      recorder.end(outcome, finalUsage)
      if (outcome === 'cancelled') {
        request.log.info({ chunksSent: index }, 'client disconnected; upstream call aborted')
      }
    }

    const fail = async (error: UpstreamError): Promise<FastifyReply | undefined> => {
      app.gatewayMetrics.upstreamError(error.status ?? 'network')
      request.log.warn({ upstreamStatus: error.status, chunksSent: index, reason: error.message }, 'upstream stream failed')
      finish('failed')
      if (!headersSent) {
        return await reply.code(500).send({ error: 'Failed to start stream', message: error.message })
      }
      raw.end(dataEvent({ error: error.message, recoverable: error.recoverable }))
      return reply
    }

    const startSse = (): void => {
      reply.hijack()
      headersSent = true
      raw.writeHead(200, { ...reply.getHeaders(), ...SSE_HEADERS } as OutgoingHttpHeaders)
      raw.flushHeaders()
    }

    const cancel = (): FastifyReply => {
      if (!headersSent) reply.hijack()
      finish('cancelled')
      return reply
    }

    try {
      const iterator = await Promise.race([app.gemini.streamGenerate({ model, prompt, options: generation }, upstream.signal), gone])
      if (iterator === CLIENT_GONE) return cancel()
      for (;;) {
        const result = await nextOrGone(iterator, gone)
        if (result === CLIENT_GONE) return cancel()
        if (result.done === true) break
        const delta = result.value
        if (delta.usage !== undefined) usage = delta.usage
        if (delta.finishReason !== undefined) finishReason = delta.finishReason
        if (delta.blockReason !== undefined) blockReason = delta.blockReason
        if (delta.text === '') continue
        if (!headersSent) startSse()
        index++
        fullText += delta.text
        recorder.chunkSent()
        await writeEvent(raw, chunkEvent(delta.text, index), gone)
        if (clientGone) return cancel()
      }
    } catch (error) {
      if (clientGone) return cancel()
      return await fail(toUpstreamError(error, ''))
    }

    if (blockReason !== undefined) {
      return await fail(new UpstreamError(`Gemini blocked the prompt: ${blockReason}`, { recoverable: false }))
    }
    if (finishReason === undefined) {
      return await fail(new UpstreamError('Gemini ended the stream before the answer was complete', { recoverable: true }))
    }
    if (!COMPLETE_FINISH_REASONS.has(finishReason)) {
      return await fail(new UpstreamError(`Gemini stopped generating: ${finishReason}`, { recoverable: false }))
    }

    if (usage === undefined) {
      // Gemini normally reports usage on its last event; when it does not, ask it to count rather than guess.
      try {
        const [promptTokens, completionTokens] = await Promise.all([
          app.gemini.countTokens(model, prompt, upstream.signal),
          fullText === '' ? 0 : app.gemini.countTokens(model, fullText, upstream.signal)
        ])
        usage = { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens }
      } catch (error) {
        if (clientGone) return cancel()
        request.log.warn({ reason: toUpstreamError(error, '').message }, 'could not count tokens; completion sent without usage')
      }
    }
    if (clientGone) return cancel()
    if (!headersSent) startSse()
    raw.end(dataEvent({ complete: true, totalChunks: index, fullText, ...(usage === undefined ? {} : { usage }) }))
    finish('completed', usage)
    return reply
  })
}

export default streamRoute

declare module 'fastify' {
  interface FastifyInstance {
    /** Present when the rate-limit plugin is registered; runs between identifying and rejecting a caller. */
    rateLimitCaller: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>
  }
}
