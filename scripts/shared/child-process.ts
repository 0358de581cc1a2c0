// The one launcher for every process the tests, the bench and the scripts start (gateway, emulator,
// bare proxy, nginx, Redis): started, waited for, stopped on every path.

import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createWriteStream } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { portAccepts } from './ports.js'

/** What a child inherits by default: enough to run, never the caller's PORT, API_KEYS and the like. */
export const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'TZ'] as const

/** `settings` over the named variables of this process; a setting that is undefined is left out. */
export function childEnv (settings: Record<string, string | undefined>, inherit: readonly string[] = INHERITED_ENV): NodeJS.ProcessEnv {
  const merged: Record<string, string | undefined> = {}
  for (const name of inherit) merged[name] = process.env[name]
  Object.assign(merged, settings)
  return Object.fromEntries(Object.entries(merged).filter((entry): entry is [string, string] => entry[1] !== undefined))
}

/**
 * Where a child's output goes: kept in memory (`capture`), only the first 8 KiB of stderr kept so a
 * failed start can say why (`stderr`: a per-request log line would otherwise fill a pipe), or
 * appended to a log file.
 */
export type ChildOutput = 'capture' | 'stderr' | { logFile: string }

export interface ChildOptions {
  name: string
  /** Default: this node. */
  command?: string
  args: string[]
  /** The child's whole environment (see `childEnv`). */
  env: NodeJS.ProcessEnv
  cwd?: string
  output: ChildOutput
  /** Sets the child's open-file limit (`ulimit -n`) before exec'ing the command, which keeps the pid. */
  fileLimit?: number
}

export interface ChildExit { code: number | null, signal: NodeJS.Signals | null }

export interface RunningChild {
  name: string
  pid: number
  process: ChildProcess
  /** Settles once the process is gone and its output closed. */
  exited: Promise<ChildExit>
  running: () => boolean
  /** stdout and stderr interleaved as they arrived ('capture'; empty otherwise). */
  output: () => string
  /** What the process wrote to stderr ('capture' and 'stderr'). */
  stderr: () => string
  /** Polls `ready` until it holds; rejects when the process exits first or `timeoutMs` passes (and then stops it). */
  waitFor: (ready: () => boolean | Promise<boolean>, what: string, options?: { timeoutMs?: number, pollMs?: number }) => Promise<void>
  waitForPort: (port: number, timeoutMs?: number) => Promise<void>
  /** SIGTERM, then SIGKILL after `graceMs`; resolves true when SIGTERM was enough. */
  stop: (graceMs?: number) => Promise<boolean>
}

const STDERR_KEPT = 8192

export async function startChild (options: ChildOptions): Promise<RunningChild> {
  const { name, output: where } = options
  const command = options.command ?? process.execPath
  const [file, args] = options.fileLimit === undefined
    ? [command, options.args]
    : ['bash', ['-c', `ulimit -n ${options.fileLimit} && exec "$@"`, name, command, ...options.args]]
  const child = spawn(file, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', where === 'stderr' ? 'ignore' : 'pipe', 'pipe'] })
  let output = ''
  let stderr = ''
  const log = typeof where === 'object' ? createWriteStream(where.logFile) : undefined
  if (log !== undefined) {
    child.stdout?.pipe(log, { end: false })
    child.stderr?.pipe(log, { end: false })
  } else {
    child.stdout?.setEncoding('utf8')
    child.stderr?.setEncoding('utf8')
    child.stdout?.on('data', (piece: string) => { output += piece })
    child.stderr?.on('data', (piece: string) => {
      if (where === 'capture') {
        output += piece
        stderr += piece
      } else if (stderr.length < STDERR_KEPT) stderr += piece
    })
  }
  const exited = new Promise<ChildExit>(resolve => {
    child.once('close', (code, signal) => {
      log?.end()
      resolve({ code, signal })
    })
  })
  const running = (): boolean => child.exitCode === null && child.signalCode === null
  // events.once rejects with the 'error' a failed spawn emits instead.
  const failure = await once(child, 'spawn').then(() => undefined, (error: unknown) => error as Error)
  child.on('error', () => {})
  if (failure !== undefined || child.pid === undefined) {
    log?.end()
    throw new Error(`${name}: could not start ${command}: ${failure?.message ?? 'no pid'}`)
  }
  const pid = child.pid

  const stop = async (graceMs = 10_000): Promise<boolean> => {
    if (!running()) {
      await exited
      return true
    }
    child.kill('SIGTERM')
    let killed = false
    const timer = setTimeout(() => { killed = true; child.kill('SIGKILL') }, graceMs)
    await exited
    clearTimeout(timer)
    return !killed
  }

  const detail = (): string => typeof where === 'object' ? `; see ${where.logFile}` : stderr.trim() === '' ? '' : `: ${stderr.trim()}`

  const waitFor: RunningChild['waitFor'] = async (ready, what, { timeoutMs = 15_000, pollMs = 25 } = {}) => {
    const deadline = Date.now() + timeoutMs
    while (!(await ready())) {
      if (!running()) {
        const { code, signal } = await exited
        throw new Error(`${name} exited (${signal ?? String(code)}) before ${what}${detail()}`)
      }
      if (Date.now() > deadline) {
        await stop(1000)
        throw new Error(`${name}: ${what} did not happen within ${timeoutMs} ms${detail()}`)
      }
      await sleep(pollMs)
    }
  }

  return {
    name,
    pid,
    process: child,
    exited,
    running,
    output: () => output,
    stderr: () => stderr,
    waitFor,
    waitForPort: async (port, timeoutMs) => { await waitFor(async () => await portAccepts(port), `listening on port ${port}`, { timeoutMs }) },
    stop
  }
}
