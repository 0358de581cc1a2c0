// Keys created by the management API: kept in Redis (only their SHA-256), read by every instance, which picks up any
// change within a second, and consulted by the auth plugin after the configured keys.

import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import type { KeyPolicy } from '../schemas/key-policy.js'
import { callerOf, keyCaller, sha256Hex, type Caller, type Role } from './auth.js'
import { need, provide } from './services.js'
import { isRedisOption, redisFor } from './rate-limit-redis-store.js'
import { throttledWarn } from './rate-limit.js'

export interface ManagedKeysOptions {
  /** A `redis://` URL (the plugin owns that client) or an ioredis client owned by the caller. */
  redis: string | Redis
  /** Prefix of the Redis keys. Default `amrikyy-keys:`. */
  nameSpace?: string | undefined
  /** How often each instance asks whether the keys changed. Default 250 ms, so a change is seen within a second. */
  pollMs?: number | undefined
}

/** A managed key as stored: never the raw key. */
export interface ManagedEntry {
  name: string
  sha256: string
  role: Role
  policy: KeyPolicy
  /** Milliseconds since the epoch. */
  created: number
}

export interface ManagedKeys {
  /** Stores a new key under `name` and returns it with its raw key, or undefined when the name is taken. */
  create: (name: string, role: Role, policy: KeyPolicy) => Promise<{ entry: ManagedEntry, key: string } | undefined>
  /** Changes a key's role or policy (a field set to undefined goes back to the default); undefined when there is none. */
  update: (name: string, change: { role?: Role | undefined, policy: Partial<Record<keyof KeyPolicy, unknown>> }) => Promise<ManagedEntry | undefined>
  /** Deletes a key; false when there was none. */
  remove: (name: string) => Promise<boolean>
  /** Every managed key, as Redis holds them now. */
  list: () => Promise<ManagedEntry[]>
  /** When each key (managed or configured) was last used, by name, in milliseconds. */
  lastUsed: () => Promise<Map<string, number>>
}

declare module './services.js' {
  interface GatewayServices {
    managedKeys?: ManagedKeys
  }
}

export const DEFAULT_KEYS_NAMESPACE = 'amrikyy-keys:'
const DEFAULT_POLL_MS = 250
const LAST_USED_FLUSH_MS = 1000
/** A raw key: a prefix that says whose it is, then 32 random bytes. */
const KEY_PREFIX = 'amk_'

function parseEntry (json: string): ManagedEntry | undefined {
  try {
    const entry = JSON.parse(json) as ManagedEntry
    return typeof entry.name === 'string' && typeof entry.sha256 === 'string' ? entry : undefined
  } catch {
    return undefined
  }
}

export default fp<ManagedKeysOptions>(async function managedKeysPlugin (app, options) {
  const auth = need(app, 'auth', 'amrikyy-auth')
  const nameSpace = options.nameSpace ?? DEFAULT_KEYS_NAMESPACE
  const pollMs = options.pollMs ?? DEFAULT_POLL_MS
  if (!Number.isInteger(pollMs) || pollMs < 1) throw new Error('managed-keys: option "pollMs" must be a positive integer')
  const warn = throttledWarn(app.log, 5000)
  if (!isRedisOption(options.redis)) throw new Error('managed-keys: option "redis" must be a redis:// or rediss:// URL or an ioredis client')
  const redis = await redisFor(app, options.redis, error => { warn(error, 'managed keys: Redis is unreachable; the keys last read keep working') })
  const entriesKey = `${nameSpace}entries`
  const versionKey = `${nameSpace}version`
  const lastUsedKey = `${nameSpace}last-used`

  // What this instance serves from: rebuilt whenever the version in Redis moves.
  let byHash = new Map<string, Caller>()
  let seenVersion: string | null | undefined

  async function reload (): Promise<void> {
    const [[, version], [, stored]] = await redis.multi().get(versionKey).hgetall(entriesKey).exec() as [[null, string | null], [null, Record<string, string>]]
    const next = new Map<string, Caller>()
    for (const json of Object.values(stored)) {
      const entry = parseEntry(json)
      if (entry !== undefined) next.set(entry.sha256, keyCaller(entry.name, entry.role, entry.policy, auth.defaultPolicy))
    }
    byHash = next
    seenVersion = version
  }

  async function pollOnce (): Promise<void> {
    const version = await redis.get(versionKey)
    if (version !== seenVersion) await reload()
  }

  await reload().catch((error: unknown) => { warn(error, 'managed keys: could not read the keys from Redis; retrying in the background') })
  // A key of the options wins: a managed key can never take over a configured one's hash.
  auth.addKeySource(hash => byHash.get(hash))

  const used = new Map<string, number>()
  app.addHook('onResponse', async request => {
    const caller = callerOf(request)
    if (caller !== null) used.set(caller.id, Date.now())
  })

  const poller = setInterval(() => { pollOnce().catch((error: unknown) => { warn(error, 'managed keys: could not read the keys from Redis; the keys last read keep working') }) }, pollMs)
  poller.unref()
  const flusher = setInterval(() => {
    if (used.size === 0) return
    const fields = [...used].flatMap(([name, ms]) => [name, String(ms)])
    used.clear()
    redis.hset(lastUsedKey, ...fields).catch(() => {})
  }, LAST_USED_FLUSH_MS)
  flusher.unref()
  app.addHook('onClose', async () => {
    clearInterval(poller)
    clearInterval(flusher)
  })

  async function changed (): Promise<void> {
    await redis.incr(versionKey)
    await reload()
  }

  async function read (name: string): Promise<ManagedEntry | undefined> {
    const json = await redis.hget(entriesKey, name)
    return json === null ? undefined : parseEntry(json)
  }

  const managed: ManagedKeys = {
    async create (name, role, policy) {
      const key = KEY_PREFIX + randomBytes(32).toString('base64url')
      const entry: ManagedEntry = { name, sha256: sha256Hex(key), role, policy, created: Date.now() }
      if (await redis.hsetnx(entriesKey, name, JSON.stringify(entry)) === 0) return undefined
      await changed()
      return { entry, key }
    },
    async update (name, change) {
      const entry = await read(name)
      if (entry === undefined) return undefined
      const policy: Record<string, unknown> = { ...entry.policy }
      for (const [field, value] of Object.entries(change.policy)) {
        if (value === undefined) delete policy[field]
        else policy[field] = value
      }
      const updated: ManagedEntry = { ...entry, role: change.role ?? entry.role, policy: policy as KeyPolicy }
      await redis.hset(entriesKey, name, JSON.stringify(updated))
      await changed()
      return updated
    },
    async remove (name) {
      const removed = await redis.hdel(entriesKey, name)
      if (removed === 0) return false
      await changed()
      return true
    },
    async list () {
      const stored = await redis.hgetall(entriesKey)
      return Object.values(stored).flatMap(json => parseEntry(json) ?? []).sort((a, b) => a.name.localeCompare(b.name))
    },
    async lastUsed () {
      const stored = await redis.hgetall(lastUsedKey)
      const times = new Map(Object.entries(stored).map(([name, ms]) => [name, Number(ms)]))
      // This instance's uses not flushed yet are newer than anything stored.
      for (const [name, ms] of used) times.set(name, ms)
      return times
    }
  }
  provide(app, 'managedKeys', managed)
}, { name: 'amrikyy-managed-keys', fastify: '5.x', dependencies: ['amrikyy-auth'] })
