import { execFile } from 'node:child_process'

export { Exposition, parseSamples, type Sample } from '../../scripts/shared/prometheus-text.js'

export interface PromtoolVerdict {
  /** The text failed to parse: promtool exits 1. */
  parseError: boolean
  /** Lint findings (exit 3), one a line, such as naming-convention warnings. */
  lintProblems: string[]
  output: string
}

/** Prometheus' own checker, when installed (Debian package `prometheus`; .ci/run installs it). */
export async function promtoolCheck (text: string): Promise<PromtoolVerdict | undefined> {
  return await new Promise(resolve => {
    const child = execFile('promtool', ['check', 'metrics'], (error, stdout, stderr) => {
      if (error !== null && (error as NodeJS.ErrnoException).code === 'ENOENT') {
        resolve(undefined)
        return
      }
      const output = `${stdout}${stderr}`
      const exitCode = error === null ? 0 : error.code
      resolve({
        parseError: exitCode !== 0 && exitCode !== 3,
        lintProblems: exitCode === 3 ? output.split('\n').filter(line => line.trim() !== '') : [],
        output
      })
    })
    child.stdin?.end(text)
  })
}
