// Answers one recorded request: the path, the key and the body are checked in that order (so a bad
// key wins over a bad body), then the RPC the path names is served.

import { promptCount } from './answer.js'
import { contentsProblem, type Conversation, conversationOf } from './conversation.js'
import { type EmulatorContext, type Exchange, sendError, sendJson } from './exchange.js'
import { generate } from './generate.js'
import { isObject } from './json.js'
import { missingKeyError, modelNotFoundError } from './google-errors.js'
import { findModel, modelsPage, servesModel } from './models.js'
import { apiKeyOf, generateRequestOf, MAX_BODY_BYTES } from './request-checks.js'
import type { Route } from './routes.js'
import { thinkingOf } from './thinking.js'

/** The body as read: 'too-large' past the cap, or its JSON (undefined when empty) or why it is not JSON. */
export type ReadBody = 'too-large' | { ok: true; value: unknown } | { ok: false; message: string }

export async function respond (ctx: EmulatorContext, x: Exchange, route: Route, body: ReadBody): Promise<void> {
  const { method, path } = x.rec
  if (route.kind === 'unknown') {
    return sendError(x, 404, `Method or path not found: ${method} ${path.split('?')[0]}`)
  }
  const key = apiKeyOf(x.req, path)
  const keyError = key === '' ? missingKeyError() : ctx.upstream.checkKey(key, route.model)
  if (keyError) return sendJson(x, keyError.error.code, keyError)
  if (body === 'too-large') return sendError(x, 400, `Request payload size exceeds the limit: ${MAX_BODY_BYTES} bytes.`)
  if (!body.ok) return sendError(x, 400, `Invalid JSON payload received. ${body.message}`)

  if (route.kind !== 'list' && route.kind !== 'get' && !servesModel(route.model ?? '', ctx.extraModels)) {
    return sendJson(x, 404, modelNotFoundError(route.model ?? '', route.apiVersion ?? '', route.rpc ?? ''))
  }
  const query = new URLSearchParams(path.includes('?') ? path.slice(path.indexOf('?') + 1) : '')
  switch (route.kind) {
    case 'list': return listModels(x, query)
    case 'get': return getModel(x, route.model ?? '', route.apiVersion ?? '')
    case 'countTokens': return countTokensOf(x, body.value)
    case 'stream':
    case 'unary': {
      if (route.kind === 'stream') x.isStream = true
      const request = generateRequestOf(body.value)
      if (typeof request === 'string') return sendError(x, 400, request)
      const model = route.model ?? ''
      const thinking = thinkingOf((body.value as { generationConfig?: unknown }).generationConfig, model, request.conversation, ctx.thinkByDefault)
      if (typeof thinking === 'string') return sendError(x, 400, thinking)
      return await generate(ctx, x, route.kind, model, request, thinking, key)
    }
  }
}

function listModels (x: Exchange, query: URLSearchParams): void {
  const page = modelsPage(query)
  if (!page.ok) return sendError(x, 400, page.message)
  sendJson(x, 200, page.body)
}

function getModel (x: Exchange, name: string, apiVersion: string): void {
  const found = findModel(name)
  if (!found) return sendError(x, 404, `models/${name} is not found for API version ${apiVersion}, or is not supported.`)
  sendJson(x, 200, found)
}

/**
 * countTokens counts what a generation's promptTokenCount counts: with `generateContentRequest`, its
 * system instruction and every turn; with bare `contents`, every turn. It does not check the turn
 * order: a history that ends with the model's turn can be counted.
 */
function countTokensOf (x: Exchange, body: unknown): void {
  if (!isObject(body)) return sendError(x, 400, '* CountTokensRequest: request body must be a JSON object.')
  // The SDK refuses a top-level systemInstruction client-side; Google's JSON parser refuses unknown names.
  for (const name of ['systemInstruction', 'generationConfig', 'tools']) {
    if (body[name] !== undefined) return sendError(x, 400, `Invalid JSON payload received. Unknown name "${name}": Cannot find field.`)
  }
  const nested = isObject(body.generateContentRequest) ? body.generateContentRequest : undefined
  let conversation: Conversation = { turns: [] }
  if (nested !== undefined) {
    const request = generateRequestOf(nested, 'CountTokensRequest.generate_content_request', false)
    if (typeof request === 'string') return sendError(x, 400, request)
    conversation = request.conversation
  } else if (body.contents !== undefined) {
    const problem = contentsProblem(body.contents, 'CountTokensRequest')
    if (problem) return sendError(x, 400, problem)
    conversation = conversationOf(body)
  }
  const { tokens, details } = promptCount(conversation)
  sendJson(x, 200, { totalTokens: tokens, promptTokensDetails: details ?? [{ modality: 'TEXT', tokenCount: tokens }] })
}
