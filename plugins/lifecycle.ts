import fp from 'fastify-plugin'
import { SHUTTING_DOWN_MESSAGE } from '../schemas/refusals.js'
import { provide } from './services.js'

/** A stream in flight, as the lifecycle sees it. */
export interface TrackedStream {
  /** Ends the stream now with a recoverable error event and aborts its upstream call. */
  interrupt: (message: string) => void
}

export interface DrainResult {
  /** Streams that finished on their own within the deadline. */
  finished: number
  /** Streams cut at the deadline. */
  interrupted: number
}

/**
 * Knows the open streams so a deploy can drain them: refuse new streams, let open ones finish
 * until a deadline, then cut the rest cleanly.
 */
export class GatewayLifecycle {
  private readonly streams = new Set<TrackedStream>()
  private readonly emptyWaiters = new Set<() => void>()
  private drainingSince: number | undefined

  get draining (): boolean {
    return this.drainingSince !== undefined
  }

  get openStreams (): number {
    return this.streams.size
  }

  track (stream: TrackedStream): () => void {
    this.streams.add(stream)
    return () => {
      this.streams.delete(stream)
      if (this.streams.size === 0) for (const wake of this.emptyWaiters) wake()
    }
  }

  private async allClosed (ms: number): Promise<boolean> {
    if (this.streams.size === 0) return true
    const closed = Promise.withResolvers<true>()
    const wake = (): void => { closed.resolve(true) }
    this.emptyWaiters.add(wake)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<false>(resolve => { timer = setTimeout(() => { resolve(false) }, ms) })
    try {
      return await Promise.race([closed.promise, timeout])
    } finally {
      clearTimeout(timer)
      this.emptyWaiters.delete(wake)
    }
  }

  /** Stops new streams, waits up to `deadlineMs` for open ones, then interrupts the rest. */
  async drain (deadlineMs: number): Promise<DrainResult> {
    this.drainingSince ??= Date.now()
    const before = this.streams.size
    await this.allClosed(deadlineMs)
    const remaining = [...this.streams]
    for (const stream of remaining) stream.interrupt(SHUTTING_DOWN_MESSAGE)
    // Interrupting is synchronous up to the socket; this only waits for bookkeeping to settle.
    await this.allClosed(1000)
    return { finished: before - remaining.length, interrupted: remaining.length }
  }
}

export interface LifecycleOptions {
  /** Share one lifecycle with the process entry, which drains it on SIGTERM. */
  lifecycle?: GatewayLifecycle
}

declare module './services.js' {
  interface GatewayServices {
    lifecycle?: GatewayLifecycle
  }
}

export default fp<LifecycleOptions>(async function lifecyclePlugin (app, options) {
  provide(app, 'lifecycle', options.lifecycle ?? new GatewayLifecycle())
}, { name: 'amrikyy-lifecycle', fastify: '5.x' })
