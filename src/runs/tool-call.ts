import type { Span } from '@opentelemetry/api'
import type { ToolResultBlockParam, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import type { Log } from '../logger.js'
import { callerOf, codeCallTool, isCodeCall, resultAsText } from '../model/code-execution.js'
import type { CompletedToolUse } from '../model/message-accumulator.js'
import type { RunRecord, ToolRecord } from '../store/index.js'
import type { StepDispatcher } from '../tools/dispatcher.js'
import type { ToolRegistry } from '../tools/registry.js'
import { errorOutcome, toolResult, type ToolOutcome, type ToolResultContent } from '../tools/tool-result.js'
import type { ToolSource } from '../tools/tool-source.js'
import type { ToolHealth } from '../tools/health/tool-health.js'
import type { EventLog } from './event-log.js'
import type { RunParams } from '../schemas/runs.js'
import { ApprovalGate } from './approvals.js'
import { batchRef, dispatchBatch, BATCH_TOOL_NAME, type BatchCalls } from './batch-tool.js'
import type { PendingCalls } from './pending-calls.js'
import type { ResumedStep } from './resume.js'
import { RunStop } from './run-stop.js'

/** What one run's tool calls need. */
export interface ToolCallsDeps {
  readonly registry: ToolRegistry
  /** Where a registered tool's calls go (see ToolSource). */
  readonly sourceOf: (tool: ToolRecord) => ToolSource
  /** The guards every call goes through, whatever its source: the result cache and the circuit breaker. */
  readonly health: ToolHealth
  readonly events: EventLog
  readonly log: Log
  /** The run's signal: its abort reason says why a call was cut short (cancelled, timeout...). */
  readonly runSignal: AbortSignal
  /** The span of the step in progress, the parent of each call's spans. */
  readonly stepSpan: () => Span | undefined
  /** Whether the run offers the batch meta-tool, `batch_tool` (SPEC §14). */
  readonly batchTool?: boolean
  /** Where calls answered `202 Accepted` wait for their results (SPEC §13). */
  readonly pending?: PendingCalls
}

/**
 * Turns one complete tool_use of a run into its tool_result (SPEC §5, §6): checks the tool and its
 * input, schedules the call under the step's ordering and concurrency rules, calls the tool's
 * source, and records `tool_call.*` events. Never rejects: whatever happens is a result.
 */
export class ToolCalls {
  readonly #deps: ToolCallsDeps
  /** A step taken over by this replica: what its batches' invocations became (see dispatchBatch). */
  #resumed: ResumedStep | undefined
  /** Which calls wait for a reviewer: a batch refuses those (made when a batch first needs it). */
  #approvals: ApprovalGate | undefined
  /** The run has code execution (SPEC §16): its calls' events say who made each, the model or its code. */
  readonly #codeExecution: boolean
  /** `{result_base}/runs/{run_id}/tool_calls/`: each call's result_url is this, its id, and `/result` (SPEC §13). */
  readonly #resultPrefix: string

  constructor (deps: ToolCallsDeps) {
    this.#deps = deps
    const run = deps.events.run
    this.#resultPrefix = `${(run.params as unknown as RunParams).result_base ?? ''}/runs/${run.id}/tool_calls/`
    this.#codeExecution = (deps.events.run.params as { code_execution?: unknown }).code_execution === true
  }

  /** `caller` (and the code execution call that made it) for a call's events, in a run with code execution. */
  #callerFields (block: Partial<Pick<ToolUseBlock, 'caller'>>): Record<string, string> {
    if (!this.#codeExecution) return NO_FIELDS
    const caller = callerOf(block as Pick<ToolUseBlock, 'caller'>)
    return caller.type === 'code' ? { caller: 'code', caller_tool_id: caller.tool_id } : DIRECT
  }

  /** The step being taken over: its batch_tool calls keep what their invocations got. */
  resuming (resumed: ResumedStep): void {
    this.#resumed = resumed
  }

  /** Checks a complete tool_use and schedules its call; resolves with its tool_result, never rejects. */
  async dispatch (step: number, toolUse: CompletedToolUse, tools: ReadonlyMap<string, ToolRecord>, dispatcher: StepDispatcher, signal: AbortSignal): Promise<ToolResultBlockParam> {
    try {
      if (toolUse.block.name === BATCH_TOOL_NAME && this.#deps.batchTool === true) {
        const resumed = this.#resumed?.step === step ? this.#resumed : undefined
        return await dispatchBatch(this.#batchCalls, step, toolUse.block, tools, dispatcher, signal, resumed)
      }
      return await this.#dispatchChecked(step, toolUse, tools, dispatcher, signal)
    } catch (err) {
      this.#deps.log.error({ err, toolUseId: toolUse.block.id }, 'tool call failed unexpectedly')
      return this.notCalled(step, toolUse.block, `Tool ${toolUse.block.name} failed inside Switchboard; the error has been logged.`)
    }
  }

  /** What a batch_tool call dispatches its invocations through: this run's calls. */
  readonly #batchCalls: BatchCalls = {
    dispatch: async (step, toolUse, tools, dispatcher, signal) => await this.dispatch(step, toolUse, tools, dispatcher, signal),
    notCalled: (step, block, message, outcome) => this.notCalled(step, block, message, outcome),
    needsApproval: (block, tool) => {
      this.#approvals ??= new ApprovalGate(this.#deps.events.run.params as unknown as RunParams)
      return this.#approvals.needs(block, tool)
    },
    events: { emit: (type, data) => this.#deps.events.emit(type, data) }
  }

  /** A tool_use answered without a call (unknown tool, invalid input, cut off): its event and result. */
  notCalled (step: number, block: Pick<ToolUseBlock, 'id' | 'name'> & Partial<Pick<ToolUseBlock, 'caller'>>, message: string, outcome: 'refused' | 'unknown' = 'refused'): ToolResultBlockParam {
    this.#deps.events.emit('tool_call.completed', {
      step, tool_use_id: block.id, name: block.name, is_error: true, duration_ms: 0, attempts: 0, status: null, outcome, content: message, ...batchRef(block.id), ...this.#callerFields(block)
    })
    return toolResult(block.id, message, true)
  }

  async #dispatchChecked (step: number, toolUse: CompletedToolUse, tools: ReadonlyMap<string, ToolRecord>, dispatcher: StepDispatcher, signal: AbortSignal): Promise<ToolResultBlockParam> {
    const { events, registry, runSignal } = this.#deps
    const { block } = toolUse
    const tool = tools.get(block.name)
    if (tool === undefined) {
      const available = [...tools.keys()].join(', ')
      return this.notCalled(step, block, `Tool ${block.name} is not available in this run${available !== '' ? ` (available: ${available})` : ''}.`)
    }
    const problem = registry.inputCheck(tool)(block.input)
    if (problem !== null) return this.notCalled(step, block, `Tool ${block.name} was not called: invalid input: ${problem}`)

    const run: RunRecord = events.run
    const caller = this.#callerFields(block)
    // A call made by the model's code (SPEC §16): the code waits for it in the API's container, so
    // that its attempts together end within CODE_CALL_TIMEOUT_CAP_MS (see there), whatever the tool's timeout.
    const fromCode = isCodeCall(block)
    const callTool = fromCode ? codeCallTool(tool) : tool
    let startedAt = 0
    let attempts = 0
    let outcome: ToolOutcome
    let circuit: string | undefined
    try {
      const result = await dispatcher.schedule({
        parallel: tool.parallel,
        limit: tool.max_concurrency === null ? null : { key: `${tool.tenant_id}\u0000${tool.name}`, max: tool.max_concurrency }
      }, async () => {
        startedAt = Date.now()
        return await this.#deps.health.guard(tool, block.input, async () => await this.#deps.sourceOf(tool).call(callTool, block.input, {
          runId: run.id,
          toolUseId: block.id,
          metadata: run.metadata,
          traceId: run.trace_id,
          span: this.#deps.stepSpan(),
          runDeadline: run.deadline_at,
          signal,
          // A batch's invocation (its id has an index) or a call of the model's code cannot answer later.
          resultUrl: fromCode || block.id.includes(':') ? undefined : `${this.#resultPrefix}${block.id}/result`
        }, {
          onAttempt: async (attempt) => {
            events.emit('tool_call.started', { step, tool_use_id: block.id, name: block.name, input: block.input, attempt, effect: tool.effect, ...batchRef(block.id), ...caller })
            // A side effect is only sent once the record that it may have happened is stored.
            if (tool.effect === 'side_effecting') await events.flush()
          },
          onRetry: (attempt, failed, durationMs, delayMs) => events.emit('tool_call.retrying', {
            step, tool_use_id: block.id, name: block.name, attempt, duration_ms: durationMs, status: failed.status, outcome: failed.kind, error: contentText(failed.content), retry_in_ms: delayMs, ...batchRef(block.id), ...caller
          })
        }))
      })
      outcome = result.outcome
      attempts = result.attempts
      circuit = result.circuit
    } catch (err) {
      // Anything but a stop is a fault of ours (answered by dispatch), not a call never made.
      if (!signal.aborted) throw err
      // The run stopped before the call's turn came: it was never sent.
      const reason = err instanceof Error ? err.message : 'the run stopped'
      outcome = errorOutcome('cancelled', `Tool ${block.name} was not called: ${reason}`)
    }
    if (outcome.kind === 'cancelled' && signal.aborted && runSignal.reason instanceof RunStop) {
      outcome = errorOutcome('cancelled', `Tool ${block.name} was cancelled: ${runSignal.reason.message}`)
    }
    const durationMs = startedAt === 0 ? 0 : Date.now() - startedAt
    // A 202: the result comes later (SPEC §13); its tool_call.completed is emitted when it does.
    if (outcome.kind === 'accepted' && this.#deps.pending !== undefined) return await this.#deps.pending.accept(step, block, tool, attempts, durationMs)
    // `circuit`: the tool's circuit breaker on this replica changed with this call (opened, or closed).
    const changed = circuit === undefined ? {} : { circuit }
    // The API takes only text for the model's code: an image or other block is flattened (its event
    // shows what the model got, and what a takeover sends again).
    const content = fromCode ? resultAsText(outcome.content) : outcome.content
    events.emit('tool_call.completed', {
      step, tool_use_id: block.id, name: block.name, is_error: outcome.isError, duration_ms: durationMs, attempts, status: outcome.status, outcome: outcome.kind, content, ...changed, ...batchRef(block.id), ...caller
    })
    // A side_effecting call's result is stored soon, not with the step's end: a takeover could
    // not learn it again (it would answer "outcome unknown").
    if (tool.effect === 'side_effecting' && attempts > 0) events.hurry()
    return toolResult(block.id, content, outcome.isError)
  }
}

const NO_FIELDS: Record<string, string> = {}
const DIRECT: Record<string, string> = { caller: 'direct' }

function contentText (content: ToolResultContent): string {
  return typeof content === 'string' ? content : content.map((b) => b.type === 'text' ? b.text : `[${b.type}]`).join('')
}
