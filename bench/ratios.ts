// The comparisons the bench draws from its medians: the gateway against the floor (bare proxy,
// direct upstream), its OpenAI route and its resumable streams against its own stream route and, when a baseline build was
// measured in the same run, the gateway against that build.

import type { CellReport, MeasureName, PathName } from './harness.js'

export interface RatioReport {
  concurrency: number
  /** gateway CPU per stream / proxy CPU per stream (medians). */
  cpuPerStreamGatewayOverProxy: number
  /** gateway streams/s / proxy streams/s (medians). */
  throughputGatewayOverProxy: number
  /** Median TTFC p50: gateway minus direct, and gateway minus proxy, in ms. */
  ttfcP50GatewayMinusDirectMs: number
  ttfcP50GatewayMinusProxyMs: number
  ttfcP50ProxyMinusDirectMs: number
  /** Median whole-stream p50: gateway minus direct, in ms. */
  totalP50GatewayMinusDirectMs: number
}

export interface BaselineRatioReport {
  concurrency: number
  /** gateway CPU per stream / baseline CPU per stream (medians): below 1 means this build is cheaper. */
  cpuPerStreamGatewayOverBaseline: number
  /** gateway streams/s / baseline streams/s (medians): above 1 means this build is faster. */
  throughputGatewayOverBaseline: number
  /** Median TTFC p50, gateway minus baseline, in ms: below 0 means this build answers sooner. */
  ttfcP50GatewayMinusBaselineMs: number
}

/** POST /v1/chat/completions against POST /api/stream, on the same gateway process. */
export interface OpenAIRatioReport {
  concurrency: number
  /** openai CPU per stream / gateway CPU per stream (medians): issue 15 wants at most 1.2. */
  cpuPerStreamOpenAIOverGateway: number
  /** openai streams/s / gateway streams/s (medians). */
  throughputOpenAIOverGateway: number
  /** Median TTFC p50, openai minus gateway, in ms. */
  ttfcP50OpenAIMinusGatewayMs: number
  /** Median whole-stream p50, openai minus gateway, in ms. */
  totalP50OpenAIMinusGatewayMs: number
}

function medianOf (cells: CellReport[]): (path: PathName, concurrency: number, name: MeasureName) => number {
  return (path, concurrency, name) => {
    const cell = cells.find(c => c.path === path && c.concurrency === concurrency)
    if (cell === undefined) throw new Error(`bench: no ${path} cell at concurrency ${concurrency}`)
    return cell.summary[name].median
  }
}

export function ratiosFor (cells: CellReport[], concurrencies: number[]): RatioReport[] {
  const median = medianOf(cells)
  return concurrencies.map(c => ({
    concurrency: c,
    cpuPerStreamGatewayOverProxy: median('gateway', c, 'cpuMsPerStream') / median('proxy', c, 'cpuMsPerStream'),
    throughputGatewayOverProxy: median('gateway', c, 'streamsPerSecond') / median('proxy', c, 'streamsPerSecond'),
    ttfcP50GatewayMinusDirectMs: median('gateway', c, 'ttfcP50Ms') - median('direct', c, 'ttfcP50Ms'),
    ttfcP50GatewayMinusProxyMs: median('gateway', c, 'ttfcP50Ms') - median('proxy', c, 'ttfcP50Ms'),
    ttfcP50ProxyMinusDirectMs: median('proxy', c, 'ttfcP50Ms') - median('direct', c, 'ttfcP50Ms'),
    totalP50GatewayMinusDirectMs: median('gateway', c, 'totalP50Ms') - median('direct', c, 'totalP50Ms')
  }))
}

export function baselineRatiosFor (cells: CellReport[], concurrencies: number[]): BaselineRatioReport[] {
  const median = medianOf(cells)
  return concurrencies.map(c => ({
    concurrency: c,
    cpuPerStreamGatewayOverBaseline: median('gateway', c, 'cpuMsPerStream') / median('baseline', c, 'cpuMsPerStream'),
    throughputGatewayOverBaseline: median('gateway', c, 'streamsPerSecond') / median('baseline', c, 'streamsPerSecond'),
    ttfcP50GatewayMinusBaselineMs: median('gateway', c, 'ttfcP50Ms') - median('baseline', c, 'ttfcP50Ms')
  }))
}

export function openAIRatiosFor (cells: CellReport[], concurrencies: number[]): OpenAIRatioReport[] {
  const median = medianOf(cells)
  return concurrencies.map(c => ({
    concurrency: c,
    cpuPerStreamOpenAIOverGateway: median('openai', c, 'cpuMsPerStream') / median('gateway', c, 'cpuMsPerStream'),
    throughputOpenAIOverGateway: median('openai', c, 'streamsPerSecond') / median('gateway', c, 'streamsPerSecond'),
    ttfcP50OpenAIMinusGatewayMs: median('openai', c, 'ttfcP50Ms') - median('gateway', c, 'ttfcP50Ms'),
    totalP50OpenAIMinusGatewayMs: median('openai', c, 'totalP50Ms') - median('gateway', c, 'totalP50Ms')
  }))
}

/** POST /api/stream with `"resumable": true` against the plain POST /api/stream, on the same gateway process. */
export interface ResumableRatioReport {
  concurrency: number
  /** resumable CPU per stream / gateway CPU per stream (medians). */
  cpuPerStreamResumableOverGateway: number
  /** resumable streams/s / gateway streams/s (medians). */
  throughputResumableOverGateway: number
  /** Median TTFC p50, resumable minus gateway, in ms. */
  ttfcP50ResumableMinusGatewayMs: number
  /** Median whole-stream p50, resumable minus gateway, in ms. */
  totalP50ResumableMinusGatewayMs: number
}

export function resumableRatiosFor (cells: CellReport[], concurrencies: number[]): ResumableRatioReport[] {
  const median = medianOf(cells)
  return concurrencies.map(c => ({
    concurrency: c,
    cpuPerStreamResumableOverGateway: median('resumable', c, 'cpuMsPerStream') / median('gateway', c, 'cpuMsPerStream'),
    throughputResumableOverGateway: median('resumable', c, 'streamsPerSecond') / median('gateway', c, 'streamsPerSecond'),
    ttfcP50ResumableMinusGatewayMs: median('resumable', c, 'ttfcP50Ms') - median('gateway', c, 'ttfcP50Ms'),
    totalP50ResumableMinusGatewayMs: median('resumable', c, 'totalP50Ms') - median('gateway', c, 'totalP50Ms')
  }))
}
