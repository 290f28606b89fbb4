/** One server-sent event: its `event:` name (null when it has none) and its `data:` lines, joined. */
export interface ServerSentEvent {
  readonly event: string | null
  readonly data: string
}

/**
 * Reads server-sent events from a stream's text, a network read at a time, as the WHATWG
 * EventSource rules say: lines end with CRLF, LF or CR; a blank line ends an event; a line
 * starting with a colon is a comment; a field without a colon has an empty value; one space after
 * the colon is dropped; fields other than `event` and `data` are ignored. As in the Anthropic SDK's
 * reader, an event with a name and no data is still an event; one with neither (an empty name is
 * none) is not. Whatever follows the last blank line waits for the next read.
 *
 * The events of one read come back together, with no promise per event (which an async
 * generator per event would cost). An event may hold at most `maxEventChars` characters of data
 * (its unfinished line included): a stream that sends more, or one line that never ends, throws
 * rather than growing without end.
 */
export class ServerSentEventParser {
  readonly #maxEventChars: number
  /** The start of a line whose end has not arrived yet. */
  #partial = ''
  /** The characters of the current event's data lines so far. */
  #eventChars = 0
  /** The last read ended with a CR: a LF at the start of the next belongs to the same line end. */
  #afterCr = false
  #event: string | null = null
  #data: string[] = []

  constructor (maxEventChars: number) {
    this.#maxEventChars = maxEventChars
  }

  /** Takes the next piece of the stream's text; answers the events it completed, in order. */
  push (text: string): ServerSentEvent[] {
    const events: ServerSentEvent[] = []
    // Nothing (a read that was all of a character's first bytes) changes nothing, a CR's pending LF included.
    if (text === '') return events
    let start = 0
    if (this.#afterCr && text.startsWith('\n')) start = 1
    this.#afterCr = false
    // The next CR is searched for only once passed, so that text without one is scanned once.
    let cr = text.indexOf('\r', start)
    for (;;) {
      if (cr !== -1 && cr < start) cr = text.indexOf('\r', start)
      const lf = text.indexOf('\n', start)
      let end: number
      let next: number
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        end = cr
        next = cr + 1
        if (next === text.length) this.#afterCr = true
        else if (text.charCodeAt(next) === LF) next++
      } else if (lf !== -1) {
        end = lf
        next = lf + 1
      } else {
        break
      }
      const line = start === 0 && this.#partial !== '' ? this.#partial + text.slice(0, end) : text.slice(start, end)
      if (start === 0) this.#partial = ''
      this.#line(line, events)
      start = next
    }
    if (start < text.length) this.#partial += text.slice(start)
    this.#checkSize()
    return events
  }

  #line (line: string, events: ServerSentEvent[]): void {
    if (line === '') {
      if ((this.#event !== null && this.#event !== '') || this.#data.length > 0) {
        events.push({ event: this.#event, data: this.#data.join('\n') })
        this.#event = null
        this.#data = []
        this.#eventChars = 0
      }
      return
    }
    if (line.charCodeAt(0) === COLON) return
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    if (field !== 'event' && field !== 'data') return
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.charCodeAt(0) === SPACE) value = value.slice(1)
    if (field === 'event') {
      this.#event = value
    } else {
      this.#data.push(value)
      this.#eventChars += value.length
      this.#checkSize()
    }
  }

  #checkSize (): void {
    if (this.#partial.length + this.#eventChars > this.#maxEventChars) {
      throw new Error(`a server-sent event longer than ${this.#maxEventChars} characters`)
    }
  }
}

const LF = 10
const COLON = 58
const SPACE = 32
