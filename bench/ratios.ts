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
/** A path served by the gateway's process (openai, resumable) against the plain POST /api/stream beside it. */
export interface BesideGatewayRatioReport {
  concurrency: number
  /** The path's CPU per stream / gateway CPU per stream (medians); issue 15 wants at most 1.2 for openai. */
  cpuPerStreamOverGateway: number
  /** The path's streams/s / gateway streams/s (medians). */
  throughputOverGateway: number
  /** Median TTFC p50, the path minus gateway, in ms. */
  ttfcP50MinusGatewayMs: number
  /** Median whole-stream p50, the path minus gateway, in ms. */
  totalP50MinusGatewayMs: number
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

export function besideGatewayRatiosFor (cells: CellReport[], concurrencies: number[], path: 'openai' | 'resumable'): BesideGatewayRatioReport[] {
  const median = medianOf(cells)
  return concurrencies.map(c => ({
    concurrency: c,
    cpuPerStreamOverGateway: median(path, c, 'cpuMsPerStream') / median('gateway', c, 'cpuMsPerStream'),
    throughputOverGateway: median(path, c, 'streamsPerSecond') / median('gateway', c, 'streamsPerSecond'),
    ttfcP50MinusGatewayMs: median(path, c, 'ttfcP50Ms') - median('gateway', c, 'ttfcP50Ms'),
    totalP50MinusGatewayMs: median(path, c, 'totalP50Ms') - median('gateway', c, 'totalP50Ms')
  }))
}
