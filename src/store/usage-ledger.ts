import { chunks, placeholders } from './sql-statements.js'
import type { SqlDriver } from './sql-driver.js'

/**
 * One line of a tenant's usage (SPEC §17): a model call with its tokens and cost, or a tool call
 * of a registered tool. Keyed by its run and `key` (the model's message id, the tool_use id), so
 * that a step written again by the replica that took its run over counts once.
 */
export interface UsageEntry {
  readonly tenant_id: string
  readonly run_id: string
  readonly key: string
  readonly kind: 'model' | 'tool'
  /** When the call was answered, ms since the epoch. */
  readonly at: number
  /** The run's model (for a tool call too: usage grouped by model counts its runs' tool calls). */
  readonly model: string
  /** The tool's name; null for a model call. */
  readonly tool: string | null
  readonly input_tokens: number
  readonly output_tokens: number
  readonly cache_write_5m_tokens: number
  readonly cache_write_1h_tokens: number
  readonly cache_read_tokens: number
  /** Billionths of a US dollar; null when the model has no price. Whole numbers, so sums are exact. */
  readonly cost_nano_usd: number | null
  readonly is_error: boolean
}

export type UsageGrouping = 'day' | 'model' | 'tool'

/** What the entries of one group (a day, a model, a tool) or of a whole period add up to. */
export interface UsageTotals {
  /** The day (days since the epoch, UTC), the model or the tool; null for a whole period. */
  readonly group: number | string | null
  readonly runs: number
  readonly model_calls: number
  readonly input_tokens: number
  readonly output_tokens: number
  readonly cache_write_5m_tokens: number
  readonly cache_write_1h_tokens: number
  readonly cache_read_tokens: number
  readonly cost_nano_usd: number
  /** Model calls whose model has no price: their cost is not in `cost_nano_usd`. */
  readonly unpriced_model_calls: number
  readonly tool_calls: number
  readonly errors: number
}

/** What the cost guards keep in storage, shared by every replica. */
export interface UsageStore {
  /** Stores entries; one already stored (the same run and key) is left as it is. */
  record (entries: readonly UsageEntry[]): Promise<void>
  /** What a tenant's model calls answered at or after `since` cost, in billionths of a dollar. */
  spentSince (tenantId: string, since: number): Promise<number>
  /** A tenant's entries in [from, to), grouped; and the whole period's totals. */
  report (tenantId: string, from: number, to: number, groupBy: UsageGrouping): Promise<{ groups: UsageTotals[], total: UsageTotals }>
}

const COLUMNS = [
  'tenant_id', 'run_id', 'entry_key', 'kind', 'at', 'model', 'tool', 'input_tokens', 'output_tokens',
  'cache_write_5m_tokens', 'cache_write_1h_tokens', 'cache_read_tokens', 'cost_nano_usd', 'is_error'
] as const

const DAY_MS = 86_400_000

const SUMS = `COUNT(DISTINCT run_id) AS runs,
  SUM(CASE WHEN kind = 'model' THEN 1 ELSE 0 END) AS model_calls,
  SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
  SUM(cache_write_5m_tokens) AS cache_write_5m_tokens, SUM(cache_write_1h_tokens) AS cache_write_1h_tokens,
  SUM(cache_read_tokens) AS cache_read_tokens, SUM(cost_nano_usd) AS cost_nano_usd,
  SUM(CASE WHEN kind = 'model' AND cost_nano_usd IS NULL THEN 1 ELSE 0 END) AS unpriced_model_calls,
  SUM(CASE WHEN kind = 'tool' THEN 1 ELSE 0 END) AS tool_calls, SUM(is_error) AS errors`

// Integer division in both dialects: the day since the epoch, UTC.
const GROUPS: Record<UsageGrouping, { expression: string, where: string }> = {
  day: { expression: `at / ${DAY_MS}`, where: '' },
  model: { expression: 'model', where: '' },
  tool: { expression: 'tool', where: " AND kind = 'tool'" }
}

/** {@link UsageStore} over SQLite or PostgreSQL. */
export class SqlUsageStore implements UsageStore {
  readonly #db: SqlDriver

  constructor (driver: SqlDriver) {
    this.#db = driver
  }

  async record (entries: readonly UsageEntry[]): Promise<void> {
    for (const chunk of chunks(entries)) {
      const row = `(${placeholders(COLUMNS.length)})`
      await this.#db.query(
        `INSERT INTO usage_entries (${COLUMNS.join(', ')}) VALUES ${chunk.map(() => row).join(', ')} ON CONFLICT (run_id, entry_key) DO NOTHING`,
        chunk.flatMap((e) => [
          e.tenant_id, e.run_id, e.key, e.kind, e.at, e.model, e.tool, e.input_tokens, e.output_tokens,
          e.cache_write_5m_tokens, e.cache_write_1h_tokens, e.cache_read_tokens, e.cost_nano_usd, e.is_error ? 1 : 0
        ])
      )
    }
  }

  async spentSince (tenantId: string, since: number): Promise<number> {
    const [row] = await this.#db.query(
      "SELECT SUM(cost_nano_usd) AS spent FROM usage_entries WHERE tenant_id = ? AND at >= ? AND kind = 'model'",
      [tenantId, since]
    )
    return Number(row?.spent ?? 0)
  }

  async report (tenantId: string, from: number, to: number, groupBy: UsageGrouping): Promise<{ groups: UsageTotals[], total: UsageTotals }> {
    const { expression, where } = GROUPS[groupBy]
    const params = [tenantId, from, to]
    const filter = `WHERE tenant_id = ? AND at >= ? AND at < ?${where}`
    const [groups, [total]] = await Promise.all([
      this.#db.query(`SELECT ${expression} AS grp, ${SUMS} FROM usage_entries ${filter} GROUP BY ${expression} ORDER BY ${expression}`, params),
      this.#db.query(`SELECT ${SUMS} FROM usage_entries ${filter}`, params)
    ])
    return { groups: groups.map((r) => totals(r, groupBy === 'day' ? Number(r.grp) : r.grp as string)), total: totals(total ?? {}, null) }
  }
}

function totals (row: Record<string, unknown>, group: number | string | null): UsageTotals {
  const n = (column: string): number => Number(row[column] ?? 0)
  return {
    group,
    runs: n('runs'),
    model_calls: n('model_calls'),
    input_tokens: n('input_tokens'),
    output_tokens: n('output_tokens'),
    cache_write_5m_tokens: n('cache_write_5m_tokens'),
    cache_write_1h_tokens: n('cache_write_1h_tokens'),
    cache_read_tokens: n('cache_read_tokens'),
    cost_nano_usd: n('cost_nano_usd'),
    unpriced_model_calls: n('unpriced_model_calls'),
    tool_calls: n('tool_calls'),
    errors: n('errors')
  }
}
