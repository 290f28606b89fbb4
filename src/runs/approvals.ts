import type { MessageParam, ToolResultBlockParam, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import { AppError } from '../errors.js'
import type { Approvals, RunParams } from '../schemas/runs.js'
import type { EventRecord, Lease, RunPatch, RunRecord, Store, ToolRecord } from '../store/index.js'
import { toolResult } from '../tools/tool-result.js'
import { resumedStep, type ResumedStep } from './resume.js'
import type { DriverStart, RunDriver } from './run-driver.js'
import type { RunStop } from './run-stop.js'

/** A call that waits for a reviewer, as listed in a run's `required_action` (SPEC §12). */
export interface ApprovalCall {
  readonly tool_use_id: string
  readonly name: string
  readonly input: unknown
  readonly effect: string
}

/** One decision of `POST /runs/{id}/approvals`. */
export type Decision = Approvals['decisions'][number]

/** An event a decision stores, numbered when written. */
export interface DecisionEvent {
  readonly type: string
  readonly data: Record<string, unknown>
}

/**
 * Which calls of a run wait for a reviewer before they are made (SPEC §12): those of a tool
 * registered (or, for MCP, overridden) with `approval: "always"`, and those of the tools the run
 * lists in `require_approval`. A call already approved (its `tool_call.approved` event is stored)
 * never waits again, whichever replica resumes its step.
 */
export class ApprovalGate {
  readonly #required: ReadonlySet<string>

  constructor (params: RunParams) {
    this.#required = new Set(params.require_approval ?? [])
  }

  /** Whether the call waits for a decision. An unknown tool's call never does: it is refused at once. */
  needs (toolUse: Pick<ToolUseBlock, 'id' | 'name'>, tool: ToolRecord | undefined, approved: ReadonlySet<string> = NO_IDS): boolean {
    if (tool === undefined || approved.has(toolUse.id)) return false
    return tool.approval === 'always' || this.#required.has(toolUse.name)
  }
}

const NO_IDS: ReadonlySet<string> = new Set()

/**
 * What a run stores as it stops to wait for a reviewer: `requires_action` with the calls to
 * decide. The step itself (its assistant message, its results so far) stays in its events until
 * the step goes on, as a step in progress does: a takeover and a resume read it from there.
 */
export function approvalWait (held: readonly ToolUseBlock[], tools: ReadonlyMap<string, ToolRecord>): RunPatch {
  const calls: ApprovalCall[] = held.map((c) => ({ tool_use_id: c.id, name: c.name, input: c.input, effect: tools.get(c.name)?.effect ?? 'side_effecting' }))
  return { status: 'requires_action', required_action: { type: 'approve_tool_calls', tool_calls: calls } }
}

/** Whether a run waits for approvals (rather than for a caller's tool outputs). */
export function waitsForApproval (run: RunRecord): boolean {
  return run.status === 'requires_action' && run.required_action?.type === 'approve_tool_calls'
}

/** The calls a run waiting for approvals has not had decided yet. */
export function undecidedCalls (run: RunRecord): ApprovalCall[] {
  return (run.required_action?.tool_calls ?? []) as ApprovalCall[]
}

/**
 * Checks decisions against the calls a run waits on: each names one of them, none twice (a 400
 * that says what to fix otherwise). Answers the calls decided and those still waiting.
 */
export function checkDecisions (run: RunRecord, body: Approvals): { decided: Array<{ call: ApprovalCall, decision: Decision }>, remaining: ApprovalCall[] } {
  const calls = new Map(undecidedCalls(run).map((c) => [c.tool_use_id, c]))
  const seen = new Set<string>()
  const decided: Array<{ call: ApprovalCall, decision: Decision }> = []
  for (const decision of body.decisions) {
    const call = calls.get(decision.tool_use_id)
    if (call === undefined) {
      throw new AppError('RUN_ERR_INVALID_APPROVALS', `decisions names ${decision.tool_use_id}, which is not a call waiting for a decision: decide among ${[...calls.keys()].join(', ')}.`)
    }
    if (seen.has(decision.tool_use_id)) {
      throw new AppError('RUN_ERR_INVALID_APPROVALS', `decisions decides ${decision.tool_use_id} more than once: give one decision per call.`)
    }
    seen.add(decision.tool_use_id)
    decided.push({ call, decision })
  }
  return { decided, remaining: [...calls.values()].filter((c) => !seen.has(c.tool_use_id)) }
}

/** The text the model reads for a call the reviewer denied. */
export function deniedText (reason: string | undefined): string {
  return `Not run: denied by the reviewer: ${reason === undefined || reason.trim() === '' ? 'no reason given' : reason}`
}

/**
 * The events of decisions on step `step`: `tool_call.approved`, or `tool_call.denied` followed by
 * the denied call's `tool_call.completed` (its result, which a resume or takeover reads back).
 */
export function decisionEvents (step: number, decided: ReadonlyArray<{ call: ApprovalCall, decision: Decision }>): DecisionEvent[] {
  return decided.flatMap(({ call, decision }): DecisionEvent[] => {
    const reason = decision.reason === undefined ? {} : { reason: decision.reason }
    const base = { step, tool_use_id: call.tool_use_id, name: call.name }
    if (decision.approve) return [{ type: 'tool_call.approved', data: { ...base, ...reason } }]
    return [
      { type: 'tool_call.denied', data: { ...base, ...reason } },
      {
        type: 'tool_call.completed',
        data: { ...base, is_error: true, duration_ms: 0, attempts: 0, status: null, outcome: 'denied', content: deniedText(decision.reason) }
      }
    ]
  })
}

/** A step waiting for approvals with decisions added: approved calls go, denied ones have their result. */
export function withDecisions (resumed: ResumedStep, events: readonly DecisionEvent[]): ResumedStep {
  const results = new Map<string, ToolResultBlockParam>(resumed.results)
  const approved = new Set(resumed.approved ?? [])
  for (const event of events) {
    const id = event.data.tool_use_id as string
    if (event.type === 'tool_call.approved') approved.add(id)
    if (event.type === 'tool_call.completed') results.set(id, toolResult(id, event.data.content as string, true))
  }
  return { ...resumed, results, approved }
}

/** The result of a call still waiting for a decision when its run stopped (cancel, deadline). */
export function undecidedText (why: string): string {
  return `Not run: ${why} before the reviewer decided.`
}

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
    const messages = await store.getMessages(run.id)
    const resumed = withDecisions(resumedStep(step, await stepEvents(store, run)), events)
    const driver = host.start(run, messages, { initialWrite: { messages: [], patch: { required_action: null }, events }, resumed, afterApproval: true })
    return driver.events.run
  } catch (err) {
    await store.returnToWaiting(run.id, lease).catch(() => {})
    throw err
  }
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
  try {
    const messages = await store.getMessages(run.id)
    const resumed = resumedStep(run.steps + 1, await stepEvents(store, run))
    const driver = host.start(run, messages, { initialWrite: { messages: [], patch: { required_action: null }, events: [] }, resumed, afterApproval: true })
    driver.stop(stop)
    return driver
  } catch (err) {
    await store.returnToWaiting(run.id, lease).catch(() => {})
    throw err
  }
}

/** The stored events of a run's step in progress, however many pages. */
async function stepEvents (store: Store, run: RunRecord): Promise<EventRecord[]> {
  const events: EventRecord[] = []
  let after = run.step_events_after
  for (;;) {
    const page = await store.listEvents(run.id, after, 1000)
    events.push(...page)
    if (page.length < 1000) return events
    after = page[page.length - 1]!.seq
  }
}
