// An incremental Server-Sent Events parser, following the WHATWG "event stream interpretation"
// rules: bytes arrive in arbitrary pieces, so nothing here assumes a read holds whole lines,
// whole events or even whole UTF-8 characters.

export interface SseEvent {
  /** The event's `data:` lines joined with '\n'. */
  data: string
  /** The `event:` field; 'message' when the stream names none. */
  event: string
  /** The last `id:` seen on the stream so far, '' when none. */
  lastEventId: string
}

const LF = 10
const CR = 13

export class SseParser {
  private readonly decoder = new TextDecoder('utf-8')
  private pending = ''
  /** The previous piece ended with CR: a LF starting the next piece belongs to that same line ending. */
  private skipLeadingLf = false
  private dataLines: string[] = []
  private eventType = ''
  private lastEventId = ''
  private sawData = false

  /** Feeds the next piece of the stream; returns the events it completed, in order. */
  feed (piece: Uint8Array | string): SseEvent[] {
    const text = typeof piece === 'string' ? piece : this.decoder.decode(piece, { stream: true })
    return this.consume(text)
  }

  /**
   * Marks the end of the stream. Returns nothing to dispatch: by the specification an event not yet
   * terminated by a blank line is discarded, which is how a caller tells a cut stream from a whole one.
   */
  end (): SseEvent[] {
    const events = this.consume(this.decoder.decode())
    this.pending = ''
    this.resetEvent()
    return events
  }

  private consume (text: string): SseEvent[] {
    const events: SseEvent[] = []
    let start = 0
    if (this.skipLeadingLf && text.length > 0) {
      if (text.charCodeAt(0) === LF) start = 1
      this.skipLeadingLf = false
    }
    const buffer = this.pending + text.slice(start)
    let lineStart = 0
    // `pending` holds no line ending, so only the new text needs scanning: long lines stay linear.
    for (let i = this.pending.length; i < buffer.length; i++) {
      const code = buffer.charCodeAt(i)
      if (code !== LF && code !== CR) continue
      const event = this.processLine(buffer.slice(lineStart, i))
      if (event !== undefined) events.push(event)
      if (code === CR) {
        if (i + 1 === buffer.length) this.skipLeadingLf = true
        else if (buffer.charCodeAt(i + 1) === LF) i++
      }
      lineStart = i + 1
    }
    this.pending = buffer.slice(lineStart)
    return events
  }

  private processLine (line: string): SseEvent | undefined {
    if (line === '') return this.dispatch()
    if (line.charCodeAt(0) === 58 /* ':' */) return undefined // a comment, e.g. a heartbeat
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.charCodeAt(0) === 32 /* ' ' */) value = value.slice(1)
    switch (field) {
      case 'data':
        this.dataLines.push(value)
        this.sawData = true
        break
      case 'event':
        this.eventType = value
        break
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value
        break
      // 'retry' and unknown fields carry nothing a one-shot POST stream can use.
    }
    return undefined
  }

  private dispatch (): SseEvent | undefined {
    if (!this.sawData) {
      this.resetEvent()
      return undefined
    }
    const event = { data: this.dataLines.join('\n'), event: this.eventType === '' ? 'message' : this.eventType, lastEventId: this.lastEventId }
    this.resetEvent()
    return event
  }

  private resetEvent (): void {
    this.dataLines = []
    this.eventType = ''
    this.sawData = false
  }
}
