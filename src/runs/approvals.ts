import type { ToolResultBlockParam, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import { AppError } from '../errors.js'
import type { Approvals, RunParams } from '../schemas/runs.js'
import type { RunPatch, RunRecord, ToolRecord } from '../store/index.js'
import { toolResult } from '../tools/tool-result.js'
import type { Log } from '../logger.js'
import type { EventLog } from './event-log.js'
import type { ResumedStep } from './resume.js'
import { toRunObject } from './run-object.js'
import { RunStop } from './run-stop.js'

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

  /**
   * A call of a step taken up again (after decisions, a takeover): null if it needs no decision
   * (any more); `held` if it waits again; or, if the run stopped meanwhile (`stop`: a cancel, its
   * deadline), the result it gets instead.
   */
  undecided (toolUse: Pick<ToolUseBlock, 'id' | 'name'>, tool: ToolRecord | undefined, approved: ReadonlySet<string> | undefined, stop: unknown): 'held' | { notRun: string } | null {
    if (!this.needs(toolUse, tool, approved)) return null
    return stop instanceof RunStop ? { notRun: undecidedText(stop.message) } : 'held'
  }

  /**
   * The step has calls that wait for a reviewer, and every other call is done: the run waits in
   * `requires_action` (approvals come before a caller's tools), and the reviewer may be told through
   * the callback URL (see Callbacks). The step stays in its events; the decisions resume it (see
   * decide in approval-waits.ts). `also`: what else the run shows while it waits (its code's
   * container, SPEC §16, whose expiry the decisions must come before).
   */
  async wait (events: EventLog, held: readonly ToolUseBlock[], tools: ReadonlyMap<string, ToolRecord>, log: Log, also: RunPatch = {}): Promise<'requires_action'> {
    const patch = { ...also, ...approvalWait(held, tools) }
    if (events.run.callback_url !== null) Object.assign(patch, { callback_status: 'pending', callback_next_at: Date.now() })
    events.emit('run.requires_action', toRunObject({ ...events.run, ...patch }))
    await events.commit({ patch })
    log.info({ calls: held.length }, 'run waits for approvals')
    return 'requires_action'
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
