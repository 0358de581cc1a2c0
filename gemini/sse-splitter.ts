import { tooLarge, type UpstreamError } from './upstream-error.js'

/**
 * Pieces an SSE body into events the way the SDK does: at the earliest of `\n\n`, `\r\r`, `\r\n\r\n`.
 * Linear in the text pushed: each push searches only its own text (plus the last three characters
 * before it, where a delimiter cut by a read begins), and an unfinished event is kept as pieces,
 * joined once when its delimiter comes, so a huge event is never copied or searched again per read.
 */
export class SseSplitter {
  private pending: string[] = []
  private pendingChars = 0
  /** The last (at most 3) characters of the pending text. */
  private tail = ''
  private scanned = 0
  private over = false

  constructor (private readonly maxEventChars = Infinity) {}

  /** Characters searched for a delimiter so far: at most the characters pushed plus 3 a push. */
  get scannedChars (): number {
    return this.scanned
  }

  /** True once an event grew past `maxEventChars`; nothing more is split after that. */
  get overLimit (): boolean {
    return this.over
  }

  /** Adds decoded text; returns the payloads of the `data:` events it completed, trimmed. */
  push (text: string): string[] {
    const payloads: string[] = []
    if (this.over) return payloads
    const carry = this.tail
    const window = carry === '' ? text : carry + text
    this.scanned += window.length
    let from = 0
    let first = true
    for (;;) {
      const end = earliestDelimiter(window, from)
      if (end === undefined) break
      let event: string
      if (first) {
        // The first event began in earlier reads; its delimiter may begin inside the carried characters.
        const head = this.pending.join('')
        event = end.index >= carry.length ? head + text.slice(0, end.index - carry.length) : head.slice(0, head.length - carry.length + end.index)
        this.pending = []
        this.pendingChars = 0
        first = false
      } else {
        event = window.slice(from, end.index)
      }
      if (event.length > this.maxEventChars) {
        this.over = true
        return payloads
      }
      from = end.index + end.length
      const trimmed = event.trim()
      // Comments, `event:` blocks and anything else that does not start with data: are dropped, as by the SDK.
      if (trimmed.startsWith('data:')) payloads.push(trimmed.slice(5).trim())
    }
    const rest = first ? text : window.slice(from)
    if (rest !== '') {
      this.pending.push(rest)
      this.pendingChars += rest.length
    }
    this.tail = first ? window.slice(-3) : rest.slice(-3)
    if (this.pendingChars > this.maxEventChars) {
      this.over = true
      this.pending = []
    }
    return payloads
  }

  /** True when text that is not whitespace waits for a delimiter that will never come. */
  get hasUnterminatedEvent (): boolean {
    return this.pending.some(piece => /\S/.test(piece))
  }

  /** The text of the unfinished event, as received. */
  unterminated (): string {
    return this.pending.join('')
  }
}

// One native scan finds the earliest delimiter; at any one position at most one of them can match.
const DELIMITER = /\r\n\r\n|\n\n|\r\r/g

function earliestDelimiter (text: string, from: number): { index: number, length: number } | undefined {
  DELIMITER.lastIndex = from
  const match = DELIMITER.exec(text)
  return match === null ? undefined : { index: match.index, length: match[0].length }
}

/** The failure for an event past the cap, worded for whoever reads the stream's error. */
export function eventTooLarge (maxEventChars: number): UpstreamError {
  return tooLarge(`Gemini sent an event larger than ${maxEventChars} characters`)
}
