// generateContent and streamGenerateContent: the answer for one request written as its RPC wants it,
// with the fault the request drew (if any) applied to the writes, and X-Server-Timeout honoured.

import { randomBytes } from 'node:crypto'
import { answerFor, type Answer } from './answer.js'
import { type EmulatorContext, type Exchange, sendError, sendJson, sendRaw } from './exchange.js'
import type { Fault } from './faults.js'
import { answerToResponses, callAnswer, calledDeclaration } from './function-calling.js'
import { googleError } from './google-errors.js'
import { type GenerateRequest, headerValue } from './request-checks.js'
import { JSON_TYPE, type Meta, responseEvents, sseEvent, streamSteps, type Thoughts, unaryResponse } from './responses.js'
import { BLOCKED_PROMPT_TRIGGER, UNSAFE_ANSWER_TRIGGER, unsafeAnswer } from './safety.js'
import { type Thinking, thoughtDeltas } from './thinking.js'

const HUGE_PIECE_CHARS = 64 * 1024

export async function generate (ctx: EmulatorContext, x: Exchange, kind: 'stream' | 'unary', modelName: string, request: GenerateRequest, thinking: Thinking, key: string): Promise<void> {
  const rpc = kind === 'stream' ? 'streamGenerateContent' : 'generateContent'
  // The key's and the model's state answer before a fault is drawn, so a refused request uses up no fault.
  const admission = ctx.upstream.admit(key, modelName)
  if (!admission.ok) return sendJson(x, admission.error.error.code, admission.error)
  const drawn = ctx.takeFault(rpc, x.rec.prompt)
  x.rec.fault = drawn
  // The prompt trigger for a blocked prompt is the `blocked` fault's response; a drawn fault wins over it and over the model's breaking.
  const fault: Fault | undefined = drawn ?? admission.fault ?? (x.rec.prompt.includes(BLOCKED_PROMPT_TRIGGER) ? { kind: 'blocked' } : undefined)
  const serverTimeout = Number(headerValue(x.req.headers['x-server-timeout']))
  if (Number.isFinite(serverTimeout) && serverTimeout > 0) {
    x.deadlineTimer = setTimeout(() => {
      x.deadlineHit = true
      x.wake('all', 'deadline')
    }, serverTimeout * 1000)
  }

  const pace = { chunkCount: ctx.pace().chunkCount, defaultMaxTokens: ctx.defaultMaxTokens }
  const full = withFunctionCalling(answerFor(request.conversation, request.gen, pace), request, thinking)
  const answer = x.rec.prompt.includes(UNSAFE_ANSWER_TRIGGER) && full.calls === undefined ? unsafeAnswer(full) : full
  const thoughts: Thoughts = {
    deltas: thinking.includeThoughts ? thoughtDeltas(request.conversation, thinking.tokens, thoughtEventCount(pace.chunkCount)) : [],
    tokens: thinking.tokens
  }
  const meta = { modelVersion: modelName, responseId: ctx.responseId ?? randomBytes(16).toString('base64url') }

  if (fault?.kind === 'stall-headers') {
    const r = await x.wait('stall', fault.ms)
    if (r === 'gone') return
    if (r === 'deadline') return sendError(x, 504)
  }
  if (fault?.kind === 'http-error') return sendHttpFault(x, fault)
  if (fault?.kind === 'huge-error') return await sendHugeError(x, fault)
  if (kind === 'stream') return await stream(ctx, x, answer, meta, fault, thoughts)
  return await unary(x, answer, meta, fault, thoughts)
}

/** The plain answer, or the call the model makes instead, or the text answer to the functions' responses. */
function withFunctionCalling (plain: Answer, request: GenerateRequest, thinking: Thinking): Answer {
  const functionAnswers = request.functionAnswers
  const called = calledDeclaration(request.functionCalling, request.conversation, functionAnswers.length > 0)
  if (called !== undefined) return callAnswer(plain, called, request.conversation, thinking)
  // Only a plain text answer opens with the responses: a JSON or enum answer stays what its schema says.
  const plainText = request.gen.responseMimeType === undefined || request.gen.responseMimeType === 'text/plain'
  return functionAnswers.length > 0 && plainText ? answerToResponses(plain, functionAnswers) : plain
}

/** A quarter of the answer's events, at least one, carry the thought summary before it. */
function thoughtEventCount (chunkCount: number): number {
  return Math.max(1, Math.floor(chunkCount / 4))
}

async function stream (ctx: EmulatorContext, x: Exchange, answer: Answer, meta: Meta, fault: Fault | undefined, thoughts: Thoughts): Promise<void> {
  if (x.gone) return
  const steps = streamSteps(responseEvents(answer, meta, fault, thoughts), fault)
  x.res.writeHead(200, {
    'Content-Type': 'text/event-stream',
    'Content-Disposition': 'attachment',
    Vary: 'Origin, X-Origin, Referer',
    'X-Content-Type-Options': 'nosniff'
  })
  x.res.flushHeaders()
  if (fault?.kind === 'huge-event' || fault?.kind === 'endless') return await streamHuge(ctx, x, answer, meta, fault, thoughts)
  let written = 0
  for (const step of steps) {
    if (step.type === 'stall') {
      await x.wait('stall', step.ms)
    } else if (step.type === 'drop') {
      return await x.drop()
    } else {
      const delay = ctx.pace().chunkDelayMs
      if (written > 0 && delay > 0) await x.wait('delay', delay)
      if (x.gone) return
      if (x.deadlineHit) break
      if (!x.write(step.text)) return
      written++
      if (step.good) x.rec.chunksSent++
      await x.drained()
    }
    if (x.gone) return
    if (x.deadlineHit) break
  }
  if (x.deadlineHit && !x.gone) x.write(sseEvent(googleError(504)))
  x.end()
}

/** The size faults: one event of `chars` characters (or one that never ends), or deltas that never end. */
async function streamHuge (ctx: EmulatorContext, x: Exchange, answer: Answer, meta: Meta, fault: Extract<Fault, { kind: 'huge-event' | 'endless' }>, thoughts: Thoughts): Promise<void> {
  const events = responseEvents(answer, meta, undefined, thoughts)
  const send = async (text: string, good: boolean): Promise<boolean> => {
    if (!x.write(text)) return false
    if (good) x.rec.chunksSent++
    await x.drained()
    return !x.gone
  }
  if (fault.kind === 'endless') {
    const text = 'endless '.repeat(Math.ceil((fault.chunkChars ?? 16_384) / 8)).slice(0, fault.chunkChars ?? 16_384)
    const event = sseEvent({ candidates: [{ content: { parts: [{ text }], role: 'model' }, index: 0 }], ...meta })
    do {
      if (ctx.pace().chunkDelayMs > 0 && await x.wait('delay', ctx.pace().chunkDelayMs) === 'gone') return
    } while (await send(event, true))
    return
  }
  const k = Math.min(fault.afterChunks, events.length)
  for (const event of events.slice(0, k)) if (!await send(sseEvent(event), true)) return
  const opening = 'data: {"candidates": [{"content": {"parts": [{"text": "'
  if (!await send(opening, false)) return
  const piece = 'x'.repeat(HUGE_PIECE_CHARS)
  for (let left = fault.chars ?? Infinity; left > 0; left -= HUGE_PIECE_CHARS) {
    if (!await send(left >= HUGE_PIECE_CHARS ? piece : piece.slice(0, left), false)) return
  }
  if (!await send('"}], "role": "model"}, "index": 0}]}\r\n\r\n', true)) return
  for (const event of events.slice(k)) if (!await send(sseEvent(event), true)) return
  x.end()
}

async function unary (x: Exchange, answer: Answer, meta: Meta, fault: Fault | undefined, thoughts: Thoughts): Promise<void> {
  const response = unaryResponse(answer, meta, fault, thoughts)
  const text = JSON.stringify(response)
  switch (fault?.kind) {
    case 'stream-error':
      return sendError(x, fault.code, fault.message, fault.status)
    case 'empty-200':
      return sendRaw(x, 200, JSON_TYPE, '')
    case 'malformed-json':
    case 'unterminated':
      return sendRaw(x, 200, JSON_TYPE, text.slice(0, Math.floor(text.length / 2)))
    case 'drop':
      if (fault.afterChunks > 0) {
        x.res.writeHead(200, { 'Content-Type': JSON_TYPE })
        x.write(text.slice(0, Math.floor(text.length / 2)))
      }
      return await x.drop()
    case 'stall': {
      x.res.writeHead(200, { 'Content-Type': JSON_TYPE })
      x.res.flushHeaders()
      const r = await x.wait('stall', fault.ms)
      if (r === 'gone') return
      if (r === 'deadline') {
        x.destroyedByUs = true
        x.res.destroy()
        return
      }
      x.rec.chunksSent = 1
      return x.end(text)
    }
  }
  if (x.deadlineHit) return sendError(x, 504)
  x.rec.chunksSent = 1
  sendRaw(x, 200, JSON_TYPE, text)
}

/** An error status whose body is `prefix` and then filler, `bytes` long in all or without end, written as the client reads. */
async function sendHugeError (x: Exchange, fault: Extract<Fault, { kind: 'huge-error' }>): Promise<void> {
  if (x.gone) return
  x.res.writeHead(fault.status, { 'Content-Type': fault.contentType ?? 'text/html; charset=UTF-8' })
  const filler = ' '.repeat(HUGE_PIECE_CHARS)
  let left = (fault.bytes ?? Infinity) - Buffer.byteLength(fault.prefix ?? '')
  if (!x.write(fault.prefix ?? '')) return
  for (; left > 0; left -= HUGE_PIECE_CHARS) {
    await x.drained()
    if (x.gone || !x.write(left >= HUGE_PIECE_CHARS ? filler : filler.slice(0, left))) return
  }
  x.end()
}

function sendHttpFault (x: Exchange, fault: Extract<Fault, { kind: 'http-error' }>): void {
  const body = fault.body === undefined
    ? JSON.stringify(googleError(fault.status))
    : typeof fault.body === 'string' ? fault.body : JSON.stringify(fault.body)
  sendRaw(x, fault.status, fault.contentType ?? JSON_TYPE, body, fault.headers)
}
