import { AppError } from '../../errors.js'
import type { Log } from '../../logger.js'
import type { ToolCallRow, ToolCallTotals, ToolHealthStore } from '../../store/index.js'
import type { ToolStats } from '../../schemas/tools.js'

/** The longest window the statistics answer for. */
export const MAX_WINDOW_MS = 7 * 86_400_000
/** Calls are kept a day longer than the longest window, then dropped. */
export const CALLS_KEPT_MS = MAX_WINDOW_MS + 86_400_000

// Ended calls are written in batches: at most this long after they end, or once this many wait.
const FLUSH_AFTER_MS = 1000
const FLUSH_AT_ROWS = 500
// Rows waiting when storage fails are kept up to this many; past it the oldest are dropped.
const MAX_PENDING_ROWS = 50_000
// How often a replica drops expired results and calls past CALLS_KEPT_MS.
const PRUNE_EVERY_MS = 10 * 60_000

const UNITS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 }

/** A window as `GET /tools/{name}/stats` takes it (`15m`, `1h`, `7d`), in ms. */
export function parseWindow (text: string): number {
  const match = /^([1-9][0-9]{0,5})([mhd])$/.exec(text)
  const ms = match === null ? NaN : Number(match[1]) * UNITS[match[2]!]!
  if (!(ms <= MAX_WINDOW_MS)) {
    throw new AppError('TOOL_ERR_INVALID_WINDOW', `window "${text.slice(0, 20)}" is not a window the statistics answer for: write minutes, hours or days (15m, 1h, 7d), at most 7d.`)
  }
  return ms
}

/**
 * Records every call that ended on this replica, for the statistics of every replica: the rows
 * are written in batches (see FLUSH_AFTER_MS), so another replica's calls show up to a second
 * late, and a replica that dies loses at most its last second of them. Not a run's record: a
 * failed write is logged and retried with the next batch, and never holds a call up.
 */
export class CallRecorder {
  readonly #store: ToolHealthStore
  readonly #log: Log
  readonly #now: () => number
  #pending: ToolCallRow[] = []
  #timer: NodeJS.Timeout | undefined
  #flushing: Promise<void> = Promise.resolve()
  #prunedAt: number

  constructor (store: ToolHealthStore, log: Log, now: () => number = Date.now) {
    this.#store = store
    this.#log = log
    this.#now = now
    this.#prunedAt = now()
  }

  record (row: ToolCallRow): void {
    this.#pending.push(row)
    if (this.#pending.length > MAX_PENDING_ROWS) this.#pending.splice(0, this.#pending.length - MAX_PENDING_ROWS)
    if (this.#pending.length >= FLUSH_AT_ROWS) {
      this.flush().catch(() => {})
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => { this.flush().catch(() => {}) }, FLUSH_AFTER_MS)
      this.#timer.unref()
    }
  }

  /** Writes what waits; resolves once it is stored (or its write failed and was logged). */
  async flush (): Promise<void> {
    clearTimeout(this.#timer)
    this.#timer = undefined
    // One write at a time, in order: a flush waits for the one under way, then writes the rest.
    const flushing = this.#flushing.then(async () => await this.#write())
    this.#flushing = flushing
    await flushing
  }

  async #write (): Promise<void> {
    const rows = this.#pending
    if (rows.length === 0) return
    this.#pending = []
    try {
      await this.#store.recordCalls(rows)
    } catch (err) {
      // Put back, to go with the next batch (bounded by MAX_PENDING_ROWS).
      this.#pending = [...rows, ...this.#pending]
      this.#log.warn({ err, calls: rows.length }, 'tool call statistics not stored')
      if (this.#timer === undefined) {
        this.#timer = setTimeout(() => { this.flush().catch(() => {}) }, FLUSH_AFTER_MS)
        this.#timer.unref()
      }
      return
    }
    const now = this.#now()
    if (now - this.#prunedAt >= PRUNE_EVERY_MS) {
      this.#prunedAt = now
      await this.#store.prune(now, now - CALLS_KEPT_MS).catch((err: unknown) => { this.#log.warn({ err }, 'tool health data not pruned') })
    }
  }

  /** Stops the timer; what waits is written first. */
  async close (): Promise<void> {
    await this.flush()
  }
}

/** The statistics' answer (less its breakers) from the stored totals. */
export function statsFrom (name: string, window: string, since: number, until: number, totals: ToolCallTotals): Omit<ToolStats, 'circuit'> {
  const outcomes: Record<string, number> = {}
  const errors = { timeout: 0, unreachable: 0, http_5xx: 0, http_4xx: 0, tool_error: 0, refused: 0, circuit_open: 0, cancelled: 0 }
  let calls = 0
  for (const { outcome, statusClass, count } of totals.outcomes) {
    calls += count
    outcomes[outcome] = (outcomes[outcome] ?? 0) + count
    if (outcome === 'error') {
      errors[statusClass === 5 ? 'http_5xx' : statusClass === 4 ? 'http_4xx' : 'tool_error'] += count
    } else if (outcome in errors) {
      errors[outcome as keyof typeof errors] += count
    }
  }
  const failed = calls - (outcomes.ok ?? 0) - (outcomes.cached ?? 0)
  return {
    object: 'tool_stats',
    name,
    window,
    since: new Date(since).toISOString(),
    until: new Date(until).toISOString(),
    calls,
    outcomes,
    errors,
    error_rate: calls === 0 ? null : failed / calls,
    latency_ms: { sent: totals.sent, p50: totals.p50, p95: totals.p95, p99: totals.p99 }
  }
}
