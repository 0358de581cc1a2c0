import { createHash } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { refusals, type Refusal } from '../schemas/refusals.js'
import { provide } from './services.js'

export type Role = 'user' | 'admin'

/** A configured key, stored only as its SHA-256 so raw keys need not live in config files. */
export interface ApiKeyEntry {
  name: string
  sha256: string
  role: Role
}

export interface Caller {
  /** Stable, non-secret identity: the entry's name, or a prefix of the key's hash. */
  id: string
  role: Role
}

export type AuthFailure = 'missing' | 'invalid'

export interface AuthOptions {
  apiKeys?: readonly string[]
  adminApiKeys?: readonly string[]
  keyEntries?: readonly ApiKeyEntry[]
}

/** RFC 6750's scheme, case-insensitive, then the token; an empty token counts as no key. */
const BEARER = /^Bearer +(\S*) *$/i

export function sha256Hex (value: string): string {
  return createHash('sha256').update(value).digest('hex')
}

function buildKeyTable (options: AuthOptions): Map<string, Caller> {
  const table = new Map<string, Caller>()
  const addRaw = (key: string, role: Role): void => {
    const hash = sha256Hex(key)
    table.set(hash, { id: `key-${hash.slice(0, 12)}`, role })
  }
  for (const key of options.apiKeys ?? []) addRaw(key, 'user')
  for (const entry of options.keyEntries ?? []) {
    table.set(entry.sha256.toLowerCase(), { id: entry.name, role: entry.role })
  }
  // Admin last: a key listed in both lists is an admin key.
  for (const key of options.adminApiKeys ?? []) addRaw(key, 'admin')
  return table
}

/** What `identifyCaller` found out about a request: its caller, or why it has none. */
export interface RequestIdentity {
  caller: Caller | null
  authFailure: AuthFailure | null
}

export interface AuthHooks {
  /** Sets `request.amrikyy` from X-API-Key without rejecting, so later hooks can key on the caller. */
  identifyCaller: (request: FastifyRequest) => Promise<void>
  /**
   * As identifyCaller, for the routes of APIs whose clients send their key as `Authorization: Bearer <key>`
   * (OpenAI's): that header first, then X-API-Key.
   */
  identifyBearerCaller: (request: FastifyRequest) => Promise<void>
  /**
   * As identifyCaller, for the Gemini passthrough, whose clients send their key where Gemini takes one:
   * `x-goog-api-key` (what @google/genai sends), then the `key` query parameter, then X-API-Key.
   */
  identifyGoogleCaller: (request: FastifyRequest) => Promise<void>
  /**
   * Throws the 401/403 refusal of a request the identify hooks could not identify, for routes whose own error
   * handler gives refusals their API's shape (OpenAI's, Google's).
   */
  refuseUnidentified: (request: FastifyRequest) => Promise<void>
  /** Rejects requests that `identifyCaller` could not identify, with the contract's 401/403 bodies. */
  requireCaller: (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined>
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set on the gateway's routes once `identifyCaller` ran; absent on any other request. */
    amrikyy?: RequestIdentity | null
  }
}

declare module './services.js' {
  interface GatewayServices {
    auth?: AuthHooks
  }
}

/** The caller of a request `identifyCaller` identified; null for any other request. */
export function callerOf (request: FastifyRequest): Caller | null {
  return request.amrikyy?.caller ?? null
}

function refusalOf (request: FastifyRequest): Refusal {
  return request.amrikyy?.authFailure === 'missing' ? refusals.missingKey() : refusals.invalidKey()
}

export default fp<AuthOptions>(async function authPlugin (app, options) {
  const table = buildKeyTable(options)
  if (table.size === 0) {
    throw new Error('auth: no API keys configured (options "apiKeys", "adminApiKeys" or "keyEntries")')
  }

  if (!app.hasRequestDecorator('amrikyy')) app.decorateRequest('amrikyy', null)

  function identify (request: FastifyRequest, presented: string | string[] | undefined): void {
    if (typeof presented !== 'string' || presented.trim() === '') {
      request.amrikyy = { caller: null, authFailure: 'missing' }
      return
    }
    // Looking up the hash, not the key, keeps the comparison time independent of how much of a key matches.
    const caller = table.get(sha256Hex(presented))
    request.amrikyy = caller === undefined ? { caller: null, authFailure: 'invalid' } : { caller, authFailure: null }
  }

  provide(app, 'auth', {
    async identifyCaller (request) {
      identify(request, request.headers['x-api-key'])
    },
    async identifyBearerCaller (request) {
      const bearer = BEARER.exec(request.headers.authorization ?? '')?.[1]
      identify(request, bearer ?? request.headers['x-api-key'])
    },
    async identifyGoogleCaller (request) {
      const query = request.query as Record<string, unknown> | undefined
      const fromQuery = typeof query?.key === 'string' ? query.key : undefined
      identify(request, request.headers['x-goog-api-key'] ?? fromQuery ?? request.headers['x-api-key'])
    },
    async refuseUnidentified (request) {
      if (callerOf(request) !== null) return
      throw refusalOf(request)
    },
    async requireCaller (request, reply) {
      if (callerOf(request) !== null) return undefined
      return await refusalOf(request).sendWith(reply)
    }
  })
}, { name: 'amrikyy-auth', fastify: '5.x' })
