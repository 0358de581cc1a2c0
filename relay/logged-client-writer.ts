import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyReply } from 'fastify'
import type { ResumableStream } from '../plugins/resumable-streams.js'
import { withEventId } from '../plugins/stream-log-store.js'
import { ClientWriter, type ClientWriterOptions } from './client-writer.js'

export interface LoggedClientWriterOptions extends ClientWriterOptions {
  /** The first failed log append of the stream: the stream goes on, but a resume may miss events. */
  onLogError: (error: unknown) => void
}

/**
 * The client side of a resumable stream: every event gets its SSE id (`<streamId>:<n>`) and goes to the stream's
 * log as it goes to the client, and the stream can outlive its client. Once detached (the client left) the events
 * go to the log only, nothing waits on the gone socket, and the stream is watched for a reader until `graceMs`
 * pass without one.
 */
export class LoggedClientWriter extends ClientWriter {
  private n = 0
  private attached = true
  private readonly detachment: AbortController
  private watch: NodeJS.Timeout | undefined
  private readonly stopProducing: () => void
  private logFailed = false
  /** The last append's promise: events kept together share one, which needs its failure handled only once. */
  private appended: Promise<void> | undefined

  constructor (reply: FastifyReply, private readonly logged: LoggedClientWriterOptions, private readonly stream: ResumableStream) {
    // A wait for the client's socket to drain ends when the client leaves, not only when the stream stops.
    const detachment = new AbortController()
    // A stalled client is cut like a gone one: the answer goes on for a reader that resumes, rather than stopping.
    super(reply, { ...logged, signal: AbortSignal.any([logged.signal, detachment.signal]), onStall: () => { reply.raw.destroy() } })
    this.detachment = detachment
    this.stopProducing = stream.store.produce(stream.streamId)
  }

  get streamId (): string {
    return this.stream.streamId
  }

  override open (status: number, headers: OutgoingHttpHeaders): void {
    super.open(status, { ...headers, 'x-stream-id': this.stream.streamId })
  }

  /** Heartbeats are for the connection: not numbered, not kept. */
  override writeNow (frame: string): void {
    if (this.attached) super.writeNow(frame)
  }

  override write (frame: string): Promise<void> | undefined {
    const numbered = this.keep(frame, false)
    return this.attached ? super.write(numbered) : undefined
  }

  override end (frame: string): void {
    const numbered = this.keep(frame, true)
    if (this.attached) super.end(numbered)
  }

  /**
   * The client left: events go on to the log only, and `onAbandoned` is called once no reader was present for
   * `graceMs` (a reader on any instance counts; a reader that leaves starts the grace again).
   */
  detach (onAbandoned: () => void): void {
    if (!this.attached) return
    this.attached = false
    this.detachment.abort()
    const { store, streamId, graceMs } = this.stream
    let lastAttended = performance.now()
    const look = (): void => {
      store.attended(streamId).catch(() => false).then(attended => {
        if (this.watch === undefined) return
        if (attended) lastAttended = performance.now()
        if (performance.now() - lastAttended >= graceMs) onAbandoned()
        else this.watch.refresh()
      }, () => {})
    }
    this.watch = setTimeout(look, Math.min(graceMs, 1000))
  }

  /** Stops watching for a reader and showing the producer alive: the stream has ended. */
  dispose (): void {
    clearTimeout(this.watch)
    this.watch = undefined
    this.stopProducing()
  }

  /** Numbers a frame and keeps it. */
  private keep (frame: string, last: boolean): string {
    this.n++
    const numbered = withEventId(frame, this.stream.streamId, this.n)
    // Not awaited: appends go out in order on one connection, and the client is never held up by the log.
    const appended = this.stream.store.append(this.stream.streamId, { n: this.n, frame: numbered }, last)
    if (appended !== this.appended) {
      this.appended = appended
      appended.catch(this.appendFailed)
    }
    return numbered
  }

  private readonly appendFailed = (error: unknown): void => {
    if (this.logFailed) return
    this.logFailed = true
    this.logged.onLogError(error)
  }
}
