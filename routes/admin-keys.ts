// The management API for operators: create, list, change and revoke keys, behind a secret of its own
// (MANAGEMENT_API_KEY). Keys live in Redis through the managed-keys plugin; without it only the listing works.

import { createHash, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { POLICY_FIELDS, policyView, readPolicy, type KeyPolicy } from '../schemas/key-policy.js'
import { refusals } from '../schemas/refusals.js'
import { keyCaller, type Caller, type Role } from '../plugins/auth.js'
import type { ManagedEntry } from '../plugins/managed-keys.js'
import { DAY_MS, HOUR_MS } from '../plugins/key-budgets-store.js'
import { need } from '../plugins/services.js'
// Each service's type comes with the plugin that provides it.
import type {} from '../plugins/key-budgets.js'

export interface AdminKeysOptions {
  /** The operators' secret, sent as `Authorization: Bearer <token>`; never one of the callers' keys. */
  token: string
}

const NAME = Type.String({ pattern: '^[A-Za-z0-9._@-]{1,64}$', description: '1 to 64 letters, digits or ._@- characters' })
const ROLE = Type.Union([Type.Literal('user'), Type.Literal('admin')])
const policyProperties = {
  tokensPerMinute: Type.Integer({ minimum: 1 }),
  tokensPerDay: Type.Integer({ minimum: 1 }),
  usdPerDay: Type.Number({ exclusiveMinimum: 0 }),
  requestsPerWindow: Type.Integer({ minimum: 1 }),
  models: Type.Array(Type.String(), { minItems: 1 }),
  maxOutputTokens: Type.Integer({ minimum: 1 }),
  maxConcurrentStreams: Type.Integer({ minimum: 1 }),
  expiresAt: Type.String({ description: 'ISO 8601 time with a zone' }),
  disabled: Type.Boolean()
}
const NewKey = Type.Object({
  name: NAME,
  role: ROLE,
  ...Object.fromEntries(Object.entries(policyProperties).map(([field, schema]) => [field, Type.Optional(schema)]))
}, { additionalProperties: false })
// In a change, null takes a field away: the key goes back to the default.
const KeyChange = Type.Object({
  role: Type.Optional(ROLE),
  ...Object.fromEntries(Object.entries(policyProperties).map(([field, schema]) => [field, Type.Optional(Type.Union([schema, Type.Null()]))]))
}, { additionalProperties: false })

function digest (value: string): Buffer {
  return createHash('sha256').update(value).digest()
}

const BEARER = /^Bearer +(\S+) *$/i

/** The key as the API shows it: its name, role, policy, where it comes from and what it did; never the key or its hash. */
interface KeyView {
  name: string
  role: Role
  source: 'management' | 'configuration'
  readOnly: boolean
  policy: ReturnType<typeof policyView>
  created: string | null
  lastUsed: string | null
  usage: { tokensThisMinute: number, tokensToday: number, openStreams: number }
}

const iso = (ms: number | undefined): string | null => ms === undefined ? null : new Date(ms).toISOString()

/** Hours of records one usage query may read, keys times hours: a bound on its Redis reads. */
const MAX_HOURS_READ = 10_000
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2}))?$/

function timeOf (field: string, value: string): number {
  const ms = ISO_TIME.test(value) ? Date.parse(value) : NaN
  if (!Number.isFinite(ms)) throw refusals.invalidBody(`${field} must be an ISO 8601 date or time with a zone, such as "2026-12-03T10:00:00Z"`)
  return ms
}

const adminKeysRoute: FastifyPluginAsyncTypebox<AdminKeysOptions> = async (app, options) => {
  const auth = need(app, 'auth', 'amrikyy-auth')
  const budgets = need(app, 'budgets', 'amrikyy-key-budgets')
  const managed = app.amrikyy?.managedKeys
  if (typeof options.token !== 'string' || options.token.length < 16) throw new Error('admin keys: option "token" must be a secret of at least 16 characters')
  for (const hash of auth.configured.keys()) {
    if (timingSafeEqual(Buffer.from(hash, 'hex'), digest(options.token))) throw new Error('admin keys: the management token must not be one of the callers\' API keys')
  }
  const expected = digest(options.token)
  app.setValidatorCompiler(TypeBoxValidatorCompiler)
  // A DELETE sent with a JSON content type and no body (as curl scripts often do) is not an error here.
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, function parseAdminBody (_request, body, done) {
    if (body === '') return done(null, undefined)
    try {
      done(null, JSON.parse(body as string))
    } catch {
      done(refusals.malformedJson())
    }
  })

  // The digests are compared, not the tokens, so the time taken tells nothing of how much of a token matches.
  async function requireOperator (request: FastifyRequest): Promise<void> {
    const presented = BEARER.exec(request.headers.authorization ?? '')?.[1]
    if (presented === undefined) throw refusals.managementTokenMissing()
    if (!timingSafeEqual(digest(presented), expected)) throw refusals.managementTokenInvalid()
  }

  function store (): NonNullable<typeof managed> {
    if (managed === undefined) throw refusals.managementNeedsRedis()
    return managed
  }

  function policyOf (body: Record<string, unknown>): KeyPolicy {
    const policy = readPolicy(body, message => { throw refusals.invalidBody(message) })
    if (policy.usdPerDay !== undefined && !budgets.priced) throw refusals.invalidBody('usdPerDay needs a price table (MODEL_PRICES or MODEL_PRICES_FILE)')
    return policy
  }

  function refuseConfigured (name: string): void {
    for (const caller of auth.configured.values()) if (caller.id === name) throw refusals.keyReadOnly(name)
  }

  async function viewOf (caller: Caller, entry: ManagedEntry | undefined, lastUsed: Map<string, number>): Promise<KeyView> {
    const usage = await budgets.usage(caller)
    return {
      name: caller.id,
      role: caller.role,
      source: entry === undefined ? 'configuration' : 'management',
      readOnly: entry === undefined,
      // A managed key's own fields (the defaults are the gateway's); a configured key's as they apply.
      policy: policyView(entry?.policy ?? caller.policy),
      created: iso(entry?.created),
      lastUsed: iso(lastUsed.get(caller.id)),
      usage: { tokensThisMinute: usage.tokensPerMinute.used, tokensToday: usage.tokensPerDay.used, openStreams: usage.concurrentStreams.open }
    }
  }

  const onRequest = [requireOperator]
  const security = [{ management: [] }]

  app.post('/admin/keys', { schema: { summary: 'Create an API key; the answer holds the raw key, once', security, body: NewKey }, onRequest }, async function createKey (request, reply) {
    const body = request.body as Record<string, unknown>
    const policy = policyOf(body)
    const { name, role } = request.body as { name: string, role: Role }
    refuseConfigured(name)
    const created = await store().create(name, role, policy)
    if (created === undefined) throw refusals.keyNameTaken(name)
    const caller = keyCaller(name, role, policy, auth.defaultPolicy)
    return await reply.code(201).send({ ...await viewOf(caller, created.entry, new Map()), key: created.key })
  })

  app.get('/admin/keys', { schema: { summary: 'Every key: names, roles, policies, created, last used, usage so far (never a key)', security }, onRequest }, async function listKeys () {
    const entries = managed === undefined ? [] : await managed.list()
    const lastUsed = managed === undefined ? new Map<string, number>() : await managed.lastUsed()
    const configured = [...auth.configured.values()].map(async caller => await viewOf(caller, undefined, lastUsed))
    const own = entries.map(async entry => await viewOf(keyCaller(entry.name, entry.role, entry.policy, auth.defaultPolicy), entry, lastUsed))
    return { keys: await Promise.all([...configured, ...own]) }
  })

  app.patch('/admin/keys/:name', {
    schema: { summary: 'Change a key\'s role or policy; null takes a field back to the default', security, params: Type.Object({ name: NAME }), body: KeyChange },
    onRequest
  }, async function changeKey (request) {
    const { name } = request.params
    refuseConfigured(name)
    const body = request.body as Record<string, unknown>
    const given = Object.fromEntries(Object.entries(body).filter(([field, value]) => field !== 'role' && value !== null))
    const policy: Partial<Record<keyof KeyPolicy, unknown>> = { ...policyOf(given) }
    for (const field of POLICY_FIELDS) if (body[field] === null) policy[field] = undefined
    const updated = await store().update(name, { role: body.role as Role | undefined, policy })
    if (updated === undefined) throw refusals.keyNotFound(name)
    const lastUsed = await store().lastUsed()
    return await viewOf(keyCaller(name, updated.role, updated.policy, auth.defaultPolicy), updated, lastUsed)
  })

  app.get('/admin/usage', {
    schema: {
      summary: 'Requests, tokens and outcomes per key per hour, within the retention',
      security,
      querystring: Type.Object({
        key: Type.Optional(NAME),
        from: Type.Optional(Type.String({ description: 'ISO 8601 time; default 24 hours before `to`' })),
        to: Type.Optional(Type.String({ description: 'ISO 8601 time; default now' }))
      }, { additionalProperties: false })
    },
    onRequest
  }, async function usagePerHour (request) {
    const { key, from, to } = request.query
    const toMs = to === undefined ? Date.now() : timeOf('to', to)
    const fromMs = from === undefined ? toMs - DAY_MS : timeOf('from', from)
    if (fromMs > toMs) throw refusals.invalidBody('from must not be after to')
    const names = key !== undefined ? [key] : [...new Set([...[...auth.configured.values()].map(caller => caller.id), ...(await managed?.list() ?? []).map(entry => entry.name)])]
    if (names.length * ((toMs - fromMs) / HOUR_MS + 1) > MAX_HOURS_READ) throw refusals.invalidBody(`from and to span too many hours for ${names.length} keys: name a key or narrow the range (at most ${MAX_HOURS_READ} key-hours)`)
    const keys = await Promise.all(names.map(async name => ({
      key: name,
      hours: (await budgets.hours(name, fromMs, toMs)).map(hour => ({
        hour: new Date(hour.hour * HOUR_MS).toISOString(),
        requests: hour.requests,
        tokens: { prompt: hour.prompt, completion: hour.completion, thoughts: hour.thoughts },
        outcomes: { completed: hour.completed, failed: hour.failed, cancelled: hour.cancelled, refused: hour.refused }
      }))
    })))
    return { from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString(), retentionDays: budgets.retentionMs / DAY_MS, keys }
  })

  app.delete('/admin/keys/:name', {
    schema: { summary: 'Revoke a key; every instance refuses it within a second', security, params: Type.Object({ name: NAME }) },
    onRequest
  }, async function deleteKey (request, reply) {
    const { name } = request.params
    refuseConfigured(name)
    if (!await store().remove(name)) throw refusals.keyNotFound(name)
    return await reply.code(204).send()
  })
}

export default fp(adminKeysRoute, {
  name: 'amrikyy-admin-keys',
  fastify: '5.x',
  encapsulate: true,
  dependencies: ['amrikyy-auth', 'amrikyy-key-budgets']
})
