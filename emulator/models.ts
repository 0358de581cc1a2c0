// The model catalogue the emulator lists and describes (models.list, models.get), and the only models that
// generate and count tokens: any other name is Google's 404 NOT_FOUND, unless the emulator was started
// with it in `extraModels`.

const MODELS = [
  model('gemini-2.5-pro', '2.5', 'Gemini 2.5 Pro', 1048576, 65536, true),
  model('gemini-2.5-flash', '001', 'Gemini 2.5 Flash', 1048576, 65536, true),
  model('gemini-2.0-flash', '2.0', 'Gemini 2.0 Flash', 1048576, 8192, false),
  model('gemini-2.0-flash-exp', '2.0', 'Gemini 2.0 Flash Experimental', 1048576, 8192, false),
  model('gemini-2.0-flash-lite', '2.0', 'Gemini 2.0 Flash-Lite', 1048576, 8192, false)
]
const DEFAULT_PAGE_SIZE = 50

function model (id: string, version: string, displayName: string, input: number, output: number, thinking: boolean): Record<string, unknown> {
  return {
    name: `models/${id}`,
    version,
    displayName,
    description: `${displayName} (served by the local Gemini emulator)`,
    inputTokenLimit: input,
    outputTokenLimit: output,
    supportedGenerationMethods: ['generateContent', 'countTokens'],
    temperature: 1,
    topP: 0.95,
    topK: 64,
    maxTemperature: 2,
    ...(thinking ? { thinking: true } : {})
  }
}

/** One page of the list for `pageSize` and `pageToken` (tokens look like `page-3`), or the 400 message. */
export function modelsPage (query: URLSearchParams): { ok: true; body: Record<string, unknown> } | { ok: false; message: string } {
  const sizeParam = query.get('pageSize')
  let pageSize = DEFAULT_PAGE_SIZE
  if (sizeParam !== null) {
    const n = Number(sizeParam)
    if (!Number.isInteger(n) || n < 0) return { ok: false, message: `Invalid value at 'page_size' (TYPE_INT32), "${sizeParam}"` }
    if (n > 0) pageSize = Math.min(n, 1000)
  }
  const token = query.get('pageToken')
  let offset = 0
  if (token !== null && token !== '') {
    const m = /^page-(\d+)$/.exec(token)
    if (!m || Number(m[1]) >= MODELS.length) return { ok: false, message: 'Invalid page token.' }
    offset = Number(m[1])
  }
  const models = MODELS.slice(offset, offset + pageSize)
  const next = offset + pageSize
  return { ok: true, body: { models, ...(next < MODELS.length ? { nextPageToken: `page-${next}` } : {}) } }
}

/** The listed model with this id (without the 'models/' prefix), if any. */
export function findModel (id: string): Record<string, unknown> | undefined {
  return MODELS.find(m => m.name === `models/${id}`)
}

/** The model ids that serve generation beside the catalogue: `extraModels`, without a `models/` prefix. */
export function extraModelIds (names: readonly string[]): ReadonlySet<string> {
  return new Set(names.map(name => name.startsWith('models/') ? name.slice('models/'.length) : name))
}

/** Whether a generation or token count for this model id (as the route names it) is served. */
export function servesModel (id: string, extra: ReadonlySet<string>): boolean {
  return extra.has(id) || findModel(id) !== undefined
}
