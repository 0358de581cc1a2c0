// The soak's child processes (emulator, gateway) and what /proc says about them: resident memory,
// open sockets, open-file limits. Linux only, like the soak itself.

import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { connect, createServer } from 'node:net'

export const LOOPBACK = '127.0.0.1'
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

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, LOOPBACK, () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => { resolve(port) })
    })
  })
}

async function portAccepts (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const socket = connect(port, LOOPBACK)
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { resolve(false) })
  })
}

async function sleep (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
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

/** The children see only what the soak sets, not whatever PORT or API_KEYS the caller's shell exports. */
function childEnv (settings: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const name of ['PATH', 'HOME', 'LANG', 'TZ']) if (process.env[name] !== undefined) env[name] = process.env[name]
  return { ...env, ...settings }
}

/** Starts `node script` and resolves once its port accepts connections; output goes to `logFile`. */
export async function startNodeChild (options: NodeChildOptions): Promise<NodeChild> {
  const { name, script, port, logFile } = options
  // `exec` keeps the pid: the pid we sample is node's, not a shell's.
  const [command, args] = options.fileLimit === undefined
    ? [process.execPath, [script]]
    : ['bash', ['-c', `ulimit -n ${options.fileLimit} && exec "$@"`, name, process.execPath, script]]
  const log = createWriteStream(logFile)
  const child: ChildProcess = spawn(command, args, { cwd: options.cwd, env: childEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout?.pipe(log, { end: false })
  child.stderr?.pipe(log, { end: false })
  let gone = false
  const exited = new Promise<string>(resolve => {
    child.once('close', (code, signal) => {
      gone = true
      log.end()
      resolve(signal ?? String(code))
    })
  })
  child.once('error', () => {})
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`)
  const pid = child.pid

  const stop = async (graceMs = 10_000): Promise<void> => {
    if (gone) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => { child.kill('SIGKILL') }, graceMs)
    await exited
    clearTimeout(timer)
  }

  const deadline = Date.now() + START_TIMEOUT_MS
  while (!(await portAccepts(port))) {
    if (gone) throw new Error(`${name} exited before listening on port ${port}; see ${logFile}`)
    if (Date.now() > deadline) {
      await stop(1000)
      throw new Error(`${name} did not listen on port ${port} within ${START_TIMEOUT_MS} ms; see ${logFile}`)
    }
    await sleep(50)
  }
  return { name, pid, port, logFile, exited, running: () => !gone, stop }
}
