import { setMaxListeners } from 'node:events'
import type { Message, MessageParam, ToolResultBlockParam, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import type { Span } from '@opentelemetry/api'
import { linkedController } from '../lib/abort.js'
import { retry, retryDelay, sleep, type Backoff } from '../lib/retry.js'
import type { Log } from '../logger.js'
import { containerPatch } from '../model/code-execution.js'
import { ModelCallError, type ModelClient, type ModelRequest } from '../model/model-client.js'
import type { CompletedToolUse } from '../model/message-accumulator.js'
import type { ClientTool, RunParams, StopReason } from '../schemas/runs.js'
import { LeaseLostError, type Lease, type RunPatch, type RunRecord, type RunWrite, type Store, type ToolRecord, type UsageEntry } from '../store/index.js'
import { StepDispatcher, type ToolConcurrency } from '../tools/dispatcher.js'
import type { ToolRegistry } from '../tools/registry.js'
import type { WebhookClient } from '../tools/webhook/webhook-client.js'
import { pinnedToolRecord } from '../tools/mcp/mcp-registry.js'
import type { ToolSource } from '../tools/tool-source.js'
import { toolSources } from '../tools/tool-sources.js'
import type { ToolHealth } from '../tools/health/tool-health.js'
import type { Telemetry } from '../telemetry/index.js'
import type { BudgetGuard, CostControl } from '../cost/index.js'
import { ApprovalGate } from './approvals.js'
import { BATCH_TOOL_NAME, batchShape } from './batch-tool.js'
import { EventLog, STORAGE_BACKOFF } from './event-log.js'
import { modelRequest } from './model-request.js'
import { PendingCalls } from './pending-calls.js'
import { resumedCalls, type ResumedStep } from './resume.js'
import { toRunObject } from './run-object.js'
import { RunStop } from './run-stop.js'
import { ToolCalls } from './tool-call.js'

/** What a resumed run stores before its next step: the caller's outputs, with their events. */
export interface InitialWrite {
  readonly messages: MessageParam[]
  readonly patch: RunPatch
  readonly events: ReadonlyArray<{ type: string, data: Record<string, unknown> }>
}

/** Where a driver picks its run up, beyond its stored state. */
export interface DriverStart {
  /** A resumed run's first write (see InitialWrite). */
  readonly initialWrite?: InitialWrite
  /** A run taken over mid-step (see ResumedStep). */
  readonly resumed?: ResumedStep
  /** The run's tools as read a moment ago (by its create): the first step uses them rather than read them again. */
  readonly tools?: ToolRecord[]
  /**
   * Why a queued run ends before it starts (a cancel, its deadline): the driver is stopped from
   * the outset, so the run ends with no `run.started` event and no `started_at`. A stop given
   * after `drive()` is called comes too late for that: drive() marks a queued run started before
   * its first wait.
   */
  readonly stop?: RunStop
  /**
   * The run comes out of a wait (for approvals, SPEC §12, or for results posted later, SPEC §13)
   * with `resumed`, its step: that step is finished and stored even if the run stops meanwhile (a
   * cancel, its deadline), every call answered, and it is no takeover (no `run.resumed` event).
   */
  readonly afterWait?: boolean
}

/** What every driver of this process shares. */
export interface DriverDeps {
  readonly store: Store
  readonly registry: ToolRegistry
  readonly model: ModelClient
  readonly webhooks: WebhookClient
  /** Where calls of MCP servers' tools go (SPEC §11); none: runs have only webhook tools. */
  readonly mcp?: ToolSource | undefined
  /** The guards around every tool call (see ToolHealth). */
  readonly toolHealth: ToolHealth
  /** Prices and budgets: each driver keeps to its run's through a guard of its own (src/cost/). */
  readonly cost: CostControl
  readonly toolConcurrency: ToolConcurrency
  readonly log: Log
  /** Retries of a failing model call before the run fails. */
  readonly modelMaxRetries: number
  readonly telemetry: Telemetry
  /** Whether someone on this replica follows the run's events now (see EventLog). */
  readonly watched?: (runId: string) => boolean
}

/**
 * The waits between a step's model attempts when the API asks for none (retry-after-ms or
 * Retry-After): 0.5 s doubling to 16 s, each between three quarters of the full wait and all of it.
 * The retries' number is the service's (MODEL_MAX_RETRIES), set per driver.
 */
const MODEL_BACKOFF: Omit<Backoff, 'maxRetries'> = { baseMs: 500, factor: 2, capMs: 16_000, jitter: 0.25 }

const TERMINAL_STOP_REASONS: Record<string, StopReason> = {
  end_turn: 'end_turn',
  stop_sequence: 'stop_sequence',
  refusal: 'refusal',
  max_tokens: 'max_tokens',
  // Cut by the context window rather than by max_tokens: the same for the caller.
  model_context_window_exceeded: 'max_tokens'
}

/**
 * Drives one run from its stored state to a final state (SPEC §5): each step calls the model,
 * dispatches each read_only or idempotent tool_use the moment it is complete in the stream (a
 * side_effecting one once the message is complete and stored), and stores the assistant message
 * and every result in one transaction. A failing tool is a result; a failing model call is
 * retried; the run's deadline, a cancel or shutdown abort everything in flight at once. A driver
 * can also take a run over mid-step, from its stored events (see ResumedStep).
 */
export class RunDriver {
  readonly #deps: DriverDeps
  readonly #lease: Lease
  readonly #params: RunParams
  readonly #controller = new AbortController()
  readonly #history: MessageParam[]
  /** Names of every tool the history mentions: each must stay defined for the model (see modelRequest). */
  readonly #historyTools = new Set<string>()
  readonly #log: Log
  readonly events: EventLog
  /** Settles with the run once it is final, or once this driver gave it up (see `handback`). */
  readonly done: Promise<RunRecord>
  /** Why the driver stopped without finishing the run, if it did. */
  handback: 'shutdown' | 'lease_lost' | 'storage' | null = null
  #resolveDone!: (run: RunRecord) => void
  #deadlineTimer: NodeJS.Timeout | undefined
  readonly #initialWrite: InitialWrite | undefined
  #resumed: ResumedStep | undefined
  #prefetchedTools: ToolRecord[] | undefined
  readonly #clientTools: Map<string, { definition: ClientTool, check: (input: unknown) => string | null }>
  /** Shutdown has begun: no new step starts. */
  #draining = false
  /** The spans of this driving of the run and of its step in progress (no-ops with tracing off). */
  #span: Span | undefined
  #stepSpan: Span | undefined
  readonly #toolCalls: ToolCalls
  /** The MCP tools the run pinned when it started (SPEC §11). */
  readonly #mcpTools: ToolRecord[]
  readonly #modelBackoff: Backoff
  readonly #budget: BudgetGuard
  readonly #approvals: ApprovalGate
  /** The first step finishes a wait (see DriverStart.afterWait). */
  #afterWait: boolean
  /** Calls of the step in progress whose tools answer later (SPEC §13). */
  readonly #pending: PendingCalls

  constructor (deps: DriverDeps, run: RunRecord, lease: Lease, history: MessageParam[], from: DriverStart = {}) {
    this.#deps = deps
    this.#lease = lease
    this.#params = run.params as unknown as RunParams
    this.#history = history
    this.#initialWrite = from.initialWrite
    this.#resumed = from.resumed
    this.#prefetchedTools = from.tools
    this.#approvals = new ApprovalGate(this.#params)
    this.#afterWait = from.afterWait === true && from.resumed !== undefined
    this.#mcpTools = (this.#params.mcp_tools ?? []).map((t) => pinnedToolRecord(run.tenant_id, t))
    this.#clientTools = new Map((this.#params.client_tools ?? []).map((t) => [t.name, { definition: t, check: deps.registry.compileSchema(t.input_schema) }]))
    // One listener per step and per wait on the run's signal at most; never a leak to warn about.
    setMaxListeners(0, this.#controller.signal)
    if (from.stop !== undefined) this.#controller.abort(from.stop)
    for (const message of history) this.#noteToolNames(message)
    this.#log = deps.log.child({ runId: run.id })
    const watched = deps.watched
    this.events = new EventLog(deps.store, run, lease, this.#log, {
      observe: deps.telemetry.metrics.observer(run.model),
      // Once the run stops (cancel, deadline, shutdown), storage failures are not waited out.
      signal: this.#controller.signal,
      ...(watched === undefined ? {} : { watched: () => watched(run.id) })
    })
    this.#pending = new PendingCalls({ store: deps.store, events: this.events, log: this.#log, runSignal: this.#controller.signal })
    this.#toolCalls = new ToolCalls({
      registry: deps.registry,
      sourceOf: toolSources(deps.webhooks, deps.mcp),
      health: deps.toolHealth,
      events: this.events,
      log: this.#log,
      runSignal: this.#controller.signal,
      stepSpan: () => this.#stepSpan,
      batchTool: this.#params.batch_tool === true,
      pending: this.#pending
    })
    this.#modelBackoff = { ...MODEL_BACKOFF, maxRetries: deps.modelMaxRetries }
    this.#budget = deps.cost.guard(run)
    this.done = new Promise((resolve) => { this.#resolveDone = resolve })
  }

  /**
   * Shutdown has begun: let the step in progress finish and be stored, then hand the run back
   * rather than start another step (SPEC §7).
   */
  drain (): void {
    this.#draining = true
  }

  /** Stops the run from outside: everything in flight is aborted at once. */
  stop (reason: RunStop): void {
    if (!this.#controller.signal.aborted) this.#controller.abort(reason)
  }

  /** Runs the loop to the end. Never rejects. */
  async drive (): Promise<void> {
    const run = this.events.run
    this.#span = this.#deps.telemetry.tracing.startRun(run)
    const remaining = run.deadline_at - Date.now()
    const timeout = (): void => this.stop(new RunStop('timeout', `the run reached its timeout of ${this.#params.timeout_ms} ms`))
    if (remaining <= 0) timeout()
    else this.#deadlineTimer = setTimeout(timeout, remaining)
    try {
      if (this.#initialWrite !== undefined) {
        const { messages, patch, events } = this.#initialWrite
        for (const event of events) this.events.emit(event.type, event.data)
        this.#append(messages)
        await this.events.commit({ messages, patch })
      }
      // A run claimed (queued, taken over) or resumed after a cancel was recorded never starts.
      this.#honourCancelAsked()
      if (this.#resumed !== undefined && !this.#afterWait) {
        this.events.emit('run.resumed', { step: this.#resumed.step, replica: this.#lease.owner, after_model_call: this.#resumed.message !== undefined })
        this.#log.info({ step: this.#resumed.step }, 'run taken over')
      }
      if (run.status === 'queued' && !this.#controller.signal.aborted) {
        const started: RunPatch = { status: 'running', started_at: Date.now() }
        this.events.emit('run.started', toRunObject({ ...run, ...started }))
        await this.events.commit({ patch: started })
      }
      await this.#loop()
    } catch (err) {
      await this.#failed(err)
    } finally {
      clearTimeout(this.#deadlineTimer)
      this.#ended()
      this.#resolveDone(this.events.run)
    }
  }

  async #loop (): Promise<void> {
    for (;;) {
      this.#honourCancelAsked()
      // A step that waited (approvals, results posted later) is stored, stopped or not: its calls get their results.
      if (this.#afterWait) this.#afterWait = false
      else this.#throwIfStopped()
      // A run resumed after its last allowed step (which asked for client tools) ends here.
      if (this.events.run.steps >= this.#params.max_steps) {
        await this.#finish('completed', 'max_steps')
        return
      }
      if (this.#draining && this.events.run.steps > 0) throw new RunStop('shutdown', 'this replica is shutting down')
      const step = this.events.run.steps + 1
      const { stop, last } = await this.#inStepSpan(step, async () => await this.#step(step))
      if (stop === 'requires_action' || stop === 'parked') return
      if (stop !== null) {
        await this.#finish('completed', stop, null, last)
        return
      }
      this.#throwIfStopped()
    }
  }

  /**
   * One model call and its tool calls; answers the stop reason if the run is done. The step is
   * stored here, unless it is the run's last: then `last` holds its write, stored with the run's end.
   */
  async #step (step: number): Promise<{ stop: StopReason | 'requires_action' | 'parked' | null, last?: Omit<RunWrite, 'events'> }> {
    const run = this.events.run
    // A read that fails (a database failing over, say) is retried as the run's writes are.
    const webhookRecords = this.#prefetchedTools ?? await retry(STORAGE_BACKOFF, async () => await this.#deps.store.getTools(run.tenant_id, this.#params.tools), { signal: this.#controller.signal })
    this.#prefetchedTools = undefined
    // The run's MCP tools are the definitions it started with, never read again.
    const records = this.#mcpTools.length === 0 ? webhookRecords : [...webhookRecords, ...this.#mcpTools]
    const tools = new Map(records.map((t) => [t.name, t]))
    const resumed = this.#resumed?.step === step && this.#resumed.message !== undefined ? this.#resumed : undefined
    this.#resumed = undefined
    let answer: StepAnswer
    if (resumed !== undefined) {
      answer = this.#recover(step, resumed, tools)
    } else {
      const request = modelRequest({
        model: run.model, params: this.#params, tools: records, clientTools: this.#params.client_tools ?? [], historyTools: this.#historyTools, history: this.#history, container: run.container_id
      })
      // A call the run's or its tenant's budget cannot afford is not made (SPEC §17).
      const exhausted = await this.#budget.check(run, request)
      if (exhausted !== null) {
        this.events.emit('run.budget_exhausted', { step, ...exhausted })
        return { stop: 'budget_exhausted' }
      }
      this.events.emit('step.started', { step })
      answer = await this.#callModel(step, request, tools)
    }
    const { message, calls, clientComplete, held } = answer
    // The history is still the one the model call was sent: this step's messages are appended later.
    const account = this.#budget.account(run, run.usage, message, this.#history.length)
    const usage = account.usage
    for (const warning of account.warnings) this.events.emit('run.budget_warning', warning)

    const toolUses = message.content.filter((b): b is ToolUseBlock => b.type === 'tool_use')
    const cutOff = message.stop_reason === 'max_tokens' ? toolUses[toolUses.length - 1] : undefined
    const clientCalls: ToolUseBlock[] = []
    for (const toolUse of toolUses) {
      if (calls.has(toolUse.id) || held.has(toolUse.id)) continue
      const client = this.#clientTools.get(toolUse.name)
      if (client !== undefined && clientComplete.has(toolUse.id)) {
        // The caller runs it: checked here, then listed in required_action, unless the turn is over.
        const problem = client.check(toolUse.input)
        if (problem !== null) {
          calls.set(toolUse.id, Promise.resolve(this.#toolCalls.notCalled(step, toolUse, `Tool ${toolUse.name} was not called: invalid input: ${problem}`)))
        } else if (message.stop_reason !== 'tool_use') {
          calls.set(toolUse.id, Promise.resolve(this.#toolCalls.notCalled(step, toolUse, `Tool ${toolUse.name} was not called: the model ended its turn (${String(message.stop_reason)}).`)))
        } else {
          clientCalls.push(toolUse)
        }
        continue
      }
      // Not dispatched while streaming: its input was not complete JSON.
      const why = toolUse === cutOff
        ? `Tool ${toolUse.name} was not called: its tool_use block was cut off by max_tokens before its input was complete.`
        : `Tool ${toolUse.name} was not called: its input was not a valid JSON object.`
      calls.set(toolUse.id, Promise.resolve(this.#toolCalls.notCalled(step, toolUse, why)))
    }
    const waiting = new Set([...clientCalls.map((c) => c.id), ...held])
    const answered = toolUses.filter((u) => !waiting.has(u.id))
    const results = await Promise.all(answered.map(async (toolUse) => await calls.get(toolUse.id)!))
    // Handing the run back (shutdown, lost lease): the results of calls cut short are not real
    // results, so the step is not stored; whoever resumes the run decides what those calls became.
    const stop = this.#controller.signal.reason
    if (stop instanceof RunStop && (stop.reason === 'shutdown' || stop.reason === 'lease_lost')) throw stop
    // Calls whose tools answer later (SPEC §13): their results now, or the run waits on them, held
    // by no replica (unless a reviewer is to decide first: the decision takes the step up again).
    if (this.#pending.size > 0) {
      const later = await this.#pending.resolve(step)
      for (const [i, toolUse] of answered.entries()) results[i] = later.results.get(toolUse.id) ?? results[i]!
      if (later.waiting.length > 0 && held.size === 0) {
        await this.#pending.park(step, later.waiting, this.#lease)
        return { stop: 'parked' }
      }
    }

    const counters: RunPatch = {
      steps: step,
      usage,
      output: message.content,
      tool_calls_total: run.tool_calls_total + results.length,
      tool_calls_errors: run.tool_calls_errors + results.filter((r) => r.is_error === true).length,
      ...containerPatch(message, run.container_id)
    }
    // Calls waiting for a reviewer: the step stops here, its other calls done (SPEC §12).
    if (held.size > 0) return { stop: await this.#approvals.wait(this.events, toolUses.filter((u) => held.has(u.id)), tools, this.#log, containerPatch(message, run.container_id)) }
    // The step's usage lines (SPEC §17) go with the write that stores the step, in its transaction.
    const lines = this.#budget.entries(run, message, account.cost, answered, results)
    if (clientCalls.length > 0) return { stop: await this.#awaitCaller(message, toolUses, results, clientCalls, counters, lines) }

    const messages: MessageParam[] = [{ role: 'assistant', content: message.content }]
    // Every tool_use gets its tool_result, first and in the model's order, so that the stored
    // transcript stays valid whatever the stop reason.
    if (results.length > 0) messages.push({ role: 'user', content: results })
    const stopReason = this.#stopReason(message, step)
    const patch = counters
    this.#append(messages)
    if (stopReason !== null) return { stop: stopReason, last: { messages, patch, usage: lines } }
    // The next step's tools are read with this write, rather than in a round trip of their own.
    const names = this.#params.tools
    this.#prefetchedTools = (await this.events.commit(names.length > 0 ? { messages, patch, usage: lines, readTools: names } : { messages, patch, usage: lines })) ?? undefined
    return { stop: null }
  }

  /**
   * The step asked for client tools: its webhook calls are done; store the assistant message and
   * their results, list the client calls in required_action, and stop until the caller answers.
   */
  async #awaitCaller (message: Message, toolUses: ToolUseBlock[], results: ToolResultBlockParam[], clientCalls: ToolUseBlock[], counters: RunPatch, usage: readonly UsageEntry[]): Promise<'requires_action'> {
    const byId = new Map(results.map((r) => [r.tool_use_id, r]))
    const patch: RunPatch = {
      ...counters,
      status: 'requires_action',
      required_action: { type: 'submit_tool_outputs', tool_calls: clientCalls.map((c) => ({ id: c.id, name: c.name, input: c.input })) },
      // Aligned with the model's tool_use blocks; null where the caller's output goes.
      pending_results: toolUses.map((u) => byId.get(u.id) ?? null)
    }
    const assistant: MessageParam = { role: 'assistant', content: message.content }
    this.events.emit('run.requires_action', toRunObject({ ...this.events.run, ...patch }))
    this.#append([assistant])
    await this.events.commit({ messages: [assistant], patch, usage })
    this.#log.info({ calls: clientCalls.length }, 'run waits for client tool outputs')
    return 'requires_action'
  }

  /** The model call of a step, retried on overload and the like; eager dispatch of its tool calls. */
  async #callModel (step: number, request: ModelRequest, tools: Map<string, ToolRecord>): Promise<StepAnswer> {
    for (let attempt = 1; ; attempt++) {
      // Each attempt's calls hang off their own signal: if the stream fails halfway, the calls it
      // already started are cancelled with it, and the retry starts from a clean slate.
      const attemptLink = linkedController(this.#controller.signal)
      const signal = attemptLink.signal
      // One listener per call in flight (64 by default): not a leak.
      setMaxListeners(0, signal)
      const dispatcher = new StepDispatcher(this.#params.parallelism, this.#deps.toolConcurrency, signal)
      const calls = new Map<string, Promise<ToolResultBlockParam>>()
      // read_only and idempotent calls start the moment their block is complete. A side_effecting
      // call waits for the whole message: if the stream broke and the model were asked again, its
      // new answer would carry new ids, and the side effect would happen twice. A call that must
      // follow a deferred one (around a parallel: false call) is deferred with it, in order.
      const deferred: CompletedToolUse[] = []
      let deferredSerial = false
      const clientComplete = new Set<string>()
      const held = new Set<string>()
      const incomplete = new Set<string>()
      const measure = this.#deps.telemetry.modelCall(this.#stepSpan, request)
      try {
        const message = await this.#deps.model.stream(request, {
          onText: (text) => this.events.emitDelta(step, text),
          onToolUse: (toolUse) => {
            if (!toolUse.inputComplete) {
              incomplete.add(toolUse.block.id)
              return
            }
            if (this.#clientTools.has(toolUse.block.name) && !tools.has(toolUse.block.name)) {
              clientComplete.add(toolUse.block.id)
              return
            }
            const tool = tools.get(toolUse.block.name)
            if (this.#approvals.needs(toolUse.block, tool)) {
              held.add(toolUse.block.id)
              return
            }
            // A batch_tool call is held back, or runs alone, as the strictest of its invocations' tools.
            const shape = tool ?? (toolUse.block.name === BATCH_TOOL_NAME ? batchShape(toolUse.block.input, tools) : undefined)
            const serial = shape?.parallel === false
            if (shape?.effect === 'side_effecting' || deferredSerial || (serial && deferred.length > 0)) {
              deferred.push(toolUse)
              deferredSerial ||= serial
              return
            }
            calls.set(toolUse.block.id, this.#toolCalls.dispatch(step, toolUse, tools, dispatcher, signal))
          }
        }, this.#controller.signal)
        measure.ok(message)
        // `incomplete`: tool_use blocks whose input was cut or broken, never sent: what a replica
        // resuming the step must not send either.
        this.events.emit('step.completed', { step, stop_reason: message.stop_reason, usage: message.usage, content: message.content, incomplete: [...incomplete], ...containerPatch(message, null) })
        // Before a held-back call is sent, the message that asked for it is stored: a replica that
        // takes the run over then knows the call may have been made, and does not ask again.
        if (deferred.length > 0) await this.events.flush()
        for (const toolUse of deferred) calls.set(toolUse.block.id, this.#toolCalls.dispatch(step, toolUse, tools, dispatcher, signal))
        // Unhook from the run's signal once every call of the step has its result.
        Promise.allSettled(calls.values()).then(attemptLink.dispose, attemptLink.dispose)
        return { message, calls, clientComplete, held }
      } catch (err) {
        measure.failed(err, this.#controller.signal.aborted)
        attemptLink.controller.abort(new RunStop('cancelled', 'the model call it belonged to failed'))
        await Promise.allSettled(calls.values())
        attemptLink.dispose()
        if (this.#controller.signal.aborted) throw this.#controller.signal.reason
        if (!(err instanceof ModelCallError) || !err.retryable) throw err
        const delay = retryDelay(this.#modelBackoff, attempt, { retryAfterMs: err.retryAfterMs, deadline: this.events.run.deadline_at })
        if (delay === null) throw err
        const delayMs = Math.round(delay)
        this.#log.warn({ step, attempt, delayMs, err }, 'model call failed; retrying')
        this.events.emit('step.retrying', { step, attempt, error: err.message, status: err.status ?? null, retry_in_ms: delayMs })
        await sleep(delay, this.#controller.signal)
      }
    }
  }

  /**
   * The step of a run taken over, after its model call: stored results are used as they are;
   * calls that were in flight are sent again if their tool is read_only or idempotent (the same
   * tool_use id, so the same idempotency key), and otherwise answered "outcome unknown"; calls
   * never sent are sent now.
   */
  #recover (step: number, resumed: ResumedStep, tools: Map<string, ToolRecord>): StepAnswer {
    const dispatcher = new StepDispatcher(this.#params.parallelism, this.#deps.toolConcurrency, this.#controller.signal)
    const calls = new Map<string, Promise<ToolResultBlockParam>>()
    const clientComplete = new Set<string>()
    const held = new Set<string>()
    this.#toolCalls.resuming(resumed)
    const resumedTools = {
      isClientTool: (name: string) => this.#clientTools.has(name) && !tools.has(name),
      effectOf: (name: string) => tools.get(name)?.effect
    }
    for (const call of resumedCalls(resumed, resumedTools)) {
      const { toolUse } = call
      if (call.action === 'stored') calls.set(toolUse.id, Promise.resolve(call.result))
      else if (call.action === 'client') clientComplete.add(toolUse.id)
      else if (call.action === 'pending') {
        calls.set(toolUse.id, Promise.resolve(this.#pending.waitFor(toolUse.id, resumed.accepted!.get(toolUse.id)!)))
      } else if (call.action === 'unknown') calls.set(toolUse.id, Promise.resolve(this.#toolCalls.notCalled(step, toolUse, 'outcome unknown: the call was in flight when its replica stopped', 'unknown')))
      else if (call.action === 'send') {
        const undecided = this.#approvals.undecided(toolUse, tools.get(toolUse.name), resumed.approved, this.#controller.signal.reason)
        if (undecided === 'held') held.add(toolUse.id)
        else if (undecided !== null) calls.set(toolUse.id, Promise.resolve(this.#toolCalls.notCalled(step, toolUse, undecided.notRun)))
        else calls.set(toolUse.id, this.#toolCalls.dispatch(step, { block: toolUse, index: call.index, inputComplete: true }, tools, dispatcher, this.#controller.signal))
      }
      // never_sent: answered with the step's other blocks whose input was never complete.
    }
    return { message: resumed.message! as Message, calls, clientComplete, held }
  }

  /** Whether the run ends after this step, and with what stop reason. */
  #stopReason (message: Message, step: number): StopReason | null {
    const terminal = message.stop_reason === null ? undefined : TERMINAL_STOP_REASONS[message.stop_reason]
    if (terminal !== undefined) return terminal
    if (message.stop_reason !== 'tool_use' && message.stop_reason !== 'pause_turn') {
      this.#log.warn({ stopReason: message.stop_reason }, 'unknown stop reason; ending the run as end_turn')
      return 'end_turn'
    }
    // Waiting for tool results when no tool was asked for: there is nothing to go on with.
    if (message.stop_reason === 'tool_use' && !message.content.some((b) => b.type === 'tool_use')) {
      this.#log.warn('stop reason tool_use without a tool_use block; ending the run as end_turn')
      return 'end_turn'
    }
    return step >= this.#params.max_steps ? 'max_steps' : null
  }

  /** Adds messages to the history the model is sent. */
  #append (messages: MessageParam[]): void {
    for (const message of messages) {
      this.#history.push(message)
      this.#noteToolNames(message)
    }
  }

  #noteToolNames (message: MessageParam): void {
    if (message.role !== 'assistant' || !Array.isArray(message.content)) return
    for (const block of message.content) if (block.type === 'tool_use') this.#historyTools.add(block.name)
  }

  /** Runs one step under its span. */
  async #inStepSpan<T> (step: number, work: () => Promise<T>): Promise<T> {
    const span = this.#deps.telemetry.tracing.startStep(this.#span, this.events.run.id, step)
    this.#stepSpan = span
    try {
      const result = await work()
      this.#deps.telemetry.tracing.endStep(span)
      return result
    } catch (err) {
      this.#deps.telemetry.tracing.endStep(span, err)
      throw err
    } finally {
      this.#stepSpan = undefined
    }
  }

  /** This driving of the run is over: its span ends, and a run given up is counted. */
  #ended (): void {
    const { metrics, tracing } = this.#deps.telemetry
    if (this.handback !== null) metrics.runsHandedBack.inc({ reason: this.handback })
    if (this.#span !== undefined) tracing.endRun(this.#span, this.events.run, this.handback)
  }

  /**
   * A cancel asked through another replica is recorded on the run (cancel_requested_at): seen here
   * in the run as last written, before each step (so a run resumed, taken over or claimed after the
   * cancel never starts another step), and by the lease keeper's sweep for a step in progress.
   */
  #honourCancelAsked (): void {
    if (this.events.run.cancel_requested_at !== null) this.stop(new RunStop('cancelled', 'the run was cancelled'))
  }

  #throwIfStopped (): void {
    if (this.#controller.signal.aborted) throw this.#controller.signal.reason
  }

  /** Stores the end of the run, with `last`, the write of the step that ended it, if any. */
  async #finish (status: 'completed' | 'failed' | 'cancelled', stopReason: StopReason, error: { code: string, message: string } | null = null, last?: Omit<RunWrite, 'events'>): Promise<void> {
    const now = Date.now()
    const patch: RunPatch = { ...last?.patch, status, stop_reason: stopReason, completed_at: now, error }
    // The final run object is due at the callback URL now; the engine delivers it (SPEC §4).
    if (this.events.run.callback_url !== null) Object.assign(patch, { callback_status: 'pending', callback_next_at: now })
    this.events.emit(`run.${status}`, toRunObject({ ...this.events.run, ...patch }))
    // If storage fails now, the event log keeps the step's messages for the last try (see recover).
    await this.events.commit({ ...(last?.messages === undefined ? {} : { messages: last.messages }), ...(last?.usage === undefined ? {} : { usage: last.usage }), patch })
    this.#log.info({ status, stopReason, steps: this.events.run.steps, toolCalls: this.events.run.tool_calls_total }, 'run finished')
  }

  /** Ends the run after whatever stopped its loop. */
  async #failed (err: unknown): Promise<void> {
    const reason = this.#controller.signal.aborted ? this.#controller.signal.reason : err
    try {
      if (reason instanceof RunStop) {
        // A write that failed as the run stopped (its retries end then) does not keep the end of
        // the run from its one try to be stored.
        if (reason.reason === 'timeout' || reason.reason === 'cancelled') this.events.recover()
        if (reason.reason === 'timeout') {
          await this.#finish('failed', 'timeout', { code: 'RUN_ERR_TIMEOUT', message: `The run did not finish within its timeout_ms (${this.#params.timeout_ms} ms).` })
        } else if (reason.reason === 'cancelled') {
          await this.#finish('cancelled', 'cancelled')
        } else {
          // Shutdown or a lost lease: the run is not over, it is somebody else's to finish.
          this.handback = reason.reason === 'shutdown' ? 'shutdown' : 'lease_lost'
          await this.events.flush().catch(() => {})
          this.#log.info({ reason: reason.reason }, 'run handed back')
        }
      } else if (err instanceof LeaseLostError || this.events.failure instanceof LeaseLostError) {
        this.handback = 'lease_lost'
        this.#log.warn('lease lost: another replica drives this run now')
      } else if (this.events.failure !== null) {
        // Storage kept failing through every retry. One last try to record the end of the run;
        // if that fails too, the lease runs out and the run is left to be taken over.
        this.#log.error({ err: this.events.failure }, 'storage failed; the run cannot go on')
        this.handback = 'storage'
        this.events.recover()
        await this.#finish('failed', 'error', { code: 'RUN_ERR_STORAGE', message: 'The run stopped because its storage was unavailable.' })
        this.handback = null
      } else if (err instanceof ModelCallError) {
        this.#log.warn({ err }, 'model call failed; the run fails')
        await this.#finish('failed', 'error', { code: err.code, message: `The model call failed: ${err.message}` })
      } else {
        this.#log.error({ err }, 'run failed unexpectedly')
        await this.#finish('failed', 'error', { code: 'RUN_ERR_INTERNAL', message: 'The run failed because of an internal error; it has been logged.' })
      }
    } catch (writeError) {
      this.#log.error({ err: writeError }, 'could not store the end of the run')
    }
  }
}

/** A step's model answer, with its tool calls under way. */
interface StepAnswer {
  readonly message: Message
  readonly calls: Map<string, Promise<ToolResultBlockParam>>
  /** Client tool calls whose input was complete. */
  readonly clientComplete: Set<string>
  /** Calls waiting for a reviewer's decision (SPEC §12): not made yet. */
  readonly held: Set<string>
}
