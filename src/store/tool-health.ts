import type { SqlDriver } from './sql-driver.js'

// (No import of sql-statements.ts: store.ts reads this file's types, and sql-statements.ts reads store.ts's.)

/** One tool call that ended, as the statistics count it. */
export interface ToolCallRow {
  readonly tenant_id: string
  readonly name: string
  /** When it ended, ms since the epoch. */
  readonly at: number
  /** The outcome of its `tool_call.completed` event. */
  readonly outcome: string
  /** The HTTP status the tool answered, if it did. */
  readonly status: number | null
  readonly duration_ms: number
  /** 0: nothing was sent (answered from the cache, the circuit open, refused). */
  readonly attempts: number
}

/** What the calls of a tool in a window add up to. */
export interface ToolCallTotals {
  /** Calls by outcome, and by the class of their HTTP status (5 for 5xx, 4 for 4xx, else 0). */
  readonly outcomes: ReadonlyArray<{ readonly outcome: string, readonly statusClass: number, readonly count: number }>
  /** Calls that were sent (at least one attempt), whose durations the percentiles are of. */
  readonly sent: number
  /** Durations in ms, of the calls sent; null without any. */
  readonly p50: number | null
  readonly p95: number | null
  readonly p99: number | null
}

/** A read_only tool's result, kept to answer the same input again. */
export interface StoredResult {
  readonly tenant_id: string
  readonly name: string
  readonly revision: string
  /** The hash of the call's canonical input. */
  readonly input_hash: string
  /** The tool_result content, as JSON. */
  readonly content: string
  readonly status: number | null
  readonly stored_at: number
  readonly expires_at: number
}

/** A replica's circuit breaker of a tool, as it last changed. */
export interface CircuitRow {
  readonly tenant_id: string
  readonly name: string
  readonly replica: string
  readonly state: 'closed' | 'open' | 'half_open'
  readonly failures: number
  readonly retry_at: number | null
  readonly updated_at: number
}

/** What the tool health guards (src/tools/health/) keep in storage, shared by every replica. */
export interface ToolHealthStore {
  /** Stores ended calls, for the statistics. */
  recordCalls (rows: readonly ToolCallRow[]): Promise<void>
  /** The totals of a tenant's tool's calls that ended at or after `since`. */
  callTotals (tenantId: string, name: string, since: number): Promise<ToolCallTotals>
  /** The stored result for this input, if it has not expired by `now`. */
  getResult (tenantId: string, name: string, revision: string, inputHash: string, now: number): Promise<StoredResult | null>
  /** Stores a result, replacing any for the same input. */
  putResult (result: StoredResult): Promise<void>
  /** Records a replica's breaker state of a tool. */
  putCircuit (circuit: CircuitRow): Promise<void>
  /** Every replica's breaker of a tool, as last recorded. */
  listCircuits (tenantId: string, name: string): Promise<CircuitRow[]>
  /** Drops results expired by `now`, calls that ended before `callsBefore` and breakers unchanged since then. */
  prune (now: number, callsBefore: number): Promise<void>
}

const CALL_COLUMNS = ['tenant_id', 'name', 'at', 'outcome', 'status', 'duration_ms', 'attempts'] as const
const INSERT_CHUNK = 500

// Each half reads one range of tool_calls_by_tool (tenant_id, name, at, ...), which covers them.
const OUTCOMES_SQL = `SELECT outcome, CASE WHEN status >= 500 THEN 5 WHEN status >= 400 THEN 4 ELSE 0 END AS status_class, COUNT(*) AS n
  FROM tool_calls WHERE tenant_id = ? AND name = ? AND at >= ? GROUP BY outcome, status_class`
const PG_LATENCY_SQL = `SELECT COUNT(*) AS sent, percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,
  percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95, percentile_disc(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99
  FROM tool_calls WHERE tenant_id = ? AND name = ? AND at >= ? AND attempts > 0`
const SQLITE_SENT_SQL = 'SELECT COUNT(*) AS n FROM tool_calls WHERE tenant_id = ? AND name = ? AND at >= ? AND attempts > 0'
// The durations at three ranks, in one sort: the rows themselves never leave the database.
const SQLITE_RANKS_SQL = `SELECT rank, duration_ms FROM (SELECT duration_ms, ROW_NUMBER() OVER (ORDER BY duration_ms) AS rank
  FROM tool_calls WHERE tenant_id = ? AND name = ? AND at >= ? AND attempts > 0) AS ranked WHERE rank IN (?, ?, ?)`

/** {@link ToolHealthStore} over SQLite or PostgreSQL. */
export class SqlToolHealthStore implements ToolHealthStore {
  readonly #db: SqlDriver

  constructor (driver: SqlDriver) {
    this.#db = driver
  }

  async recordCalls (rows: readonly ToolCallRow[]): Promise<void> {
    // In chunks of rows: well under both databases' limits on bound parameters.
    for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
      const chunk = rows.slice(i, i + INSERT_CHUNK)
      const row = `(${CALL_COLUMNS.map(() => '?').join(', ')})`
      await this.#db.query(
        `INSERT INTO tool_calls (${CALL_COLUMNS.join(', ')}) VALUES ${chunk.map(() => row).join(', ')}`,
        chunk.flatMap((r) => CALL_COLUMNS.map((c) => r[c]))
      )
    }
  }

  async callTotals (tenantId: string, name: string, since: number): Promise<ToolCallTotals> {
    const params = [tenantId, name, since]
    const [outcomeRows, latency] = await Promise.all([this.#db.query(OUTCOMES_SQL, params), this.#latency(params)])
    return {
      outcomes: outcomeRows.map((r) => ({ outcome: r.outcome as string, statusClass: Number(r.status_class), count: Number(r.n) })),
      ...latency
    }
  }

  async #latency (params: unknown[]): Promise<Pick<ToolCallTotals, 'sent' | 'p50' | 'p95' | 'p99'>> {
    if (this.#db.dialect === 'postgres') {
      const [row] = await this.#db.query(PG_LATENCY_SQL, params)
      return { sent: Number(row!.sent), p50: numberOrNull(row!.p50), p95: numberOrNull(row!.p95), p99: numberOrNull(row!.p99) }
    }
    // SQLite has no percentile aggregate: the durations at the ranks PostgreSQL's percentile_disc
    // picks (the first whose rank reaches the fraction), from the count of the calls sent.
    const [counted] = await this.#db.query(SQLITE_SENT_SQL, params)
    const sent = Number(counted!.n)
    if (sent === 0) return { sent, p50: null, p95: null, p99: null }
    const ranks = [0.5, 0.95, 0.99].map((fraction) => Math.max(1, Math.ceil(fraction * sent)))
    const rows = await this.#db.query(SQLITE_RANKS_SQL, [...params, ...ranks])
    const at = new Map(rows.map((r) => [Number(r.rank), Number(r.duration_ms)]))
    return { sent, p50: at.get(ranks[0]!) ?? null, p95: at.get(ranks[1]!) ?? null, p99: at.get(ranks[2]!) ?? null }
  }

  async getResult (tenantId: string, name: string, revision: string, inputHash: string, now: number): Promise<StoredResult | null> {
    const [row] = await this.#db.query(
      'SELECT * FROM tool_results WHERE tenant_id = ? AND name = ? AND revision = ? AND input_hash = ? AND expires_at > ?',
      [tenantId, name, revision, inputHash, now]
    )
    if (row === undefined) return null
    return {
      tenant_id: row.tenant_id as string,
      name: row.name as string,
      revision: row.revision as string,
      input_hash: row.input_hash as string,
      content: row.content as string,
      status: numberOrNull(row.status),
      stored_at: Number(row.stored_at),
      expires_at: Number(row.expires_at)
    }
  }

  async putResult (result: StoredResult): Promise<void> {
    await this.#db.query(
      `INSERT INTO tool_results (tenant_id, name, revision, input_hash, content, status, stored_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant_id, name, revision, input_hash) DO UPDATE SET content = excluded.content, status = excluded.status, stored_at = excluded.stored_at, expires_at = excluded.expires_at`,
      [result.tenant_id, result.name, result.revision, result.input_hash, result.content, result.status, result.stored_at, result.expires_at]
    )
  }

  async putCircuit (circuit: CircuitRow): Promise<void> {
    await this.#db.query(
      `INSERT INTO tool_circuits (tenant_id, name, replica, state, failures, retry_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant_id, name, replica) DO UPDATE SET state = excluded.state, failures = excluded.failures, retry_at = excluded.retry_at, updated_at = excluded.updated_at`,
      [circuit.tenant_id, circuit.name, circuit.replica, circuit.state, circuit.failures, circuit.retry_at, circuit.updated_at]
    )
  }

  async listCircuits (tenantId: string, name: string): Promise<CircuitRow[]> {
    const rows = await this.#db.query('SELECT * FROM tool_circuits WHERE tenant_id = ? AND name = ? ORDER BY replica', [tenantId, name])
    return rows.map((r) => ({
      tenant_id: r.tenant_id as string,
      name: r.name as string,
      replica: r.replica as string,
      state: r.state as CircuitRow['state'],
      failures: Number(r.failures),
      retry_at: numberOrNull(r.retry_at),
      updated_at: Number(r.updated_at)
    }))
  }

  async prune (now: number, callsBefore: number): Promise<void> {
    await this.#db.query('DELETE FROM tool_results WHERE expires_at <= ?', [now])
    await this.#db.query('DELETE FROM tool_calls WHERE at < ?', [callsBefore])
    await this.#db.query('DELETE FROM tool_circuits WHERE updated_at < ?', [callsBefore])
  }
}

function numberOrNull (value: unknown): number | null {
  return value === null || value === undefined ? null : Number(value)
}
