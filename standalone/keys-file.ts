import { readFile } from 'node:fs/promises'
import type { ApiKeyEntry, Role } from '../plugins/auth.js'
import { POLICY_FIELDS, readPolicy } from '../schemas/key-policy.js'
import { ConfigError } from './config-error.js'

/** A keys file the gateway refuses to start with; the message names the file and the entry. */
export class KeysFileError extends ConfigError {
  override name = 'KeysFileError'
}

const FIELDS: readonly string[] = ['name', 'sha256', 'role', ...POLICY_FIELDS]
const ROLES: readonly Role[] = ['user', 'admin']
// Names become rate-limit counter keys and appear in logs: keep them short and free of spaces and control characters.
const NAME_PATTERN = /^[A-Za-z0-9._@-]{1,64}$/
const SHA256_PATTERN = /^[0-9a-f]{64}$/i

function describe (index: number, entry: unknown): string {
  const name = typeof entry === 'object' && entry !== null ? (entry as Record<string, unknown>).name : undefined
  return typeof name === 'string' && NAME_PATTERN.test(name) ? `entry ${index} ("${name}")` : `entry ${index}`
}

/**
 * Checks a parsed keys file: a JSON array of `{ "name", "sha256", "role" }`, where `sha256` is the hex SHA-256 of the
 * raw key, each optionally with the policy fields of schemas/key-policy.ts beside them. Field values are never echoed in errors: someone may have pasted a raw key where its hash belongs.
 */
export function parseKeyEntries (document: unknown, source: string): ApiKeyEntry[] {
  if (!Array.isArray(document)) throw new KeysFileError(`${source}: must be a JSON array of { "name", "sha256", "role" } entries`)
  if (document.length === 0) throw new KeysFileError(`${source}: lists no keys`)
  const names = new Set<string>()
  const hashes = new Map<string, number>()
  return document.map((entry: unknown, index) => {
    const where = `${source}: ${describe(index, entry)}`
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new KeysFileError(`${where} must be an object with "name", "sha256" and "role"`)
    const record = entry as Record<string, unknown>
    // By position, not by name: a raw key pasted as a field name must not reach the log either.
    const positions = Object.keys(record).flatMap((field, position) => FIELDS.includes(field) ? [] : [position + 1])
    if (positions.length > 0) {
      throw new KeysFileError(`${where} has ${positions.length > 1 ? 'unknown fields at positions' : 'an unknown field at position'} ${positions.join(', ')} (allowed: ${FIELDS.join(', ')})`)
    }
    const { name, sha256, role } = record
    if (typeof name !== 'string' || !NAME_PATTERN.test(name)) throw new KeysFileError(`${where}: "name" must be 1 to 64 letters, digits or ._@- characters`)
    if (typeof sha256 !== 'string' || !SHA256_PATTERN.test(sha256)) throw new KeysFileError(`${where}: "sha256" must be the 64 hex characters of the key's SHA-256`)
    if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) throw new KeysFileError(`${where}: "role" must be "user" or "admin"`)
    if (names.has(name)) throw new KeysFileError(`${where}: the name is already used by an earlier entry`)
    const hash = sha256.toLowerCase()
    const earlier = hashes.get(hash)
    if (earlier !== undefined) throw new KeysFileError(`${where}: the same key as entry ${earlier}`)
    const policy = readPolicy(record, message => { throw new KeysFileError(`${where}: ${message}`) })
    names.add(name)
    hashes.set(hash, index)
    return Object.keys(policy).length === 0 ? { name, sha256: hash, role: role as Role } : { name, sha256: hash, role: role as Role, policy }
  })
}

/** Line and column of a JSON syntax error; the parser's own message can quote the file, and so a key, verbatim. */
function whereParsingFailed (text: string, error: unknown): string {
  const position = /at position (\d+)/.exec(error instanceof Error ? error.message : '')?.[1]
  if (position === undefined) return ''
  const before = text.slice(0, Number(position)).split('\n')
  return ` (line ${before.length}, column ${(before.at(-1)?.length ?? 0) + 1})`
}

/** Reads and checks the keys file at `path` (see `parseKeyEntries`). */
export async function loadKeysFile (path: string): Promise<ApiKeyEntry[]> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    throw new KeysFileError(`API_KEYS_FILE ${path}: cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`)
  }
  let document: unknown
  try {
    document = JSON.parse(text)
  } catch (error) {
    throw new KeysFileError(`API_KEYS_FILE ${path}: is not valid JSON${whereParsingFailed(text, error)}`)
  }
  return parseKeyEntries(document, `API_KEYS_FILE ${path}`)
}
