import { createHash } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { refusals, type Refusal } from '../schemas/refusals.js'
import { withDefaults, type KeyPolicy } from '../schemas/key-policy.js'
import { modelMatcher } from './models.js'
import { provide } from './services.js'

export type Role = 'user' | 'admin'

/** A configured key, stored only as its SHA-256 so raw keys need not live in config files. */
export interface ApiKeyEntry {
  name: string
  sha256: string
  role: Role
  /** Budgets, limits and models of this key; a field left out comes from `defaultPolicy`. */
  policy?: KeyPolicy
}

export interface Caller {
  /** Stable, non-secret identity: the entry's name, or a prefix of the key's hash. */
  id: string
  role: Role
  /** The key's own policy over the defaults. */
  policy: KeyPolicy
  /** Whether the key's `models` let it use a model id (after aliases); true for a key without `models`. */
  allowsModel: (id: string) => boolean
}

export type AuthFailure = 'missing' | 'invalid' | 'expired' | 'disabled'

export interface AuthOptions {
  apiKeys?: readonly string[]
  adminApiKeys?: readonly string[]
  keyEntries?: readonly ApiKeyEntry[]
  /** The policy of every key that sets none of a field (TOKEN_LIMIT_PER_MINUTE and the rest). Default: no limits. */
  defaultPolicy?: KeyPolicy
  /** The clock expiry is measured on, in milliseconds. Default `Date.now`. */
  now?: () => number
}

/** RFC 6750's scheme, case-insensitive, then the token; an empty token counts as no key. */
const BEARER = /^Bearer +(\S*) *$/i

export function sha256Hex (value: string): string {
  return createHash('sha256').update(value).digest('hex')
}

const ANY_MODEL = (): boolean => true

/** The caller a key stands for, its policy merged with the defaults once, here, rather than on every request. */
export function keyCaller (id: string, role: Role, own: KeyPolicy | undefined, defaults: KeyPolicy): Caller {
  const policy = withDefaults(own, defaults)
  return { id, role, policy, allowsModel: policy.models === undefined ? ANY_MODEL : modelMatcher(policy.models) }
}

function buildKeyTable (options: AuthOptions): Map<string, Caller> {
  const defaults = options.defaultPolicy ?? {}
  const table = new Map<string, Caller>()
  const addRaw = (key: string, role: Role): void => {
    const hash = sha256Hex(key)
    table.set(hash, keyCaller(`key-${hash.slice(0, 12)}`, role, undefined, defaults))
  }
  for (const key of options.apiKeys ?? []) addRaw(key, 'user')
  for (const entry of options.keyEntries ?? []) {
    table.set(entry.sha256.toLowerCase(), keyCaller(entry.name, entry.role, entry.policy, defaults))
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
  /** Keys of another source (the management API's), by SHA-256, asked after the configured ones. */
  addKeySource: (lookup: (sha256: string) => Caller | undefined) => void
  /** The keys of the options (file and environment), which no other source may change. */
  readonly configured: ReadonlyMap<string, Caller>
  /** The policy of keys that set none of a field. */
  readonly defaultPolicy: KeyPolicy
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
  switch (request.amrikyy?.authFailure) {
    case 'missing': return refusals.missingKey()
    case 'expired': return refusals.expiredKey()
    case 'disabled': return refusals.disabledKey()
    default: return refusals.invalidKey()
  }
}

export default fp<AuthOptions>(async function authPlugin (app, options) {
  const table = buildKeyTable(options)
  const now = options.now ?? Date.now
  if (table.size === 0) {
    throw new Error('auth: no API keys configured (options "apiKeys", "adminApiKeys" or "keyEntries")')
  }

  if (!app.hasRequestDecorator('amrikyy')) app.decorateRequest('amrikyy', null)
  const sources: Array<(sha256: string) => Caller | undefined> = []

  function identify (request: FastifyRequest, presented: string | string[] | undefined): void {
    if (typeof presented !== 'string' || presented.trim() === '') {
      request.amrikyy = { caller: null, authFailure: 'missing' }
      return
    }
    // Looking up the hash, not the key, keeps the comparison time independent of how much of a key matches.
    const hash = sha256Hex(presented)
    let caller = table.get(hash)
    for (const lookup of sources) caller ??= lookup(hash)
    if (caller === undefined) {
      request.amrikyy = { caller: null, authFailure: 'invalid' }
    } else if (caller.policy.disabled === true) {
      request.amrikyy = { caller: null, authFailure: 'disabled' }
    } else if (caller.policy.expiresAt !== undefined && caller.policy.expiresAt <= now()) {
      request.amrikyy = { caller: null, authFailure: 'expired' }
    } else {
      request.amrikyy = { caller, authFailure: null }
    }
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
    },
    addKeySource (lookup) { sources.push(lookup) },
    configured: table,
    defaultPolicy: options.defaultPolicy ?? {}
  })
}, { name: 'amrikyy-auth', fastify: '5.x' })
