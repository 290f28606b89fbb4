import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { MessageParam, ToolResultBlockParam } from '@anthropic-ai/sdk/resources/messages'
import { AppError } from '../errors.js'
import { abortable } from '../lib/abort.js'
import type { Log } from '../logger.js'
import type { ModelClient } from '../model/model-client.js'
import { FINAL_STATUSES, type Approvals, type CreateRun, type ToolOutputs } from '../schemas/runs.js'
import { CreateRefusedError, type EventRecord, type Lease, type NewEvent, type Page, type RunFilter, type RunRecord, type SigningSecret, type Store } from '../store/index.js'
import { ToolConcurrency } from '../tools/dispatcher.js'
import type { ToolRegistry } from '../tools/registry.js'
import type { WebhookClient } from '../tools/webhook/webhook-client.js'
import { ToolHealth } from '../tools/health/tool-health.js'
import { Telemetry } from '../telemetry/index.js'
import { CostControl, PriceTable } from '../cost/index.js'
import { RUN_NAME_SEPARATOR, type McpTools } from '../tools/mcp/index.js'
import type { RunToolsResolution } from '../tools/mcp/mcp-registry.js'
import { Admission } from './admission.js'
import { waitsForApproval } from './approvals.js'
import { decide, endApprovalWait, type DecideHost } from './approval-waits.js'
import { endPendingWait, parked, postResult, wakeIfAnswered, type PostedResult } from './pending-call-waits.js'
import { Callbacks, type CallbackLimits } from './callbacks.js'
import { EventStream, type FollowOptions } from './event-stream.js'
import { LeaseKeeper } from './lease-keeper.js'
import { RunDriver, type DriverStart } from './run-driver.js'
import { RunStop } from './run-stop.js'
import { answersNow, isStalled, toRunObject } from './run-object.js'
import { readTimeline, type Timeline } from './timeline.js'
import { checkRunRequest, hashRequest, newRunRecord, sameRequest, type RequestLimits } from './run-request.js'
import { RunWatchers } from './run-watchers.js'
import { checkToolOutputs, notAnswered, resumeWrite, type AwaitedCall } from './waiting.js'

export type { CallbackLimits } from './callbacks.js'
/** What routes read of runs, events and secrets: the stored forms, turned into API objects by run-object.ts. */
export type { EventRecord, Page, RunRecord, SigningSecret } from '../store/index.js'

export interface EngineLimits extends RequestLimits {
  readonly defaultModel: string
  /** How long a lease lasts without renewal. */
  readonly leaseMs: number
  readonly modelMaxRetries: number
  /** Text given to the model from one caller's tool output is cut here, as a webhook's is. */
  readonly maxResultChars: number
  /** Runs this replica drives at once; more wait as `queued`. */
  readonly maxRunningRuns: number
  /** Runs one tenant may have not yet final, across replicas; creates past it are refused (429). */
  readonly maxActiveRunsPerTenant: number
}

export interface RunEngineOptions {
  readonly store: Store
  readonly registry: ToolRegistry
  readonly model: ModelClient
  readonly webhooks: WebhookClient
  readonly log: Log
  readonly limits: EngineLimits
  readonly callbacks: CallbackLimits
  /** False when no API key (nor a base URL of a gateway) is configured: runs are refused. */
  readonly modelConfigured: boolean
  /** This process's name in leases; unique per process. */
  readonly replicaId?: string
  /** Metrics and spans of runs; none by default. */
  readonly telemetry?: Telemetry
  /** MCP servers as a tool source (SPEC §11); none: runs name webhook tools only. */
  readonly mcp?: McpTools | undefined
  /** Prices, budgets and usage (SPEC §17); by default the built-in prices and no tenant budgets. */
  readonly cost?: CostControl | undefined
  /** PUBLIC_URL: where tools post results later (SPEC §13); unset, the address each run was created through. */
  readonly publicUrl?: string | undefined
}

/**
 * Starts, drives and reports runs: the facade that routes call. Each run is driven in this process
 * by a {@link RunDriver}; the rooms around it each hold one concern:
 * - run-request.ts checks a request and makes the run's parameters;
 * - admission.ts keeps this replica's slots and each tenant's limit of active runs;
 * - lease-keeper.ts renews leases, takes up abandoned and queued runs, and sweeps;
 * - waiting.ts checks a caller's tool outputs and resumes a waiting run;
 * - callbacks.ts delivers completion callbacks;
 * - event-stream.ts and run-watchers.ts serve a run's events, paged and live.
 * Nothing runs in the background until {@link start}; `close` drains.
 */
export class RunEngine {
  readonly replicaId: string
  /** The guards around every tool call (cache, circuit breakers) and the tools' statistics (SPEC §18). */
  readonly toolHealth: ToolHealth
  /** Prices, run and tenant budgets, and tenants' usage (SPEC §17). */
  readonly cost: CostControl
  readonly #options: RunEngineOptions
  readonly #drivers = new Map<string, RunDriver>()
  readonly #toolConcurrency = new ToolConcurrency()
  /** Creates under way: the drain waits for them, so that no run starts after it looked. */
  readonly #creating = new Set<Promise<unknown>>()
  readonly #watchers = new RunWatchers()
  readonly #admission: Admission
  readonly #callbacks: Callbacks
  readonly #leases: LeaseKeeper
  readonly #events: EventStream
  #accepting = true
  readonly #telemetry: Telemetry

  constructor (options: RunEngineOptions) {
    this.#options = options
    this.#telemetry = options.telemetry ?? Telemetry.none
    this.replicaId = options.replicaId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
    const { store, registry, webhooks, log, limits } = options
    this.toolHealth = new ToolHealth({ store: store.toolHealth, replicaId: this.replicaId, log, metrics: this.#telemetry.metrics })
    this.cost = options.cost ?? new CostControl({ prices: PriceTable.withDefaults(), tenantBudgets: [], usage: store.usage, metrics: this.#telemetry.metrics, log })
    this.#admission = new Admission(store, limits, () => this.#drivers.size)
    this.#callbacks = new Callbacks({ store, registry, webhooks, log, limits: options.callbacks })
    this.#leases = new LeaseKeeper({
      replicaId: this.replicaId,
      drivers: this.#drivers,
      accepting: () => this.#accepting,
      start: (run, messages, from) => this.#start(run, messages, from),
      resumeUnanswered: async (run, why) => {
        if (waitsForApproval(run)) await endApprovalWait(this.#decideHost(), run, new RunStop('timeout', why))
        else await this.#resumeWaiting(run, (call) => notAnswered(call, why))
      }
    }, { store, log, telemetry: this.#telemetry, admission: this.#admission, callbacks: this.#callbacks, leaseMs: limits.leaseMs })
    this.#events = new EventStream(store, async (runId, timeoutMs, signal) => { await this.waitForEvents(runId, timeoutMs, signal) }, limits.leaseMs)
  }

  /**
   * Starts the background work: lease renewal, and the sweep that takes up runs left by a previous
   * process at once. Called when the server is ready, so that a replica whose start-up fails never
   * claims a run.
   */
  start (): void {
    if (this.#accepting) this.#leases.start()
  }

  /**
   * Checks a run request, stores the run (status `queued`, event `run.created`) and starts driving
   * it. With an idempotency key already used for the same request, answers that run instead
   * (`created: false`); used for another request, a 409. Every refusal says what to fix.
   */
  async create (tenantId: string, body: CreateRun, options: { idempotencyKey?: string | undefined, origin?: string | undefined } = {}): Promise<{ run: RunRecord, created: boolean }> {
    if (!this.#accepting) throw new AppError('SERVICE_ERR_DRAINING', 'This replica is shutting down: retry on another one.', { headers: { 'retry-after': '1' } })
    const creating = this.#create(tenantId, body, options.idempotencyKey, this.#options.publicUrl ?? options.origin)
    this.#creating.add(creating)
    try {
      return await creating
    } finally {
      this.#creating.delete(creating)
    }
  }

  async #create (tenantId: string, body: CreateRun, idempotencyKey: string | undefined, resultBase: string | undefined): Promise<{ run: RunRecord, created: boolean }> {
    if (!this.#options.modelConfigured) {
      throw new AppError('SERVICE_ERR_MODEL_NOT_CONFIGURED', 'No model API is configured: set ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL for a gateway) and restart.')
    }
    const { limits, store, registry, log } = this.#options
    // A repeat of a request already made returns its run before anything else is checked: the
    // first request passed every check, and it must come back the same even if tools changed since.
    const requestHash = idempotencyKey === undefined ? null : hashRequest(body)
    if (idempotencyKey !== undefined) {
      const earlier = await store.getRunByIdempotencyKey(tenantId, idempotencyKey)
      if (earlier !== null) return { run: sameRequest(earlier, requestHash), created: false }
    }
    // MCP tools (`server__tool`, `mcp_servers`) are resolved and pinned now: the run keeps them.
    const mcp = await this.#resolveMcpTools(tenantId, body)
    const request = checkRunRequest(mcp === null ? body : { ...body, tools: mcp.webhookTools }, limits, (schema) => registry.compileSchema(schema), mcp?.pinned)
    // Where its tools post results later (SPEC §13), kept on the run for whichever replica calls them.
    const checked = resultBase === undefined ? request : { ...request, params: { ...request.params, result_base: resultBase.replace(/\/+$/, '') } }
    const callbackUrl = body.callback_url === undefined ? null : await this.#callbacks.checkUrl(tenantId, body.callback_url)
    // A budget in USD needs a priced model; a tenant past its budget starts no run (429).
    await this.cost.admit(tenantId, body.model ?? limits.defaultModel, checked.params.budget)

    // At capacity, the run waits as `queued`, without a lease, for any replica with room.
    const drive = this.#admission.reserveOne()
    try {
      const now = Date.now()
      const run = newRunRecord({
        tenantId,
        body,
        checked,
        defaultModel: limits.defaultModel,
        idempotencyKey: idempotencyKey ?? null,
        requestHash,
        callbackUrl,
        now,
        lease: drive ? { owner: this.replicaId, leaseMs: limits.leaseMs } : null
      })
      Object.assign(run, { usage: this.cost.startingUsage(run.model) })
      const event = { seq: 1, type: 'run.created', at: now, data: toRunObject(run) }
      // A run answered on this connection (sync or streamed) starts in the same write that creates
      // it: one transaction less before its first model call. A background run is answered
      // `queued` (SPEC §3), so it starts as its driver's first write, as a run taken up later does.
      let started: NewEvent | undefined
      if (drive && body.background !== true) {
        Object.assign(run, { status: 'running', started_at: now, event_count: 2 })
        started = { seq: 2, type: 'run.started', at: now, data: toRunObject(run) }
      }
      const { messages } = checked
      const { run: stored, created, tools } = await this.#admission.insert(tenantId, { run, messages, event, ...(started === undefined ? {} : { started }) })
      if (!created) return { run: sameRequest(stored, requestHash), created: false }
      log.info({ runId: stored.id, tenantId, tools: checked.params.tools.length, model: stored.model, queued: !drive }, 'run created')
      if (drive) {
        // Its first step uses the tools read with the insert, rather than read them again.
        const driver = this.#start(stored, messages, { tools })
        // Stored above rather than by the driver: counted as if it had been.
        if (started !== undefined) driver.events.observed(started.type, started.data)
      } else {
        this.#leases.noteQueued()
      }
      return { run: stored, created: true }
    } catch (err) {
      if (!(err instanceof CreateRefusedError)) throw err
      // The same Idempotency-Key as a create that got there first: that run's replay, not a refusal.
      if (err.reason === 'too_many_active' && idempotencyKey !== undefined) {
        const earlier = await store.getRunByIdempotencyKey(tenantId, idempotencyKey)
        if (earlier !== null) return { run: sameRequest(earlier, requestHash), created: false }
      }
      throw this.#admission.refusal(err)
    } finally {
      if (drive) this.#admission.release()
    }
  }

  /** How many runs this replica drives now. */
  get driving (): number {
    return this.#drivers.size
  }

  async get (tenantId: string, runId: string): Promise<RunRecord> {
    const run = await this.#options.store.getRun(tenantId, runId)
    if (run === null) throw notFound(runId)
    return run
  }

  async messages (runId: string): Promise<MessageParam[]> {
    return await this.#options.store.getMessages(runId)
  }

  async list (tenantId: string, filter: RunFilter): Promise<Page<RunRecord>> {
    return await this.#options.store.listRuns(tenantId, filter)
  }

  /** One page of a run's events after event number `after`, oldest first. */
  async eventPage (run: RunRecord, after: number, limit: number): Promise<Page<EventRecord>> {
    return await this.#events.page(run.id, after, limit)
  }

  /**
   * A run's events from `options.after` on, each as it is stored, until the run has nothing more
   * to send (see EventStream.follow). Answers null when there is nothing to follow at all: the run
   * is settled and every event was read.
   */
  followEvents (run: RunRecord, options: FollowOptions): AsyncGenerator<EventRecord, void, undefined> | null {
    if (EventStream.nothingToFollow(run, options.after)) return null
    return this.#events.follow(run, options)
  }

  /** What a run's timeline page draws (SPEC §10), from its stored events. */
  async timeline (run: RunRecord): Promise<Timeline> {
    return await readTimeline(this.#options.store, run)
  }

  /**
   * Resolves with the run once it is final (or waits for the caller, in `requires_action`): what
   * a sync `POST /runs` answers. Follows the local driver when there is one, else polls storage
   * (another replica drives it). Always ends: if this replica gives the run up (shutdown, storage
   * down), or nobody drives it past its deadline, it rejects with a 503 whose `Location` leads to
   * the run; if `signal` aborts (the caller went away), it stops waiting.
   */
  async settled (tenantId: string, runId: string, signal?: AbortSignal): Promise<RunRecord> {
    const driver = this.#drivers.get(runId)
    if (driver !== undefined) {
      const run = await abortable(driver.done, signal)
      if (answersNow(run)) return run
      const follow = { location: `/runs/${runId}`, 'retry-after': '1' }
      if (driver.handback === 'shutdown') {
        throw new AppError('SERVICE_ERR_DRAINING', `This replica shut down before run ${runId} finished. The run goes on without this connection: follow it with GET /runs/${runId}.`, { headers: follow })
      }
      if (driver.handback === 'storage') {
        throw new AppError('SERVICE_ERR_STORE_UNAVAILABLE', `Storage failed while run ${runId} was going; follow it with GET /runs/${runId}.`, { headers: follow })
      }
    }
    let delay = 100
    for (;;) {
      const run = await this.get(tenantId, runId)
      if (answersNow(run)) return run
      if (isStalled(run, this.#options.limits.leaseMs)) {
        throw new AppError('RUN_ERR_STALLED', `Run ${runId} is past its deadline and no replica is driving it; follow it with GET /runs/${runId}.`, { headers: { location: `/runs/${runId}` } })
      }
      await this.waitForEvents(runId, delay, signal)
      signal?.throwIfAborted()
      delay = Math.min(delay * 2, 2000)
    }
  }

  /**
   * Resolves when this process stores new events of `runId`, or after `timeoutMs` at the latest
   * (events stored by another replica are only seen by reading again), or when `signal` aborts.
   */
  async waitForEvents (runId: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const waiting = this.#watchers.wait(runId, timeoutMs, signal)
    // Followed from now on: the run's events are stored within the short window (see EventLog).
    this.#drivers.get(runId)?.events.hurry()
    await waiting
  }

  /**
   * Cancels a run (SPEC §4.3): everything in flight is aborted, each open tool_use gets a
   * "cancelled" result, and the run ends `cancelled`. A run that already ended is a 409. A run
   * driven by another replica is asked to stop through storage: that replica acts on it at its
   * next sweep (about a second) or before its next step, whichever comes first.
   */
  async cancel (tenantId: string, runId: string): Promise<RunRecord> {
    const first = await this.get(tenantId, runId)
    if (FINAL_STATUSES.has(first.status)) {
      throw new AppError('RUN_ERR_NOT_ACTIVE', `Run ${runId} already ended (${first.status}): there is nothing to cancel.`)
    }
    const stop = new RunStop('cancelled', 'the run was cancelled')
    const deadline = Date.now() + 2 * this.#options.limits.leaseMs
    // Act on the run as it is now, and look again after each move: it may have moved meanwhile
    // (reached requires_action, been resumed by its caller, been taken by another replica).
    let current = first
    for (;;) {
      if (FINAL_STATUSES.has(current.status)) return current
      const local = this.#drivers.get(runId)
      if (local !== undefined) {
        local.stop(stop)
        await local.done
      } else if (waitsForApproval(current)) {
        const ended = await endApprovalWait(this.#decideHost(), current, stop)
        if (ended !== null) await ended.done
      } else if (parked(current)) {
        // Waiting on results posted later, held by no replica: taken here to end it.
        const ended = await endPendingWait(this.#decideHost(), current, stop)
        if (ended !== null) await ended.done
      } else if (current.status === 'requires_action') {
        const resumed = await this.#resumeWaiting(current, (call) => notAnswered(call, 'the run was cancelled before the caller answered'))
        if (resumed !== null) {
          resumed.stop(stop)
          await resumed.done
        }
      } else if (current.status === 'queued' && current.lease_owner === null) {
        // Queued with nobody holding it: take it (whatever our room) just to end it.
        const lease = await this.#options.store.claimRun(runId, this.replicaId, this.#options.limits.leaseMs)
        if (lease !== null) {
          await this.#start({ ...current, lease_owner: this.replicaId, lease_token: lease.token }, [], { stop }).done
        }
      } else if (await this.#options.store.requestCancel(tenantId, runId, Date.now()) !== null) {
        // Driven by another replica: it sees the request within a second and cancels.
        await this.waitForEvents(runId, 200)
      }
      if (Date.now() > deadline) {
        throw new AppError('RUN_ERR_STALLED', `The cancel of run ${runId} is recorded, but no replica has acted on it yet; follow the run with GET /runs/${runId}.`, { headers: { location: `/runs/${runId}` } })
      }
      current = await this.get(tenantId, runId)
    }
  }

  /**
   * The caller's outputs for the client tool calls a run waits on (SPEC §4.3): one per listed
   * call, checked, then the run goes on. Answers the run as it resumes, and the number of the last
   * event before the outputs (where a stream of what follows starts).
   */
  async submitToolOutputs (tenantId: string, runId: string, body: ToolOutputs): Promise<{ run: RunRecord, resumedAfter: number }> {
    const run = await this.get(tenantId, runId)
    if (run.status !== 'requires_action') {
      throw new AppError('RUN_ERR_NOT_WAITING', `Run ${runId} is ${run.status}, not waiting for tool outputs.`)
    }
    if (waitsForApproval(run)) {
      throw new AppError('RUN_ERR_NOT_WAITING', `Run ${runId} waits for approvals first: decide its calls with POST /runs/${runId}/approvals; it asks for tool outputs after.`)
    }
    // Read before the run is taken: its transcript stays as it is while it waits (the take checks
    // that nothing was stored since), and a refusal then leaves the wait untouched.
    const messages = await this.#options.store.getMessages(run.id)
    const answer = checkToolOutputs(run, messages, body, this.#options.limits.maxResultChars)
    const resumed = await this.#resumeWaiting(run, answer, messages)
    if (resumed === null) throw new AppError('RUN_ERR_NOT_WAITING', `Run ${runId} is no longer waiting for these tool outputs: they were given (or the run was cancelled or ended) meanwhile.`)
    return { run: resumed.events.run, resumedAfter: run.event_count }
  }

  /**
   * A reviewer's decisions on the calls a run waits to have approved (SPEC §12): some or all of
   * them. Once every call is decided, the step goes on (approved calls made, denied ones answered
   * "Not run: denied by the reviewer"). Answers the run, and the number of the last event before
   * the decisions (where a stream of what follows starts).
   */
  async approve (tenantId: string, runId: string, body: Approvals): Promise<{ run: RunRecord, resumedAfter: number }> {
    const run = await this.get(tenantId, runId)
    if (!waitsForApproval(run)) {
      throw new AppError('RUN_ERR_NOT_WAITING', `Run ${runId} is ${run.status}${run.status === 'requires_action' ? ' for tool outputs' : ''}, not waiting for approvals.`)
    }
    const decided = await decide(this.#decideHost(), run, body)
    if (decided === null) throw new AppError('RUN_ERR_NOT_WAITING', `Run ${runId} is no longer waiting for these decisions: others were given (or the run was cancelled or ended) meanwhile. Read it again with GET /runs/${runId}.`)
    return { run: decided, resumedAfter: run.event_count }
  }

  /**
   * A result a tool posts for a call it answered `202 Accepted` (SPEC §13), signed with the tool's
   * secret: stored, and the run goes on here if that was the last its step waited for.
   */
  async postToolResult (posted: PostedResult): Promise<void> {
    await postResult(this.#decideHost(), this.#options.limits.maxResultChars, posted)
  }

  #decideHost (): DecideHost {
    return {
      store: this.#options.store,
      replicaId: this.replicaId,
      leaseMs: this.#options.limits.leaseMs,
      start: (run, messages, from) => this.#start(run, messages, from),
      wake: (runId) => { this.#watchers.wake(runId) }
    }
  }

  /** What `GET /callbacks` shows of the tenant's callback signing secrets. */
  async callbackSecrets (tenantId: string): Promise<readonly SigningSecret[]> {
    return await this.#callbacks.secrets(tenantId)
  }

  /** A new callback signing secret; the previous one keeps signing for the rotation window. */
  async rotateCallbackSecret (tenantId: string): Promise<{ secret: string, secrets: SigningSecret[] }> {
    return await this.#callbacks.rotateSecret(tenantId)
  }

  /**
   * Stops taking runs, lets those in flight finish for up to `graceMs`, then hands the rest back:
   * their state is stored and their leases released, for another replica to take at once.
   */
  async close (graceMs: number): Promise<void> {
    this.#accepting = false
    await Promise.allSettled([...this.#creating])
    await this.#leases.quiesce()
    const drivers = [...this.#drivers.values()]
    // Steps in progress may finish; no run starts another (SPEC §7).
    for (const driver of drivers) driver.drain()
    if (drivers.length > 0) {
      this.#options.log.info({ runs: drivers.length, graceMs }, 'draining runs')
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.allSettled(drivers.map(async (d) => await d.done)),
        new Promise((resolve) => { timer = setTimeout(resolve, graceMs) })
      ])
      clearTimeout(timer)
      for (const driver of this.#drivers.values()) driver.stop(new RunStop('shutdown', 'this replica is shutting down'))
      await Promise.allSettled(drivers.map(async (d) => await d.done))
    }
    // Callbacks under way are stopped, not waited for: they are due again at once, for any replica.
    await this.#callbacks.close()
    this.#leases.stop()
    await Promise.all([this.#options.webhooks.close(), this.#options.model.close(), this.toolHealth.close(), this.#options.mcp?.registry.close()])
  }

  /**
   * Takes a waiting run back (status `running`, under our lease) and starts driving it, with the
   * step's stored webhook results and, for each client call, `answer`. Only from the wait that
   * `waiting` shows: null if the run moved on meanwhile (answered by another request, cancelled).
   * If anything fails once the run is taken, it is put back to waiting, never left stuck.
   */
  async #resumeWaiting (waiting: RunRecord, answer: (call: AwaitedCall) => ToolResultBlockParam, transcript?: MessageParam[]): Promise<RunDriver | null> {
    const { store, limits } = this.#options
    const run = await store.resumeWaitingRun(waiting.id, waiting.event_count, this.replicaId, limits.leaseMs)
    if (run === null) return null
    const lease: Lease = { owner: this.replicaId, token: run.lease_token }
    try {
      const messages = transcript ?? await store.getMessages(run.id)
      return this.#start(run, messages, { initialWrite: resumeWrite(run, messages, answer) })
    } catch (err) {
      this.#options.log.error({ err, runId: run.id }, 'could not resume a waiting run; it waits again')
      await store.returnToWaiting(run.id, lease).catch(() => {})
      throw err
    }
  }

  /** The MCP tools a run request names, if it names any (see McpRegistry.resolveRun). */
  async #resolveMcpTools (tenantId: string, body: CreateRun): Promise<RunToolsResolution | null> {
    const servers = body.mcp_servers ?? []
    const tools = body.tools ?? []
    if (this.#options.mcp === undefined || (servers.length === 0 && !tools.some((t) => t.includes(RUN_NAME_SEPARATOR)))) return null
    return await this.#options.mcp.registry.resolveRun(tenantId, tools, servers)
  }

  #start (run: RunRecord, messages: MessageParam[], from: DriverStart = {}): RunDriver {
    const { store, registry, model, webhooks, log, limits } = this.#options
    const lease: Lease = { owner: this.replicaId, token: run.lease_token }
    const watchers = this.#watchers
    const driver = new RunDriver({
      store, registry, model, webhooks, mcp: this.#options.mcp?.source, log, toolHealth: this.toolHealth, cost: this.cost, toolConcurrency: this.#toolConcurrency, modelMaxRetries: limits.modelMaxRetries, telemetry: this.#telemetry, watched: (runId) => watchers.watched(runId)
    }, run, lease, messages, from)
    this.#drivers.set(run.id, driver)
    driver.events.subscribe(() => watchers.wake(run.id))
    driver.drive().finally(async () => {
      if (this.#drivers.get(run.id) === driver) this.#drivers.delete(run.id)
      const ended = driver.events.run
      if (!FINAL_STATUSES.has(ended.status)) {
        // Waiting for its caller, or handed back (shutdown): let anyone take it from here at once.
        await store.releaseRun(run.id, lease).catch(() => {})
      }
      // Parked on results posted later (SPEC §13): one may have come while it parked.
      if (ended.pending_calls != null) {
        store.getRun(run.tenant_id, run.id)
          .then(async (current) => { if (current !== null) await wakeIfAnswered(this.#decideHost(), current) })
          .catch((err) => log.warn({ err, runId: run.id }, 'could not take up a run whose results came'))
      }
      // Due at the end of a run, and when it waits for approvals (SPEC §12).
      if (ended.callback_status === 'pending') {
        this.#callbacks.deliverDue().catch((err) => log.warn({ err }, 'callback delivery failed'))
      }
      watchers.wake(run.id)
      // Room for one more: take up a queued run now rather than at the next sweep, if any may wait.
      this.#leases.slotFreed()
    }).catch(() => {})
    return driver
  }
}

function notFound (runId: string): AppError {
  return new AppError('RUN_ERR_NOT_FOUND', `No run ${runId}: check the id, or list your runs with GET /runs.`)
}
