import type { ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { childEnv, startChild, type RunningChild } from '../../scripts/shared/child-process.js'
import { USER_KEY, within } from './gateway.js'

export { freePort } from '../../scripts/shared/ports.js'

// `npm test` builds dist/ before running tap; the process entry is tested as operators run it.
export const SERVER = fileURLToPath(new URL('../../dist/server.js', import.meta.url))
export const UPSTREAM_KEY = 'upstream-secret-key-for-shutdown'
const LISTENING = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/

export interface RunningServer {
  child: ChildProcess
  url: string
  output: () => string
  /** What the process wrote to stderr alone (the JSON log lines go to stdout). */
  stderr: () => string
  /** The exit code (null when a signal ended it). */
  exited: Promise<number | null>
}

export interface ServerProcessOptions {
  /** Sets the server's open-file limit (`ulimit -n`). */
  fileLimit?: number
  /** How long the server may take to listen; default 10 s. */
  startTimeoutMs?: number
}

/**
 * The standalone server as operators run it, production mode by default; `env` adds to or
 * overrides the defaults (undefined removes one). Killed on teardown.
 */
export async function startServerProcess (t: Test, env: Record<string, string | undefined>, options: ServerProcessOptions = {}): Promise<RunningServer> {
  const child = await spawnServer(env, options)
  t.teardown(() => { if (child.running()) child.process.kill('SIGKILL') })
  await child.waitFor(() => LISTENING.test(child.output()), 'the server listening', { timeoutMs: options.startTimeoutMs ?? 10_000, pollMs: 10 })
  return {
    child: child.process,
    url: LISTENING.exec(child.output())![1]!,
    output: child.output,
    stderr: child.stderr,
    exited: child.exited.then(exit => exit.code)
  }
}

/** Runs the server expecting it to refuse to start; resolves with its exit code, its output and its stderr alone. */
export async function runUntilExit (env: Record<string, string | undefined>): Promise<{ code: number | null, output: string, stderr: string }> {
  const child = await spawnServer(env)
  const { code } = await within(10_000, child.exited, 'server exit').finally(() => { child.process.kill('SIGKILL') })
  return { code, output: child.output(), stderr: child.stderr() }
}

async function spawnServer (env: Record<string, string | undefined>, options: ServerProcessOptions = {}): Promise<RunningChild> {
  const defaults = { NODE_ENV: 'production', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', API_KEYS: USER_KEY, GEMINI_API_KEY: UPSTREAM_KEY }
  return await startChild({ name: 'server', args: [SERVER], env: childEnv({ ...defaults, ...env }, ['PATH']), output: 'capture', fileLimit: options.fileLimit })
}
