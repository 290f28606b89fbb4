import { AppError } from '../errors.js'
import type { Log } from '../logger.js'
import { isoDate } from '../schemas/common.js'
import type { Usage, UsageGrouping, UsageStore, UsageTotals } from '../store/index.js'
import type { Metrics } from '../telemetry/index.js'
import { BudgetGuard, type RunBudget } from './budget-guard.js'
import { toUsd } from './call-cost.js'
import { CostMetrics } from './cost-metrics.js'
import type { PriceTable } from './prices.js'
import { budgetWindow, type TenantBudget } from './tenant-budgets.js'

export interface CostControlOptions {
  readonly prices: PriceTable
  readonly tenantBudgets: readonly TenantBudget[]
  readonly usage: UsageStore
  readonly metrics: Metrics
  readonly log: Log
}

/** One group of a usage report (a day, a model or a tool), or the whole period's totals. */
export interface UsageLine {
  readonly runs: number
  readonly model_calls: number
  readonly input_tokens: number
  readonly output_tokens: number
  readonly cache_creation_input_tokens: number
  readonly cache_creation: { readonly ephemeral_5m_input_tokens: number, readonly ephemeral_1h_input_tokens: number }
  readonly cache_read_input_tokens: number
  readonly cost_usd: number
  readonly unpriced_model_calls: number
  readonly tool_calls: number
  readonly errors: number
}

/** What GET /usage answers. */
export interface UsageReport {
  readonly object: 'usage'
  readonly from: string
  readonly to: string
  readonly group_by: UsageGrouping
  readonly data: Array<UsageLine & { readonly key: string }>
  readonly total: UsageLine
}

/** The longest period a usage report covers. */
export const MAX_REPORT_DAYS = 366
const DAY_MS = 86_400_000

/**
 * Cost control (SPEC §17), the room the engine calls: the price table, each run's budget guard,
 * tenants' budgets and their usage. Its parts: prices.ts (the table and MODEL_PRICES_FILE),
 * call-cost.ts (what one model call cost), budget-guard.ts (the check before each model call),
 * tenant-budgets.ts (TENANT_BUDGETS and its windows), and the usage ledger in storage
 * (src/store/usage-ledger.ts), which every replica writes and reads.
 */
export class CostControl {
  readonly prices: PriceTable
  readonly #options: CostControlOptions
  readonly #metrics: CostMetrics

  constructor (options: CostControlOptions) {
    this.#options = options
    this.prices = options.prices
    this.#metrics = new CostMetrics(options.metrics)
  }

  /**
   * Checks a create beyond its schema: a budget in USD needs a model with a price (400), and the
   * tenant must be under each of its budgets (429 with `retry-after` at the end of the window).
   */
  async admit (tenantId: string, model: string, budget: RunBudget | undefined, now = Date.now()): Promise<void> {
    if (budget?.max_cost_usd !== undefined && !this.prices.has(model)) {
      throw new AppError('RUN_ERR_INVALID_REQUEST', `budget.max_cost_usd needs a model with a price, and ${model} has none in the price table: give its prices in MODEL_PRICES_FILE, or cap the run with budget.max_input_tokens and max_output_tokens.`)
    }
    for (const tenantBudget of this.#options.tenantBudgets) {
      if (tenantBudget.tenant !== tenantId) continue
      const window = budgetWindow(tenantBudget.period, now)
      const spent = await this.#options.usage.spentSince(tenantId, window.start)
      if (spent >= tenantBudget.limitNanoUsd) {
        const seconds = Math.max(1, Math.ceil((window.end - now) / 1000))
        throw new AppError(
          'RUN_ERR_BUDGET_EXHAUSTED',
          `This tenant has spent $${toUsd(spent)} of its budget of $${toUsd(tenantBudget.limitNanoUsd)} per ${tenantBudget.period} (TENANT_BUDGETS): no run starts until the ${tenantBudget.period} ends at ${isoDate(window.end)}.`,
          { headers: { 'retry-after': String(seconds) } }
        )
      }
    }
  }

  /** A new run's usage: nothing spent, at no cost, or at an unknown one (null) if its model has no price. */
  startingUsage (model: string): Usage {
    return {
      input_tokens: 0,
      output_tokens: 0,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
      cost_usd: this.prices.has(model) ? 0 : null
    }
  }

  /** The budget guard of a run's driver. */
  guard (run: Parameters<typeof BudgetGuard.prototype.check>[0]): BudgetGuard {
    const { prices, tenantBudgets, usage, log } = this.#options
    return new BudgetGuard({ prices, tenantBudgets, usage, metrics: this.#metrics, log }, run)
  }

  /**
   * A tenant's usage from `from` (included) to `to` (excluded; now by default), 30 days by
   * default, grouped by UTC day, model or tool. A period that does not parse, is empty or is
   * longer than a year is a 400.
   */
  async report (tenantId: string, query: { from?: string | undefined, to?: string | undefined, groupBy: UsageGrouping }, now = Date.now()): Promise<UsageReport> {
    const to = query.to === undefined ? now : parseMoment('to', query.to)
    const from = query.from === undefined ? to - 30 * DAY_MS : parseMoment('from', query.from)
    if (from >= to) throw new AppError('USAGE_ERR_INVALID_RANGE', `from (${isoDate(from)}) must be before to (${isoDate(to)}).`)
    if (to - from > MAX_REPORT_DAYS * DAY_MS) throw new AppError('USAGE_ERR_INVALID_RANGE', `The period from ${isoDate(from)} to ${isoDate(to)} is longer than ${MAX_REPORT_DAYS} days: ask for a shorter one.`)
    const { groups, total } = await this.#options.usage.report(tenantId, from, to, query.groupBy)
    return {
      object: 'usage',
      from: isoDate(from),
      to: isoDate(to),
      group_by: query.groupBy,
      data: groups.map((g) => ({ key: typeof g.group === 'number' ? isoDate(g.group * DAY_MS).slice(0, 10) : String(g.group), ...line(g) })),
      total: line(total)
    }
  }
}

function line (totals: UsageTotals): UsageLine {
  return {
    runs: totals.runs,
    model_calls: totals.model_calls,
    input_tokens: totals.input_tokens,
    output_tokens: totals.output_tokens,
    cache_creation_input_tokens: totals.cache_write_5m_tokens + totals.cache_write_1h_tokens,
    cache_creation: { ephemeral_5m_input_tokens: totals.cache_write_5m_tokens, ephemeral_1h_input_tokens: totals.cache_write_1h_tokens },
    cache_read_input_tokens: totals.cache_read_tokens,
    cost_usd: toUsd(totals.cost_nano_usd),
    unpriced_model_calls: totals.unpriced_model_calls,
    tool_calls: totals.tool_calls,
    errors: totals.errors
  }
}

// A date (2026-12-01, midnight UTC) or a date and time with its offset (2026-12-01T09:30:00Z).
const MOMENT = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?(?:Z|[+-]\d{2}:\d{2}))?$/

function parseMoment (name: string, value: string): number {
  const ms = MOMENT.test(value) ? Date.parse(value) : Number.NaN
  if (!Number.isFinite(ms)) {
    throw new AppError('USAGE_ERR_INVALID_RANGE', `${name} is "${value}", which is not a date (2026-12-01) or a date and time with its offset (2026-12-01T09:30:00Z).`)
  }
  return ms
}
