import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { USER_KEY, within } from './gateway.js'

// `npm test` builds dist/ before running tap; the process entry is tested as operators run it.
export const SERVER = fileURLToPath(new URL('../../dist/server.js', import.meta.url))
export const UPSTREAM_KEY = 'upstream-secret-key-for-shutdown'

export interface RunningServer {
  child: ChildProcess
  url: string
  output: () => string
  /** What the process wrote to stderr alone (the JSON log lines go to stdout). */
  stderr: () => string
  exited: Promise<number | null>
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const address = probe.address()
      probe.close(() => { typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port')) })
    })
  })
}

/** The standalone server as operators run it, production mode by default; `env` adds to or overrides the defaults. */
export async function startServerProcess (t: Test, env: Record<string, string | undefined>): Promise<RunningServer> {
  const child = spawn(process.execPath, [SERVER], { env: serverEnv(env), stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  let stderr = ''
  child.stdout?.on('data', (data: Buffer) => { output += data.toString() })
  child.stderr?.on('data', (data: Buffer) => { output += data.toString(); stderr += data.toString() })
  const exited = new Promise<number | null>(resolve => { child.once('exit', code => { resolve(code) }) })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const url = await within(10_000, new Promise<string>((resolve, reject) => {
    const look = (): void => {
      const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
      if (match?.[1] !== undefined) resolve(match[1])
    }
    child.stdout?.on('data', look)
    void exited.then(code => { reject(new Error(`server exited with ${code}: ${output}`)) })
  }), 'server start')
  return { child, url, output: () => output, stderr: () => stderr, exited }
}

function serverEnv (env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const merged: Record<string, string | undefined> = { PATH: process.env.PATH ?? '', NODE_ENV: 'production', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', API_KEYS: USER_KEY, GEMINI_API_KEY: UPSTREAM_KEY, ...env }
  return Object.fromEntries(Object.entries(merged).filter((entry): entry is [string, string] => entry[1] !== undefined))
}

/** Runs the server expecting it to refuse to start; resolves with its exit code, its output and its stderr alone. */
export async function runUntilExit (env: Record<string, string | undefined>): Promise<{ code: number | null, output: string, stderr: string }> {
  const child = spawn(process.execPath, [SERVER], { env: serverEnv(env), stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  let stderr = ''
  child.stdout.on('data', (data: Buffer) => { output += data.toString() })
  child.stderr.on('data', (data: Buffer) => { output += data.toString(); stderr += data.toString() })
  const code = await within(10_000, new Promise<number | null>(resolve => { child.once('exit', resolve) }), 'server exit').finally(() => { child.kill('SIGKILL') })
  return { code, output, stderr }
}
