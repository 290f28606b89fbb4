import type { Statement } from './sql-driver.js'
import type { RunPatch } from './store.js'
import { pgUsageInserts } from './usage-ledger.js'

// The texts of the SQL store's statements, and what makes them. A text the engine runs at every
// step or create is made once per shape (see madeOnce) and kept, never made again per call.

/** "Now" in SQL, in ms since the epoch, on SQLite: its own clock (the only process using the file). */
export const CAST_NOW_SQLITE = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

/** "Now" in SQL, in ms since the epoch, on PostgreSQL: the server's clock, which every replica shares. */
export const CAST_NOW_POSTGRES = 'CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)'

/** Ends a claim's inner SELECT on PostgreSQL: replicas claiming at once skip each other's rows rather than wait. */
export const SKIP_LOCKED_POSTGRES = ' FOR UPDATE SKIP LOCKED'

/** The columns of `tools`, in the order of a tool's insert and of its values (see toolValues). */
export const TOOL_COLUMNS = [
  'tenant_id', 'name', 'description', 'input_schema', 'url', 'headers', 'timeout_ms', 'effect', 'parallel',
  'max_concurrency', 'max_attempts', 'signing_secrets', 'source', 'revision', 'created_at', 'updated_at',
  'circuit_breaker', 'cache_ttl_ms', 'approval', 'model_options', 'async_timeout_ms'
] as const

/** The columns of a run's insert, in order. */
export const RUN_INSERT_COLUMNS = [
  'id', 'tenant_id', 'status', 'stop_reason', 'model', 'params', 'metadata', 'created_at', 'started_at',
  'completed_at', 'deadline_at', 'steps', 'tool_calls_total', 'tool_calls_errors', 'usage', 'output',
  'required_action', 'error', 'message_count', 'event_count', 'idempotency_key', 'request_hash', 'trace_id',
  'lease_owner', 'lease_token', 'lease_expires_at', 'pending_results', 'cancel_requested_at', 'callback_url',
  'callback_status', 'callback_attempts', 'callback_next_at', 'callback_error', 'step_events_after'
] as const

/** The run columns a write may patch: only these are ever named in the text writeTexts makes. */
export const PATCHABLE_RUN_COLUMNS = new Set<keyof RunPatch>([
  'status', 'stop_reason', 'started_at', 'completed_at', 'steps', 'tool_calls_total', 'tool_calls_errors',
  'usage', 'output', 'required_action', 'error', 'pending_results', 'callback_status', 'callback_next_at', 'pending_calls',
  'container_id', 'container_expires_at'
])

/**
 * Ends a statement that reads at most `?` rows. A row limit bound as a plain `LIMIT ?` makes
 * SQLite prepare its statement again at every run (the planner looks at the limit's value, so a
 * new value might change the plan): 10 to 100 µs each time, the active-run count of every create
 * among them. Cast, it is an expression whose value the plan does not depend on. PostgreSQL takes
 * it the same (as a bigint, as it took `?`).
 */
export const LIMIT = 'LIMIT CAST(? AS BIGINT)'

// What a tool's write may change without a new revision: its secrets (a rotation) and when it was
// written. Every other column is fixed for a revision (a definition's write makes a new one).
const TOOL_LIVE_COLUMNS = new Set<string>(['name', 'revision', 'signing_secrets', 'updated_at'])

// Statement texts by what they are made from: few (the shapes of the engine's writes, the counts of
// rows and of tools a write has), so never dropped.
const MADE = new Map<string, string>()

/**
 * The statement text `key` names, made once: every statement of a kind then hands the drivers the
 * same string, whose hash the engine keeps, to find their prepared statement by (see writeTexts).
 */
function madeOnce (key: string, make: () => string): string {
  let text = MADE.get(key)
  if (text === undefined) {
    text = make()
    MADE.set(key, text)
  }
  return text
}

/**
 * A tenant's tools by name, read by a run's create and, as a subquery, by each step's write. A
 * tool at a revision among the first parameter's (those the store holds: see ToolCache) comes back
 * with only its live columns, the rest null; `known` says which. On PostgreSQL the text is the same
 * whatever the counts (array parameters); parameters: the known revisions, the tenant, the names.
 */
export function toolsReadSql (dialect: 'sqlite' | 'postgres', knownCount: number, nameCount: number): string {
  return madeOnce(`tools ${dialect} ${knownCount} ${nameCount}`, () => {
    const known = dialect === 'postgres' ? 'revision = ANY (CAST(? AS TEXT[]))' : knownCount === 0 ? '0' : `revision IN (${placeholders(knownCount)})`
    const names = dialect === 'postgres' ? 'name = ANY (CAST(? AS TEXT[]))' : `name IN (${placeholders(nameCount)})`
    const columns = TOOL_COLUMNS.map((c) => TOOL_LIVE_COLUMNS.has(c) ? c : `CASE WHEN known THEN NULL ELSE ${c} END AS ${c}`)
    return `SELECT known, ${columns.join(', ')} FROM (SELECT *, ${known} AS known FROM tools WHERE tenant_id = ? AND ${names}) AS held`
  })
}

/** {@link toolsReadSql} on PostgreSQL: one text whatever the counts. */
export const PG_TOOLS_READ = toolsReadSql('postgres', 0, 0)

/**
 * How many of a tenant's runs are not yet final, counting no further than a cap: one range of
 * runs_by_status (tenant_id, status, id) per status. Parameters: the tenant, the cap.
 */
export const ACTIVE_RUNS = `SELECT COUNT(*) AS n FROM (SELECT 1 FROM runs WHERE tenant_id = ? AND status IN ('queued', 'running', 'requires_action') ${LIMIT}) AS active`

// What a tool's replace keeps of the stored row: its key, its secrets and its creation time.
const TOOL_KEPT_COLUMNS = new Set<string>(['tenant_id', 'name', 'signing_secrets', 'created_at'])

/**
 * A tool's create or replace, answering the row as stored; a replace keeps the stored secrets and
 * creation time. Parameters: the tool's values (see toolValues).
 */
export const PUT_TOOL = `INSERT INTO tools (${TOOL_COLUMNS.join(', ')}) VALUES (${placeholders(TOOL_COLUMNS.length)})
       ON CONFLICT (tenant_id, name) DO UPDATE SET ${TOOL_COLUMNS.filter((c) => !TOOL_KEPT_COLUMNS.has(c)).map((c) => `${c} = excluded.${c}`).join(', ')} RETURNING *`

/**
 * A run's insert, as an INSERT of a SELECT so that `conditions` (when there are any) decide
 * whether the row goes in; answers the lease's end. With `leaseByClock`, the lease's end is
 * `now` (the database's clock) plus its parameter; parameters: the values of RUN_INSERT_COLUMNS,
 * then those of the conditions.
 */
export function runInsertSql (now: string, leaseByClock: boolean, conditions: readonly string[]): string {
  return `INSERT INTO runs (${RUN_INSERT_COLUMNS.join(', ')}) SELECT ${RUN_INSERT_COLUMNS.map((c) => c === 'lease_expires_at' && leaseByClock ? `${now} + ?` : '?').join(', ')}` +
    `${conditions.length === 0 ? '' : ` WHERE ${conditions.join(' AND ')}`} RETURNING lease_expires_at`
}

/**
 * A run's create on PostgreSQL as one statement: `insert` (see runInsertSql) then the inserts of
 * its messages and events (see pgInserts). With `admitted`, the tools (`withTools`) and the count
 * of active runs are read first, as CTEs `found` and `active` that the insert's conditions read.
 * It always answers a row: whether the run was inserted, its lease, the count of active runs and
 * the tools found.
 */
export function pgCreateRunSql (insert: string, admitted: boolean, withTools: boolean): string {
  const ctes = admitted
    ? `${withTools ? `found AS (${PG_TOOLS_READ}), ` : ''}active AS (${ACTIVE_RUNS}), `
    : ''
  return `WITH ${ctes}new_run AS (${insert}), ${pgInserts('new_run')}
           SELECT (SELECT lease_expires_at FROM new_run) AS lease_expires_at, (SELECT COUNT(*) FROM new_run) AS inserted` +
    (admitted ? ', (SELECT n FROM active) AS active' : '') +
    (withTools ? ', (SELECT json_agg(found) FROM found) AS tools' : '')
}

/**
 * The statements of a run's write, by its shape: the columns patched, whether it adds events,
 * messages, and reads tools. Made once per shape, so that every write of a shape hands the drivers
 * the same string (whose hash the engine keeps) to find their prepared statement by.
 *
 * - `fence`: this UPDATE touches the run only while the writer's lease token is current; then
 *   nobody else has written the run since the writer last read it, so its counts are right. Only
 *   what someone else may have changed comes back (a cancel asked of another replica, the lease
 *   renewed): the rest is known to the writer, and parsing the whole row back on every write of a
 *   step (its output, its params) cost more than the write itself.
 * - `postgres`: the whole write as one statement: the fence, then inserts that only write when the
 *   fence matched a row (see pgInserts), and the tools as one JSON column of their rows. With
 *   `withUsage`, the step's usage lines too, the same way (see pgUsageInserts): one JSON parameter
 *   after the inserts', before the tools'.
 */
export function writeTexts (columns: readonly string[], withEvents: boolean, withMessages: boolean, withTools: boolean, withUsage = false): { fence: string, postgres: string } {
  const key = `write ${columns.join(' ')}|${withEvents ? 'e' : ''}${withMessages ? 'm' : ''}${withTools ? 't' : ''}${withUsage ? 'u' : ''}`
  const fence = madeOnce(`${key} fence`, () => {
    const sets = [
      ...columns.map((column) => `${column} = ?`),
      'message_count = message_count + ?',
      ...(withEvents ? ['event_count = ?'] : []),
      ...(withMessages ? ['step_events_after = ?'] : [])
    ]
    return `UPDATE runs SET ${sets.join(', ')} WHERE id = ? AND lease_token = ? RETURNING cancel_requested_at, lease_expires_at`
  })
  const postgres = madeOnce(`${key} postgres`, () => {
    const tools = withTools ? `, (SELECT json_agg(t) FROM (${PG_TOOLS_READ}) AS t) AS tools` : ''
    const usage = withUsage ? `, ${pgUsageInserts('fence')}` : ''
    return `WITH fence AS (${fence}), ${pgInserts('fence')}${usage} SELECT cancel_requested_at, lease_expires_at${tools} FROM fence`
  })
  return { fence, postgres }
}

/**
 * The inserts of a run write on PostgreSQL, as CTEs after `after` (the fence, or the new run): each
 * writes only if `after` gave a row, so that a lost lease writes nothing. Rows come as arrays, one
 * per column, so that the text is the same however many there are (see pgInsertParams). The
 * messages and the events' data come as one JSON array each, whose elements are stored as the text
 * they are: PostgreSQL's `json` keeps an element's text as given (a lone surrogate's escape
 * included, which reading its fields would refuse).
 */
function pgInserts (after: string): string {
  return `new_messages AS (INSERT INTO run_messages (run_id, seq, tenant_id, message)
      SELECT ?, CAST(? AS INTEGER) + CAST(m.n AS INTEGER) - 1, ?, CAST(m.message AS TEXT) FROM json_array_elements(CAST(? AS JSON)) WITH ORDINALITY AS m (message, n)
      WHERE EXISTS (SELECT 1 FROM ${after})),
    new_events AS (INSERT INTO run_events (run_id, seq, tenant_id, type, at, data)
      SELECT ?, e.seq, ?, e.type, e.at, CAST(e.data AS TEXT)
      FROM ROWS FROM (unnest(CAST(? AS INTEGER[])), unnest(CAST(? AS TEXT[])), unnest(CAST(? AS BIGINT[])), json_array_elements(CAST(? AS JSON))) AS e (seq, type, at, data)
      WHERE EXISTS (SELECT 1 FROM ${after}))`
}

/** Inserts of a run's messages (see messageRows), in multi-row statements. */
export function messageInserts (rows: readonly unknown[][]): Statement[] {
  return chunks(rows).map((chunk) => ({
    sql: multiRowInsert('INSERT INTO run_messages (run_id, seq, tenant_id, message) VALUES ', '(?, ?, ?, ?)', chunk.length),
    params: chunk.flat()
  }))
}

/** Inserts of a run's events (see eventRows), in multi-row statements. */
export function eventInserts (rows: readonly unknown[][]): Statement[] {
  return chunks(rows).map((chunk) => ({
    sql: multiRowInsert('INSERT INTO run_events (run_id, seq, tenant_id, type, at, data) VALUES ', '(?, ?, ?, ?, ?, ?)', chunk.length),
    params: chunk.flat()
  }))
}

function multiRowInsert (head: string, row: string, rows: number): string {
  return madeOnce(`${head}${rows}`, () => `${head}${Array.from({ length: rows }, () => row).join(', ')}`)
}

// Rows per multi-row INSERT: well under both databases' limits on bound parameters.
const INSERT_CHUNK = 500

/** `items` in runs short enough to bind one parameter (or one row's) each in one statement. */
export function chunks<T> (items: readonly T[]): T[][] {
  const out: T[][] = []
  for (let i = 0; i < items.length; i += INSERT_CHUNK) out.push(items.slice(i, i + INSERT_CHUNK))
  return out
}

/** `count` placeholders: `?, ?, ?`. */
export function placeholders (count: number): string {
  return Array.from({ length: count }, () => '?').join(', ')
}
