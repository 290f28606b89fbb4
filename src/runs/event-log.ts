import type { EventRecord, Lease, NewEvent, RunRecord, RunWrite, Store } from '../store/index.js'

export type EventListener = (events: readonly EventRecord[]) => void

/**
 * The event log of one run, kept by the replica driving it. Events are numbered here, in the order
 * they happen, and stored before anyone is told of them. Writes are serialized per run and batched:
 * what is emitted while a write is in flight goes into the next one, so a burst (eight calls
 * starting together) costs one insert, and slow storage coalesces rather than queues. Consecutive
 * text deltas of a step merge into one `message.delta` event the same way.
 *
 * Every write is fenced by the run's lease: once another replica has taken the run, writes fail
 * with LeaseLostError and the log refuses further events.
 */
export class EventLog {
  readonly #store: Store
  readonly #lease: Lease
  readonly #listeners = new Set<EventListener>()
  #run: RunRecord
  #seq: number
  #pending: NewEvent[] = []
  #tail: Promise<unknown> = Promise.resolve()
  #scheduled = false
  #failure: Error | null = null

  constructor (store: Store, run: RunRecord, lease: Lease) {
    this.#store = store
    this.#run = run
    this.#lease = lease
    this.#seq = run.event_count
  }

  /** The run as last stored. */
  get run (): RunRecord {
    return this.#run
  }

  /** Set when a write failed: the log takes nothing more. */
  get failure (): Error | null {
    return this.#failure
  }

  /** Called with each batch of events once stored, in order. */
  subscribe (listener: EventListener): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** Records an event; it is stored with the next write. Returns its number. */
  emit (type: string, data: Record<string, unknown>): number {
    if (this.#failure !== null) return 0
    const seq = ++this.#seq
    this.#pending.push({ seq, type, at: Date.now(), data })
    this.#schedule()
    return seq
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
  async flush (): Promise<RunRecord> {
    return await this.#enqueue({})
  }

  /** Stores messages and a new run state together with every pending event, in one transaction. */
  async commit (write: Omit<RunWrite, 'events'>): Promise<RunRecord> {
    return await this.#enqueue(write)
  }

  #schedule (): void {
    if (this.#scheduled) return
    this.#scheduled = true
    // setImmediate, not a microtask: let the rest of this turn's events join the batch.
    setImmediate(() => {
      this.#scheduled = false
      this.#enqueue({}).catch(() => {})
    })
  }

  #enqueue (write: Omit<RunWrite, 'events'>): Promise<RunRecord> {
    const next = this.#tail.then(async () => await this.#write(write))
    this.#tail = next.catch(() => {})
    return next
  }

  async #write (write: Omit<RunWrite, 'events'>): Promise<RunRecord> {
    if (this.#failure !== null) throw this.#failure
    const events = this.#pending
    if (events.length === 0 && write.messages === undefined && write.patch === undefined) return this.#run
    this.#pending = []
    try {
      this.#run = await this.#store.writeRun(this.#run, this.#lease, { ...write, events })
    } catch (err) {
      this.#failure = err instanceof Error ? err : new Error(String(err))
      throw this.#failure
    }
    if (events.length > 0) {
      const stored = events.map((e) => ({ ...e, run_id: this.#run.id }))
      for (const listener of this.#listeners) {
        try {
          listener(stored)
        } catch {
          // A listener's failure (a closed stream, say) is its own business, never the run's.
        }
      }
    }
    return this.#run
  }
}
