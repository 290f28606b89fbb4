import { FINAL_STATUSES } from '../schemas/runs.js'
import type { EventRecord, Page, RunRecord, Store } from '../store/index.js'
import { isSettled, isStalled } from './run-object.js'

// A run's stream ends with its last event: a final one (`run.completed` and so on), or
// `run.requires_action` when nothing follows it yet (the caller has to answer before there is more).
const FINAL_EVENTS = new Set([...FINAL_STATUSES].map((status) => `run.${status}`))
/** Events read at once while following. */
const BATCH = 200
/** How often a follower looks for events stored by another replica; this one's wake it at once. */
const POLL_MS = 500

/** Resolves when this replica stores new events of the run, after `timeoutMs` at the latest, or when `signal` aborts. */
export type WaitForEvents = (runId: string, timeoutMs: number, signal?: AbortSignal) => Promise<void>

export interface FollowOptions {
  /** Events after this number. */
  readonly after: number
  /** The follower went away: the iteration ends. */
  readonly signal: AbortSignal
  /** Whether this replica is shutting down: a follower waiting for more is let go (it reconnects to another). */
  readonly stopping: () => boolean
}

/**
 * A run's events, as stored and as they come, read from storage (so that events stored by any
 * replica are seen) and woken by this replica's writes. Used by event pages and live streams.
 */
export class EventStream {
  readonly #store: Store
  readonly #wait: WaitForEvents
  readonly #leaseMs: number

  /** `wait` is the engine's wait for a run's next events (see RunEngine.waitForEvents). */
  constructor (store: Store, wait: WaitForEvents, leaseMs: number) {
    this.#store = store
    this.#wait = wait
    this.#leaseMs = leaseMs
  }

  /** One page of the run's events after event number `after`, oldest first. */
  async page (runId: string, after: number, limit: number): Promise<Page<EventRecord>> {
    const events = await this.#store.listEvents(runId, after, limit + 1)
    const items = events.slice(0, limit)
    const more = events.length > limit
    return { items, nextCursor: more ? String(items[items.length - 1]!.seq) : null }
  }

  /** Whether following `run` from event number `after` on would give nothing, ever: it is settled and all is read. */
  static nothingToFollow (run: RunRecord, after: number): boolean {
    return isSettled(run) && after >= run.event_count
  }

  /**
   * Every event of `run` after `options.after`, once and in order, then each as it is stored.
   * Ends after the run's last event (it ended, or waits for its caller), when nobody drives it past
   * its deadline, when this replica is stopping and nothing is left to read, or when the follower
   * goes away. A storage failure is thrown: the follower resumes later from its last event.
   */
  async * follow (run: RunRecord, options: FollowOptions): AsyncGenerator<EventRecord, void, undefined> {
    const { signal } = options
    let last = options.after
    for (;;) {
      const events = await this.#store.listEvents(run.id, last, BATCH)
      for (const event of events) {
        yield event
        if (signal.aborted) return
        last = event.seq
        if (FINAL_EVENTS.has(event.type)) return
      }
      if (signal.aborted) return
      if (events.length === BATCH) continue
      if (events.length === 0) {
        // Nothing new: is more to come? Not from a run that ended or waits, not from one nobody
        // drives past its deadline, and not here once this replica is stopping.
        const current = await this.#store.getRun(run.tenant_id, run.id)
        if (current === null || options.stopping()) return
        if (EventStream.nothingToFollow(current, last)) return
        if (isStalled(current, this.#leaseMs)) return
      }
      await this.#wait(run.id, POLL_MS, signal)
      if (signal.aborted) return
    }
  }
}
