// The soak's child processes (emulator, gateway) and what /proc says about them: resident memory,
// open sockets, open-file limits. Linux only, like the soak itself.

import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { childEnv, startChild } from './shared/child-process.js'

const START_TIMEOUT_MS = 15_000

export interface FileLimit { soft: number, hard: number }

/** The "Max open files" limit of a process ('self' for this one); Infinity for "unlimited". */
export function openFileLimit (pid: number | 'self' = 'self'): FileLimit {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find(l => l.startsWith('Max open files'))
  const match = line === undefined ? null : /^Max open files\s+(\S+)\s+(\S+)/.exec(line)
  if (match === null) throw new Error(`/proc/${pid}/limits has no "Max open files" line`)
  const value = (raw: string): number => raw === 'unlimited' ? Infinity : Number(raw)
  return { soft: value(match[1]!), hard: value(match[2]!) }
}

/** Resident set size now, in KiB. */
export function rssKiB (pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (match === null) throw new Error(`/proc/${pid}/status has no VmRSS`)
  return Number(match[1])
}

/** Open sockets of a process (listeners included): its file descriptors that link to `socket:[inode]`. */
export function socketCount (pid: number): number {
  let sockets = 0
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) sockets++
    } catch {
      // The descriptor closed between the listing and the read: it is no longer open.
    }
  }
  return sockets
}

export interface NodeChild {
  name: string
  pid: number
  port: number
  logFile: string
  /** Settles with the exit code (or the signal's name) once the process is gone. */
  exited: Promise<string>
  running: () => boolean
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop: (graceMs?: number) => Promise<void>
}

export interface NodeChildOptions {
  name: string
  script: string
  port: number
  env: Record<string, string>
  logFile: string
  cwd: string
  /** Raise the child's soft open-file limit to this through `ulimit -n` before exec'ing node. */
  fileLimit?: number
}

/** Starts `node script` and resolves once its port accepts connections; output goes to `logFile`. */
export async function startNodeChild (options: NodeChildOptions): Promise<NodeChild> {
  const { name, port, logFile } = options
  // The children see only what the soak sets, not whatever PORT or API_KEYS the caller's shell exports.
  const child = await startChild({ name, args: [options.script], cwd: options.cwd, env: childEnv(options.env), output: { logFile }, fileLimit: options.fileLimit })
  await child.waitForPort(port, START_TIMEOUT_MS)
  return {
    name,
    pid: child.pid,
    port,
    logFile,
    exited: child.exited.then(({ code, signal }) => signal ?? String(code)),
    running: child.running,
    stop: async graceMs => { await child.stop(graceMs) }
  }
}
