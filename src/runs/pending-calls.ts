import type { ToolResultBlockParam, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import { retry } from '../lib/retry.js'
import type { Log } from '../logger.js'
import { isoDate } from '../schemas/common.js'
import { LeaseLostError, type CallWait, type Lease, type PendingCallEntry, type Store, type ToolRecord } from '../store/index.js'
import { toolResult, type ToolResultContent } from '../tools/tool-result.js'
import type { EventLog } from './event-log.js'
import { STORAGE_BACKOFF } from './event-log.js'
import type { AcceptedCall } from './resume.js'
import { RunStop } from './run-stop.js'

/** A tool's async_timeout_ms when it sets none (SPEC §13). */
export const DEFAULT_ASYNC_TIMEOUT_MS = 3_600_000

/** What a run's pending calls need of its driver. */
export interface PendingCallsDeps {
  readonly store: Store
  readonly events: EventLog
  readonly log: Log
  /** The run's signal: a stop (cancel, deadline) ends every wait with a result that says why. */
  readonly runSignal: AbortSignal
}

/**
 * The calls of a run's step whose tools answered `202 Accepted` (SPEC §13): they wait for results
 * posted to their result_url (see pending-call-waits.ts), each until its deadline (its tool's
 * async_timeout_ms, never past the run's deadline). At the end of the step the driver asks which
 * have their result ({@link resolve}); if some still wait, the step is stored in its events and
 * the run is let go ({@link park}): no replica holds it, and the first result that completes the
 * set, the first deadline, or a cancel takes it up again, on any replica. Empty on every step
 * whose tools answer at once: nothing of this is on the path of such a step.
 */
export class PendingCalls {
  readonly #deps: PendingCallsDeps
  readonly #waiting = new Map<string, AcceptedCall>()

  constructor (deps: PendingCallsDeps) {
    this.#deps = deps
  }

  /** How many calls of the step wait for their result. */
  get size (): number {
    return this.#waiting.size
  }

  /**
   * A call its tool answered `202 Accepted`: event `tool_call.accepted`, and its wait stored for
   * the result to find (with its tool, whose secrets sign the result). Answers a stand-in result
   * that {@link resolve} replaces.
   */
  async accept (step: number, block: Pick<ToolUseBlock, 'id' | 'name'>, tool: ToolRecord, attempts: number, durationMs: number): Promise<ToolResultBlockParam> {
    const { events, store } = this.#deps
    const run = events.run
    const acceptedAt = Date.now()
    const deadline = Math.min(acceptedAt + (tool.async_timeout_ms ?? DEFAULT_ASYNC_TIMEOUT_MS), run.deadline_at)
    this.#waiting.set(block.id, { name: block.name, deadline_at: deadline })
    events.emit('tool_call.accepted', {
      step, tool_use_id: block.id, name: block.name, attempts, duration_ms: durationMs, status: 202, deadline: isoDate(deadline), deadline_at: deadline
    })
    // Stored before the step can end: a result posted at once finds its wait (its route also
    // waits a moment for it, for a tool faster than this write).
    await retry(STORAGE_BACKOFF, async () => {
      await store.callWaits.add({ run_id: run.id, tool_use_id: block.id, tenant_id: run.tenant_id, name: block.name, step, accepted_at: acceptedAt, deadline_at: deadline })
    }, { signal: this.#deps.runSignal }).catch((err) => this.#deps.log.warn({ err, toolUseId: block.id }, 'could not store a pending call; it waits until its deadline'))
    return toolResult(block.id, '', false)
  }

  /** A step taken up again: the call waited (see ResumedStep.accepted). Answers a stand-in result, as {@link accept}. */
  waitFor (id: string, call: AcceptedCall): ToolResultBlockParam {
    this.#waiting.set(id, call)
    return toolResult(id, '', false)
  }

  /** Whether the call waits for a result posted later. */
  has (id: string): boolean {
    return this.#waiting.has(id)
  }

  /**
   * At the end of step `step`, once its other calls are done: each waiting call gets its result if
   * it was posted, an `is_error` result if its deadline passed or the run stopped (cancel, its own
   * deadline), or else waits on. Each result is a `tool_call.completed` event. Answers the results
   * by call, and the calls that still wait.
   */
  async resolve (step: number): Promise<{ results: Map<string, ToolResultBlockParam>, waiting: PendingCallEntry[] }> {
    const { events, store, runSignal } = this.#deps
    const runId = events.run.id
    const stop = runSignal.reason instanceof RunStop ? runSignal.reason : undefined
    const now = Date.now()
    const due = [...this.#waiting].filter(([, call]) => stop !== undefined || call.deadline_at <= now).map(([id]) => id)
    // Closed first: a result posted from now on is refused (409), and one that came first wins.
    if (due.length > 0) await retry(STORAGE_BACKOFF, async () => await store.callWaits.close(runId, due))
    const rows = new Map((await retry(STORAGE_BACKOFF, async () => await store.callWaits.ofStep(runId, step))).map((r) => [r.tool_use_id, r]))
    const results = new Map<string, ToolResultBlockParam>()
    const waiting: PendingCallEntry[] = []
    for (const [id, call] of this.#waiting) {
      const row = rows.get(id)
      const state = row?.state ?? (due.includes(id) ? 'closed' : 'pending')
      if (state === 'pending') {
        waiting.push({ tool_use_id: id, name: call.name, deadline_at: call.deadline_at })
        continue
      }
      results.set(id, state === 'answered' ? this.#answered(step, row!) : this.#closed(step, id, call, row, stop))
    }
    for (const id of results.keys()) this.#waiting.delete(id)
    return { results, waiting }
  }

  /**
   * Lets the run go while `waiting` calls wait (SPEC §13): the step (its events) and what it waits
   * for are stored, then the run is held by no replica, until its first deadline at the latest.
   */
  async park (step: number, waiting: PendingCallEntry[], lease: Lease): Promise<void> {
    const { events, store } = this.#deps
    await events.commit({ patch: { pending_calls: waiting } })
    const until = Math.min(...waiting.map((c) => c.deadline_at))
    if (!await retry(STORAGE_BACKOFF, async () => await store.parkRun(events.run.id, lease, until))) throw new LeaseLostError(events.run.id)
    this.#deps.log.info({ step, calls: waiting.length }, 'run waits for results posted later')
  }

  #answered (step: number, row: CallWait): ToolResultBlockParam {
    const content = JSON.parse(row.content ?? '""') as ToolResultContent
    this.#deps.events.emit('tool_call.completed', {
      step, tool_use_id: row.tool_use_id, name: row.name, is_error: row.is_error, duration_ms: (row.answered_at ?? row.accepted_at) - row.accepted_at, attempts: 1, status: 202, outcome: row.is_error ? 'error' : 'ok', answered_later: true, content
    })
    return toolResult(row.tool_use_id, content, row.is_error, row.name)
  }

  #closed (step: number, id: string, call: AcceptedCall, row: CallWait | undefined, stop: RunStop | undefined): ToolResultBlockParam {
    const content = stop !== undefined
      ? `Tool ${call.name} was cancelled: ${stop.message} before its result came`
      : `Tool ${call.name} answered 202 Accepted but posted no result within its async_timeout_ms (${call.deadline_at - (row?.accepted_at ?? call.deadline_at)} ms)`
    // A call cut short by a cancel is no stored result (see resumedStep): a takeover finds its wait closed again.
    const outcome = stop?.reason === 'cancelled' ? 'cancelled' : 'timeout'
    this.#deps.events.emit('tool_call.completed', {
      step, tool_use_id: id, name: call.name, is_error: true, duration_ms: Date.now() - (row?.accepted_at ?? Date.now()), attempts: 1, status: 202, outcome, answered_later: true, content
    })
    return toolResult(id, content, true)
  }
}
