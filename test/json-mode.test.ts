// JSON mode over the wire (issue 14): with responseMimeType application/json and a responseSchema, the
// emulator's answer follows the schema, split across chunks like any answer, and the gateway's fullText
// validates against the schema with Ajv (a JSON Schema 2020-12 validator, here through fastify).

import t from 'tap'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import { GoogleGenAI, Type } from '@google/genai'
import { parseEvents, postStream, startEmulator, startGateway } from './support/gateway.js'

const CLIENTS = ['rest', 'sdk'] as const
const PACE = { chunkCount: 6, defaultMaxTokens: 24 }
/** Enough prompts for every optional property, type choice and length to come up both ways. */
const PROMPTS = Array.from({ length: 16 }, (_, i) => `describe thing number ${i}`)

// Strict about unknown keywords and formats; a subschema without a `type` (allOf's parts) is fine.
const ajv = new Ajv2020({ allErrors: true, strictTypes: false })
addFormats.default(ajv)

const SCHEMAS: Record<string, Record<string, unknown>> = {
  'a nested object with required and optional properties': {
    type: 'object',
    properties: {
      title: { type: 'string', minLength: 3, maxLength: 40 },
      rating: { type: 'integer', minimum: 1, maximum: 5 },
      price: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 10 },
      inStock: { type: 'boolean' },
      colour: { type: 'string', enum: ['red', 'green', 'blue'] },
      note: { type: ['string', 'null'] },
      author: {
        type: 'object',
        properties: { name: { type: 'string' }, email: { type: 'string', format: 'email' }, id: { type: 'string', format: 'uuid' } },
        required: ['name', 'email', 'id'],
        additionalProperties: false
      },
      published: { type: 'string', format: 'date-time' },
      day: { type: 'string', format: 'date' }
    },
    required: ['title', 'rating', 'author', 'published'],
    additionalProperties: false
  },
  'arrays: of objects, bounded, unique, tuples': {
    type: 'object',
    properties: {
      steps: {
        type: 'array',
        minItems: 2,
        maxItems: 4,
        items: { type: 'object', properties: { order: { type: 'integer', minimum: 0, multipleOf: 5 }, text: { type: 'string' } }, required: ['order', 'text'] }
      },
      tags: { type: 'array', items: { enum: ['a', 'b', 'c', 'd'] }, uniqueItems: true, maxItems: 3 },
      point: { type: 'array', prefixItems: [{ type: 'number' }, { type: 'number' }], items: false, minItems: 2 },
      empty: { type: 'array', maxItems: 0 }
    },
    required: ['steps', 'tags', 'point', 'empty']
  },
  'local $ref and $defs, recursive': {
    $defs: {
      node: {
        type: 'object',
        properties: { name: { type: 'string' }, children: { type: 'array', items: { $ref: '#/$defs/node' } } },
        required: ['name']
      }
    },
    type: 'object',
    properties: { root: { $ref: '#/$defs/node' } },
    required: ['root']
  },
  'anyOf, allOf, const and a top-level array': {
    type: 'array',
    minItems: 1,
    maxItems: 3,
    items: {
      allOf: [
        { type: 'object', properties: { kind: { const: 'event' } }, required: ['kind'] },
        { properties: { when: { anyOf: [{ type: 'string', format: 'time' }, { type: 'integer', maximum: -1 }, { type: 'null' }] } }, required: ['when'] }
      ]
    }
  },
  'a bare enum': { enum: ['yes', 'no', 42, null] }
}

t.test('application/json with a schema: the fullText follows it, chunked like any answer, on both clients', async t => {
  const emulator = await startEmulator(t, PACE)
  for (const client of CLIENTS) {
    const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'k', baseUrl: emulator.url, client } })
    for (const [name, schema] of Object.entries(SCHEMAS)) {
      const validate = ajv.compile(schema)
      const seen = new Set<string>()
      for (const prompt of PROMPTS) {
        const response = await postStream(url, { prompt, options: { responseMimeType: 'application/json', responseSchema: schema } })
        t.equal(response.status, 200)
        const events = parseEvents(await response.text()) as Array<{ chunk?: string, complete?: boolean, fullText?: string, totalChunks?: number }>
        const completion = events.at(-1)!
        const chunks = events.filter(event => event.chunk !== undefined).map(event => event.chunk)
        t.equal(completion.complete, true, `${client}, ${name}: completes`)
        t.equal(completion.fullText, chunks.join(''), 'the chunks make the fullText')
        const value: unknown = JSON.parse(completion.fullText!)
        if (!validate(value)) t.fail(`${client}, ${name}, ${prompt}: ${ajv.errorsText(validate.errors)} in ${completion.fullText!}`)
        seen.add(completion.fullText!)
        if (name !== 'a bare enum') t.ok(chunks.length > 1, 'split across chunks')
      }
      t.ok(seen.size > 1, `${client}, ${name}: the prompt chooses the value (${seen.size} different)`)
    }
  }
})

t.test('the same request gets the same JSON; the choices run both ways across prompts', async t => {
  const emulator = await startEmulator(t, PACE)
  const { url } = await startGateway(t, emulator)
  const schema = SCHEMAS['a nested object with required and optional properties']!
  const fullTextOf = async (prompt: string): Promise<string> => {
    const events = parseEvents(await (await postStream(url, { prompt, options: { responseMimeType: 'application/json', responseSchema: schema } })).text())
    return (events.at(-1) as { fullText: string }).fullText
  }
  t.equal(await fullTextOf(PROMPTS[0]!), await fullTextOf(PROMPTS[0]!), 'deterministic')
  const values = await Promise.all(PROMPTS.map(async prompt => JSON.parse(await fullTextOf(prompt)) as Record<string, unknown>))
  for (const optional of ['price', 'inStock', 'colour', 'note', 'day']) {
    const present = values.filter(value => optional in value).length
    t.ok(present > 0 && present < values.length, `${optional}: sometimes present (${present} of ${values.length})`)
  }
  t.ok(values.every(value => ['title', 'rating', 'author', 'published'].every(required => required in value)), 'the required ones always')
  t.ok(values.some(value => value.note === null) && values.some(value => typeof value.note === 'string'), 'a nullable type: both')
})

t.test('text/x.enum with a string enum schema answers one of its values', async t => {
  const emulator = await startEmulator(t, PACE)
  const values = ['north', 'south', 'east', 'west']
  for (const client of CLIENTS) {
    const { url } = await startGateway(t, emulator, { gemini: { apiKey: 'k', baseUrl: emulator.url, client } })
    const answers = new Set<string>()
    for (const prompt of PROMPTS) {
      const events = parseEvents(await (await postStream(url, { prompt, options: { responseMimeType: 'text/x.enum', responseSchema: { type: 'string', enum: values } } })).text())
      const completion = events.at(-1) as { fullText: string, totalChunks: number }
      t.ok(values.includes(completion.fullText), `${client}: ${completion.fullText}`)
      t.equal(completion.totalChunks, 1)
      answers.add(completion.fullText)
    }
    t.ok(answers.size > 1, `${client}: the prompt chooses (${[...answers].join(', ')})`)
  }
})

t.test('Gemini\'s OpenAPI-subset responseSchema (upper-case types, nullable) is followed too', async t => {
  const emulator = await startEmulator(t, PACE)
  const ai = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: emulator.url } })
  const responseSchema = {
    type: Type.OBJECT,
    properties: {
      name: { type: Type.STRING },
      count: { type: Type.INTEGER, minimum: 0, maximum: 9 },
      tags: { type: Type.ARRAY, items: { type: Type.STRING }, minItems: 1 },
      maybe: { type: Type.NUMBER, nullable: true }
    },
    required: ['name', 'count', 'tags', 'maybe']
  }
  // The same schema in JSON Schema's spelling, for the validator.
  const jsonSchema = {
    type: 'object',
    properties: { name: { type: 'string' }, count: { type: 'integer', minimum: 0, maximum: 9 }, tags: { type: 'array', items: { type: 'string' }, minItems: 1 }, maybe: { type: ['number', 'null'] } },
    required: ['name', 'count', 'tags', 'maybe']
  }
  const validate = ajv.compile(jsonSchema)
  for (const prompt of PROMPTS.slice(0, 6)) {
    const answer = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: prompt, config: { responseMimeType: 'application/json', responseSchema } })
    const value: unknown = JSON.parse(answer.text ?? '')
    t.ok(validate(value), `${answer.text ?? ''} ${ajv.errorsText(validate.errors)}`)
  }
})
