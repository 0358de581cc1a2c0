import { once } from 'node:events'
import type { OutgoingHttpHeaders } from 'node:http'
import type { FastifyReply } from 'fastify'
import { seconds } from './settings.js'

export interface ClientWriterOptions {
  /** How long a client may leave written frames unread (its socket buffer full) before `onStall`. */
  stallMs: number
  /** Aborted when the stream stops: a wait for the client ends at once. */
  signal: AbortSignal
  onStall: (message: string) => void
  /** Called when a wait for the client begins (true) and ends (false): the upstream's idle budget is not spent meanwhile. */
  onAwaitingClient: (waiting: boolean) => void
}

/**
 * The client side of one relayed stream: sends the head with the headers hooks set on the reply, writes
 * frames batched per tick, waits while the client's socket is full (so memory stays bounded), and ends.
 */
export class ClientWriter {
  private opened = false
  private corked = false
  /** Set by every write; a heartbeat clears it and is only sent when nothing was written since. */
  wroteSinceHeartbeat = false

  constructor (private readonly reply: FastifyReply, private readonly options: ClientWriterOptions) {}

  get headersSent (): boolean {
    return this.opened
  }

  open (status: number, headers: OutgoingHttpHeaders): void {
    this.reply.hijack()
    this.opened = true
    // The headers hooks set on the reply (request id, rate limits) go out with the stream's own.
    const merged: OutgoingHttpHeaders = {}
    for (const [name, value] of Object.entries(this.reply.getHeaders())) if (value !== undefined) merged[name] = value
    this.reply.raw.writeHead(status, Object.assign(merged, headers))
    this.reply.raw.flushHeaders()
  }

  /** A frame outside the stream's flow (a heartbeat): never waited on. */
  writeNow (frame: string): void {
    this.reply.raw.write(frame)
  }

  /**
   * Writes a frame; returns a promise only when the client's socket is full and the caller must wait
   * for it to drain. The common case costs no promise and no microtask hop.
   */
  write (frame: string): Promise<void> | undefined {
    this.wroteSinceHeartbeat = true
    const raw = this.reply.raw
    if (!this.corked) {
      // Events parsed from one upstream read leave in one syscall instead of one each.
      this.corked = true
      raw.cork()
      process.nextTick(this.uncork)
    }
    if (raw.write(frame)) return undefined
    // A slow reader: pull nothing more from upstream until the socket drains, so memory stays bounded.
    this.uncork()
    // An event over the high-water mark written while corked reports "full" even when uncorking just
    // handed it all to the kernel: then no `drain` may ever come (Node 22 and 24 differ in which of
    // the response and the socket keep a "needs drain" flag). Only bytes still buffered mean waiting.
    if (raw.writableLength === 0 && (raw.socket?.writableLength ?? 0) === 0) return undefined
    return this.awaitDrain()
  }

  private async awaitDrain (): Promise<void> {
    const { stallMs, signal, onStall, onAwaitingClient } = this.options
    onAwaitingClient(true)
    const stall = setTimeout(() => { onStall(`the client read nothing for ${seconds(stallMs)}`) }, stallMs)
    try {
      await once(this.reply.raw, 'drain', { signal })
    } catch {
      // Stopped while waiting (the stop says why), or the socket failed, which its `close` reports.
    } finally {
      clearTimeout(stall)
      onAwaitingClient(false)
    }
  }

  /**
   * Ends the response with its last frame. Uncorks first: on Node 22, `end()` on a response still
   * corked by this tick's writes sends an empty body and drops the corked events.
   */
  end (frame: string): void {
    this.uncork()
    this.reply.raw.end(frame)
  }

  private readonly uncork = (): void => {
    if (!this.corked) return
    this.corked = false
    this.reply.raw.uncork()
  }
}
