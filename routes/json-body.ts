// How the stream route reads its JSON body: UTF-8 only, and prototype-poisoning keys named.
import { errorCodes, type FastifyRequest } from 'fastify'
import { refusals } from '../schemas/refusals.js'

/** JSON is UTF-8 (RFC 8259); a body declared in another charset would be silently misread. */
const UTF8_CHARSET = /^"?utf-?8"?$/i

function charsetOf (contentType: string | undefined): string | undefined {
  const parameter = contentType?.split(';').slice(1).map(part => part.trim().split('=')).find(([name]) => name?.trim().toLowerCase() === 'charset')
  return parameter?.[1]?.trim()
}

/** The first key that would poison a prototype if merged into an object. Iterative: bodies may nest deeply. */
function poisonedField (root: unknown): string | undefined {
  const pending: unknown[] = [root]
  while (pending.length > 0) {
    const value = pending.pop()
    if (value === null || typeof value !== 'object') continue
    if (Object.hasOwn(value, '__proto__')) return '__proto__'
    const ctor = (value as { constructor?: unknown }).constructor
    if (Object.hasOwn(value, 'constructor') && ctor !== null && typeof ctor === 'object' && Object.hasOwn(ctor, 'prototype')) return 'constructor.prototype'
    for (const child of Object.values(value)) pending.push(child)
  }
  return undefined
}

/**
 * Fastify's own JSON parser refuses prototype-poisoning keys too, but as "malformed" JSON; this one
 * says which key it refused. Valid JSON is otherwise parsed as JSON.parse does.
 */
export function parseJsonBody (_request: FastifyRequest, body: string, done: (error: Error | null, value?: unknown) => void): void {
  if (body.length === 0) return done(new errorCodes.FST_ERR_CTP_EMPTY_JSON_BODY())
  let value: unknown
  try {
    value = JSON.parse(body)
  } catch {
    return done(new errorCodes.FST_ERR_CTP_INVALID_JSON_BODY())
  }
  const poisoned = poisonedField(value)
  if (poisoned !== undefined) return done(refusals.forbiddenField(poisoned))
  done(null, value)
}

export async function refuseOtherCharsets (request: FastifyRequest): Promise<void> {
  const charset = charsetOf(request.headers['content-type'])
  if (charset !== undefined && !UTF8_CHARSET.test(charset)) {
    throw refusals.notUtf8()
  }
}
