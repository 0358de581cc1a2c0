// Starts the processes under measurement (gateway, bare proxy, emulator) as children of the bench,
// so each one's CPU and memory can be read from /proc on its own.

import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { childEnv, startChild } from '../scripts/shared/child-process.js'
import { freePort } from '../scripts/shared/ports.js'

/** The repository root: the nearest folder above this file that holds package.json. */
export function projectRoot (): string {
  return buildRoot(fileURLToPath(import.meta.url))
}

export function distFile (relative: string): string {
  const file = join(projectRoot(), 'dist', relative)
  if (!existsSync(file)) throw new Error(`bench: ${file} is missing; run "npm run build" first`)
  return file
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
  cwd?: string
  /** A program that runs node (e.g. valgrind), with its own arguments before node's. */
  wrapper?: { command: string, args: string[] }
  /** How long the port may take to open; default startChild's. */
  startTimeoutMs?: number
}

/** Spawns `node script` with `env` and resolves once its port accepts connections. */
export async function spawnServer (options: SpawnOptions): Promise<Child> {
  const child = await startChild({
    name: options.name,
    ...(options.wrapper === undefined ? {} : { command: options.wrapper.command }),
    args: [...(options.wrapper === undefined ? [] : [...options.wrapper.args, process.execPath]), ...(options.nodeArgs ?? []), options.script],
    env: childEnv(options.env, ['PATH']),
    output: 'stderr',
    cwd: options.cwd
  })
  try {
    await child.waitForPort(options.port, options.startTimeoutMs)
  } catch (error) {
    throw new Error(`bench: ${(error as Error).message}`)
  }
  return {
    name: options.name,
    pid: child.pid,
    url: `http://127.0.0.1:${options.port}`,
    stop: async (graceMs = 10_000) => { await child.stop(graceMs) }
  }
}

export const GATEWAY_CLIENT_KEY = 'bench-client-key-0123456789'

export interface GatewayProcessOptions {
  nodeArgs?: string[]
  env?: Record<string, string>
  /** Another build's server.js (e.g. an older commit's), to compare builds; default this build's. */
  script?: string
  /** The child's name in logs and errors; default `gateway`. */
  name?: string
  wrapper?: SpawnOptions['wrapper']
  startTimeoutMs?: number
}

/**
 * The folder of the build a script belongs to (the nearest package.json above it). Node resolves the
 * script's packages from its own folder anyway; running it there too means another build reads
 * nothing (files, config) from this one's.
 */
export function buildRoot (script: string): string {
  let dir = dirname(resolve(script))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`bench: no package.json above ${script}; is it a build's dist/server.js?`)
    dir = parent
  }
  return dir
}

export async function startGatewayProcess (upstreamUrl: string, extra: GatewayProcessOptions = {}): Promise<Child> {
  const port = await freePort()
  // Absolute, because the child runs in its own build's folder.
  const script = resolve(extra.script ?? distFile('server.js'))
  return await spawnServer({
    name: extra.name ?? 'gateway',
    script,
    port,
    nodeArgs: extra.nodeArgs,
    wrapper: extra.wrapper,
    startTimeoutMs: extra.startTimeoutMs,
    cwd: buildRoot(script),
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
