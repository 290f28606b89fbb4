import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import type { Log } from '../logger.js'
import { retry, type Backoff } from '../lib/retry.js'
import type { EventObserver } from '../telemetry/metrics.js'
import { isUniqueViolation, LeaseLostError, type Lease, type NewEvent, type RunPatch, type RunRecord, type RunWrite, type Store, type ToolRecord, type UsageEntry } from '../store/index.js'

/**
 * A failed storage write (or a read a run needs) is retried for about half a minute (a database
 * restarting, a pool momentarily exhausted) before the run gives up; events wait in memory
 * meanwhile. 8 retries, 125 ms doubling to 15 s: 30.9 s in all at most. A fifth of each wait is
 * random, so that the runs of a replica, all failing together when the database goes away, do
 * not all come back together (the window is then between 24.7 s and 30.9 s).
 */
export const STORAGE_BACKOFF: Backoff = { baseMs: 125, factor: 2, capMs: 15_000, jitter: 0.2, maxRetries: 8 }

/**
 * How long an event waits for others to join its write while someone on this replica follows the
 * run (a stream, a wait for its events). A step's calls start and end within a few milliseconds of
 * one another: written one turn of the event loop apart, they cost a transaction each, taken from
 * the CPU that is dispatching the step's other calls. Writes that something waits for (a commit, a
 * flush) go at once and take whatever is pending.
 */
export const EVENT_BATCH_WINDOW_MS = 5

/**
 * The same while nobody here follows the run. Readers elsewhere (another replica's stream) look for
 * new events every 500 ms, so a write this much later is not seen later; meanwhile a step's events
 * (its start, its calls' starts and ends) mostly join the write that ends the step, rather than
 * costing a transaction or two more per step. A side_effecting call's start is still stored before
 * the call is made (see flush), whatever the window.
 */
export const UNWATCHED_EVENT_BATCH_WINDOW_MS = 200

export interface EventLogOptions {
  readonly observe?: EventObserver
  readonly watched?: () => boolean
  readonly windowsMs?: { readonly watched: number, readonly unwatched: number }
  /**
   * The run's signal: once it aborts (the run cancelled, past its deadline, the replica shutting
   * down), a failed write is not retried, and a wait for a retry ends at once, so that a database
   * outage does not hold a stopping run for half a minute. A write still makes its first attempt
   * after the abort (the one that records how the run ended).
   */
  readonly signal?: AbortSignal
}

const FINAL_EVENTS = new Set(['run.completed', 'run.failed', 'run.cancelled'])

/**
 * How long a write begun after the run stopped may retry: it records how the run ended (or hands
 * it back), and a passing failure of storage should not lose that; but the stop must not wait out
 * the whole retry window either.
 */
export const STOPPED_WRITE_BUDGET_MS = 3000

/**
 * The event log of one run, kept by the replica driving it. Events are numbered here, in the order
 * they happen, and stored before anyone is told of them. Writes are serialized per run and batched:
 * events emitted within a window ({@link EVENT_BATCH_WINDOW_MS} while someone here follows the
 * run, {@link UNWATCHED_EVENT_BATCH_WINDOW_MS} otherwise), or while a write is in flight, go into
 * one write, so a burst (eight calls starting together) costs one insert, and slow storage
 * coalesces rather than queues. Consecutive text deltas of a step merge into one `message.delta`
 * event the same way.
 *
 * Every write is fenced by the run's lease: once another replica has taken the run, writes fail
 * with LeaseLostError and the log refuses further events. Other write errors are retried.
 */
export class EventLog {
  readonly #store: Store
  readonly #lease: Lease
  readonly #listeners = new Set<() => void>()
  #run: RunRecord
  #seq: number
  #pending: NewEvent[] = []
  #tail: Promise<unknown> = Promise.resolve()
  /** The pending events' write, while it waits for its window to close. */
  #timer: NodeJS.Timeout | undefined
  #timerWindow = 0
  #failure: Error | null = null

  readonly #log: Log
  readonly #observe: EventObserver | undefined
  readonly #watched: () => boolean
  readonly #windows: { readonly watched: number, readonly unwatched: number }
  readonly #signal: AbortSignal | undefined
  /**
   * The messages, run state and usage lines of writes that failed, kept for the write after
   * {@link recover}: a step's lines are stored once, with the write that stores the step.
   */
  #unstored: { messages: MessageParam[], patch: RunPatch, usage: UsageEntry[] } | null = null

  /**
   * `observe` sees every event recorded (the metrics count from it); `watched` tells whether
   * someone on this replica follows the run's events now (by default, always); `windowsMs` are
   * the two batch windows (by default {@link EVENT_BATCH_WINDOW_MS} and
   * {@link UNWATCHED_EVENT_BATCH_WINDOW_MS}); `signal` ends the retries of failed writes (see
   * {@link EventLogOptions.signal}).
   */
  constructor (store: Store, run: RunRecord, lease: Lease, log: Log, options: EventLogOptions = {}) {
    this.#store = store
    this.#run = run
    this.#lease = lease
    this.#log = log
    this.#observe = options.observe
    this.#watched = options.watched ?? (() => true)
    this.#windows = options.windowsMs ?? { watched: EVENT_BATCH_WINDOW_MS, unwatched: UNWATCHED_EVENT_BATCH_WINDOW_MS }
    this.#signal = options.signal
    this.#seq = run.event_count
  }

  /** The run as last stored. */
  get run (): RunRecord {
    return this.#run
  }

  /** Set when a write failed for good: the log takes nothing more until {@link recover}. */
  get failure (): Error | null {
    return this.#failure
  }

  /**
   * After a failure that was not a lost lease: accept writes again, for one last try. The next
   * write carries what the failed ones did not store: their events, messages and run state.
   */
  recover (): void {
    if (this.#failure instanceof LeaseLostError) return
    this.#failure = null
    // The end of the run that could not be stored is about to be recorded again, differently: one
    // run ends once.
    const kept = this.#pending.filter((e) => !FINAL_EVENTS.has(e.type))
    if (kept.length === this.#pending.length) return
    // Numbered again from where the stored events end, so that no number is skipped.
    let seq = this.#pending[0]!.seq - 1
    this.#pending = kept.map((e) => ({ ...e, seq: ++seq }))
    this.#seq = seq
  }

  /** Called after each write that stored events: readers of the run have something new. */
  subscribe (listener: () => void): void {
    this.#listeners.add(listener)
  }

  /** An event of this run stored by someone else (its creator): seen as if recorded here. */
  observed (type: string, data: Record<string, unknown>): void {
    this.#observe?.(type, data)
  }

  /** Records an event; it is stored with the next write. */
  emit (type: string, data: Record<string, unknown>): void {
    if (this.#failure !== null) return
    this.#pending.push({ seq: ++this.#seq, type, at: Date.now(), data })
    this.#observe?.(type, data)
    this.#schedule()
  }

  /** Text the model streamed in `step`: merged into the previous delta if it is not stored yet. */
  emitDelta (step: number, text: string): void {
    const last = this.#pending[this.#pending.length - 1]
    if (last !== undefined && last.type === 'message.delta' && last.data.step === step) {
      this.#pending[this.#pending.length - 1] = { ...last, data: { step, text: `${last.data.text as string}${text}` } }
      return
    }
    this.emit('message.delta', { step, text })
  }

  /** Resolves once everything emitted so far is stored. */
  async flush (): Promise<void> {
    await this.#enqueue({})
  }

  /**
   * Stores messages and a new run state together with every pending event, and the step's usage
   * lines (`write.usage`), in one transaction.
   * Answers the tools of `write.readTools` as read with it, or null when they could not be (the
   * write was found stored after a broken connection): the caller reads them itself.
   */
  async commit (write: Omit<RunWrite, 'events'>): Promise<ToolRecord[] | null> {
    return await this.#enqueue(write)
  }

  /**
   * What is pending is stored within the short window ({@link EVENT_BATCH_WINDOW_MS}) rather than
   * the longer one: someone on this replica began following the run, or an event is worth storing
   * soon (a side_effecting call's result, which a takeover could not learn again).
   */
  hurry (): void {
    if (this.#timer === undefined || this.#timerWindow <= this.#windows.watched) return
    clearTimeout(this.#timer)
    this.#startTimer(this.#windows.watched)
  }

  #schedule (): void {
    if (this.#timer !== undefined) return
    this.#startTimer(this.#watched() ? this.#windows.watched : this.#windows.unwatched)
  }

  #startTimer (windowMs: number): void {
    this.#timerWindow = windowMs
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#enqueue({}).catch(() => {})
    }, windowMs)
  }

  #enqueue (write: Omit<RunWrite, 'events'>): Promise<ToolRecord[] | null> {
    const next = this.#tail.then(async () => await this.#write(write))
    this.#tail = next.catch(() => {})
    return next
  }

  async #write (asked: Omit<RunWrite, 'events'>): Promise<ToolRecord[] | null> {
    if (this.#failure !== null) throw this.#failure
    const write = this.#withUnstored(asked)
    const events = this.#pending
    if (events.length === 0 && write.messages === undefined && write.patch === undefined && write.usage === undefined) return null
    this.#pending = []
    // Everything pending goes now: its window's write has nothing left to do.
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer)
      this.#timer = undefined
    }
    let tools: ToolRecord[] | null
    try {
      tools = await retry(STORAGE_BACKOFF, async (attempt) => {
        try {
          const written = await this.#store.writeRun(this.#run, this.#lease, { ...write, events })
          this.#run = written.run
          return written.tools
        } catch (err) {
          // A retry that finds its rows already there means the previous attempt did commit (the
          // connection broke while COMMIT was answered): the write is done.
          if (attempt > 1 && isUniqueViolation(err)) {
            const stored = await this.#store.getRun(this.#run.tenant_id, this.#run.id).catch(() => null)
            if (stored !== null && stored.event_count >= (events[events.length - 1]?.seq ?? 0)) {
              this.#run = stored
              return null
            }
          }
          throw err
        }
      }, {
        // Begun after the run stopped: a short budget of its own (see STOPPED_WRITE_BUDGET_MS);
        // under way when it stopped: no more waiting.
        ...(this.#signal?.aborted === true ? { deadline: Date.now() + STOPPED_WRITE_BUDGET_MS } : { signal: this.#signal }),
        retryable: (err) => !(err instanceof LeaseLostError),
        onRetry: (err, attempt, delayMs) => {
          this.#log.warn({ attempt, delayMs, err }, 'storing the run failed; retrying')
        }
      })
    } catch (err) {
      this.#failure = err instanceof Error ? err : new Error(String(err))
      this.#pending = [...events, ...this.#pending]
      if (write.messages !== undefined || write.patch !== undefined || write.usage !== undefined) {
        this.#unstored = { messages: [...(write.messages ?? [])], patch: { ...write.patch }, usage: [...(write.usage ?? [])] }
      }
      throw this.#failure
    }
    this.#unstored = null
    if (events.length > 0) {
      for (const listener of this.#listeners) {
        try {
          listener()
        } catch {
          // A listener's failure (a closed stream, say) is its own business, never the run's.
        }
      }
    }
    return tools
  }

  /** `write`, after what failed writes left unstored (their messages and lines first; its run state wins). */
  #withUnstored (write: Omit<RunWrite, 'events'>): Omit<RunWrite, 'events'> {
    const unstored = this.#unstored
    if (unstored === null) return write
    return {
      ...write,
      messages: [...unstored.messages, ...(write.messages ?? [])],
      patch: { ...unstored.patch, ...write.patch },
      ...(unstored.usage.length === 0 && write.usage === undefined ? {} : { usage: [...unstored.usage, ...(write.usage ?? [])] })
    }
  }
}
