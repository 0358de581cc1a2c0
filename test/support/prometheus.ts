import { execFile } from 'node:child_process'
import { Exposition } from '../../scripts/shared/prometheus-text.js'

export { Exposition }
export { parseSamples, type Sample } from '../../scripts/shared/prometheus-text.js'

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

export const DEFAULT_STREAM_LABELS = { api: 'stream', agent: 'unknown', model: 'gemini-2.0-flash-exp' }

/** What a test expects the metrics to say about its streams: each outcome's exact sample, and every upstream error by status. */
export interface StreamMetrics {
  completed?: number
  failed?: number
  cancelled?: number
  active?: number
  upstreamErrors: Record<string, number>
}

/**
 * The exact samples `metric{api,agent,model} value` of the stream outcomes (a field is absent when its
 * sample is), and all of `amrikyy_upstream_errors_total` by status.
 */
export function streamMetrics (scrape: Exposition, labels: Record<string, string> = DEFAULT_STREAM_LABELS): StreamMetrics {
  const found: StreamMetrics = { upstreamErrors: {} }
  const outcomes = { completed: 'amrikyy_stream_sessions_completed_total', failed: 'amrikyy_stream_sessions_failed_total', cancelled: 'amrikyy_stream_sessions_cancelled_total', active: 'amrikyy_active_streams' } as const
  for (const [field, name] of Object.entries(outcomes) as Array<[keyof typeof outcomes, string]>) {
    const value = scrape.sample(name, labels)
    if (value !== undefined) found[field] = value
  }
  for (const sample of scrape.samples.filter(s => s.name === 'amrikyy_upstream_errors_total')) found.upstreamErrors[sample.labels.status ?? ''] = sample.value
  return found
}
