// A bounded load client over node:http keep-alive connections: `concurrency` workers each run
// streams back to back until `streams` have been made, timing the first chunk and the whole stream.

import { Agent, request as httpRequest } from 'node:http'
import { performance } from 'node:perf_hooks'

export interface StreamTarget {
  /** Full URL of the streaming endpoint. */
  url: string
  headers: Record<string, string>
  /** The request body for a prompt. */
  body: (prompt: string) => string
}

export interface StreamSample {
  prompt: string
  status: number
  /** ms from sending the request to the first body bytes (the first event: no path sends a comment first). */
  firstChunkMs: number
  /** ms from sending the request to the end of the body. */
  totalMs: number
  body: string
  /** The X-Stream-Id header of a resumable stream's answer, when it has one. */
  streamId?: string | undefined
  /** Set when the request failed at the transport level. */
  error?: string | undefined
}

export interface LoadResult {
  samples: StreamSample[]
  /** ms from the first request to the last stream's end. */
  wallMs: number
}

export function keepAliveAgent (concurrency: number): Agent {
  return new Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency, scheduling: 'fifo' })
}

/** One stream, read whole. */
export async function runStream (agent: Agent, target: StreamTarget, prompt: string): Promise<StreamSample> {
  const payload = target.body(prompt)
  const started = performance.now()
  return await new Promise(resolve => {
    let firstChunkMs = -1
    const pieces: Buffer[] = []
    const fail = (error: unknown, status = 0): void => {
      resolve({ prompt, status, firstChunkMs, totalMs: performance.now() - started, body: Buffer.concat(pieces).toString('utf8'), error: error instanceof Error ? error.message : String(error) })
    }
    const req = httpRequest(target.url, {
      agent,
      method: 'POST',
      headers: { ...target.headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }
    }, response => {
      response.on('data', (piece: Buffer) => {
        if (firstChunkMs < 0) firstChunkMs = performance.now() - started
        pieces.push(piece)
      })
      const streamId = response.headers['x-stream-id']
      response.on('end', () => {
        resolve({
          prompt,
          status: response.statusCode ?? 0,
          firstChunkMs,
          totalMs: performance.now() - started,
          body: Buffer.concat(pieces).toString('utf8'),
          ...(typeof streamId === 'string' ? { streamId } : {})
        })
      })
      response.on('error', error => fail(error, response.statusCode ?? 0))
    })
    req.on('error', error => fail(error))
    req.end(payload)
  })
}

/** Runs `streams` streams with `concurrency` in flight; `promptFor(i)` names the i-th stream's prompt. */
export async function runLoad (agent: Agent, target: StreamTarget, options: { streams: number, concurrency: number, promptFor: (i: number) => string }): Promise<LoadResult> {
  const samples: StreamSample[] = []
  let next = 0
  const started = performance.now()
  const worker = async (): Promise<void> => {
    while (next < options.streams) {
      const i = next++
      samples.push(await runStream(agent, target, options.promptFor(i)))
    }
  }
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.streams) }, worker))
  return { samples, wallMs: performance.now() - started }
}

/** Percentile by nearest rank over an unsorted list; NaN for an empty one. */
export function percentile (values: readonly number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(p / 100 * sorted.length)))
  return sorted[rank - 1]!
}
