// The facts about this machine that every measurement (bench, soak) reports beside its numbers.

import { cpus, release, totalmem } from 'node:os'

export interface MachineFacts {
  cpuModel: string
  cores: number
  memoryGiB: number
  node: string
  kernel: string
}

export function machineFacts (): MachineFacts {
  const list = cpus()
  return {
    cpuModel: list[0]?.model.trim() ?? 'unknown',
    cores: list.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30 * 10) / 10,
    node: process.version,
    kernel: release()
  }
}
