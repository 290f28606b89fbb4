import { EventSourceParserStream, type EventSourceMessage } from 'eventsource-parser/stream'
import { APIConnectionError, APIUserAbortError } from './errors.js'
import { backoff, sleep } from './core.js'
import type { Run, RunEvent } from './types.js'

/** The events after which a run's stream ends: it is over, or it waits for its caller. */
const LAST_EVENTS = new Set(['run.completed', 'run.failed', 'run.cancelled', 'run.requires_action'])

/**
 * Opens a connection for the events after `after`: the run's own create while its id is not known
 * yet, then `GET /runs/{id}/events` with `Last-Event-ID`. Answers null when the service says nothing
 * more will come (204).
 */
export type OpenEvents = (runId: string | null, after: number, signal: AbortSignal) => Promise<Response | null>

/**
 * A run's events as they happen: `for await (const event of stream)`. A connection that drops (a
 * proxy's cut, a replica shutting down) is opened again from the last event received, so every
 * event comes exactly once and in order; the stream ends after the run's last event (or
 * `run.requires_action`). Only `maxRetries` reconnections in a row that bring no new event make
 * it throw an APIConnectionError.
 */
export class RunStream implements AsyncIterable<RunEvent> {
  /** The run's id, once its first event has come. */
  runId: string | null
  /** The number of the last event received: where a reconnection resumes. */
  lastEventId: number
  /** The run as its last `run.*` event showed it. */
  run: Run | null = null
  /** Connections opened so far (1 unless the stream had to resume). */
  connections = 0
  readonly #open: OpenEvents
  readonly #maxRetries: number
  readonly #controller = new AbortController()
  #started = false

  constructor (open: OpenEvents, options: { runId: string | null, after: number, maxRetries: number, signal?: AbortSignal | undefined }) {
    this.#open = open
    this.runId = options.runId
    this.lastEventId = options.after
    this.#maxRetries = options.maxRetries
    if (options.signal !== undefined) {
      if (options.signal.aborted) this.#controller.abort()
      else options.signal.addEventListener('abort', () => this.#controller.abort(), { once: true })
    }
  }

  /** Stops the stream (not the run: cancel it with `runs.cancel`). */
  abort (): void {
    this.#controller.abort()
  }

  /** Reads the stream to its end and answers the run as its last event showed it. */
  async finalRun (): Promise<Run> {
    const events = this[Symbol.asyncIterator]()
    while (!(await events.next()).done);
    if (this.run === null) throw new APIConnectionError('The event stream ended without a run event.')
    return this.run
  }

  async * [Symbol.asyncIterator] (): AsyncGenerator<RunEvent> {
    if (this.#started) throw new Error('A RunStream can be read once.')
    this.#started = true
    const signal = this.#controller.signal
    let idle = 0
    while (true) {
      if (signal.aborted) throw new APIUserAbortError('The event stream was aborted.')
      const response = await this.#open(this.runId, this.lastEventId, signal)
      this.connections++
      if (response === null) return
      let progressed = false
      try {
        const messages = response.body!
          .pipeThrough(new TextDecoderStream())
          .pipeThrough(new EventSourceParserStream())
        for await (const message of messages as unknown as AsyncIterable<EventSourceMessage>) {
          const id = Number(message.id)
          // A stream started again replays from its start until it knows the run: skip what came.
          if (!Number.isInteger(id) || id <= this.lastEventId) continue
          const event = JSON.parse(message.data) as RunEvent
          this.lastEventId = id
          this.runId ??= event.run_id
          if (event.type.startsWith('run.') && isRun(event.data)) this.run = event.data
          progressed = true
          yield event
          if (LAST_EVENTS.has(event.type)) return
        }
      } catch (err) {
        if (signal.aborted) throw new APIUserAbortError('The event stream was aborted.')
        if (err instanceof SyntaxError) throw new APIConnectionError(`The event stream sent an event that is not JSON: ${err.message}`, { cause: err })
        // The connection broke: open it again from the last event received.
      } finally {
        await response.body?.cancel().catch(() => {})
      }
      idle = progressed ? 0 : idle + 1
      if (idle > this.#maxRetries) {
        throw new APIConnectionError(`The event stream of ${this.runId ?? 'the run'} ended ${idle} times in a row without a new event (last event ${this.lastEventId}).`)
      }
      // Straight back after a stream that brought events; wait a little after one that did not.
      if (idle > 0) await sleep(backoff(idle - 1), signal)
    }
  }
}

function isRun (data: unknown): data is Run {
  return typeof data === 'object' && data !== null && (data as { object?: unknown }).object === 'run'
}
