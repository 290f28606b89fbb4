import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import type { Approvals } from '../schemas/runs.js'
import type { EventRecord, Lease, RunPatch, RunRecord, Store } from '../store/index.js'
import { checkDecisions, decisionEvents, withDecisions, type DecisionEvent } from './approvals.js'
import { resumedStep, type ResumedStep } from './resume.js'
import type { DriverStart, RunDriver } from './run-driver.js'
import type { RunStop } from './run-stop.js'

/** What deciding needs of the engine: its store and lease, and how it starts a driver. */
export interface DecideHost {
  readonly store: Store
  readonly replicaId: string
  readonly leaseMs: number
  /** Starts driving a run taken from its wait, from its step (see DriverStart.afterApproval). */
  readonly start: (run: RunRecord, messages: MessageParam[], from: DriverStart) => RunDriver
  /** Wakes whoever on this replica follows the run's events. */
  readonly wake: (runId: string) => void
}

/**
 * Decisions on a run waiting for approvals (SPEC §12). The run is taken from its wait (only from
 * the wait `waiting` shows: null if it moved meanwhile), so two reviewers, or a reviewer and a
 * cancel, never both act. While calls are left undecided, the decisions' events are stored and
 * the run waits again for the rest, on no replica. Once every call is decided, the step goes on
 * here: approved calls are made, denied ones answered, and the run is driven from there.
 */
export async function decide (host: DecideHost, waiting: RunRecord, body: Approvals): Promise<RunRecord | null> {
  const { store, replicaId, leaseMs } = host
  const { decided, remaining } = checkDecisions(waiting, body)
  const run = await store.resumeWaitingRun(waiting.id, waiting.event_count, replicaId, leaseMs)
  if (run === null) return null
  const lease: Lease = { owner: replicaId, token: run.lease_token }
  const step = run.steps + 1
  const events = decisionEvents(step, decided)
  try {
    if (remaining.length > 0) {
      const now = Date.now()
      const { run: written } = await store.writeRun(run, lease, {
        patch: { required_action: { type: 'approve_tool_calls', tool_calls: remaining } },
        events: events.map((e, i) => ({ seq: run.event_count + i + 1, type: e.type, at: now, data: e.data }))
      })
      await store.returnToWaiting(run.id, lease)
      host.wake(run.id)
      return { ...written, status: 'requires_action', lease_owner: null }
    }
  } catch (err) {
    await store.returnToWaiting(run.id, lease).catch(() => {})
    throw err
  }
  const driver = await driveFromWait(host, run, { patch: { required_action: null }, events, resumed: (step) => withDecisions(step, events) }, async () => { await store.returnToWaiting(run.id, lease) })
  return driver.events.run
}

/**
 * Ends the wait of a run for approvals without decisions (a cancel, its deadline): the run is
 * taken and driven from its step, stopped with `stop`; calls still undecided are answered
 * "Not run", so that the stored transcript stays whole. Null if the run moved meanwhile.
 */
export async function endApprovalWait (host: DecideHost, waiting: RunRecord, stop: RunStop): Promise<RunDriver | null> {
  const { store, replicaId, leaseMs } = host
  const run = await store.resumeWaitingRun(waiting.id, waiting.event_count, replicaId, leaseMs)
  if (run === null) return null
  const lease: Lease = { owner: replicaId, token: run.lease_token }
  return await driveFromWait(host, run, { patch: { required_action: null }, stop }, async () => { await store.returnToWaiting(run.id, lease) })
}

/** How a run taken from a wait (see driveFromWait) goes on. */
export interface FromWait {
  /** What its first write clears of the wait (`required_action`, `pending_calls`). */
  readonly patch: RunPatch
  /** Events stored with that write (decisions, say). */
  readonly events?: readonly DecisionEvent[]
  /** What those events change of the step as stored. */
  readonly resumed?: (step: ResumedStep) => ResumedStep
  /** The run is stopped from the outset (a cancel, its deadline): its step is finished and stored, then it ends. */
  readonly stop?: RunStop
}

/**
 * Drives a run just taken from a wait (for approvals, or for results posted later, SPEC §13) from
 * its step, kept in its events: the step goes on, here, and no `run.resumed` is recorded. If the
 * driver cannot be started, `putBack` returns the run to its wait, never left held and stuck.
 */
export async function driveFromWait (host: DecideHost, run: RunRecord, from: FromWait, putBack: () => Promise<void>): Promise<RunDriver> {
  const { store } = host
  try {
    const messages = await store.getMessages(run.id)
    const stored = resumedStep(run.steps + 1, await stepEvents(store, run))
    const resumed = from.resumed === undefined ? stored : from.resumed(stored)
    const driver = host.start(run, messages, { initialWrite: { messages: [], patch: from.patch, events: from.events ?? [] }, resumed, afterWait: true })
    if (from.stop !== undefined) driver.stop(from.stop)
    return driver
  } catch (err) {
    await putBack().catch(() => {})
    throw err
  }
}

/** The stored events of a run's step in progress, however many pages. */
export async function stepEvents (store: Store, run: RunRecord): Promise<EventRecord[]> {
  const events: EventRecord[] = []
  let after = run.step_events_after
  for (;;) {
    const page = await store.listEvents(run.id, after, 1000)
    events.push(...page)
    if (page.length < 1000) return events
    after = page[page.length - 1]!.seq
  }
}
