import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyPluginAsync } from 'fastify'

export interface PlaygroundOptions {
  /** Folder holding index.html, playground.js and playground.css. Default: `playground/` found above this file. */
  pageDir?: string
  /** Folder holding the compiled client (index.js, sse-parser.js, errors.js). Default: `client/` beside this file once built. */
  clientDir?: string
}

const PAGE_FILES = {
  '': { file: 'index.html', type: 'text/html; charset=utf-8' },
  'playground.js': { file: 'playground.js', type: 'text/javascript; charset=utf-8' },
  'playground.css': { file: 'playground.css', type: 'text/css; charset=utf-8' }
} as const

/** The browser needs exactly these modules; the CLI and the source maps stay on the server. */
const CLIENT_MODULES = ['index.js', 'sse-parser.js', 'errors.js'] as const

// The page talks only to the origin that served it and runs no inline code.
const PAGE_SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-cache'
}

/**
 * The first folder, from this file's own folder upwards, holding `marker`: the same code runs from
 * the sources (routes/, through tap) and compiled (dist/routes/), which sit at different depths.
 */
function findUpwards (candidates: readonly string[], marker: string): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let level = 0; level < 4; level++) {
    for (const candidate of candidates) {
      if (existsSync(join(dir, candidate, marker))) return join(dir, candidate)
    }
    dir = dirname(dir)
  }
  return undefined
}

function readAll (dir: string, files: readonly string[], what: string): Map<string, string> {
  const contents = new Map<string, string>()
  for (const file of files) {
    const path = join(dir, file)
    if (!existsSync(path)) throw new Error(`playground: ${what} file ${path} is missing`)
    contents.set(file, readFileSync(path, 'utf8'))
  }
  return contents
}

/**
 * The browser playground at /playground: a page that streams through the gateway with the same client
 * module the package exports, served compiled to the browser. Registered by the standalone server.
 */
const playgroundRoute: FastifyPluginAsync<PlaygroundOptions> = async (app, options) => {
  const pageDir = options.pageDir ?? findUpwards(['playground'], 'index.html')
  if (pageDir === undefined) throw new Error('playground: could not find the playground/ folder with index.html')
  const clientDir = options.clientDir ?? findUpwards(['client', 'dist/client'], 'index.js')
  if (clientDir === undefined) throw new Error('playground: the compiled client (client/index.js) was not found; run `npm run build` first')

  // Read once at start: the files are small, and a missing one should stop the start rather than a page load.
  const page = readAll(pageDir, Object.values(PAGE_FILES).map(entry => entry.file), 'page')
  const modules = readAll(clientDir, CLIENT_MODULES, 'client')

  for (const [path, { file, type }] of Object.entries(PAGE_FILES)) {
    const body = page.get(file) as string
    app.get(path === '' ? '/playground' : `/playground/${path}`, async (_request, reply) => {
      return await reply.headers(PAGE_SECURITY_HEADERS).type(type).send(body)
    })
  }
  app.get('/playground/', async (_request, reply) => await reply.redirect('/playground'))

  for (const name of CLIENT_MODULES) {
    // Browsers ignore the sourceMappingURL of a file they cannot fetch, but the console shows a 404 for it.
    const body = (modules.get(name) as string).replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n')
    app.get(`/playground/client/${name}`, async (_request, reply) => {
      return await reply.headers(PAGE_SECURITY_HEADERS).type('text/javascript; charset=utf-8').send(body)
    })
  }
}

export default playgroundRoute
