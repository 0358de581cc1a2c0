// The soak's load client: keeps N streams open against the gateway over node:http, one connection
// per stream, disconnects a random share of them (before the response headers or after a few chunk
// events) and reads the rest to the end, checking every completed stream byte for byte.

import { Agent, request as httpRequest, type IncomingMessage } from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { answerFor, type AnswerPace } from '../emulator/answer.js'
import { chunkEvent, errorEvent, expectedStreamBody } from './shared/expected-stream.js'

export interface LoadSettings {
  /** The gateway, e.g. http://127.0.0.1:5000 */
  url: string
  apiKey: string
  concurrency: number
  durationMs: number
  /** Share of streams the client leaves before the end, 0 to 1. */
  cancelFraction: number
  /** A share of streams is sent with `marker`, for which the upstream sends an endless event after one chunk. */
  hugeEvent: { fraction: number, marker: string, cap: number }
  /** The emulator's pace, to know each answer's exact bytes. */
  pace: AnswerPace
  /** A stream not over after this long is a failure (and is cut). */
  streamDeadlineMs: number
  /** Workers start spread over this long, so streams do not move in lockstep. */
  rampMs: number
}

export interface LoadTally {
  /** Requests whose bytes were all handed to the kernel: the gateway must account for each of them. */
  requestsSent: number
  completed: number
  /** Streams whose endless upstream event was refused with exactly the contract's error event. */
  refusedTooLarge: number
  /** The client left before any response header arrived. */
  cancelledBeforeHeaders: number
  /** The client left after some chunk events. */
  cancelledAfterHeaders: number
  /** Anything other than a correct completion or a disconnect of ours, by kind. */
  problems: Map<string, number>
  problemExamples: string[]
  heartbeats: number
  chunkEvents: number
  /** Per stream that saw one: ms from sending the request to its first chunk event. */
  firstChunkMs: number[]
  /** Per completed stream: ms from sending the request to the end of the response. */
  completedMs: number[]
}

type Plan =
  | { kind: 'read-to-end' }
  | { kind: 'leave-early', afterMs: number }
  | { kind: 'leave-after-chunks', chunks: number }

const AGENTS = ['soak-chat', 'soak-summary', 'soak-search', 'soak-code']
const HEARTBEAT = ': ping\n\n'
/** Answers between these lengths (words); the emulator splits each into min(words, chunkCount) events. */
const MIN_WORDS = 20
const MAX_WORDS = 200
/** An early disconnect lands this soon after the request reached the kernel: mostly before the first chunk. */
const EARLY_LEAVE_MAX_MS = 25

function randomInt (min: number, max: number): number {
  return min + Math.floor(Math.random() * (max - min + 1))
}

/** The exact body the gateway owes this request (see the stream API contract), heartbeats aside. */
export function expectedBody (prompt: string, maxOutputTokens: number, pace: AnswerPace): { body: string, chunks: number } {
  const answer = answerFor(prompt, { maxOutputTokens }, pace)
  return { body: expectedStreamBody(answer.deltas, answer), chunks: answer.deltas.length }
}

/** What the gateway owes a stream whose upstream sends one endless event after the first chunk. */
export function refusedBody (prompt: string, maxOutputTokens: number, pace: AnswerPace, cap: number): { body: string, chunks: number } {
  const first = answerFor(prompt, { maxOutputTokens }, pace).deltas[0] ?? ''
  return { body: chunkEvent(first, 1) + errorEvent(`Gemini sent an event larger than ${cap} characters`, false), chunks: 1 }
}

export class SoakLoad {
  readonly tally: LoadTally = {
    requestsSent: 0,
    completed: 0,
    refusedTooLarge: 0,
    cancelledBeforeHeaders: 0,
    cancelledAfterHeaders: 0,
    problems: new Map(),
    problemExamples: [],
    heartbeats: 0,
    chunkEvents: 0,
    firstChunkMs: [],
    completedMs: []
  }

  /** Streams between their request and their end, as the client sees them. */
  open = 0
  private nextId = 0
  private stopping = false
  // No keep-alive: each stream gets its own connection and closes it, so sockets left open anywhere are leaks.
  private readonly agent = new Agent({ keepAlive: false, maxSockets: Infinity })
  private readonly live = new Set<() => void>()
  private readonly settings: LoadSettings

  constructor (settings: LoadSettings) {
    this.settings = settings
  }

  /** Runs until the duration is over (or `abort`), then waits for the streams in flight to end. */
  async run (): Promise<void> {
    const endAt = performance.now() + this.settings.durationMs
    const { concurrency, rampMs } = this.settings
    const workers: Array<Promise<void>> = []
    for (let w = 0; w < concurrency; w++) workers.push(this.worker(endAt, (w * rampMs) / concurrency))
    await Promise.all(workers)
    this.agent.destroy()
  }

  /** Stops starting streams and cuts the ones in flight (Ctrl-C, or a child died). */
  abort (): void {
    this.stopping = true
    for (const cut of this.live) cut()
  }

  private async worker (endAt: number, delayMs: number): Promise<void> {
    if (delayMs > 0) await sleep(delayMs)
    while (!this.stopping && performance.now() < endAt) await this.stream(this.nextId++)
  }

  private problem (kind: string, detail: string): void {
    this.tally.problems.set(kind, (this.tally.problems.get(kind) ?? 0) + 1)
    if (this.tally.problemExamples.length < 10) this.tally.problemExamples.push(`${kind}: ${detail}`)
  }

  private plan (chunks: number): Plan {
    const r = Math.random()
    if (r >= this.settings.cancelFraction) return { kind: 'read-to-end' }
    // Half of the disconnects land around the first chunk, half in the middle of the answer.
    if (r < this.settings.cancelFraction / 2) {
      // Half of those at once: the gateway is then still reading the request or calling Gemini.
      return { kind: 'leave-early', afterMs: Math.random() < 0.5 ? 0 : randomInt(1, EARLY_LEAVE_MAX_MS) }
    }
    return { kind: 'leave-after-chunks', chunks: randomInt(1, Math.max(1, chunks - 1)) }
  }

  private async stream (id: number): Promise<void> {
    const { url, apiKey, pace, streamDeadlineMs, hugeEvent } = this.settings
    const huge = Math.random() < hugeEvent.fraction
    const prompt = `Soak stream ${id}: explain how a river finds the sea.${huge ? ` ${hugeEvent.marker}` : ''}`
    const maxOutputTokens = randomInt(MIN_WORDS, MAX_WORDS)
    const expected = huge ? refusedBody(prompt, maxOutputTokens, pace, hugeEvent.cap) : expectedBody(prompt, maxOutputTokens, pace)
    const plan: Plan = huge ? { kind: 'read-to-end' } : this.plan(expected.chunks)
    const payload = JSON.stringify({ prompt, agent: AGENTS[id % AGENTS.length], options: { maxOutputTokens } })
    const tally = this.tally
    this.open++

    await new Promise<void>(resolve => {
      const started = performance.now()
      let response: IncomingMessage | undefined
      let received = ''
      let scanned = 0
      let chunks = 0
      let decided = false
      let sent = false
      const timers: NodeJS.Timeout[] = []

      const settle = (): void => {
        if (!this.live.delete(cut)) return
        for (const timer of timers) clearTimeout(timer)
        this.open--
        if (!decided) {
          decided = true
          this.problem(sent ? 'closed without completion' : 'request never sent', `stream ${id} after ${chunks} chunks, status ${response?.statusCode ?? 'none'}`)
        }
        resolve()
      }
      const leave = (): void => {
        if (decided) return
        decided = true
        if (response === undefined) tally.cancelledBeforeHeaders++
        else {
          tally.cancelledAfterHeaders++
          const got = received.replaceAll(HEARTBEAT, '')
          if (!expected.body.startsWith(got)) this.problem('wrong bytes before the disconnect', `stream ${id}`)
        }
        req.destroy()
      }
      function cut (): void {
        if (!decided) leave()
        else req.destroy()
      }

      const req = httpRequest(`${url}/api/stream`, {
        method: 'POST',
        agent: this.agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
          'x-api-key': apiKey,
          'x-request-id': `soak-${id}`
        }
      })
      this.live.add(cut)
      timers.push(setTimeout(() => {
        if (decided) return
        decided = true
        this.problem('stream deadline passed', `stream ${id} still open after ${streamDeadlineMs} ms with ${chunks} chunks`)
        req.destroy()
      }, streamDeadlineMs))

      req.once('finish', () => {
        sent = true
        tally.requestsSent++
        if (plan.kind !== 'leave-early') return
        if (plan.afterMs === 0) leave()
        else timers.push(setTimeout(leave, plan.afterMs))
      })
      req.once('error', (error: NodeJS.ErrnoException) => {
        if (!decided) {
          decided = true
          this.problem(`request error ${error.code ?? error.name}`, `stream ${id}: ${error.message}`)
        }
      })
      req.once('close', settle)
      req.once('response', (res: IncomingMessage) => {
        response = res
        res.setEncoding('utf8')
        res.on('error', () => {})
        if (res.statusCode !== 200) {
          res.on('data', (piece: string) => { if (received.length < 500) received += piece })
          res.once('end', () => {
            if (decided) return
            decided = true
            this.problem(`status ${res.statusCode ?? 'none'}`, `stream ${id}: ${received.slice(0, 200)}`)
          })
          return
        }
        res.on('data', (piece: string) => {
          received += piece
          for (let end = received.indexOf('\n\n', scanned); end !== -1; end = received.indexOf('\n\n', scanned)) {
            const event = received.slice(scanned, end)
            scanned = end + 2
            if (event.startsWith(':')) tally.heartbeats++
            else if (event.startsWith('data: {"chunk":')) {
              chunks++
              tally.chunkEvents++
              if (chunks === 1) tally.firstChunkMs.push(performance.now() - started)
            }
          }
          if (plan.kind === 'leave-after-chunks' && chunks >= plan.chunks) leave()
        })
        res.once('end', () => {
          if (decided) return
          decided = true
          const got = received.replaceAll(HEARTBEAT, '')
          if (got === expected.body && huge) {
            tally.refusedTooLarge++
            return
          }
          if (got === expected.body) {
            tally.completed++
            tally.completedMs.push(performance.now() - started)
            return
          }
          const last = got.trimEnd().split('\n\n').pop() ?? ''
          if (last.startsWith('data: {"error"')) this.problem('error event', `stream ${id}: ${last.slice(6, 300)}`)
          else this.problem('wrong bytes in a completed stream', `stream ${id}: ${got.length} characters, expected ${expected.body.length}`)
        })
      })
      req.end(payload)
    })
  }
}
