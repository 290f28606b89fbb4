import type { SqlDriver, Statement } from './sql-driver.js'

// (No import of sql-statements.ts: store.ts reads this file's types, and sql-statements.ts reads store.ts's.)

/**
 * One line of a tenant's usage (SPEC §17): a step, that is its model call with its tokens and cost,
 * and the calls of its tools as counts. Keyed by its run and `key` (the step and the model's answer),
 * so that a step written again by the replica that took its run over counts once. One line a step,
 * whatever its number of tool calls: lines are written with every step, reports are rare.
 */
export interface UsageEntry {
  readonly tenant_id: string
  readonly run_id: string
  readonly key: string
  /** When the call was answered, ms since the epoch. */
  readonly at: number
  /** The run's model. */
  readonly model: string
  readonly input_tokens: number
  readonly output_tokens: number
  readonly cache_write_5m_tokens: number
  readonly cache_write_1h_tokens: number
  readonly cache_read_tokens: number
  /** Billionths of a US dollar; null when the model has no price. Whole numbers, so sums are exact. */
  readonly cost_nano_usd: number | null
  /** The step's answered calls of registered tools, and those of them that answered an error. */
  readonly tool_calls: number
  readonly tool_errors: number
  /** The same per tool: its name to [calls, errors]. */
  readonly tools: Readonly<Record<string, readonly [number, number]>>
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
  /**
   * Stores entries; one already stored (the same run and key) is left as it is. A step's lines go
   * with the step's own write instead (RunWrite.usage): this is for lines of nothing stored else.
   */
  record (entries: readonly UsageEntry[]): Promise<void>
  /** What a tenant's model calls answered from the UTC day of `since` on cost, in billionths of a dollar. */
  spentSince (tenantId: string, since: number): Promise<number>
  /** A tenant's entries in [from, to), grouped; and the whole period's totals. */
  report (tenantId: string, from: number, to: number, groupBy: UsageGrouping): Promise<{ groups: UsageTotals[], total: UsageTotals }>
}

const COLUMNS = [
  'tenant_id', 'run_id', 'entry_key', 'at', 'model', 'input_tokens', 'output_tokens', 'cache_write_5m_tokens',
  'cache_write_1h_tokens', 'cache_read_tokens', 'cost_nano_usd', 'tool_calls', 'tool_errors', 'tools'
] as const

const DAY_MS = 86_400_000
const ADD_TO_DAY = 'ON CONFLICT (tenant_id, day, slot) DO UPDATE SET cost_nano_usd = usage_days.cost_nano_usd + excluded.cost_nano_usd'
// A tenant's day is kept in slots (the last character of the run's id, random in a run id), so that
// a tenant's runs writing steps at once do not all wait for the lock of one row; spentSince adds
// them up.
const PG_SLOT = 'substr(run_id, length(run_id))'

function slotOf (runId: string): string {
  return runId.slice(-1)
}

/**
 * PostgreSQL: CTEs that store lines (one JSON array of entryObject, the one `?` of the text, see
 * usageParam) and add the priced model calls newly stored to their tenants' days. With `after` (the
 * name of a CTE before them, a run write's fence), they write only if `after` gave a row: a step's
 * lines are stored exactly when the step is. The text is the same whatever the number of lines.
 */
export function pgUsageInserts (after: string | null): string {
  const when = after === null ? '' : ` WHERE EXISTS (SELECT 1 FROM ${after})`
  return `usage_stored AS (INSERT INTO usage_entries (${COLUMNS.join(', ')})
      SELECT ${COLUMNS.join(', ')} FROM json_to_recordset(CAST(? AS JSON)) AS x(tenant_id text, run_id text, entry_key text,
        at bigint, model text, input_tokens bigint, output_tokens bigint, cache_write_5m_tokens bigint, cache_write_1h_tokens bigint,
        cache_read_tokens bigint, cost_nano_usd bigint, tool_calls bigint, tool_errors bigint, tools text)${when}
      ON CONFLICT (run_id, entry_key) DO NOTHING
      RETURNING tenant_id, run_id, at, cost_nano_usd),
    usage_added AS (INSERT INTO usage_days (tenant_id, day, slot, cost_nano_usd)
      SELECT tenant_id, at / ${DAY_MS}, ${PG_SLOT}, SUM(cost_nano_usd) FROM usage_stored WHERE cost_nano_usd IS NOT NULL
      GROUP BY tenant_id, at / ${DAY_MS}, ${PG_SLOT}
      ${ADD_TO_DAY})`
}

/** The parameter of {@link pgUsageInserts}: the lines as one JSON text. */
export function usageParam (entries: readonly UsageEntry[]): string {
  return JSON.stringify(entries.map(entryObject))
}

/**
 * SQLite: the statements that store lines, for a batch (one transaction) of their own or after a
 * run write's fence in the same batch, so that they are stored exactly when the step is. A priced
 * line adds its cost to its tenant's day only if it was not stored already.
 */
export function usageStatements (entries: readonly UsageEntry[]): Statement[] {
  const priced = entries.filter((e) => e.cost_nano_usd !== null)
  const rest = entries.filter((e) => !priced.includes(e))
  const statements: Statement[] = []
  for (const entry of priced) {
    statements.push({ sql: insertSql(1), params: entryValues(entry) }, {
      // changes(): the rows the insert just before stored (none when the entry was there).
      sql: `INSERT INTO usage_days (tenant_id, day, slot, cost_nano_usd) SELECT ?, ?, ?, ? WHERE changes() = 1 ${ADD_TO_DAY}`,
      params: [entry.tenant_id, Math.floor(entry.at / DAY_MS), slotOf(entry.run_id), entry.cost_nano_usd]
    })
  }
  for (const chunk of chunks(rest)) statements.push({ sql: insertSql(chunk.length), params: chunk.flatMap(entryValues) })
  return statements
}

// The data-modifying CTEs run whether or not the query reads them.
const PG_RECORD = `WITH ${pgUsageInserts(null)} SELECT 1`

const SUMS = `COUNT(DISTINCT run_id) AS runs, COUNT(*) AS model_calls,
  SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
  SUM(cache_write_5m_tokens) AS cache_write_5m_tokens, SUM(cache_write_1h_tokens) AS cache_write_1h_tokens,
  SUM(cache_read_tokens) AS cache_read_tokens, SUM(cost_nano_usd) AS cost_nano_usd,
  SUM(CASE WHEN cost_nano_usd IS NULL THEN 1 ELSE 0 END) AS unpriced_model_calls,
  SUM(tool_calls) AS tool_calls, SUM(tool_errors) AS errors`

// Integer division in both dialects: the day since the epoch, UTC.
const GROUPS: Record<'day' | 'model', string> = { day: `at / ${DAY_MS}`, model: 'model' }

/**
 * By tool: each line's `tools` object expanded at read time, a row per tool it called (reports are
 * rare, steps are written all the time). A tool's calls cost nothing of their own: no model calls,
 * tokens or cost in its group, as in the period's total.
 */
function byToolTexts (dialect: SqlDriver['dialect']): { groups: string, total: string } {
  const [from, calls, errors] = dialect === 'postgres'
    ? ['usage_entries AS u CROSS JOIN LATERAL json_each(CAST(u.tools AS JSON)) AS t', 'CAST(t.value ->> 0 AS BIGINT)', 'CAST(t.value ->> 1 AS BIGINT)']
    : ['usage_entries AS u, json_each(u.tools) AS t', "json_extract(t.value, '$[0]')", "json_extract(t.value, '$[1]')"]
  const sums = `COUNT(DISTINCT u.run_id) AS runs, SUM(${calls}) AS tool_calls, SUM(${errors}) AS errors`
  const filter = 'WHERE u.tenant_id = ? AND u.at >= ? AND u.at < ? AND u.tool_calls > 0'
  return {
    groups: `SELECT t.key AS grp, ${sums} FROM ${from} ${filter} GROUP BY t.key ORDER BY t.key`,
    total: `SELECT ${sums} FROM ${from} ${filter}`
  }
}

/** {@link UsageStore} over SQLite or PostgreSQL. */
export class SqlUsageStore implements UsageStore {
  readonly #db: SqlDriver

  constructor (driver: SqlDriver) {
    this.#db = driver
  }

  /**
   * Stores lines apart from any step (the driver's go with the step's own write instead: see
   * RunWrite.usage). A priced model call adds its cost to its tenant's day in the same statement
   * (PostgreSQL) or transaction (SQLite) that stores it, and only if it was not stored already.
   */
  async record (entries: readonly UsageEntry[]): Promise<void> {
    if (entries.length === 0) return
    if (this.#db.dialect === 'postgres') {
      await this.#db.query(PG_RECORD, [usageParam(entries)], { prepare: true })
      return
    }
    await this.#db.batch(usageStatements(entries))
  }

  async spentSince (tenantId: string, since: number): Promise<number> {
    const [row] = await this.#db.query(
      'SELECT SUM(cost_nano_usd) AS spent FROM usage_days WHERE tenant_id = ? AND day >= ?',
      [tenantId, Math.floor(since / DAY_MS)]
    )
    return Number(row?.spent ?? 0)
  }

  async report (tenantId: string, from: number, to: number, groupBy: UsageGrouping): Promise<{ groups: UsageTotals[], total: UsageTotals }> {
    const params = [tenantId, from, to]
    let texts: { groups: string, total: string }
    if (groupBy === 'tool') {
      texts = byToolTexts(this.#db.dialect)
    } else {
      const expression = GROUPS[groupBy]
      const filter = 'WHERE tenant_id = ? AND at >= ? AND at < ?'
      texts = {
        groups: `SELECT ${expression} AS grp, ${SUMS} FROM usage_entries ${filter} GROUP BY ${expression} ORDER BY ${expression}`,
        total: `SELECT ${SUMS} FROM usage_entries ${filter}`
      }
    }
    const [groups, [total]] = await Promise.all([this.#db.query(texts.groups, params), this.#db.query(texts.total, params)])
    return { groups: groups.map((r) => totals(r, groupBy === 'day' ? Number(r.grp) : r.grp as string)), total: totals(total ?? {}, null) }
  }
}

/** Lines per insert on SQLite: 14 values each, well under its limit of bound values. */
const INSERT_ROWS = 500

function chunks<T> (items: readonly T[]): T[][] {
  const out: T[][] = []
  for (let i = 0; i < items.length; i += INSERT_ROWS) out.push(items.slice(i, i + INSERT_ROWS))
  return out
}

function placeholders (count: number): string {
  return Array.from({ length: count }, () => '?').join(', ')
}

function insertSql (rows: number): string {
  const row = `(${placeholders(COLUMNS.length)})`
  return `INSERT INTO usage_entries (${COLUMNS.join(', ')}) VALUES ${Array.from({ length: rows }, () => row).join(', ')} ON CONFLICT (run_id, entry_key) DO NOTHING`
}

function entryObject (e: UsageEntry): Record<string, unknown> {
  const values = entryValues(e)
  return Object.fromEntries(COLUMNS.map((column, i) => [column, values[i]]))
}

function entryValues (e: UsageEntry): unknown[] {
  return [
    e.tenant_id, e.run_id, e.key, e.at, e.model, e.input_tokens, e.output_tokens, e.cache_write_5m_tokens,
    e.cache_write_1h_tokens, e.cache_read_tokens, e.cost_nano_usd, e.tool_calls, e.tool_errors, JSON.stringify(e.tools)
  ]
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
