import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import { AppError } from '../errors.js'
import { newId } from '../ids.js'
import type { Log } from '../logger.js'
import type { ModelClient } from '../model/model-client.js'
import { FINAL_STATUSES, type CreateRun, type RunParams } from '../schemas/runs.js'
import type { Page, RunFilter, RunRecord, Store } from '../store/index.js'
import { ToolConcurrency } from '../tools/dispatcher.js'
import type { ToolRegistry } from '../tools/registry.js'
import type { WebhookClient } from '../tools/webhook-client.js'
import { RunDriver, RunStop } from './run-driver.js'
import { toRunObject } from './run-object.js'
import { hasLoneSurrogate } from '../text.js'
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
}

export interface RunEngineOptions {
  readonly store: Store
  readonly registry: ToolRegistry
  readonly model: ModelClient
  readonly webhooks: WebhookClient
  readonly log: Log
  readonly limits: EngineLimits
  /** False when no API key (nor a base URL of a gateway) is configured: runs are refused. */
  readonly modelConfigured: boolean
  /** This process's name in leases; unique per process. */
  readonly replicaId?: string
}

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
  /** Creates under way: the drain waits for them, so that no run starts after it looked. */
  readonly #creating = new Set<Promise<unknown>>()
  #accepting = true

  constructor (options: RunEngineOptions) {
    this.#options = options
    this.replicaId = options.replicaId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
    // Renew well before expiry: a third of the lease, so two missed renewals still hold it.
    this.#renewal = setInterval(() => { this.#renewLeases().catch(() => {}) }, Math.max(250, Math.floor(options.limits.leaseMs / 3)))
    this.#renewal.unref()
  }

  /** Runs driven by this process right now. */
  get activeRuns (): number {
    return this.#drivers.size
  }

  /**
   * Checks a run request, stores the run (status `queued`, event `run.created`) and starts driving
   * it. Every refusal is an {@link AppError} whose message says what to fix.
   */
  async create (tenantId: string, body: CreateRun): Promise<RunRecord> {
    if (!this.#accepting) throw new AppError('SERVICE_ERR_DRAINING', 'This replica is shutting down: retry on another one.', { headers: { 'retry-after': '1' } })
    const creating = this.#create(tenantId, body)
    this.#creating.add(creating)
    try {
      return await creating
    } finally {
      this.#creating.delete(creating)
    }
  }

  async #create (tenantId: string, body: CreateRun): Promise<RunRecord> {
    if (!this.#options.modelConfigured) {
      throw new AppError('SERVICE_ERR_MODEL_NOT_CONFIGURED', 'No model API is configured: set ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL for a gateway) and restart.')
    }
    const { limits } = this.#options
    if ((body.input === undefined) === (body.messages === undefined)) {
      throw new AppError('RUN_ERR_INVALID_REQUEST', 'Send exactly one of `input` (the first user message, a string) and `messages` (a Messages API history).')
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

    const toolNames = body.tools ?? []
    const found = new Set((await this.#options.store.getTools(tenantId, toolNames)).map((t) => t.name))
    const unknown = toolNames.filter((name) => !found.has(name))
    if (unknown.length > 0) {
      throw new AppError('RUN_ERR_UNKNOWN_TOOL', `Unknown tool${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}. Register ${unknown.length > 1 ? 'them' : 'it'} with PUT /tools/{name} first, or list yours with GET /tools.`)
    }
    if (body.tool_choice?.type === 'tool' && !found.has(body.tool_choice.name ?? '')) {
      throw new AppError('RUN_ERR_INVALID_REQUEST', `tool_choice names ${body.tool_choice.name ?? '(nothing)'}, which is not one of this run's tools.`)
    }
    if (body.tool_choice !== undefined && toolNames.length === 0) {
      throw new AppError('RUN_ERR_INVALID_REQUEST', 'tool_choice needs tools: list the run\'s tools in `tools`, or leave tool_choice out.')
    }

    const params: RunParams = {
      tools: toolNames,
      max_tokens: body.max_tokens ?? 4096,
      max_steps: maxSteps,
      timeout_ms: timeoutMs,
      disable_parallel_tool_use: body.disable_parallel_tool_use ?? false,
      parallelism: body.parallelism ?? 64,
      ...pick(body, ['system', 'tool_choice', 'thinking', 'temperature', 'top_p', 'top_k', 'stop_sequences'])
    }
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
      deadline_at: now + timeoutMs,
      steps: 0,
      tool_calls_total: 0,
      tool_calls_errors: 0,
      usage: { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
      output: [],
      required_action: null,
      error: null,
      message_count: messages.length,
      event_count: 1,
      idempotency_key: null,
      request_hash: null,
      trace_id: randomBytes(16).toString('hex'),
      lease_owner: this.replicaId,
      lease_token: 1,
      lease_expires_at: now + limits.leaseMs
    }
    const { run: stored } = await this.#options.store.createRun({
      run,
      messages,
      event: { seq: 1, type: 'run.created', at: now, data: toRunObject(run) },
      leaseOwner: this.replicaId,
      leaseMs: limits.leaseMs
    })
    this.#options.log.info({ runId: stored.id, tenantId, tools: toolNames.length, model: stored.model }, 'run created')
    this.#start(stored, messages)
    return stored
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
      if (Date.now() > run.deadline_at + 2 * this.#options.limits.leaseMs) {
        throw new AppError('RUN_ERR_STALLED', `Run ${runId} is past its deadline and no replica is driving it; follow it with GET /runs/${runId}.`, { headers: { location: `/runs/${runId}` } })
      }
      await abortable(new Promise((resolve) => setTimeout(resolve, delay)), signal)
      delay = Math.min(delay * 2, 2000)
    }
  }

  /**
   * Stops taking runs, lets those in flight finish for up to `graceMs`, then hands the rest back:
   * their state is stored and their leases released, for another replica to take at once.
   */
  async close (graceMs: number): Promise<void> {
    this.#accepting = false
    await Promise.allSettled([...this.#creating])
    const drivers = [...this.#drivers.values()]
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
    clearInterval(this.#renewal)
    await this.#options.webhooks.close()
  }

  #start (run: RunRecord, messages: MessageParam[]): void {
    const { store, registry, model, webhooks, log, limits } = this.#options
    const lease = { owner: this.replicaId, token: run.lease_token }
    const driver = new RunDriver({ store, registry, model, webhooks, log, toolConcurrency: this.#toolConcurrency, modelMaxRetries: limits.modelMaxRetries }, run, lease, messages)
    this.#drivers.set(run.id, driver)
    driver.drive().finally(async () => {
      this.#drivers.delete(run.id)
      if (!FINAL_STATUSES.has(driver.events.run.status)) {
        // Handed back (shutdown): let another replica take it without waiting for the lease to expire.
        await store.releaseRun(run.id, lease).catch(() => {})
      }
    }).catch(() => {})
  }

  async #renewLeases (): Promise<void> {
    const ids = [...this.#drivers.keys()]
    if (ids.length === 0) return
    let held: Set<string>
    try {
      held = new Set(await this.#options.store.renewLeases(this.replicaId, ids, this.#options.limits.leaseMs))
    } catch (err) {
      this.#options.log.warn({ err: { message: (err as Error).message } }, 'could not renew leases')
      return
    }
    for (const id of ids) {
      if (!held.has(id)) this.#drivers.get(id)?.stop(new RunStop('lease_lost', 'this replica lost the run\'s lease'))
    }
  }
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

function isSettled (run: RunRecord): boolean {
  return FINAL_STATUSES.has(run.status) || run.status === 'requires_action'
}

function notFound (runId: string): AppError {
  return new AppError('RUN_ERR_NOT_FOUND', `No run ${runId}: check the id, or list your runs with GET /runs.`)
}

function pick<T extends object, K extends keyof T> (object: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {}
  for (const key of keys) if (object[key] !== undefined) out[key] = object[key]
  return out
}
