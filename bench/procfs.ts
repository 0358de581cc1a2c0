// CPU time and memory of another process, read from /proc so a server's numbers are its own.

import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

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
