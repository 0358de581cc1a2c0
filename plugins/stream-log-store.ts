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
}

export interface StreamLogLimits {
  /** How long the events are kept after the last one was written. */
  retentionMs: number
  /** Events kept per stream; past it the oldest go, and a resume from before them is refused. */
  maxEvents: number
}

export interface StreamLogStore {
  /** Starts a stream's log. */
  open: (streamId: string, owner: StreamOwner) => Promise<void>
  /** Adds the next event; `last` marks the stream's end (its completion or error event). */
  append: (streamId: string, event: LoggedEvent, last: boolean) => Promise<void>
  /** The stream's owner, or undefined when it is unknown or expired. */
  owner: (streamId: string) => Promise<StreamOwner | undefined>
  /**
   * The events after event `after`, then the live ones as they come, until the stream's last event or `signal`
   * aborts. Undefined when the stream is unknown, expired, or no longer holds the event after `after`.
   */
  read: (streamId: string, after: number, signal: AbortSignal) => Promise<AsyncIterable<LoggedEvent> | undefined>
}

interface MemoryLog {
  owner: StreamOwner
  events: LoggedEvent[]
  ended: boolean
  expires: NodeJS.Timeout
  /** Readers waiting for the next event. */
  wake: Set<() => void>
}

/** The logs in this process's memory: one instance only; each log is dropped `retentionMs` after its last event. */
export class MemoryStreamLogStore implements StreamLogStore {
  private readonly logs = new Map<string, MemoryLog>()

  constructor (private readonly limits: StreamLogLimits) {}

  async open (streamId: string, owner: StreamOwner): Promise<void> {
    this.logs.set(streamId, { owner, events: [], ended: false, expires: this.expiry(streamId), wake: new Set() })
  }

  async append (streamId: string, event: LoggedEvent, last: boolean): Promise<void> {
    const log = this.logs.get(streamId)
    if (log === undefined) return
    log.events.push(event)
    if (log.events.length > this.limits.maxEvents) log.events.shift()
    log.ended ||= last
    log.expires.refresh()
    for (const wake of log.wake) wake()
    log.wake.clear()
  }

  async owner (streamId: string): Promise<StreamOwner | undefined> {
    return this.logs.get(streamId)?.owner
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
            const stop = (): void => { log.wake.delete(resolve); resolve() }
            log.wake.add(resolve)
            signal.addEventListener('abort', stop, { once: true })
          })
        }
      }
    }
  }

  private expiry (streamId: string): NodeJS.Timeout {
    const timer = setTimeout(() => { this.logs.delete(streamId) }, this.limits.retentionMs)
    timer.unref()
    return timer
  }
}
