import { ConfigError } from '../errors.js'

export type BudgetPeriod = 'day' | 'month'

/** A tenant's cap on what its runs' model calls cost in a calendar day or month (UTC). */
export interface TenantBudget {
  readonly tenant: string
  /** Billionths of a US dollar. */
  readonly limitNanoUsd: number
  readonly period: BudgetPeriod
}

/** The period a moment falls in: from its start (included) to its end (excluded), ms since the epoch. */
export interface BudgetWindow {
  readonly start: number
  readonly end: number
}

const ENTRY = /^([^:\s]+):((?:0|[1-9]\d*)(?:\.\d{1,9})?)usd\/(day|month)$/

/**
 * Parses TENANT_BUDGETS: comma-separated `tenant:AMOUNTusd/day` or `tenant:AMOUNTusd/month`
 * (`acme:100usd/day,acme:2000usd/month,globex:25.50usd/day`). A tenant may have one of each
 * period. Throws a {@link ConfigError} naming the entry.
 */
export function parseTenantBudgets (value: string): TenantBudget[] {
  const budgets: TenantBudget[] = []
  for (const raw of value.split(',')) {
    const entry = raw.trim()
    if (entry === '') continue
    const match = ENTRY.exec(entry)
    if (match === null) {
      throw new ConfigError(`TENANT_BUDGETS entry "${entry}" should be tenant:AMOUNTusd/day or tenant:AMOUNTusd/month, like acme:100usd/day.`)
    }
    const [, tenant, amount, period] = match as unknown as [string, string, string, BudgetPeriod]
    if (budgets.some((b) => b.tenant === tenant && b.period === period)) {
      throw new ConfigError(`TENANT_BUDGETS gives tenant ${tenant} two budgets per ${period}: keep one.`)
    }
    budgets.push({ tenant, limitNanoUsd: Math.round(Number(amount) * 1e9), period })
  }
  return budgets
}

/** The calendar day or month (UTC) that `at` falls in. */
export function budgetWindow (period: BudgetPeriod, at: number): BudgetWindow {
  const date = new Date(at)
  const y = date.getUTCFullYear()
  const m = date.getUTCMonth()
  if (period === 'month') return { start: Date.UTC(y, m, 1), end: Date.UTC(y, m + 1, 1) }
  const d = date.getUTCDate()
  return { start: Date.UTC(y, m, d), end: Date.UTC(y, m, d + 1) }
}
