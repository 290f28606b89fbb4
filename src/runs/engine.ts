import { hostname } from 'node:os'
import { createHash, randomBytes } from 'node:crypto'
import type { MessageParam, ToolResultBlockParam } from '@anthropic-ai/sdk/resources/messages'
import { AppError } from '../errors.js'
import { newId } from '../lib/ids.js'
import type { Log } from '../logger.js'
import type { ModelClient } from '../model/model-client.js'
import { FINAL_STATUSES, type CreateRun, type RunParams, type ToolOutputs } from '../schemas/runs.js'
import { CreateRefusedError, type CreatedRun, type EventRecord, type Lease, type NewEvent, type NewRun, type Page, type RunFilter, type RunRecord, type SigningSecret, type Store } from '../store/index.js'
import { hasLoneSurrogate, wellFormed } from '../lib/text.js'
import { ToolConcurrency } from '../tools/dispatcher.js'
import { activeSecrets, newSigningSecret, rotatedSecrets, type ToolRegistry } from '../tools/registry.js'
import { capContent, toolResult, type ToolResultContent } from '../tools/tool-result.js'
import type { WebhookClient } from '../tools/webhook-client.js'
import { Telemetry } from '../telemetry/index.js'
import { RunDriver, RunStop, type DriverStart, type InitialWrite, type ResumedStep } from './run-driver.js'
import { isSettled, isStalled, toRunObject } from './run-object.js'
import { findTranscriptProblem } from './transcript.js'

export interface EngineLimits {
  readonly defaultModel: string
  /** Highest max_steps a run may ask for. */
  readonly maxSteps: number
  /** Highest timeout_ms a run may ask for. */
  readonly maxTimeoutMs: number
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

export interface CallbackLimits {
  /** Delivery attempts before a callback is given up. */
  readonly maxAttempts: number
  /** Wait before the second attempt; each later one waits four times longer (at most an hour). */
  readonly retryBaseMs: number
  /** One attempt's timeout. */
  readonly timeoutMs: number
  /** After a rotation, how long the previous callback secret keeps signing. */
  readonly rotationWindowMs: number
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
}

// The sweeper: deadlines of runs waiting for their caller, callbacks due, cancels asked of another
// replica. Once a second keeps a remote cancel well under two seconds.
const SWEEP_INTERVAL_MS = 1000
const SWEEP_BATCH = 100
/** Beyond an attempt's timeout, how long a callback being delivered stays claimed by one replica. */
const CALLBACK_CLAIM_MARGIN_MS = 30_000
const CALLBACK_BACKOFF_CAP_MS = 3_600_000
/** Takeovers of one run that may fail on one replica before it fails the run. */
const MAX_TAKEOVER_FAILURES = 3
/** What a create refused for TENANT_MAX_ACTIVE_RUNS is told to wait: runs end in seconds to minutes. */
const ACTIVE_RUNS_RETRY_AFTER_S = 5

/**
 * Starts, drives and reports runs. Each run is driven in this process by a {@link RunDriver}
 * under a lease the engine renews for all of them at once; `close` drains them.
 */
export class RunEngine {
  readonly replicaId: string
  readonly #options: RunEngineOptions
  readonly #drivers = new Map<string, RunDriver>()
  readonly #toolConcurrency = new ToolConcurrency()
  readonly #renewal: NodeJS.Timeout
  readonly #sweeper: NodeJS.Timeout
  /** Creates under way: the drain waits for them, so that no run starts after it looked. */
  readonly #creating = new Set<Promise<unknown>>()
  /** Wakes waiters for a run's events when this process stores some (see waitForEvents). */
  readonly #eventWaiters = new Map<string, Set<() => void>>()
  readonly #deliveries = new Set<Promise<void>>()
  /** Aborted when the drain is over: callback attempts still under way stop (and are retried later). */
  readonly #closing = new AbortController()
  #sweeping = false
  #accepting = true
  #firstSweep = true
  /** Slots promised to runs being created or taken over, not yet driving: counted against the cap. */
  #reserved = 0
  /** Per tenant, the inserts of creates under way here: not yet stored, or not known to be. */
  readonly #inserting = new Map<string, Set<Promise<unknown>>>()
  #takingOver: Promise<void> | null = null
  #takeOverAgain = false
  /** Takeovers of a run that failed here: after a few, the run is failed rather than retried for ever. */
  readonly #takeOverFailures = new Map<string, number>()
  /** When this replica last confirmed its leases. */
  #renewedAt = Date.now()
  /** Set when runs were queued here (or a takeover filled every free slot): worth looking again when one ends. */
  #mayHaveQueued = false

  readonly #telemetry: Telemetry

  constructor (options: RunEngineOptions) {
    this.#options = options
    this.#telemetry = options.telemetry ?? Telemetry.none
    this.replicaId = options.replicaId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
    // Renew well before expiry: a third of the lease, so two missed renewals still hold it.
    this.#renewal = setInterval(() => { this.#renewLeases().catch(() => {}) }, Math.max(250, Math.floor(options.limits.leaseMs / 3)))
    this.#renewal.unref()
    this.#sweeper = setInterval(() => { this.#sweep().catch(() => {}) }, SWEEP_INTERVAL_MS)
    this.#sweeper.unref()
    // At once: a restart takes up what was left running without waiting a second.
    setImmediate(() => { this.#sweep().catch(() => {}) })
  }

  /**
   * Checks a run request, stores the run (status `queued`, event `run.created`) and starts driving
   * it. With an idempotency key already used for the same request, answers that run instead
   * (`created: false`); used for another request, a 409. Every refusal says what to fix.
   */
  async create (tenantId: string, body: CreateRun, options: { idempotencyKey?: string | undefined } = {}): Promise<{ run: RunRecord, created: boolean }> {
    if (!this.#accepting) throw new AppError('SERVICE_ERR_DRAINING', 'This replica is shutting down: retry on another one.', { headers: { 'retry-after': '1' } })
    const creating = this.#create(tenantId, body, options.idempotencyKey)
    this.#creating.add(creating)
    try {
      return await creating
    } finally {
      this.#creating.delete(creating)
    }
  }

  async #create (tenantId: string, body: CreateRun, idempotencyKey: string | undefined): Promise<{ run: RunRecord, created: boolean }> {
    if (!this.#options.modelConfigured) {
      throw new AppError('SERVICE_ERR_MODEL_NOT_CONFIGURED', 'No model API is configured: set ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL for a gateway) and restart.')
    }
    const { limits, store } = this.#options
    // A repeat of a request already made returns its run before anything else is checked: the
    // first request passed every check, and it must come back the same even if tools changed since.
    const requestHash = idempotencyKey === undefined ? null : hashRequest(body)
    if (idempotencyKey !== undefined) {
      const earlier = await store.getRunByIdempotencyKey(tenantId, idempotencyKey)
      if (earlier !== null) return { run: this.#sameRequest(earlier, requestHash!), created: false }
    }
    if ((body.input === undefined) === (body.messages === undefined)) {
      throw new AppError('RUN_ERR_INVALID_REQUEST', 'Send exactly one of `input` (the first user message, a string) and `messages` (a Messages API history).')
    }
    if (body.stream === true && body.background === true) {
      throw new AppError('RUN_ERR_INVALID_REQUEST', 'Choose `stream` or `background`, not both: a stream already answers at once.')
    }
    // The defaults give way to lower ceilings; only an explicit value over a ceiling is refused.
    const maxSteps = body.max_steps ?? Math.min(25, limits.maxSteps)
    if (maxSteps > limits.maxSteps) throw new AppError('RUN_ERR_INVALID_REQUEST', `max_steps is ${maxSteps} but this service allows at most ${limits.maxSteps} (RUN_MAX_STEPS).`)
    const timeoutMs = body.timeout_ms ?? Math.min(600_000, limits.maxTimeoutMs)
    if (timeoutMs > limits.maxTimeoutMs) throw new AppError('RUN_ERR_INVALID_REQUEST', `timeout_ms is ${timeoutMs} but this service allows at most ${limits.maxTimeoutMs} (RUN_MAX_TIMEOUT_MS).`)

    const messages: MessageParam[] = body.messages ?? [{ role: 'user', content: body.input! }]
    const problem = findTranscriptProblem(messages)
    if (problem !== null) throw new AppError('RUN_ERR_INVALID_MESSAGES', problem)
    if (hasLoneSurrogate(messages) || hasLoneSurrogate(body.system)) {
      throw new AppError('RUN_ERR_INVALID_MESSAGES', 'The text holds half of a UTF-16 surrogate pair (half an emoji, say), which the model API refuses: send well-formed Unicode.')
    }

    // Whether the tools exist is checked by the insert itself (see #insert); the checks before it
    // take them as named.
    const toolNames = body.tools ?? []
    const named = new Set(toolNames)
    this.#checkClientTools(body, named)
    const allTools = new Set([...named, ...(body.client_tools ?? []).map((t) => t.name)])
    if (body.tool_choice?.type === 'tool' && !allTools.has(body.tool_choice.name ?? '')) {
      throw new AppError('RUN_ERR_INVALID_REQUEST', `tool_choice names ${body.tool_choice.name ?? '(nothing)'}, which is not one of this run's tools.`)
    }
    if (body.tool_choice !== undefined && allTools.size === 0) {
      throw new AppError('RUN_ERR_INVALID_REQUEST', 'tool_choice needs tools: list the run\'s tools in `tools`, or leave tool_choice out.')
    }
    const callbackUrl = body.callback_url === undefined ? null : await this.#checkCallbackUrl(tenantId, body.callback_url)

    const params: RunParams = {
      tools: toolNames,
      max_tokens: body.max_tokens ?? 4096,
      max_steps: maxSteps,
      timeout_ms: timeoutMs,
      disable_parallel_tool_use: body.disable_parallel_tool_use ?? false,
      parallelism: body.parallelism ?? 64,
      ...pick(body, ['system', 'tool_choice', 'thinking', 'temperature', 'top_p', 'top_k', 'stop_sequences', 'client_tools'])
    }
    // At capacity, the run waits as `queued`, without a lease, for any replica with room. The slot
    // is reserved now, before any await, so that concurrent creates cannot overshoot the cap.
    const drive = this.#drivers.size + this.#reserved < limits.maxRunningRuns
    if (drive) this.#reserved++
    try {
      return await this.#insert(tenantId, body, messages, params, drive, idempotencyKey, requestHash, callbackUrl)
    } catch (err) {
      if (!(err instanceof CreateRefusedError)) throw err
      if (err.reason === 'unknown_tools') {
        const { missing } = err
        throw new AppError('RUN_ERR_UNKNOWN_TOOL', `Unknown tool${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}. Register ${missing.length > 1 ? 'them' : 'it'} with PUT /tools/{name} first, or list yours with GET /tools.`)
      }
      // The same Idempotency-Key as a create that got there first: that run's replay, not a refusal.
      const earlier = idempotencyKey === undefined ? null : await store.getRunByIdempotencyKey(tenantId, idempotencyKey)
      if (earlier !== null) return { run: this.#sameRequest(earlier, requestHash!), created: false }
      const limit = limits.maxActiveRunsPerTenant
      throw new AppError('RUN_ERR_TOO_MANY_ACTIVE', `This tenant already has ${limit} runs that have not finished (queued, running or waiting in requires_action), the most TENANT_MAX_ACTIVE_RUNS allows: wait for some to end, answer those waiting for tool outputs, or cancel those you no longer need (POST /runs/{id}/cancel), then retry.`, { headers: { 'retry-after': String(ACTIVE_RUNS_RETRY_AFTER_S) } })
    } finally {
      if (drive) this.#reserved--
    }
  }

  /**
   * Stores the run, if its tools exist and its tenant is under its limit of active runs (one
   * statement checks both: see Store.createRun), and starts driving it.
   */
  async #insert (tenantId: string, body: CreateRun, messages: MessageParam[], params: RunParams, drive: boolean, idempotencyKey: string | undefined, requestHash: string | null, callbackUrl: string | null): Promise<{ run: RunRecord, created: boolean }> {
    const { limits } = this.#options
    const now = Date.now()
    const run: RunRecord = {
      id: newId('run'),
      tenant_id: tenantId,
      status: 'queued',
      stop_reason: null,
      model: body.model ?? limits.defaultModel,
      params: params as unknown as Record<string, unknown>,
      metadata: body.metadata ?? {},
      created_at: now,
      started_at: null,
      completed_at: null,
      deadline_at: now + params.timeout_ms,
      steps: 0,
      tool_calls_total: 0,
      tool_calls_errors: 0,
      usage: { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
      output: [],
      required_action: null,
      error: null,
      idempotency_key: idempotencyKey ?? null,
      request_hash: requestHash,
      trace_id: randomBytes(16).toString('hex'),
      callback_url: callbackUrl,
      message_count: messages.length,
      event_count: 1,
      lease_owner: drive ? this.replicaId : null,
      lease_token: drive ? 1 : 0,
      lease_expires_at: drive ? now + limits.leaseMs : 0,
      pending_results: null,
      cancel_requested_at: null,
      callback_status: null,
      callback_attempts: 0,
      callback_next_at: null,
      callback_error: null,
      step_events_after: 1
    }
    const event = { seq: 1, type: 'run.created', at: now, data: toRunObject(run) }
    // A run answered on this connection (sync or streamed) starts in the same write that creates
    // it: one transaction less before its first model call. A background run is answered
    // `queued` (SPEC §3), so it starts as its driver's first write, as a run taken up later does.
    let started: NewEvent | undefined
    if (drive && body.background !== true) {
      Object.assign(run, { status: 'running', started_at: now, event_count: 2 })
      started = { seq: 2, type: 'run.started', at: now, data: toRunObject(run) }
    }
    const { run: stored, created, tools } = await this.#admitted(tenantId, { run, messages, event, ...(started === undefined ? {} : { started }) })
    if (!created) return { run: this.#sameRequest(stored, requestHash!), created: false }
    this.#options.log.info({ runId: stored.id, tenantId, tools: params.tools.length, model: stored.model, queued: !drive }, 'run created')
    if (drive) {
      // Its first step uses the tools read with the insert, rather than read them again.
      const driver = this.#start(stored, messages, { tools })
      // Stored above rather than by the driver: counted as if it had been.
      if (started !== undefined) driver.events.observed(started.type, started.data)
    } else {
      this.#mayHaveQueued = true
    }
    return { run: stored, created: true }
  }

  /**
   * Stores a new run under the per-tenant limit on runs not yet final (TENANT_MAX_ACTIVE_RUNS),
   * which the insert itself checks (see Store.createRun). The tenant's other inserts under way here
   * count against the limit too, so that concurrent creates on one replica cannot overshoot it.
   * One of them may be stored by the time this insert counts, and so count twice: a refusal that
   * only they explain (the stored runs alone leave room) is tried again once they are done, so
   * that a create is never refused early; one the stored runs explain is final at once. Creates at
   * the same moment on several replicas can overshoot the limit by at most the number under way on
   * the others.
   */
  async #admitted (tenantId: string, input: Omit<NewRun, 'admit'>): Promise<CreatedRun> {
    const { limits, store } = this.#options
    const limit = limits.maxActiveRunsPerTenant
    const params = input.run.params as unknown as RunParams
    for (;;) {
      let inserting = this.#inserting.get(tenantId)
      if (inserting === undefined) {
        inserting = new Set()
        this.#inserting.set(tenantId, inserting)
      }
      const others = [...inserting]
      if (others.length < limit) {
        const insert = store.createRun({ ...input, admit: { tools: params.tools, limit, reserved: others.length } })
        inserting.add(insert)
        try {
          return await insert
        } catch (err) {
          const onlyOthers = err instanceof CreateRefusedError && err.reason === 'too_many_active' && err.active < limit && others.length > 0
          if (!onlyOthers) throw err
        } finally {
          inserting.delete(insert)
          if (inserting.size === 0 && this.#inserting.get(tenantId) === inserting) this.#inserting.delete(tenantId)
        }
      }
      await Promise.allSettled(others)
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
      if (isSettled(run)) return run
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
      if (isSettled(run)) return run
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
    await new Promise<void>((resolve) => {
      let waiters = this.#eventWaiters.get(runId)
      if (waiters === undefined) {
        waiters = new Set()
        this.#eventWaiters.set(runId, waiters)
      }
      const set = waiters
      const done = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        set.delete(done)
        if (set.size === 0 && this.#eventWaiters.get(runId) === set) this.#eventWaiters.delete(runId)
        resolve()
      }
      const timer = setTimeout(done, timeoutMs)
      signal?.addEventListener('abort', done, { once: true })
      set.add(done)
      // Followed from now on: the run's events are stored within the short window (see EventLog).
      this.#drivers.get(runId)?.events.hurry()
    })
  }

  /**
   * Cancels a run (SPEC §4.3): everything in flight is aborted, each open tool_use gets a
   * "cancelled" result, and the run ends `cancelled`. A run that already ended is a 409.
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
      } else if (current.status === 'requires_action') {
        const resumed = await this.#resumeWaiting(current, (call) => cancelledOutput(call.id, 'the run was cancelled before the caller answered'))
        if (resumed !== null) {
          resumed.stop(stop)
          await resumed.done
        }
      } else if (current.status === 'queued' && current.lease_owner === null) {
        // Queued with nobody holding it: take it (whatever our room) just to end it.
        const lease = await this.#options.store.claimRun(runId, this.replicaId, this.#options.limits.leaseMs)
        if (lease !== null) {
          const driver = this.#start({ ...current, lease_owner: this.replicaId, lease_token: lease.token }, [])
          driver.stop(stop)
          await driver.done
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
    const asked = (run.required_action?.tool_calls ?? []) as Array<{ id: string, name: string }>
    const askedIds = new Set(asked.map((c) => c.id))
    const seen = new Set<string>()
    for (const output of body.tool_outputs) {
      if (!askedIds.has(output.tool_use_id)) {
        throw new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', `tool_outputs names ${output.tool_use_id}, which the run did not ask for: answer exactly ${[...askedIds].join(', ')}.`)
      }
      if (seen.has(output.tool_use_id)) {
        throw new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', `tool_outputs answers ${output.tool_use_id} more than once: give one output per call.`)
      }
      seen.add(output.tool_use_id)
    }
    const missing = asked.filter((c) => !seen.has(c.id)).map((c) => c.id)
    if (missing.length > 0) {
      throw new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', `tool_outputs lacks ${missing.join(', ')}: give one output for each call in required_action.`)
    }
    if (hasLoneSurrogate(body.tool_outputs)) {
      throw new AppError('RUN_ERR_INVALID_TOOL_OUTPUTS', 'An output holds half of a UTF-16 surrogate pair (half an emoji, say), which the model API refuses: send well-formed Unicode.')
    }
    const byId = new Map(body.tool_outputs.map((o) => [o.tool_use_id, o]))
    const resumed = await this.#resumeWaiting(run, (call) => {
      const output = byId.get(call.id)!
      const content = capContent((output.content ?? '') as ToolResultContent, this.#options.limits.maxResultChars)
      return toolResult(call.id, content, output.is_error === true)
    })
    if (resumed === null) throw new AppError('RUN_ERR_NOT_WAITING', `Run ${runId} is no longer waiting for these tool outputs: they were given (or the run was cancelled or ended) meanwhile.`)
    return { run: resumed.events.run, resumedAfter: run.event_count }
  }

  /** What `GET /callbacks` shows of the tenant's callback signing secrets. */
  async callbackSecrets (tenantId: string): Promise<readonly SigningSecret[]> {
    return await this.#options.store.getCallbackSecrets(tenantId) ?? []
  }

  /** A new callback signing secret; the previous one keeps signing for the rotation window. */
  async rotateCallbackSecret (tenantId: string): Promise<{ secret: string, secrets: SigningSecret[] }> {
    const fresh = newSigningSecret()
    for (;;) {
      const current = await this.#options.store.getCallbackSecrets(tenantId)
      const secrets = rotatedSecrets(current ?? [], fresh, Date.now(), this.#options.callbacks.rotationWindowMs)
      if (await this.#options.store.setCallbackSecrets(tenantId, secrets, Date.now(), current)) return { secret: fresh, secrets }
    }
  }

  /**
   * Stops taking runs, lets those in flight finish for up to `graceMs`, then hands the rest back:
   * their state is stored and their leases released, for another replica to take at once.
   */
  async close (graceMs: number): Promise<void> {
    this.#accepting = false
    await Promise.allSettled([...this.#creating])
    await this.#takingOver?.catch(() => {})
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
    this.#closing.abort()
    await Promise.allSettled([...this.#deliveries])
    clearInterval(this.#renewal)
    clearInterval(this.#sweeper)
    await Promise.all([this.#options.webhooks.close(), this.#options.model.close()])
  }

  #checkClientTools (body: CreateRun, named: Set<string>): void {
    const names = new Set<string>()
    for (const [index, tool] of (body.client_tools ?? []).entries()) {
      const where = `client_tools[${index}] (${tool.name})`
      if (named.has(tool.name)) throw new AppError('RUN_ERR_INVALID_REQUEST', `${where} has the name of one of the run's \`tools\` (registered tools): give it another name.`)
      if (names.has(tool.name)) throw new AppError('RUN_ERR_INVALID_REQUEST', `${where} repeats a name: each client tool needs its own.`)
      names.add(tool.name)
      try {
        this.#options.registry.compileSchema(tool.input_schema)
      } catch (err) {
        throw new AppError('RUN_ERR_INVALID_REQUEST', `${where}: ${(err as Error).message}`)
      }
    }
  }

  async #checkCallbackUrl (tenantId: string, value: string): Promise<string> {
    const url = await this.#options.registry.checkWebhookUrl(value, 'callback_url')
    if ((await this.#options.store.getCallbackSecrets(tenantId)) === null) {
      throw new AppError('RUN_ERR_NO_CALLBACK_SECRET', 'Callbacks are signed with your callback secret, and you have none yet: make it with POST /callbacks/rotate-secret (once), then retry.')
    }
    return url.toString()
  }

  #sameRequest (earlier: RunRecord, requestHash: string): RunRecord {
    if (earlier.request_hash !== requestHash) {
      throw new AppError('RUN_ERR_IDEMPOTENCY_CONFLICT', `This Idempotency-Key was used for another request (run ${earlier.id}): use a new key for a new run, or send the same body to get that run back.`)
    }
    return earlier
  }

  /**
   * Takes a waiting run back (status `running`, under our lease) and starts driving it, with the
   * step's stored webhook results and, for each client call, `answer`. Only from the wait that
   * `waiting` shows: null if the run moved on meanwhile (answered by another request, cancelled).
   * If anything fails once the run is taken, it is put back to waiting, never left stuck.
   */
  async #resumeWaiting (waiting: RunRecord, answer: (call: { id: string, name: string }) => ToolResultBlockParam): Promise<RunDriver | null> {
    const { store, limits } = this.#options
    const run = await store.resumeWaitingRun(waiting.id, waiting.event_count, this.replicaId, limits.leaseMs)
    if (run === null) return null
    const lease: Lease = { owner: this.replicaId, token: run.lease_token }
    try {
      const calls = (run.required_action?.tool_calls ?? []) as Array<{ id: string, name: string }>
      const answers = new Map(calls.map((c) => [c.id, answer(c)]))
      const pending = (run.pending_results ?? []) as Array<ToolResultBlockParam | null>
      const messages = await store.getMessages(run.id)
      const assistant = messages.at(-1)
      const toolUseIds = Array.isArray(assistant?.content) ? assistant.content.filter((b) => b.type === 'tool_use').map((b) => (b as { id: string }).id) : []
      // Every result in the model's order: the webhook results kept while waiting, and the answers.
      const results = toolUseIds.map((id, index) => pending[index] ?? answers.get(id))
      if (results.some((r) => r === undefined)) throw new Error(`run ${run.id}: the stored wait does not match its transcript`)
      const events = calls.map((call) => {
        const result = answers.get(call.id)!
        return {
          type: 'tool_call.completed',
          data: { step: run.steps, tool_use_id: call.id, name: call.name, is_error: result.is_error === true, duration_ms: 0, attempts: 0, status: null, outcome: 'client', content: result.content ?? '' }
        }
      })
      const initialWrite: InitialWrite = {
        messages: [{ role: 'user', content: results as ToolResultBlockParam[] }],
        patch: {
          required_action: null,
          pending_results: null,
          tool_calls_total: run.tool_calls_total + calls.length,
          tool_calls_errors: run.tool_calls_errors + [...answers.values()].filter((r) => r.is_error === true).length
        },
        events
      }
      return this.#start(run, messages, { initialWrite })
    } catch (err) {
      this.#options.log.error({ err, runId: run.id }, 'could not resume a waiting run; it waits again')
      await store.returnToWaiting(run.id, lease).catch(() => {})
      throw err
    }
  }

  #start (run: RunRecord, messages: MessageParam[], from: DriverStart = {}): RunDriver {
    const { store, registry, model, webhooks, log, limits } = this.#options
    const lease: Lease = { owner: this.replicaId, token: run.lease_token }
    const watched = (runId: string): boolean => this.#eventWaiters.has(runId)
    const driver = new RunDriver({ store, registry, model, webhooks, log, toolConcurrency: this.#toolConcurrency, modelMaxRetries: limits.modelMaxRetries, telemetry: this.#telemetry, watched }, run, lease, messages, from)
    this.#drivers.set(run.id, driver)
    driver.events.subscribe(() => this.#wake(run.id))
    driver.drive().finally(async () => {
      if (this.#drivers.get(run.id) === driver) this.#drivers.delete(run.id)
      const ended = driver.events.run
      if (ended.status === 'requires_action' && ended.cancel_requested_at !== null) {
        // A cancel asked of another replica arrived while this step ran: honour it now.
        await this.cancel(ended.tenant_id, ended.id).catch((err) => log.warn({ err, runId: run.id }, 'could not cancel a run that was asked to stop'))
      } else if (!FINAL_STATUSES.has(ended.status)) {
        // Waiting for its caller, or handed back (shutdown): let anyone take it from here at once.
        await store.releaseRun(run.id, lease).catch(() => {})
      } else if (ended.callback_status === 'pending') {
        this.#deliverCallbacks().catch((err) => log.warn({ err }, 'callback delivery failed'))
      }
      this.#wake(run.id)
      // Room for one more: take up a queued run now rather than at the next sweep, if any may wait.
      if (this.#accepting && this.#mayHaveQueued) {
        this.#mayHaveQueued = false
        this.#takeOver().catch((err) => log.warn({ err: { message: (err as Error).message } }, 'could not take up queued runs'))
      }
    }).catch(() => {})
    return driver
  }

  #wake (runId: string): void {
    const waiters = this.#eventWaiters.get(runId)
    if (waiters !== undefined) for (const wake of [...waiters]) wake()
  }

  async #renewLeases (): Promise<void> {
    const ids = [...this.#drivers.keys()]
    if (ids.length === 0) return
    let held: Map<string, boolean>
    const asked = Date.now()
    try {
      held = new Map((await this.#options.store.renewLeases(this.replicaId, ids, this.#options.limits.leaseMs)).map((r) => [r.id, r.cancelRequested]))
      this.#renewedAt = asked
      this.#telemetry.metrics.leaseRenewals.inc({ result: 'ok' })
    } catch (err) {
      this.#telemetry.metrics.leaseRenewals.inc({ result: 'failed' })
      this.#options.log.warn({ err: { message: (err as Error).message } }, 'could not renew leases')
      // Unconfirmed for most of a lease: another replica may take these runs any moment now. Stop
      // driving them before it does, rather than both sending calls.
      if (Date.now() - this.#renewedAt > this.#options.limits.leaseMs * 0.8) {
        for (const driver of this.#drivers.values()) driver.stop(new RunStop('lease_lost', 'this replica could not renew its leases'))
      }
      return
    }
    for (const id of ids) {
      if (!held.has(id)) this.#drivers.get(id)?.stop(new RunStop('lease_lost', 'this replica lost the run\'s lease'))
      else if (held.get(id) === true) this.#drivers.get(id)?.stop(new RunStop('cancelled', 'the run was cancelled'))
    }
  }

  /** Once a second: deadlines of waiting runs, due callbacks, cancels asked elsewhere. */
  async #sweep (): Promise<void> {
    if (this.#sweeping || !this.#accepting) return
    this.#sweeping = true
    const { store, log } = this.#options
    try {
      if (this.#firstSweep) {
        this.#firstSweep = false
        // SQLite is held by this process alone (its file lock): every lease in it belonged to a
        // process that is gone, so its runs are taken up now rather than when the leases expire.
        if (store.kind === 'sqlite') {
          const released = await store.releaseAllLeases(this.replicaId)
          if (released > 0) log.info({ runs: released }, 'releasing the leases of a previous process')
        }
      }
      await this.#takeOver()
      if (this.#drivers.size > 0) {
        for (const id of await store.cancelRequested(this.replicaId)) {
          this.#drivers.get(id)?.stop(new RunStop('cancelled', 'the run was cancelled'))
        }
      }
      for (const run of await store.expiredWaitingRuns(Date.now(), SWEEP_BATCH)) {
        // Its driver's deadline fires at once: the run ends `timeout`, its client calls answered so.
        // One run that cannot be resumed must not hold up the others.
        await this.#resumeWaiting(run, (call) => cancelledOutput(call.id, 'the run reached its timeout before the caller answered'))
          .catch((err) => log.warn({ err: { message: (err as Error).message }, runId: run.id }, 'could not end a waiting run at its deadline'))
      }
      await this.#deliverCallbacks()
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'sweep failed')
    } finally {
      this.#sweeping = false
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
      } while (this.#takeOverAgain && this.#accepting)
    })().finally(() => { this.#takingOver = null })
    return await this.#takingOver
  }

  async #takeOverOnce (): Promise<void> {
    if (!this.#accepting) return
    const { store, limits } = this.#options
    // Runs queued past their deadline are ended whatever the room: they will not run.
    for (const run of await store.claimExpiredQueuedRuns(this.replicaId, limits.leaseMs, SWEEP_BATCH)) {
      this.#start(run, []).stop(new RunStop('timeout', `the run reached its timeout of ${(run.params as unknown as RunParams).timeout_ms} ms while queued`))
    }
    const room = Math.min(SWEEP_BATCH, limits.maxRunningRuns - this.#drivers.size - this.#reserved)
    if (room <= 0) return
    this.#reserved += room
    let claimed: RunRecord[]
    try {
      claimed = await store.claimAbandonedRuns(this.replicaId, limits.leaseMs, room)
    } finally {
      this.#reserved -= room
    }
    if (claimed.length === room) this.#mayHaveQueued = true
    for (const run of claimed) {
      const lease: Lease = { owner: this.replicaId, token: run.lease_token }
      try {
        // Our own run, whose lease ran out while we could not renew it: its old driver stops first.
        const stale = this.#drivers.get(run.id)
        if (stale !== undefined) {
          stale.stop(new RunStop('lease_lost', 'the run was taken over'))
          await stale.done
        }
        if (!this.#accepting) {
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
        this.#start(run, messages, { resumed })
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
    const failures = (this.#takeOverFailures.get(run.id) ?? 0) + 1
    this.#takeOverFailures.set(run.id, failures)
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

  /** The events of the step in progress of a run: all of them, however many pages. */
  async #stepEvents (run: RunRecord): Promise<EventRecord[]> {
    const events: EventRecord[] = []
    let after = run.step_events_after
    for (;;) {
      const page = await this.#options.store.listEvents(run.id, after, 1000)
      events.push(...page)
      if (page.length < 1000) return events
      after = page[page.length - 1]!.seq
    }
  }

  /**
   * Claims the callbacks that are due, each for one replica, and sends them without waiting for
   * them: a slow receiver must not hold up deadlines and cancels.
   */
  async #deliverCallbacks (): Promise<void> {
    const now = Date.now()
    // Claimed for longer than an attempt can take, so that nobody else sends it meanwhile.
    const claimUntil = now + this.#options.callbacks.timeoutMs + CALLBACK_CLAIM_MARGIN_MS
    const due = await this.#options.store.claimDueCallbacks(now, claimUntil, SWEEP_BATCH)
    for (const run of due) {
      const delivery = this.#deliverCallback(run, claimUntil)
        .catch((err) => this.#options.log.warn({ err, runId: run.id }, 'callback delivery failed'))
        .finally(() => this.#deliveries.delete(delivery))
      this.#deliveries.add(delivery)
    }
  }

  async #deliverCallback (run: RunRecord, claimedUntil: number): Promise<void> {
    const { store, webhooks, callbacks, log } = this.#options
    const secrets = activeSecrets(await store.getCallbackSecrets(run.tenant_id) ?? [], Date.now())
    const attempts = run.callback_attempts + 1
    const result = await webhooks.deliver(run.callback_url!, JSON.stringify(toRunObject(run)), { messageId: `${run.id}:callback`, secrets, timeoutMs: callbacks.timeoutMs, signal: this.#closing.signal })
    if (result.ok) {
      await store.recordCallback(run.id, claimedUntil, { status: 'delivered', attempts, next_at: null, error: null })
      log.info({ runId: run.id, attempts }, 'callback delivered')
      return
    }
    if (this.#closing.signal.aborted && result.status === null) {
      // Cut short by shutdown: not an attempt that counts.
      await store.recordCallback(run.id, claimedUntil, { status: 'pending', attempts: run.callback_attempts, next_at: Date.now(), error: run.callback_error })
      return
    }
    const error = wellFormed(result.error ?? 'failed')
    if (attempts >= callbacks.maxAttempts) {
      await store.recordCallback(run.id, claimedUntil, { status: 'failed', attempts, next_at: null, error })
      log.warn({ runId: run.id, attempts, error }, 'callback failed; no more attempts')
      return
    }
    const delay = Math.round(Math.min(CALLBACK_BACKOFF_CAP_MS, callbacks.retryBaseMs * 4 ** (attempts - 1)) * (0.8 + Math.random() * 0.4))
    await store.recordCallback(run.id, claimedUntil, { status: 'pending', attempts, next_at: Date.now() + delay, error })
    log.info({ runId: run.id, attempts, delayMs: delay, error }, 'callback failed; retrying')
    // Come back for it on time here; the sweeper would too, on any replica, within a second.
    setTimeout(() => { if (this.#accepting) this.#deliverCallbacks().catch((err) => log.warn({ err }, 'callback delivery failed')) }, delay).unref()
  }
}

/**
 * What the stored events say of a step in progress: its model answer if `step.completed` was
 * stored, the calls with a result (a call cut short by a shutdown or a cancel has none), and the
 * calls that were sent without one.
 */
function resumedStep (step: number, events: readonly EventRecord[]): ResumedStep {
  const ofStep = events.filter((e) => e.data.step === step)
  const completed = [...ofStep].reverse().find((e) => e.type === 'step.completed')
  const results = new Map<string, ToolResultBlockParam>()
  const sent = new Map<string, { effect: string | undefined }>()
  for (const event of ofStep) {
    const id = event.data.tool_use_id as string
    if (event.type === 'tool_call.started') sent.set(id, { effect: event.data.effect as string | undefined })
    if (event.type === 'tool_call.completed' && event.data.outcome !== 'cancelled') {
      results.set(id, toolResult(id, event.data.content as ToolResultContent, event.data.is_error === true))
    }
  }
  const inFlight = new Map([...sent].filter(([id]) => !results.has(id)))
  if (completed === undefined) return { step, results, inFlight, incomplete: null }
  const incomplete = Array.isArray(completed.data.incomplete) ? new Set(completed.data.incomplete as string[]) : null
  type Answer = NonNullable<ResumedStep['message']>
  const message: Answer = {
    content: completed.data.content as Answer['content'],
    stop_reason: completed.data.stop_reason as Answer['stop_reason'],
    usage: completed.data.usage as Answer['usage']
  }
  return { step, message, results, inFlight, incomplete }
}

function cancelledOutput (toolUseId: string, why: string): ToolResultBlockParam {
  return toolResult(toolUseId, `Not answered: ${why}.`, true)
}

/** A digest of a request's body, the same for the same JSON whatever the order of its keys. */
function hashRequest (body: unknown): string {
  return createHash('sha256').update(canonicalJson(body)).digest('hex')
}

function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (typeof value === 'object' && value !== null) {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}

/** `promise`, or a rejection as soon as `signal` aborts. */
async function abortable<T> (promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return await promise
  signal.throwIfAborted()
  let onAbort!: () => void
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

function notFound (runId: string): AppError {
  return new AppError('RUN_ERR_NOT_FOUND', `No run ${runId}: check the id, or list your runs with GET /runs.`)
}

function pick<T extends object, K extends keyof T> (object: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {}
  for (const key of keys) if (object[key] !== undefined) out[key] = object[key]
  return out
}
