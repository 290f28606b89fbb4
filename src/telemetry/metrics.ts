import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

/** Statuses of runs not yet final, as the `switchboard_runs_unfinished` gauge shows them. */
export type UnfinishedStatus = 'queued' | 'running' | 'requires_action'

/** What the gauges read at scrape time, from the engine and from storage. */
export interface MetricSources {
  /** Runs this replica drives now. */
  readonly runsDriving: () => number
  /** Runs not yet final, across every replica, by status (a storage query). */
  readonly unfinishedRuns: () => Promise<Record<UnfinishedStatus, number>>
}

/**
 * How a tool call ended, as a metric label: the outcome of its `tool_call.completed` event, with
 * `unreachable` (no answer could be read) and `unknown` (in flight when its replica died) counted
 * as `error`. Seven values, whatever happens: `circuit_open` and `cached` are calls never sent
 * (see src/tools/health/).
 */
export type ToolCallLabel = 'ok' | 'error' | 'timeout' | 'refused' | 'cancelled' | 'circuit_open' | 'cached'

/** How a model call ended: answered, failed (any error, retried or not), or stopped with its run. */
export type ModelCallLabel = 'ok' | 'error' | 'cancelled'

/** Called for every event a run's log records (see EventLog). */
export type EventObserver = (type: string, data: Record<string, unknown>) => void

// Distinct tool and model names kept as label values; any more are counted as `other`. Tenants
// name their tools and runs name their models: neither may grow the series without bound.
const MAX_TOOL_LABELS = 200
const MAX_MODEL_LABELS = 50
/** Storage is asked for the counts of unfinished runs at most this often, however often it is scraped. */
const UNFINISHED_CACHE_MS = 10_000
/** A scrape waits at most this long for that query; it shows the last counts meanwhile. */
const UNFINISHED_WAIT_MS = 2_000

const TOOL_OUTCOMES: Record<string, ToolCallLabel | undefined> = {
  ok: 'ok',
  error: 'error',
  unreachable: 'error',
  unknown: 'error',
  timeout: 'timeout',
  refused: 'refused',
  cancelled: 'cancelled',
  circuit_open: 'circuit_open',
  cached: 'cached'
}
const TOKEN_TYPES = [
  ['input_tokens', 'input'],
  ['output_tokens', 'output'],
  ['cache_creation_input_tokens', 'cache_creation_input'],
  ['cache_read_input_tokens', 'cache_read_input']
] as const
const ENDED = new Map([['run.completed', 'completed'], ['run.failed', 'failed'], ['run.cancelled', 'cancelled']])

/**
 * Switchboard's Prometheus metrics, on a registry of their own (one per app: tests build many in
 * one process). Every label has a bounded set of values: statuses, stop reasons, outcomes, and
 * tool and model names capped in number; never a run id, a URL, a tenant or a payload. (The cost
 * counters of src/cost/cost-metrics.ts, on this registry, are the one place a tenant is named: a
 * tenant of API_KEYS, as SPEC §17 asks for tokens and cost by tenant.)
 */
export class Metrics {
  readonly registry: Registry
  readonly runsStarted: Counter
  readonly runsEnded: Counter<'status' | 'stop_reason'>
  readonly runsHandedBack: Counter<'reason'>
  readonly runsTakenOver: Counter
  readonly steps: Counter
  readonly modelCalls: Counter<'model' | 'outcome'>
  readonly modelCallDuration: Histogram<'model' | 'outcome'>
  readonly modelCallRetries: Counter<'model'>
  readonly modelTokens: Counter<'model' | 'type'>
  readonly modelCallsInFlight: Gauge
  readonly toolCalls: Counter<'tool' | 'outcome'>
  readonly toolCallDuration: Histogram<'tool' | 'outcome'>
  readonly toolCallAttempts: Counter<'tool'>
  /** Calls a tool answered `202 Accepted`, to post the result later (SPEC §13). */
  readonly toolCallsAccepted: Counter<'tool'>
  readonly toolAttemptsInFlight: Gauge
  readonly leaseRenewals: Counter<'result'>
  /** 1 while a tool's circuit breaker on this replica is open (or probing), else 0. */
  readonly toolCircuitOpen: Gauge<'tool'>
  readonly toolCircuitChanges: Counter<'tool' | 'state'>
  readonly #tools = new Set<string>()
  readonly #models = new Set<string>()
  #sources: MetricSources | null = null
  #unfinished: { at: number, counts: Record<UnfinishedStatus, number> | null, pending: Promise<void> | null } = { at: 0, counts: null, pending: null }

  constructor (registry: Registry = new Registry()) {
    this.registry = registry
    // The process's CPU counters count from when they are made: make them with the first app,
    // not at the first scrape (which would show nothing spent, or less than was).
    processRegistry()
    const registers = [registry]
    this.runsStarted = new Counter({ name: 'switchboard_runs_started_total', help: 'Runs that started running (taken out of queued).', registers })
    this.runsEnded = new Counter({ name: 'switchboard_runs_ended_total', help: 'Runs that ended, by final status and stop reason.', labelNames: ['status', 'stop_reason'], registers })
    this.runsHandedBack = new Counter({ name: 'switchboard_runs_handed_back_total', help: 'Runs this replica stopped driving without ending them: shutdown, lease_lost or storage.', labelNames: ['reason'], registers })
    this.runsTakenOver = new Counter({ name: 'switchboard_runs_taken_over_total', help: 'Runs resumed mid-step on this replica after the replica driving them stopped.', registers })
    this.steps = new Counter({ name: 'switchboard_steps_total', help: 'Steps begun (one model call and its tool calls).', registers })
    this.modelCalls = new Counter({ name: 'switchboard_model_calls_total', help: 'Model call attempts, by model and outcome (ok, error, cancelled).', labelNames: ['model', 'outcome'], registers })
    this.modelCallDuration = new Histogram({
      name: 'switchboard_model_call_duration_seconds',
      help: 'Duration of model call attempts, from the request to the end of the streamed message.',
      labelNames: ['model', 'outcome'],
      buckets: [0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320],
      registers
    })
    this.modelCallRetries = new Counter({ name: 'switchboard_model_call_retries_total', help: 'Model calls retried after a retryable failure.', labelNames: ['model'], registers })
    this.modelTokens = new Counter({ name: 'switchboard_model_tokens_total', help: 'Tokens of model calls, by model and type (input, output, cache_creation_input, cache_read_input).', labelNames: ['model', 'type'], registers })
    this.modelCallsInFlight = new Gauge({ name: 'switchboard_model_calls_in_flight', help: 'Model calls under way on this replica.', registers })
    this.toolCallsAccepted = new Counter({ name: 'switchboard_tool_calls_accepted_total', help: 'Tool calls the tool answered 202 Accepted, to post their result later.', labelNames: ['tool'], registers })
    this.toolCalls = new Counter({ name: 'switchboard_tool_calls_total', help: 'Tool calls, by tool and outcome (ok, error, timeout, refused, cancelled, circuit_open, cached).', labelNames: ['tool', 'outcome'], registers })
    this.toolCallDuration = new Histogram({
      name: 'switchboard_tool_call_duration_seconds',
      help: 'Duration of webhook tool calls that were sent, every attempt and wait between them included.',
      labelNames: ['tool', 'outcome'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers
    })
    this.toolCallAttempts = new Counter({ name: 'switchboard_tool_call_attempts_total', help: 'HTTP attempts of webhook tool calls (more than the calls when some were retried).', labelNames: ['tool'], registers })
    this.toolAttemptsInFlight = new Gauge({ name: 'switchboard_tool_calls_in_flight', help: 'Webhook requests to tools under way on this replica.', registers })
    this.toolCircuitOpen = new Gauge({ name: 'switchboard_tool_circuit_open', help: 'Tools whose circuit breaker on this replica is open or probing (1) or closed again (0).', labelNames: ['tool'], registers })
    this.toolCircuitChanges = new Counter({ name: 'switchboard_tool_circuit_changes_total', help: 'Changes of tools\' circuit breakers on this replica, by the state entered (open, half_open, closed).', labelNames: ['tool', 'state'], registers })
    this.leaseRenewals = new Counter({ name: 'switchboard_lease_renewals_total', help: 'Renewals of this replica\'s run leases, by result (ok, failed).', labelNames: ['result'], registers })

    const metrics = this
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'switchboard_runs_driving',
      help: 'Runs this replica is driving now.',
      registers,
      collect () { this.set(metrics.#sources?.runsDriving() ?? 0) }
    })
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'switchboard_runs_unfinished',
      help: `Runs not yet final across every replica, by status, read from storage at most every ${UNFINISHED_CACHE_MS / 1000} s.`,
      labelNames: ['status'],
      registers,
      async collect () {
        const counts = await metrics.#unfinishedRuns()
        if (counts === null) {
          this.reset()
          return
        }
        for (const [status, count] of Object.entries(counts)) this.set({ status }, count)
      }
    })
  }

  /** Where the gauges read from, once the engine and storage exist. */
  track (sources: MetricSources): void {
    this.#sources = sources
  }

  /** A tool's name as a label value: itself for the first names seen, `other` past the cap. */
  toolLabel (name: string): string {
    return boundedLabel(this.#tools, name, MAX_TOOL_LABELS)
  }

  modelLabel (model: string): string {
    return boundedLabel(this.#models, model, MAX_MODEL_LABELS)
  }

  /**
   * Counts what a run's events say: runs started and ended, steps, retries and tokens of model
   * calls, tool calls with their outcome, duration and attempts. The one place these are counted,
   * so that they agree with the event log. `model` is the run's.
   */
  observer (model: string): EventObserver {
    const modelLabel = this.modelLabel(model)
    return (type, data) => {
      try {
        this.#count(modelLabel, type, data)
      } catch {
        // A metric is never worth a run: a value prom-client refuses is dropped.
      }
    }
  }

  #count (modelLabel: string, type: string, data: Record<string, unknown>): void {
    switch (type) {
      case 'step.started':
        this.steps.inc()
        return
      case 'step.retrying':
        this.modelCallRetries.inc({ model: modelLabel })
        return
      case 'step.completed': {
        const usage = data.usage as Record<string, unknown> | undefined
        if (usage === undefined || usage === null) return
        for (const [field, tokenType] of TOKEN_TYPES) {
          const count = usage[field]
          if (typeof count === 'number' && count > 0) this.modelTokens.inc({ model: modelLabel, type: tokenType }, count)
        }
        return
      }
      case 'tool_call.completed': {
        const outcome = TOOL_OUTCOMES[data.outcome as string]
        // `client`: the caller's own output for a client tool, not a webhook call.
        if (outcome === undefined) return
        const tool = this.toolLabel(String(data.name))
        const attempts = typeof data.attempts === 'number' ? data.attempts : 0
        this.toolCalls.inc({ tool, outcome })
        if (attempts > 0) {
          this.toolCallAttempts.inc({ tool }, attempts)
          this.toolCallDuration.observe({ tool, outcome }, (data.duration_ms as number) / 1000)
        }
        return
      }
      case 'tool_call.accepted':
        this.toolCallsAccepted.inc({ tool: this.toolLabel(String(data.name)) })
        return
      case 'run.started':
        this.runsStarted.inc()
        return
      case 'run.resumed':
        this.runsTakenOver.inc()
        return
      default: {
        const status = ENDED.get(type)
        if (status !== undefined) this.runsEnded.inc({ status, stop_reason: String(data.stop_reason ?? 'none') })
      }
    }
  }

  /**
   * The Prometheus text of these metrics and of the process's (CPU, memory, event loop, GC),
   * which are the same for every app in a process and so are collected once per process.
   */
  async scrape (): Promise<string> {
    const [own, process] = await Promise.all([this.registry.metrics(), processRegistry().metrics()])
    return `${own}\n${process}`
  }

  /** The content type of {@link scrape}'s text. */
  get contentType (): string {
    return this.registry.contentType
  }

  /** The last counts of unfinished runs; asks storage again when they are older than the cache. */
  async #unfinishedRuns (): Promise<Record<UnfinishedStatus, number> | null> {
    const sources = this.#sources
    if (sources === null) return null
    const cache = this.#unfinished
    if (Date.now() - cache.at >= UNFINISHED_CACHE_MS && cache.pending === null) {
      cache.pending = sources.unfinishedRuns().then(
        (counts) => { cache.counts = counts },
        () => { cache.counts = null } // storage down: show nothing rather than stale counts
      ).finally(() => {
        cache.at = Date.now()
        cache.pending = null
      })
    }
    if (cache.pending !== null) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([cache.pending, new Promise((resolve) => { timer = setTimeout(resolve, UNFINISHED_WAIT_MS) })])
      clearTimeout(timer)
    }
    return cache.counts
  }
}

function boundedLabel (seen: Set<string>, value: string, max: number): string {
  if (seen.has(value)) return value
  if (seen.size >= max) return 'other'
  seen.add(value)
  return value
}

let processMetrics: Registry | undefined

/** Node's default metrics, collected once per process whatever the number of apps. */
function processRegistry (): Registry {
  if (processMetrics === undefined) {
    processMetrics = new Registry()
    collectDefaultMetrics({ register: processMetrics })
  }
  return processMetrics
}
