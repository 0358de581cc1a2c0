// Which RPC a method and path name: the routes of the Gemini API (see docs/gemini-wire-protocol.md §10).

export type Rpc = 'streamGenerateContent' | 'generateContent' | 'countTokens' | 'list' | 'get'

export interface Route {
  kind: 'stream' | 'unary' | 'countTokens' | 'list' | 'get' | 'unknown'
  rpc: string | undefined
  model: string | undefined
  apiVersion: string | undefined
}

const API_VERSIONS = 'v1|v1beta|v1alpha'
const LIST_RE = new RegExp(`^/(${API_VERSIONS})/models/?$`)
const RPC_RE = new RegExp(`^/(${API_VERSIONS})/((?:models|tunedModels)/[^:]+):([A-Za-z]+)$`)
const GET_RE = new RegExp(`^/(${API_VERSIONS})/((?:models|tunedModels)/[^:/]+)$`)

export function parseRoute (method: string, rawPath: string): Route {
  const q = rawPath.indexOf('?')
  const pathname = q === -1 ? rawPath : rawPath.slice(0, q)
  let m = RPC_RE.exec(pathname)
  if (m) {
    const rpc = m[3]!
    const kind = method !== 'POST'
      ? 'unknown'
      : rpc === 'streamGenerateContent' ? 'stream' : rpc === 'generateContent' ? 'unary' : rpc === 'countTokens' ? 'countTokens' : 'unknown'
    return { kind, rpc, model: modelId(m[2]!), apiVersion: m[1] }
  }
  m = LIST_RE.exec(pathname)
  if (m) return { kind: method === 'GET' ? 'list' : 'unknown', rpc: 'list', model: undefined, apiVersion: m[1] }
  m = GET_RE.exec(pathname)
  if (m) return { kind: method === 'GET' ? 'get' : 'unknown', rpc: 'get', model: modelId(m[2]!), apiVersion: m[1] }
  return { kind: 'unknown', rpc: undefined, model: undefined, apiVersion: /^\/(v1|v1beta|v1alpha)\//.exec(pathname)?.[1] }
}

/** The model id without its 'models/' prefix; a doubled prefix is tolerated. */
function modelId (resource: string): string {
  let name = resource
  try { name = decodeURIComponent(resource) } catch {}
  while (name.startsWith('models/')) name = name.slice('models/'.length)
  return name
}
