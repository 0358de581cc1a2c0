// Attachments on POST /api/stream (issue 14): files of the new user turn, checked for a known type, base64
// and a size cap, sent to Gemini as inlineData parts after the prompt, and counted as Gemini counts them.

import { request as httpRequest } from 'node:http'
import { crc32, deflateSync } from 'node:zlib'
import t from 'tap'
import { answerFor, conversationOf } from '../emulator/server.js'
import { ATTACHMENT_MIME_TYPES, ATTACHMENTS_MAX_ITEMS, CONVERSATION_MAX_CHARS, PROMPT_MAX_LENGTH } from '../schemas/stream.js'
import { attachmentDataRule } from '../schemas/refusals.js'
import { USER_KEY, buildGateway, chunkEvents, expectedStreamBody, listenOnLoopback, parseEvents, postStream, startEmulator, startGateway, within } from './support/gateway.js'
import { dataEvent } from '../scripts/shared/expected-stream.js'
import { loadEnv } from '../standalone/env.js'

// Nothing listens here: every request below must be refused before the gateway calls Gemini.
const UNREACHABLE_UPSTREAM = 'http://127.0.0.1:9'
/** A real 1x1 PNG. */
const TINY_PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='
const PROMPT = 'What is in this picture?'
const PACE = { chunkCount: 4, defaultMaxTokens: 12 }
/** The body limit of a gateway whose attachments cap is `cap` (routes/stream.ts). */
const bodyLimitOf = (cap: number): number => (PROMPT_MAX_LENGTH + CONVERSATION_MAX_CHARS) * 12 + 64 * 1024 + Math.ceil(cap / 3) * 4 + ATTACHMENTS_MAX_ITEMS * 64

/** A real grayscale PNG of this size, every pixel black. */
function pngOf (width: number, height: number): string {
  const chunk = (type: string, data: Buffer): Buffer => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data])
    const length = Buffer.alloc(4)
    length.writeUInt32BE(data.length)
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(crc32(body))
    return Buffer.concat([length, body, crc])
  }
  const header = Buffer.alloc(13)
  header.writeUInt32BE(width, 0)
  header.writeUInt32BE(height, 4)
  header[8] = 8 // bit depth; colour type 0 (gray), compression, filter and interlace 0
  const rows = Buffer.alloc((width + 1) * height)
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', header), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]).toString('base64')
}

t.test('every invalid attachment is a 400 naming it, before any upstream call', async t => {
  const app = await buildGateway(t, UNREACHABLE_UPSTREAM)
  const png = { mimeType: 'image/png', data: TINY_PNG }
  const cases: Array<[body: unknown, error: string]> = [
    [{ prompt: 'hi', attachments: png }, 'attachments must be array'],
    [{ prompt: 'hi', attachments: [{ ...png, mimeType: 'image/gif' }] }, `attachments.0.mimeType must be one of ${ATTACHMENT_MIME_TYPES.map(type => `"${type}"`).join(', ')}`],
    [{ prompt: 'hi', attachments: [png, { ...png, data: 'not base64!' }] }, attachmentDataRule('attachments.1.data')],
    [{ prompt: 'hi', attachments: [{ ...png, data: 'ab-_' }] }, attachmentDataRule('attachments.0.data')],
    [{ prompt: 'hi', attachments: [{ ...png, data: 'abcde' }] }, attachmentDataRule('attachments.0.data')],
    [{ prompt: 'hi', attachments: [{ ...png, data: 'ab=c' }] }, attachmentDataRule('attachments.0.data')],
    [{ prompt: 'hi', attachments: [{ ...png, data: '' }] }, 'attachments.0.data must not have fewer than 4 characters'],
    [{ prompt: 'hi', attachments: [{ mimeType: 'image/png' }] }, 'attachments.0 must have required properties data'],
    [{ prompt: 'hi', attachments: [{ ...png, name: 'cat.png' }] }, 'Unknown field: attachments.0.name'],
    [{ prompt: 'hi', attachments: Array.from({ length: ATTACHMENTS_MAX_ITEMS + 1 }, () => png) }, `attachments must not have more than ${ATTACHMENTS_MAX_ITEMS} items`]
  ]
  for (const [body, error] of cases) {
    const response = await app.inject({ method: 'POST', url: '/api/stream', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, payload: JSON.stringify(body) })
    t.same({ status: response.statusCode, body: response.body }, { status: 400, body: JSON.stringify({ error }) }, JSON.stringify(body).slice(0, 80))
  }
})

t.test('attachments over the cap are a 413; at the cap they are sent', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, { attachmentsMaxBytes: 3000 })
  const file = (bytes: number): { mimeType: string, data: string } => ({ mimeType: 'text/plain', data: Buffer.alloc(bytes, 'a').toString('base64') })
  const over = await postStream(url, { prompt: 'hi', attachments: [file(1000), file(2001)] })
  t.same({ status: over.status, body: await over.text() }, { status: 413, body: '{"error":"attachments may hold at most 3000 bytes together (decoded)"}' })
  const at = await postStream(url, { prompt: 'hi', attachments: [file(1000), file(2000)] })
  t.equal(at.status, 200)
  await at.text()
  t.equal(emulator.requests.length, 1, 'only the request within the cap reached Gemini')
})

t.test('a body past the limit is refused with 413 as it arrives, never buffered whole', async t => {
  const cap = 3000
  const app = await buildGateway(t, UNREACHABLE_UPSTREAM, { attachmentsMaxBytes: cap })
  const url = new URL(await listenOnLoopback(app))
  const limit = bodyLimitOf(cap)
  // Far past what loopback socket buffers absorb, so the answer can only come before the body is all sent.
  const total = limit * 16

  /** Sends `declared` bytes (chunked when undefined) until the gateway answers; resolves with what it said and how much went out. */
  const send = async (declared: number | undefined): Promise<{ status: number | undefined, body: string, sent: number }> => await new Promise((resolve, reject) => {
    let sent = 0
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'x-api-key': USER_KEY }
    if (declared !== undefined) headers['content-length'] = declared
    const request = httpRequest({ host: url.hostname, port: url.port, path: '/api/stream', method: 'POST', headers }, response => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (text: string) => { body += text })
      response.on('end', () => { resolve({ status: response.statusCode, body, sent }); request.destroy() })
    })
    request.on('error', error => { if (sent < total) reject(error) })
    const piece = Buffer.alloc(64 * 1024, 'a')
    const pump = (): void => {
      while (sent < total && !request.destroyed) {
        sent += piece.length
        if (!request.write(piece)) { request.once('drain', pump); return }
      }
    }
    request.write('{"prompt":"hi","attachments":[{"mimeType":"text/plain","data":"')
    // With a declared length, nothing past the headers is needed for the answer.
    if (declared === undefined) pump()
  })

  const declared = await within(10_000, send(total), 'the 413 for a declared length')
  t.same({ status: declared.status, body: declared.body }, { status: 413, body: '{"error":"Request body is too large"}' }, 'a declared length over the limit')
  t.equal(declared.sent, 0, 'refused before any of the body was sent')
  const chunked = await within(10_000, send(undefined), 'the 413 for a chunked body')
  t.same({ status: chunked.status, body: chunked.body }, { status: 413, body: '{"error":"Request body is too large"}' }, 'a chunked body over the limit')
  t.ok(chunked.sent < total, `refused after ${chunked.sent} of ${total} bytes`)

  const textOnly = await app.inject({ method: 'POST', url: '/api/stream', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, payload: JSON.stringify({ prompt: 'x'.repeat(2_000_000) }) })
  t.same({ status: textOnly.statusCode, body: textOnly.body }, { status: 413, body: '{"error":"Request body is too large"}' }, 'the room for attachments is not room for text')
})

t.test('a PNG reaches Gemini as inlineData after the prompt, changes the answer and counts 258 tokens', async t => {
  const emulator = await startEmulator(t, PACE)
  const plainAnswer = answerFor({ turns: [{ role: 'user', text: PROMPT }] }, undefined, PACE)
  for (const client of ['rest', 'sdk'] as const) {
    const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'upstream-secret-key', baseUrl: emulator.url, client }, stream: { heartbeatMs: 0 } })
    const response = await postStream(url, { prompt: PROMPT, attachments: [{ mimeType: 'image/png', data: TINY_PNG }] })
    t.equal(response.status, 200, client)
    const recorded = emulator.requests.at(-1)!
    t.equal(JSON.stringify(recorded.body),
      `{"contents":[{"parts":[{"text":"${PROMPT}"},{"inlineData":{"mimeType":"image/png","data":"${TINY_PNG}"}}],"role":"user"}],"generationConfig":{}}`, `${client}: on the wire`)
    const answer = answerFor(conversationOf(recorded.body), undefined, PACE)
    t.equal(answer.promptTokens, 5 + 258, 'five words and one small image')
    t.same(answer.promptDetails, [{ modality: 'TEXT', tokenCount: 5 }, { modality: 'IMAGE', tokenCount: 258 }])
    t.equal(await response.text(), chunkEvents(answer.deltas) + dataEvent({
      complete: true,
      totalChunks: answer.deltas.length,
      fullText: answer.deltas.join(''),
      usage: { promptTokens: 263, completionTokens: answer.completionTokens, totalTokens: 263 + answer.completionTokens },
      finishReason: 'STOP',
      model: 'gemini-2.0-flash-exp'
    }), `${client}: the conversation's events, usage counting the image`)
    t.not(answer.deltas.join(''), plainAnswer.deltas.join(''), 'the attachment changes the answer')
  }

  // A seed request still reaches Gemini and comes back byte for byte as before.
  const { url } = await startGateway(t, emulator, { stream: { heartbeatMs: 0 } })
  const seed = await postStream(url, { prompt: PROMPT })
  const seedAnswer = answerFor(PROMPT, undefined, PACE)
  t.equal(await seed.text(), expectedStreamBody(seedAnswer.deltas, seedAnswer), 'the seed\'s body')
  t.equal(JSON.stringify(emulator.requests.at(-1)?.body), `{"contents":[{"parts":[{"text":"${PROMPT}"}],"role":"user"}],"generationConfig":{}}`, 'the seed\'s request')
})

t.test('without usage from Gemini, countTokens counts the attachments too', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator, { stream: { heartbeatMs: 0 } })
  emulator.addFault({ kind: 'no-usage' })
  const response = await postStream(url, { prompt: PROMPT, attachments: [{ mimeType: 'image/png', data: pngOf(800, 400) }] })
  const completion = parseEvents(await response.text()).at(-1) as { usage: { promptTokens: number } }
  t.equal(completion.usage.promptTokens, 5 + 2 * 258, 'an 800x400 image is two 768x768 tiles')
  const count = emulator.requests.find(request => request.rpc === 'countTokens' && JSON.stringify(request.body).includes('inlineData'))
  t.ok(count, 'the count was asked with the image')
})

t.test('the emulator refuses inline data as Google does, and reports image tokens by modality', async t => {
  const emulator = await startEmulator(t, PACE)
  const generate = async (parts: unknown[], rpc = 'streamGenerateContent?alt=sse'): Promise<{ status: number, text: string }> => {
    const response = await fetch(`${emulator.url}/v1beta/models/gemini-2.0-flash:${rpc}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-api-key': 'k' },
      body: JSON.stringify({ contents: [{ role: 'user', parts }] })
    })
    return { status: response.status, text: await response.text() }
  }
  const googleError = (message: string): string => JSON.stringify({ error: { code: 400, message, status: 'INVALID_ARGUMENT' } })
  t.same(await generate([{ text: 'hi' }, { inlineData: { mimeType: 'image/png', data: 'not base64!' } }]),
    { status: 400, text: googleError('Invalid value at \'contents[0].parts[1].inline_data.data\' (TYPE_BYTES), Base64 decoding failed for "not base64!"') })
  t.same(await generate([{ text: 'hi' }, { inlineData: { mimeType: 'image/gif', data: TINY_PNG } }]), { status: 400, text: googleError('Unsupported MIME type: image/gif') })
  t.equal((await generate([{ inlineData: { mimeType: 'image/png', data: TINY_PNG.replace(/=+$/, '') } }])).status, 200, 'unpadded base64 is accepted, as protobuf reads bytes')

  const events = parseEvents((await generate([{ text: PROMPT }, { inlineData: { mimeType: 'image/png', data: TINY_PNG } }])).text.replaceAll('\r\n', '\n')) as Array<{ usageMetadata: Record<string, unknown> }>
  const answer = answerFor({ turns: [{ role: 'user', text: PROMPT, media: [{ mimeType: 'image/png', data: TINY_PNG }] }] }, undefined, PACE)
  t.same(events.at(-1)?.usageMetadata, {
    promptTokenCount: 263,
    candidatesTokenCount: answer.completionTokens,
    totalTokenCount: 263 + answer.completionTokens,
    promptTokensDetails: [{ modality: 'TEXT', tokenCount: 5 }, { modality: 'IMAGE', tokenCount: 258 }]
  }, 'Google\'s usage, details before the thoughts')
  t.equal(Object.keys(events.at(-1)!.usageMetadata).join(), 'promptTokenCount,candidatesTokenCount,totalTokenCount,promptTokensDetails')
  const counted = await fetch(`${emulator.url}/v1beta/models/gemini-2.0-flash:countTokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-goog-api-key': 'k' },
    body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: PROMPT }, { inlineData: { mimeType: 'image/png', data: pngOf(1600, 300) } }] }] })
  })
  t.same(await counted.json(), { totalTokens: 5 + 3 * 258, promptTokensDetails: [{ modality: 'TEXT', tokenCount: 5 }, { modality: 'IMAGE', tokenCount: 3 * 258 }] }, 'a 1600x300 image is three tiles')

  // A JPEG's size is in its frame header, after its APP segments: 1000x1000 is four tiles.
  const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x06, 0x4a, 0x46, 0x49, 0x46, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x03, 0xe8, 0x03, 0xe8, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xd9])
  const files = [{ inlineData: { mimeType: 'image/jpeg', data: jpeg.toString('base64') } }, { inlineData: { mimeType: 'image/webp', data: 'UklGRg==' } }, { inlineData: { mimeType: 'audio/mp3', data: 'SUQz' } }]
  const mixed = await fetch(`${emulator.url}/v1beta/models/gemini-2.0-flash:countTokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-goog-api-key': 'k' },
    body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: PROMPT }, ...files] }] })
  })
  t.same(await mixed.json(), {
    totalTokens: 5 + 4 * 258 + 258 + 258,
    promptTokensDetails: [{ modality: 'TEXT', tokenCount: 5 }, { modality: 'IMAGE', tokenCount: 5 * 258 }, { modality: 'AUDIO', tokenCount: 258 }]
  }, 'a JPEG by its size, a WebP and an MP3 at a fixed 258')
})

t.test('the cap is configured by ATTACHMENTS_MAX_BYTES or the option, and checked', async t => {
  t.equal(loadEnv({}).ATTACHMENTS_MAX_BYTES, 20 * 1024 * 1024, '20 MiB by default')
  t.equal(loadEnv({ ATTACHMENTS_MAX_BYTES: '1000' }).ATTACHMENTS_MAX_BYTES, 1000)
  for (const value of ['75000001', '-1', 'lots']) {
    t.throws(() => loadEnv({ ATTACHMENTS_MAX_BYTES: value }), { message: 'ATTACHMENTS_MAX_BYTES must be an integer from 0 to 75000000' }, value)
  }
  await t.rejects(buildGateway(t, UNREACHABLE_UPSTREAM, { attachmentsMaxBytes: 1.5 }),
    { message: 'stream route: option "attachmentsMaxBytes" must be an integer from 0 to 75000000' })
})
