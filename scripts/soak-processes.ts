// The soak's child processes (emulator, gateway), each started with its output in a log file.

import { childEnv, startChild } from './shared/child-process.js'

const START_TIMEOUT_MS = 15_000

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
