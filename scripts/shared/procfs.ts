// What /proc says about another process (CPU time, memory, open sockets, open-file limit), so a
// server's numbers are its own. Linux only, like the bench and the soak.

import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

let clockTicks: number | undefined

/** Clock ticks per second that /proc/PID/stat counts in (usually 100). */
export function ticksPerSecond (): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    } catch {
      clockTicks = 100
    }
    if (!Number.isFinite(clockTicks) || clockTicks <= 0) clockTicks = 100
  }
  return clockTicks
}

/** User plus system CPU time of a process so far, in milliseconds. */
export function cpuMs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name in parentheses may hold spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime are fields 14 and 15 of the whole line, so 12 and 13 after the name.
  const ticks = Number(fields[11]) + Number(fields[12])
  return ticks * 1000 / ticksPerSecond()
}

export interface MemoryNow {
  /** Resident set size now, in KiB. */
  rssKiB: number
  /** Peak resident set size over the process's life (VmHWM), in KiB. */
  peakRssKiB: number
}

export function memory (pid: number): MemoryNow {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)
    if (match === null) throw new Error(`/proc/${pid}/status has no ${name}`)
    return Number(match[1])
  }
  return { rssKiB: field('VmRSS'), peakRssKiB: field('VmHWM') }
}

/** Samples a process's RSS every `intervalMs` until stopped; reports the highest sample. */
export function sampleRss (pid: number, intervalMs = 50): { stop: () => number } {
  let peak = 0
  const take = (): void => {
    try {
      peak = Math.max(peak, memory(pid).rssKiB)
    } catch {}
  }
  take()
  const timer = setInterval(take, intervalMs)
  return {
    stop () {
      clearInterval(timer)
      take()
      return peak
    }
  }
}

export interface FileLimit { soft: number, hard: number }

/** The "Max open files" limit of a process ('self' for this one); Infinity for "unlimited". */
export function openFileLimit (pid: number | 'self' = 'self'): FileLimit {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find(l => l.startsWith('Max open files'))
  const match = line === undefined ? null : /^Max open files\s+(\S+)\s+(\S+)/.exec(line)
  if (match === null) throw new Error(`/proc/${pid}/limits has no "Max open files" line`)
  const value = (raw: string): number => raw === 'unlimited' ? Infinity : Number(raw)
  return { soft: value(match[1]!), hard: value(match[2]!) }
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
