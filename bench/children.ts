// Starts the processes under measurement (gateway, bare proxy, emulator) as children of the bench,
// so each one's CPU and memory can be read from /proc on its own.

import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root: the nearest folder above this file that holds package.json. */
export function projectRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error('bench: cannot find the project root (no package.json above this file)')
    dir = parent
  }
  return dir
}

export function distFile (relative: string): string {
  const file = join(projectRoot(), 'dist', relative)
  if (!existsSync(file)) throw new Error(`bench: ${file} is missing; run "npm run build" first`)
  return file
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

async function portAccepts (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

export interface Child {
  name: string
  pid: number
  url: string
  /** Sends SIGTERM and waits for the exit (SIGKILL after `graceMs`). */
  stop: (graceMs?: number) => Promise<void>
}

export interface SpawnOptions {
  name: string
  script: string
  env: Record<string, string>
  port: number
  nodeArgs?: string[]
}

/** Spawns `node script` with `env` and resolves once its port accepts connections. */
export async function spawnServer (options: SpawnOptions): Promise<Child> {
  const child: ChildProcess = spawn(process.execPath, [...(options.nodeArgs ?? []), options.script], {
    env: { PATH: process.env.PATH ?? '', ...options.env },
    // Output is discarded unread (a per-request log line would otherwise fill a pipe); stderr is
    // kept so a failed start can say why.
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let stderr = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (piece: string) => { if (stderr.length < 8192) stderr += piece })
  let exited = false
  const exit = new Promise<void>(resolve => child.once('exit', () => { exited = true; resolve() }))

  const deadline = Date.now() + 15_000
  while (!(await portAccepts(options.port))) {
    if (exited) throw new Error(`bench: ${options.name} exited before listening: ${stderr.trim()}`)
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`bench: ${options.name} did not listen on port ${options.port} within 15 s: ${stderr.trim()}`)
    }
    await new Promise(resolve => setTimeout(resolve, 25))
  }
  if (child.pid === undefined) throw new Error(`bench: ${options.name} has no pid`)
  return {
    name: options.name,
    pid: child.pid,
    url: `http://127.0.0.1:${options.port}`,
    stop: async (graceMs = 10_000) => {
      if (exited) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
      await exit
      clearTimeout(timer)
    }
  }
}

export const GATEWAY_CLIENT_KEY = 'bench-client-key-0123456789'

export interface GatewayProcessOptions {
  nodeArgs?: string[]
  env?: Record<string, string>
  /** Another build's server.js (e.g. an older commit's), to compare builds; default this build's. */
  script?: string
}

export async function startGatewayProcess (upstreamUrl: string, extra: GatewayProcessOptions = {}): Promise<Child> {
  const port = await freePort()
  return await spawnServer({
    name: 'gateway',
    script: extra.script ?? distFile('server.js'),
    port,
    nodeArgs: extra.nodeArgs,
    env: {
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      GEMINI_API_KEY: 'bench',
      GEMINI_BASE_URL: upstreamUrl,
      API_KEYS: GATEWAY_CLIENT_KEY,
      PORT: String(port),
      HOST: '127.0.0.1',
      // Once rate limiting lands, the bench must never hit it.
      RATE_LIMIT_MAX: '100000000',
      ...extra.env
    }
  })
}

export async function startProxyProcess (upstreamUrl: string): Promise<Child> {
  const port = await freePort()
  return await spawnServer({
    name: 'proxy',
    script: distFile('bench/bare-proxy.js'),
    port,
    env: { UPSTREAM_URL: upstreamUrl, PORT: String(port), HOST: '127.0.0.1' }
  })
}

export async function startEmulatorProcess (pace: { chunkCount: number, chunkDelayMs: number, defaultMaxTokens: number }): Promise<Child> {
  const port = await freePort()
  return await spawnServer({
    name: 'emulator',
    script: distFile('emulator/cli.js'),
    port,
    env: {
      EMULATOR_PORT: String(port),
      EMULATOR_HOST: '127.0.0.1',
      EMULATOR_CHUNK_COUNT: String(pace.chunkCount),
      EMULATOR_CHUNK_DELAY_MS: String(pace.chunkDelayMs),
      EMULATOR_DEFAULT_MAX_TOKENS: String(pace.defaultMaxTokens)
    }
  })
}
