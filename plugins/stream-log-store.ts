// Where the events of a resumable stream are kept (issue 19), so that a reader who lost its connection can pick up
// after the last event it saw, on any instance: the store's interface, and the store in process memory. The Redis
// store (stream-log-redis-store.ts) keeps them in Redis Streams, where every instance reads them.

/** One event as it went out: its number in the stream, from 1, and its SSE frame (`data: …\n\n`). */
export interface LoggedEvent {
  n: number
  frame: string
}

/** Who may resume a stream, and where it came from: never the key itself. */
export interface StreamOwner {
  /** The caller's non-secret id (the key's name). */
  caller: string
  /** The request id of the request that started it, for the `resumed` log line. */
  requestId: string
  /** The API that started it (`stream`, `openai`), for the metrics' `api` label. */
  api: string
}

export interface StreamLogLimits {
  /** How long the events are kept after the last one was written. */
  retentionMs: number
  /** Events kept per stream; past it the oldest go, and a resume from before them is refused. */
  maxEvents: number
}

/** How long a reader's presence lasts without being renewed: a reader that died stops counting within it. */
export const PRESENCE_MS = 3000
/** How often a reader renews its presence, and a producer its own. */
export const PRESENCE_RENEW_MS = 1000
/** How long a producer's presence lasts without being renewed: past it, its readers take it for dead. */
export const PRODUCER_MS = 5000

/**
 * A frame with its SSE id `<streamId>:<n>`. A frame of several events (OpenAI's role and first content, its finish
 * and [DONE]) gets the id on its last event: a client cut inside the frame then resumes from the frame's start and
 * sees its first events twice, rather than never seeing the rest.
 */
export function withEventId (frame: string, streamId: string, n: number): string {
  const id = `id: ${streamId}:${n}\n`
  const lastEvent = frame.lastIndexOf('\n\n', frame.length - 3) + 2
  return lastEvent === 1 ? id + frame : frame.slice(0, lastEvent) + id + frame.slice(lastEvent)
}

export interface StreamLogStore {
  /** Whether a new stream's log can be kept now (Redis connected): a stream that starts otherwise is not resumable. */
  ready: () => boolean
  /**
   * Starts a stream's log and shows its producer alive (produce() keeps it so). `lostFrame` is the event (without its
   * id) a reader ends with when the instance producing the stream died before its end, so that the reader learns it
   * rather than waiting out the retention.
   */
  open: (streamId: string, owner: StreamOwner, lostFrame: string) => Promise<void>
  /**
   * Adds the next event; `last` marks the stream's end (its completion or error event). Settles when the event is
   * kept; events kept together may share one promise.
   */
  append: (streamId: string, event: LoggedEvent, last: boolean) => Promise<void>
  /** The stream's owner, or undefined when it is unknown or expired. */
  owner: (streamId: string) => Promise<StreamOwner | undefined>
  /**
   * The events after event `after`, then the live ones as they come, until the stream's last event or `signal`
   * aborts. Undefined when the stream is unknown, expired, or no longer holds the event after `after`.
   */
  read: (streamId: string, after: number, signal: AbortSignal) => Promise<AsyncIterable<LoggedEvent> | undefined>
  /** Marks a reader present on the stream (on any instance) until the returned function is called. */
  attend: (streamId: string) => () => void
  /** Whether a reader is present on the stream: the producer of a stream whose client left waits for one. */
  attended: (streamId: string) => Promise<boolean>
  /** Marks the stream's producer alive until the returned function is called (or its process dies). */
  produce: (streamId: string) => () => void
}

interface MemoryLog {
  owner: StreamOwner
  events: LoggedEvent[]
  /** Characters of the events kept. */
  chars: number
  readers: number
  ended: boolean
  expires: NodeJS.Timeout
  /** Readers waiting for the next event. */
  wake: Set<() => void>
}

const KEPT = Promise.resolve()

/** Characters all the memory logs of a process hold together unless told otherwise: 64 Mi (64 to 128 MiB of strings). */
export const DEFAULT_MEMORY_LOG_CHARS = 64 * 1024 * 1024

/**
 * The logs in this process's memory: one instance only. Each log is dropped `retentionMs` after its last event, and
 * past `maxChars` for all of them together the oldest logs go first, so a burst of long answers cannot grow the heap
 * without bound.
 */
export class MemoryStreamLogStore implements StreamLogStore {
  private readonly logs = new Map<string, MemoryLog>()
  private chars = 0

  constructor (private readonly limits: StreamLogLimits, private readonly maxChars = DEFAULT_MEMORY_LOG_CHARS) {}

  // A producer in this process dies with the logs: there is no lost producer to tell a reader about.
  async open (streamId: string, owner: StreamOwner, _lostFrame: string): Promise<void> {
    this.logs.set(streamId, { owner, events: [], chars: 0, readers: 0, ended: false, expires: this.expiry(streamId), wake: new Set() })
  }

  ready (): boolean {
    return true
  }

  /** Kept at once: every append answers with the same settled promise, so the per-event path allocates none. */
  append (streamId: string, event: LoggedEvent, last: boolean): Promise<void> {
    const log = this.logs.get(streamId)
    if (log === undefined) return KEPT
    log.events.push(event)
    this.grow(log, event.frame.length)
    if (log.events.length > this.limits.maxEvents) this.grow(log, -log.events.shift()!.frame.length)
    if (this.chars > this.maxChars) this.dropOldest(log)
    log.ended ||= last
    log.expires.refresh()
    if (log.wake.size > 0) {
      for (const wake of log.wake) wake()
      log.wake.clear()
    }
    return KEPT
  }

  async owner (streamId: string): Promise<StreamOwner | undefined> {
    return this.logs.get(streamId)?.owner
  }

  attend (streamId: string): () => void {
    const log = this.logs.get(streamId)
    if (log === undefined) return () => {}
    log.readers++
    let present = true
    return () => {
      if (present) log.readers--
      present = false
    }
  }

  async attended (streamId: string): Promise<boolean> {
    return (this.logs.get(streamId)?.readers ?? 0) > 0
  }

  produce (_streamId: string): () => void {
    return () => {}
  }

  private grow (log: MemoryLog, chars: number): void {
    log.chars += chars
    this.chars += chars
  }

  /** Drops the oldest logs until all of them fit in `maxChars` again; `growing`, the one being written, stays. */
  private dropOldest (growing: MemoryLog): void {
    for (const [oldest, kept] of this.logs) {
      if (this.chars <= this.maxChars || kept === growing) return
      this.drop(oldest)
    }
  }

  private drop (streamId: string): void {
    const log = this.logs.get(streamId)
    if (log === undefined) return
    clearTimeout(log.expires)
    this.chars -= log.chars
    this.logs.delete(streamId)
    // A reader waiting on a dropped log finds it ended rather than waiting for ever.
    log.ended = true
    for (const wake of log.wake) wake()
    log.wake.clear()
  }

  async read (streamId: string, after: number, signal: AbortSignal): Promise<AsyncIterable<LoggedEvent> | undefined> {
    const log = this.logs.get(streamId)
    if (log === undefined) return undefined
    const first = log.events[0]?.n ?? 1
    if (after + 1 < first) return undefined
    return {
      [Symbol.asyncIterator]: async function * () {
        let next = after + 1
        while (!signal.aborted) {
          const offset = log.events.findIndex(event => event.n >= next)
          if (offset !== -1) {
            for (const event of log.events.slice(offset)) {
              yield event
              next = event.n + 1
            }
            continue
          }
          if (log.ended) return
          await new Promise<void>(resolve => {
            // One listener per wait, removed with it: a long stream must not pile them up on the signal.
            const woken = (): void => {
              log.wake.delete(woken)
              signal.removeEventListener('abort', woken)
              resolve()
            }
            log.wake.add(woken)
            signal.addEventListener('abort', woken)
          })
        }
      }
    }
  }

  private expiry (streamId: string): NodeJS.Timeout {
    const timer = setTimeout(() => { this.drop(streamId) }, this.limits.retentionMs)
    timer.unref()
    return timer
  }
}
