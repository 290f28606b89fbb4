import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import type { Log } from '../logger.js'
import type { RunParams } from '../schemas/runs.js'
import type { EventRecord, Lease, RunRecord, Store } from '../store/index.js'
import type { Telemetry } from '../telemetry/index.js'
import type { Admission } from './admission.js'
import type { Callbacks } from './callbacks.js'
import { resumedStep } from './resume.js'
import type { DriverStart, RunDriver } from './run-driver.js'
import { RunStop } from './run-stop.js'
import { toRunObject } from './run-object.js'

// The sweep: cancels asked through another replica, takeovers, deadlines of runs waiting for their
// caller, callbacks due. Once a second: a cancel asked elsewhere reaches a step in progress here
// within about a second (it is looked for first, and during a drain too).
const SWEEP_INTERVAL_MS = 1000
const SWEEP_BATCH = 100
/** Takeovers of one run that may fail on one replica before it fails the run. */
const MAX_TAKEOVER_FAILURES = 3
/** Events read at once when taking a run over. */
const EVENTS_PAGE = 1000

/** What the lease keeper needs of the engine it works for. */
export interface LeaseHost {
  readonly replicaId: string
  /** The runs this replica drives now. */
  readonly drivers: ReadonlyMap<string, RunDriver>
  /** False once the engine began to close: nothing new is taken. */
  readonly accepting: () => boolean
  /** Starts driving a run this replica holds the lease of. */
  readonly start: (run: RunRecord, messages: MessageParam[], from?: DriverStart) => RunDriver
  /**
   * Resumes a run waiting for its caller with "not answered: `why`" as every call's result. Used
   * for runs past their deadline: the driver that resumes them times out at once, and the run ends
   * `failed` (`timeout`) with a valid transcript.
   */
  readonly resumeUnanswered: (run: RunRecord, why: string) => Promise<void>
}

export interface LeaseKeeperOptions {
  readonly store: Store
  readonly log: Log
  readonly telemetry: Telemetry
  readonly admission: Admission
  readonly callbacks: Callbacks
  /** How long a lease lasts without renewal. */
  readonly leaseMs: number
}

/**
 * Keeps this replica's hold on its runs, and takes up the runs nobody holds (SPEC §7): renews the
 * leases of every run driven here at once, stops driving a run whose lease is lost, and once a
 * second sweeps: takes over queued and abandoned runs as far as there is room, stops runs cancelled
 * through another replica, ends waiting runs at their deadline, and delivers callbacks due.
 * Nothing starts before {@link start}: a replica whose start-up fails later never claims a run.
 */
export class LeaseKeeper {
  readonly #host: LeaseHost
  readonly #options: LeaseKeeperOptions
  #renewal: NodeJS.Timeout | undefined
  #sweeper: NodeJS.Timeout | undefined
  /** The sweep under way, if any: close waits for it (see quiesce). */
  #sweeping: Promise<void> | null = null
  #firstSweep = true
  #takingOver: Promise<void> | null = null
  #takeOverAgain = false
  /**
   * Takeovers of a run that failed here, and when the last one did: after a few, the run is failed
   * rather than retried for ever. A run not tried again here for a while ended, or went elsewhere.
   */
  readonly #takeOverFailures = new Map<string, { count: number, at: number }>()
  /** When this replica last confirmed its leases. */
  #renewedAt = Date.now()
  /** Set when runs were queued (or a takeover filled every free slot): worth looking again when one ends. */
  #mayHaveQueued = false

  constructor (host: LeaseHost, options: LeaseKeeperOptions) {
    this.#host = host
    this.#options = options
  }

  /** Starts renewing and sweeping; the first sweep runs at once, to take up what a previous process left. */
  start (): void {
    if (this.#renewal !== undefined) return
    this.#renewedAt = Date.now()
    // Renew well before expiry: a third of the lease, so two missed renewals still hold it.
    this.#renewal = setInterval(() => { this.#renew().catch(() => {}) }, Math.max(250, Math.floor(this.#options.leaseMs / 3)))
    this.#renewal.unref()
    this.#sweeper = setInterval(() => { this.#sweep().catch(() => {}) }, SWEEP_INTERVAL_MS)
    this.#sweeper.unref()
    setImmediate(() => { this.#sweep().catch(() => {}) })
  }

  /**
   * Resolves once no sweep or takeover is under way: none starts another run once the engine stops
   * accepting, so the runs driven here are then all known.
   */
  async quiesce (): Promise<void> {
    await this.#sweeping?.catch(() => {})
    await this.#takingOver?.catch(() => {})
  }

  /**
   * Stops renewing and sweeping. Only once the runs driven here are done or handed back: a drain
   * may outlast a lease, and the runs it lets finish must stay this replica's meanwhile.
   */
  stop (): void {
    clearInterval(this.#renewal)
    clearInterval(this.#sweeper)
  }

  /** A run was queued for want of room: look for it again when a slot frees up. */
  noteQueued (): void {
    this.#mayHaveQueued = true
  }

  /** A run driven here ended: take up a queued one now rather than at the next sweep, if any may wait. */
  slotFreed (): void {
    if (!this.#host.accepting() || !this.#mayHaveQueued) return
    this.#mayHaveQueued = false
    this.#takeOver().catch((err) => this.#options.log.warn({ err }, 'could not take up queued runs'))
  }

  async #renew (): Promise<void> {
    const { drivers } = this.#host
    const ids = [...drivers.keys()]
    if (ids.length === 0) return
    let held: Set<string>
    const asked = Date.now()
    const { metrics } = this.#options.telemetry
    try {
      held = new Set(await this.#options.store.renewLeases(this.#host.replicaId, ids, this.#options.leaseMs))
      this.#renewedAt = asked
      metrics.leaseRenewals.inc({ result: 'ok' })
    } catch (err) {
      metrics.leaseRenewals.inc({ result: 'failed' })
      this.#options.log.warn({ err }, 'could not renew leases')
      // Unconfirmed for most of a lease: another replica may take these runs any moment now. Stop
      // driving them before it does, rather than both sending calls.
      if (Date.now() - this.#renewedAt > this.#options.leaseMs * 0.8) {
        for (const driver of drivers.values()) driver.stop(new RunStop('lease_lost', 'this replica could not renew its leases'))
      }
      return
    }
    for (const id of ids) {
      if (!held.has(id)) drivers.get(id)?.stop(new RunStop('lease_lost', 'this replica lost the run\'s lease'))
    }
  }

  /** Once a second (one at a time): see the class's comment. */
  async #sweep (): Promise<void> {
    if (this.#sweeping !== null) return
    this.#sweeping = this.#sweepOnce().finally(() => { this.#sweeping = null })
    await this.#sweeping
  }

  async #sweepOnce (): Promise<void> {
    const { store, log } = this.#options
    // Each part on its own: one that fails (storage, say) must not keep the others from their turn.
    const part = async (what: string, work: () => Promise<void>): Promise<void> => {
      try {
        await work()
      } catch (err) {
        log.warn({ err, part: what }, 'sweep failed')
      }
    }
    // First, and while draining too: the runs a drain lets finish can still be cancelled.
    await part('cancels', async () => { await this.#cancelsAskedElsewhere() })
    if (!this.#host.accepting()) return
    if (this.#firstSweep) {
      this.#firstSweep = false
      // SQLite is held by this process alone (its file lock): every lease in it belonged to a
      // process that is gone, so its runs are taken up now rather than when the leases expire.
      await part('leases of a previous process', async () => {
        if (store.kind !== 'sqlite') return
        const released = await store.releaseAllLeases(this.#host.replicaId)
        if (released > 0) log.info({ runs: released }, 'releasing the leases of a previous process')
      })
    }
    await part('takeover', async () => { await this.#takeOver() })
    await part('waiting runs past their deadline', async () => {
      for (const run of await store.expiredWaitingRuns(Date.now(), SWEEP_BATCH)) {
        if (!this.#host.accepting()) return
        // One run that cannot be resumed must not hold up the others.
        await this.#host.resumeUnanswered(run, 'the run reached its timeout before the caller answered')
          .catch((err) => log.warn({ err, runId: run.id }, 'could not end a waiting run at its deadline'))
      }
    })
    await part('callbacks', async () => { await this.#options.callbacks.deliverDue() })
  }

  /**
   * How a cancel asked through another replica (which could only record it: see RunEngine.cancel)
   * reaches a step in progress here: its driver stops, and the run ends `cancelled`. (A driver
   * also reads the recorded cancel before each step: see RunDriver.)
   */
  async #cancelsAskedElsewhere (): Promise<void> {
    const { drivers, replicaId } = this.#host
    if (drivers.size === 0) return
    for (const id of await this.#options.store.cancelRequested(replicaId)) {
      drivers.get(id)?.stop(new RunStop('cancelled', 'the run was cancelled'))
    }
  }

  /**
   * Takes up runs nobody drives, as far as this replica has room: queued runs (created at a full
   * replica, or whose creator died before starting them), and runs whose replica stopped renewing
   * its lease (died, or stalled). Each resumes from its last stored step. One at a time: a call
   * made meanwhile runs once more after it.
   */
  async #takeOver (): Promise<void> {
    if (this.#takingOver !== null) {
      this.#takeOverAgain = true
      return await this.#takingOver
    }
    this.#takingOver = (async () => {
      do {
        this.#takeOverAgain = false
        await this.#takeOverOnce()
      } while (this.#takeOverAgain && this.#host.accepting())
    })().finally(() => { this.#takingOver = null })
    return await this.#takingOver
  }

  async #takeOverOnce (): Promise<void> {
    if (!this.#host.accepting()) return
    this.#forgetOldFailures()
    const { store, admission, leaseMs } = this.#options
    const { replicaId } = this.#host
    // Runs queued past their deadline are ended whatever the room: they will not run.
    for (const run of await store.claimExpiredQueuedRuns(replicaId, leaseMs, SWEEP_BATCH)) {
      this.#host.start(run, [], { stop: new RunStop('timeout', `the run reached its timeout of ${(run.params as unknown as RunParams).timeout_ms} ms while queued`) })
    }
    const room = admission.reserveUpTo(SWEEP_BATCH)
    if (room === 0) return
    let claimed: RunRecord[]
    try {
      claimed = await store.claimAbandonedRuns(replicaId, leaseMs, room)
    } finally {
      admission.release(room)
    }
    if (claimed.length === room) this.#mayHaveQueued = true
    for (const run of claimed) {
      const lease: Lease = { owner: replicaId, token: run.lease_token }
      try {
        // Our own run, whose lease ran out while we could not renew it: its old driver stops first.
        const stale = this.#host.drivers.get(run.id)
        if (stale !== undefined) {
          stale.stop(new RunStop('lease_lost', 'the run was taken over'))
          await stale.done
        }
        if (!this.#host.accepting()) {
          await store.releaseRun(run.id, lease)
          continue
        }
        if (run.required_action !== null) {
          // Taken out of requires_action by a caller's outputs (or a cancel) whose replica died
          // before storing them: it waits again, and the caller's retry will be accepted.
          await store.returnToWaiting(run.id, lease)
          continue
        }
        const messages = await store.getMessages(run.id)
        const resumed = run.status === 'queued' ? undefined : resumedStep(run.steps + 1, await this.#stepEvents(run))
        // Parked on results posted later (SPEC §13) until its first deadline: its step goes on here.
        const fromWait = run.pending_calls == null ? {} : { afterWait: true, initialWrite: { messages: [], patch: { pending_calls: null }, events: [] } }
        this.#host.start(run, messages, { resumed, ...fromWait })
        this.#takeOverFailures.delete(run.id)
      } catch (err) {
        await this.#takeOverFailed(run, lease, err)
      }
    }
  }

  /**
   * A run that could not be resumed (its stored state unreadable, say): released for another try,
   * and after a few tries here, failed, so that it neither loops for ever nor blocks its callers.
   */
  async #takeOverFailed (run: RunRecord, lease: Lease, err: unknown): Promise<void> {
    const { store, log } = this.#options
    const failures = (this.#takeOverFailures.get(run.id)?.count ?? 0) + 1
    this.#takeOverFailures.set(run.id, { count: failures, at: Date.now() })
    log.error({ err, runId: run.id, failures }, 'could not take a run over')
    if (failures < MAX_TAKEOVER_FAILURES) {
      await store.releaseRun(run.id, lease).catch(() => {})
      return
    }
    this.#takeOverFailures.delete(run.id)
    const now = Date.now()
    const patch = { status: 'failed' as const, stop_reason: 'error', completed_at: now, error: { code: 'RUN_ERR_INTERNAL', message: 'The run could not be resumed after its replica stopped; the error has been logged.' } }
    await store.writeRun(run, lease, {
      patch,
      events: [{ seq: run.event_count + 1, type: 'run.failed', at: now, data: toRunObject({ ...run, ...patch }) }]
    }).catch(async () => { await store.releaseRun(run.id, lease).catch(() => {}) })
  }

  /**
   * Forgets the failed takeovers of runs not tried again here for ten leases: a run released after
   * a failure is claimed again within a sweep or two, so one not seen since ended, or is driven
   * elsewhere. Keeps the map from growing with every run that ever failed a takeover here.
   */
  #forgetOldFailures (): void {
    const before = Date.now() - 10 * this.#options.leaseMs
    for (const [id, { at }] of this.#takeOverFailures) if (at < before) this.#takeOverFailures.delete(id)
  }

  /** The events of the step in progress of a run: all of them, however many pages. */
  async #stepEvents (run: RunRecord): Promise<EventRecord[]> {
    const events: EventRecord[] = []
    let after = run.step_events_after
    for (;;) {
      const page = await this.#options.store.listEvents(run.id, after, EVENTS_PAGE)
      events.push(...page)
      if (page.length < EVENTS_PAGE) return events
      after = page[page.length - 1]!.seq
    }
  }
}
