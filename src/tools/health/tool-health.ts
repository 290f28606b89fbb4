import type { Log } from '../../logger.js'
import type { CircuitState, ToolStats } from '../../schemas/tools.js'
import type { CircuitRow, ToolHealthStore, ToolRecord } from '../../store/index.js'
import type { Metrics } from '../../telemetry/metrics.js'
import { errorOutcome } from '../tool-result.js'
import type { CallResult } from '../tool-source.js'
import { CircuitBreakers, healthOf, type BreakerState } from './circuit-breaker.js'
import { ResultCache } from './result-cache.js'
import { CallRecorder, parseWindow, statsFrom } from './tool-stats.js'

export { parseWindow } from './tool-stats.js'

export interface ToolHealthOptions {
  readonly store: ToolHealthStore
  /** This replica's name: breakers are per replica, and shown by it. */
  readonly replicaId: string
  readonly log: Log
  readonly metrics: Metrics
  readonly now?: () => number
}

/** A guarded call's result: the source's, or one answered without a call; `circuit` when the breaker changed. */
export interface GuardedResult extends CallResult {
  /** The state the tool's breaker entered because of this call, if it changed. */
  readonly circuit?: BreakerState
}

/**
 * The guards around every tool call, whatever its source (SPEC §18), and what they learn:
 * - the result cache of read_only tools (result-cache.ts): a stored answer for the same input
 *   answers the call (outcome `cached`), with no call;
 * - the circuit breaker of each tool on this replica (circuit-breaker.ts): while open, a call
 *   fails at once (outcome `circuit_open`) and nothing is sent;
 * - the record of each call for the statistics of every replica (tool-stats.ts).
 * The engine calls {@link guard} around a source's call; routes read {@link circuit} and
 * {@link stats}. A storage failure of the cache or the record never fails a call.
 */
export class ToolHealth {
  readonly #store: ToolHealthStore
  readonly #replicaId: string
  readonly #log: Log
  readonly #metrics: Metrics
  readonly #now: () => number
  readonly #breakers = new CircuitBreakers()
  readonly #cache: ResultCache
  readonly #recorder: CallRecorder

  constructor (options: ToolHealthOptions) {
    this.#store = options.store
    this.#replicaId = options.replicaId
    this.#log = options.log
    this.#metrics = options.metrics
    this.#now = options.now ?? Date.now
    this.#cache = new ResultCache(options.store)
    this.#recorder = new CallRecorder(options.store, options.log, this.#now)
  }

  /**
   * Makes a call of `tool` through its guards: `call` is the source's call, made only when no
   * cached result answers it and the breaker lets it through. Resolves like a source: never
   * rejects but for `call`'s own rejections.
   */
  async guard (tool: ToolRecord, input: unknown, call: () => Promise<CallResult>): Promise<GuardedResult> {
    const started = this.#now()
    if (ResultCache.applies(tool)) {
      const cached = await this.#cache.find(tool, input, started).catch((err: unknown) => {
        this.#log.warn({ err, tool: tool.name }, 'tool result cache not read')
        return null
      })
      if (cached !== null) return this.#ended(tool, { outcome: cached, attempts: 0 }, started)
    }
    const breaker = this.#breakers.of(tool)
    const admission = breaker?.admit(started)
    if (admission !== undefined && !admission.pass) {
      const retryAt = new Date(admission.retryAt).toISOString()
      const message = `Tool ${tool.name} is unavailable: ${admission.failures} failures in a row; retried after ${retryAt}${admission.probing ? ' (a probe call is under way)' : ''}.`
      return this.#ended(tool, { outcome: errorOutcome('circuit_open', message), attempts: 0 }, started)
    }
    let result: CallResult
    try {
      result = await call()
    } catch (err) {
      // A source never rejects but for a fault of ours: a probe that ends so tells nothing, and
      // must not leave the breaker waiting for it for ever.
      if (admission?.pass === true) breaker!.record('neutral', admission.probe, this.#now())
      throw err
    }
    const ended = this.#now()
    let circuit: BreakerState | null = null
    if (breaker !== null && admission?.pass === true) {
      circuit = breaker.record(healthOf(result.outcome), admission.probe, ended)
      if (circuit !== null) this.#circuitChanged(tool, circuit)
    }
    if (ResultCache.applies(tool)) {
      await this.#cache.keep(tool, input, result.outcome, ended).catch((err: unknown) => {
        this.#log.warn({ err, tool: tool.name }, 'tool result not cached')
      })
    }
    this.#ended(tool, result, started, ended)
    return circuit === null ? result : { ...result, circuit }
  }

  /** What this replica's breaker of `tool` says now. */
  circuit (tool: ToolRecord): CircuitState {
    if (tool.circuit_breaker === false) return { replica: this.#replicaId, state: 'off', failures: 0, retry_at: null }
    const view = this.#breakers.peek(tool)?.view(this.#now())
    return {
      replica: this.#replicaId,
      state: view?.state ?? 'closed',
      failures: view?.failures ?? 0,
      retry_at: view?.retryAt == null ? null : new Date(view.retryAt).toISOString()
    }
  }

  /**
   * How `tool`'s calls went over the last `window` (`1h`), on every replica, with each replica's
   * breaker. This replica's calls are stored first, so that they all count.
   */
  async stats (tool: ToolRecord, window: string): Promise<ToolStats> {
    const windowMs = parseWindow(window)
    await this.#recorder.flush()
    const until = this.#now()
    const since = until - windowMs
    const [totals, stored] = await Promise.all([
      this.#store.callTotals(tool.tenant_id, tool.name, since),
      this.#store.listCircuits(tool.tenant_id, tool.name)
    ])
    return { ...statsFrom(tool.name, window, since, until, totals), circuit: this.#circuits(tool, stored, since, until) }
  }

  /** Writes the calls still waiting to be recorded. */
  async close (): Promise<void> {
    await this.#recorder.close()
  }

  #circuits (tool: ToolRecord, stored: readonly CircuitRow[], since: number, now: number): ToolStats['circuit'] {
    if (tool.circuit_breaker === false) return { state: 'off', replicas: [] }
    const own = this.circuit(tool)
    // Another replica's breaker as it last changed, if that was within the window or it is still
    // open: a replica that stopped leaves its last change behind, which must not count for ever.
    const replicas: CircuitState[] = stored
      .filter((row) => row.replica !== this.#replicaId && (row.updated_at >= since || (row.state !== 'closed' && (row.retry_at ?? 0) > now)))
      .map((row) => ({ replica: row.replica, state: row.state, failures: row.failures, retry_at: row.retry_at === null ? null : new Date(row.retry_at).toISOString() }))
    if (own.state !== 'closed' || own.failures > 0 || stored.some((row) => row.replica === this.#replicaId)) replicas.push(own)
    replicas.sort((a, b) => a.replica.localeCompare(b.replica))
    const state = replicas.some((r) => r.state === 'open') ? 'open' : replicas.some((r) => r.state === 'half_open') ? 'half_open' : 'closed'
    return { state, replicas }
  }

  #ended (tool: ToolRecord, result: CallResult, started: number, ended: number = this.#now()): CallResult {
    this.#recorder.record({
      tenant_id: tool.tenant_id,
      name: tool.name,
      at: ended,
      outcome: result.outcome.kind,
      status: result.outcome.status,
      duration_ms: result.attempts === 0 ? 0 : Math.max(0, ended - started),
      attempts: result.attempts
    })
    return result
  }

  #circuitChanged (tool: ToolRecord, state: BreakerState): void {
    const label = this.#metrics.toolLabel(tool.name)
    this.#metrics.toolCircuitOpen.set({ tool: label }, state === 'closed' ? 0 : 1)
    this.#metrics.toolCircuitChanges.inc({ tool: label, state })
    const view = this.#breakers.peek(tool)!.view(this.#now())
    this.#log.warn({ tool: tool.name, tenantId: tool.tenant_id, state, failures: view.failures }, state === 'open' ? 'tool circuit opened' : 'tool circuit closed')
    this.#store.putCircuit({
      tenant_id: tool.tenant_id,
      name: tool.name,
      replica: this.#replicaId,
      state: view.state,
      failures: view.failures,
      retry_at: view.retryAt,
      updated_at: this.#now()
    }).catch((err: unknown) => { this.#log.warn({ err, tool: tool.name }, 'tool circuit state not stored') })
  }
}
