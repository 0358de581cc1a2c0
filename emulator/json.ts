// Parsing a request body, the one shape test every check needs, and the JSON an answer in JSON mode is.

export function parseJson (raw: Buffer): { ok: true; value: unknown } | { ok: false; message: string } {
  try {
    return { ok: true, value: JSON.parse(raw.toString('utf8')) as unknown }
  } catch (err) {
    return { ok: false, message: err instanceof Error ? err.message : String(err) }
  }
}

export function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

// A JSON value that follows a response schema: Gemini's `responseJsonSchema` (JSON Schema) or its
// `responseSchema` (the OpenAPI subset, upper-case type names and `nullable`). Every choice (a type of
// several, an optional property, an array's length, a number, an enum value) is `pick`'s, so the same
// request always gets the same value; strings are made of the plain answer's words.

export type Pick = <T>(list: readonly T[]) => T

/** Past this depth only what the schema requires is generated, so a recursive schema ends. */
const OPTIONAL_DEPTH = 8
/** Past this depth nothing more is generated: only an endless chain of required properties gets here. */
const MAX_DEPTH = 64
const WORDS_PER_STRING = [1, 2, 3, 4]
const EXTRA_ITEMS = [1, 2, 3]
/** Where in its range a number falls; never an end, so exclusive bounds hold. */
const FRACTIONS = [0.1, 0.25, 0.5, 0.75, 0.9]
const TYPES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']

type Schema = Record<string, unknown>

interface Generation {
  root: unknown
  pick: Pick
  words: readonly string[]
  nextWord: number
}

export function valueFollowing (schema: unknown, answerWords: readonly string[], pick: Pick): unknown {
  const words = answerWords.length > 0 ? answerWords : ['answer']
  return generate(schema, { root: schema, pick, words, nextWord: 0 }, 0)
}

function generate (input: unknown, g: Generation, depth: number): unknown {
  if (depth > MAX_DEPTH) return null
  const schema = resolved(input, g.root, depth)
  // `true`, `{}` and anything that is no schema allow every value: a string of the answer.
  if (schema === undefined) return text(g, {})
  if ('const' in schema) return schema.const
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return g.pick(schema.enum)
  for (const key of ['anyOf', 'oneOf'] as const) {
    const branches = schema[key]
    if (Array.isArray(branches) && branches.length > 0) return generate(merged(withoutKey(schema, key), resolved(g.pick(branches), g.root, depth) ?? {}), g, depth + 1)
  }
  const all = schema.allOf
  if (Array.isArray(all) && all.length > 0) {
    return generate(all.reduce<Schema>((sum, part) => merged(sum, resolved(part, g.root, depth) ?? {}), withoutKey(schema, 'allOf')), g, depth + 1)
  }
  switch (typeOf(schema, g.pick)) {
    case 'object': return object(schema, g, depth)
    case 'array': return array(schema, g, depth)
    case 'number': return number(schema, g.pick, false)
    case 'integer': return number(schema, g.pick, true)
    case 'boolean': return g.pick([true, false])
    case 'null': return null
    default: return text(g, schema)
  }
}

/** The schema itself, or the one its local `$ref` points to (`#`, `#/$defs/x`, any JSON pointer); undefined for no constraint. */
function resolved (schema: unknown, root: unknown, depth: number): Schema | undefined {
  let current = schema
  for (let hops = 0; isObject(current) && typeof current.$ref === 'string' && hops <= MAX_DEPTH - depth; hops++) {
    const target = pointerTarget(root, current.$ref)
    const rest = withoutKey(current, '$ref')
    // Keywords beside a $ref apply as well (JSON Schema 2019 and later).
    current = Object.keys(rest).length === 0 || !isObject(target) ? target : merged(target, rest)
  }
  return isObject(current) && typeof current.$ref !== 'string' ? current : undefined
}

function pointerTarget (root: unknown, ref: string): unknown {
  if (!ref.startsWith('#')) return undefined
  let pointer: string
  try {
    pointer = decodeURIComponent(ref.slice(1))
  } catch {
    return undefined
  }
  let target = root
  for (const token of pointer.split('/').slice(1)) {
    const key = token.replaceAll('~1', '/').replaceAll('~0', '~')
    target = isObject(target) && Object.hasOwn(target, key) ? target[key] : Array.isArray(target) ? target[Number(key)] : undefined
  }
  return target
}

function withoutKey (schema: Schema, key: string): Schema {
  const { [key]: _dropped, ...rest } = schema
  return rest
}

/** Two schemas as one: properties and required lists joined, every other keyword of `b` winning. */
function merged (a: Schema, b: Schema): Schema {
  const out: Schema = { ...a, ...b }
  if (isObject(a.properties) && isObject(b.properties)) out.properties = { ...a.properties, ...b.properties }
  if (Array.isArray(a.required) && Array.isArray(b.required)) out.required = [...a.required, ...b.required]
  return out
}

/** The type to generate: one of those the schema lists (with `null` when `nullable`), else the one its keywords imply. */
function typeOf (schema: Schema, pick: Pick): string {
  const listed = (Array.isArray(schema.type) ? schema.type : [schema.type])
    .filter((type): type is string => typeof type === 'string')
    .map(type => type.toLowerCase())
    .filter(type => TYPES.includes(type))
  if (schema.nullable === true && listed.length > 0 && !listed.includes('null')) listed.push('null')
  if (listed.length > 0) return pick(listed)
  if ('properties' in schema || 'required' in schema || 'additionalProperties' in schema) return 'object'
  if ('items' in schema || 'prefixItems' in schema || 'minItems' in schema || 'maxItems' in schema) return 'array'
  if ('minimum' in schema || 'maximum' in schema || 'exclusiveMinimum' in schema || 'exclusiveMaximum' in schema) return 'number'
  return 'string'
}

function object (schema: Schema, g: Generation, depth: number): Record<string, unknown> {
  const properties = isObject(schema.properties) ? schema.properties : {}
  const required = new Set(Array.isArray(schema.required) ? schema.required.filter((name): name is string => typeof name === 'string') : [])
  // Gemini's propertyOrdering first, then the order the schema lists them in.
  const ordering = Array.isArray(schema.propertyOrdering) ? schema.propertyOrdering.filter((name): name is string => typeof name === 'string') : []
  const names = [...new Set([...ordering, ...Object.keys(properties), ...required])]
  const minProperties = typeof schema.minProperties === 'number' ? schema.minProperties : 0
  const optional = depth < OPTIONAL_DEPTH
  const chosen = names.filter(name => required.has(name) || (Object.hasOwn(properties, name) && optional && g.pick([true, false])))
  // Too few: the next optional ones, in order, until there are enough.
  for (const name of names) if (chosen.length < minProperties && !chosen.includes(name)) chosen.push(name)
  const extra = schema.additionalProperties
  // Without a prototype, a property named `__proto__` is a property like any other.
  const out = Object.create(null) as Record<string, unknown>
  for (const name of names) {
    if (chosen.includes(name)) out[name] = generate(Object.hasOwn(properties, name) ? properties[name] : isObject(extra) ? extra : {}, g, depth + 1)
  }
  return out
}

function array (schema: Schema, g: Generation, depth: number): unknown[] {
  // A draft-07 tuple (`items: [...]`) is a 2020 `prefixItems`.
  const prefix = Array.isArray(schema.prefixItems) ? schema.prefixItems : Array.isArray(schema.items) ? schema.items : []
  const items = Array.isArray(schema.items) ? (isObject(schema.additionalItems) ? schema.additionalItems : {}) : schema.items ?? {}
  const minItems = typeof schema.minItems === 'number' ? Math.max(0, Math.ceil(schema.minItems)) : 0
  // `items: false` (or `additionalItems: false` after a tuple): nothing past the tuple.
  const closed = schema.items === false || (Array.isArray(schema.items) && schema.additionalItems === false)
  const maxItems = Math.min(typeof schema.maxItems === 'number' ? Math.floor(schema.maxItems) : Infinity, closed ? prefix.length : Infinity)
  const wanted = depth < OPTIONAL_DEPTH ? Math.max(minItems, prefix.length, 1) + g.pick(EXTRA_ITEMS) - 1 : minItems
  const count = Math.max(Math.min(wanted, maxItems), minItems)
  const out: unknown[] = []
  const seen = new Set<string>()
  // uniqueItems: a few more tries per item, then the array is as long as the tries allowed.
  for (let tries = 0; out.length < count && tries < count * 4; tries++) {
    const value = generate(out.length < prefix.length ? prefix[out.length] : items, g, depth + 1)
    if (schema.uniqueItems === true) {
      const key = JSON.stringify(value)
      if (seen.has(key)) continue
      seen.add(key)
    }
    out.push(value)
  }
  return out
}

function number (schema: Schema, pick: Pick, integer: boolean): number {
  const bound = (name: 'minimum' | 'maximum'): { value: number, exclusive: boolean } | undefined => {
    const exclusiveName = name === 'minimum' ? 'exclusiveMinimum' : 'exclusiveMaximum'
    const inclusive = typeof schema[name] === 'number' ? schema[name] : undefined
    // Draft 6 and later: a number; draft 4: a boolean beside minimum/maximum.
    const exclusive = typeof schema[exclusiveName] === 'number' ? schema[exclusiveName] : undefined
    if (exclusive !== undefined && (inclusive === undefined || (name === 'minimum' ? exclusive >= inclusive : exclusive <= inclusive))) return { value: exclusive, exclusive: true }
    return inclusive === undefined ? undefined : { value: inclusive, exclusive: schema[exclusiveName] === true }
  }
  const low = bound('minimum')
  const high = bound('maximum')
  let lo = low?.value ?? (high === undefined ? 0 : high.value - 100)
  let hi = high?.value ?? lo + 100
  const multipleOf = typeof schema.multipleOf === 'number' && schema.multipleOf > 0 ? schema.multipleOf : integer ? 1 : undefined
  if (multipleOf === undefined) {
    // Never an end of the range, so an exclusive bound holds; two decimals when they stay inside it.
    const value = lo + pick(FRACTIONS) * (hi - lo)
    const rounded = Math.round(value * 100) / 100
    return rounded > lo && rounded < hi ? rounded : value
  }
  let first = Math.ceil(lo / multipleOf)
  let last = Math.floor(hi / multipleOf)
  if (low?.exclusive === true && first * multipleOf <= lo) first++
  if (high?.exclusive === true && last * multipleOf >= hi) last--
  if (last < first) last = first
  lo = first
  hi = last
  return (lo + Math.round(pick(FRACTIONS) * (hi - lo))) * multipleOf
}

function text (g: Generation, schema: Schema): string {
  const word = (): string => g.words[g.nextWord++ % g.words.length]!
  const formatted = formattedString(schema.format, g.pick, word)
  if (formatted !== undefined) return formatted
  let value = Array.from({ length: g.pick(WORDS_PER_STRING) }, word).join(' ')
  // Lengths are in code points, as JSON Schema counts them.
  const minLength = typeof schema.minLength === 'number' ? schema.minLength : 0
  while (Array.from(value).length < minLength) value += ' ' + word()
  if (typeof schema.maxLength === 'number') value = Array.from(value).slice(0, Math.max(0, schema.maxLength)).join('')
  return value
}

/** A value of a JSON Schema string format; undefined for a format without one here (the plain words then). */
function formattedString (format: unknown, pick: Pick, word: () => string): string | undefined {
  const digits = (n: number): string => Array.from({ length: n }, () => pick([...'0123456789'])).join('')
  const hex = (n: number): string => Array.from({ length: n }, () => pick([...'0123456789abcdef'])).join('')
  const dateTime = (): string => new Date(Date.UTC(2020 + Number(digits(1)), pick([0, 3, 6, 9]), 1 + Number(digits(1)), 9 + Number(digits(1)), 30)).toISOString()
  const slug = (): string => word().toLowerCase().replace(/[^a-z0-9]/g, '') || 'answer'
  switch (format) {
    case 'date-time': return dateTime()
    case 'date': return dateTime().slice(0, 10)
    case 'time': return `${dateTime().slice(11, 19)}Z`
    case 'email': return `${slug()}@example.com`
    case 'uri':
    case 'url': return `https://example.com/${slug()}`
    case 'hostname': return `${slug()}.example.com`
    case 'uuid': return `${hex(8)}-${hex(4)}-4${hex(3)}-a${hex(3)}-${hex(12)}`
    case 'ipv4': return `192.0.2.${Number(digits(2))}`
    default: return undefined
  }
}
