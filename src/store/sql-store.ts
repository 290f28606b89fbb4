import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import { decodeCursor, encodeCursor } from '../lib/pagination.js'
import { messageJson } from '../model/message-json.js'
import { RowCountError, type Row, type SqlDriver, type Statement } from './sql-driver.js'
import {
  CreateRefusedError, LeaseLostError,
  type CreatedRun, type EventRecord, type Lease, type NewEvent, type NewRun, type Page, type PageRequest,
  type CallbackUpdate, type RunFilter, type RunPatch, type RunRecord, type RunWrite, type SigningSecret, type Store, type ToolRecord, type WrittenRun
} from './store.js'

// SQLite: milliseconds since the epoch from its own clock (the only process using the file).
const CAST_NOW_SQLITE = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

const TOOL_COLUMNS = [
  'tenant_id', 'name', 'description', 'input_schema', 'url', 'headers', 'timeout_ms', 'effect', 'parallel',
  'max_concurrency', 'max_attempts', 'signing_secrets', 'source', 'revision', 'created_at', 'updated_at'
] as const

const RUN_INSERT_COLUMNS = [
  'id', 'tenant_id', 'status', 'stop_reason', 'model', 'params', 'metadata', 'created_at', 'started_at',
  'completed_at', 'deadline_at', 'steps', 'tool_calls_total', 'tool_calls_errors', 'usage', 'output',
  'required_action', 'error', 'message_count', 'event_count', 'idempotency_key', 'request_hash', 'trace_id',
  'lease_owner', 'lease_token', 'lease_expires_at', 'pending_results', 'cancel_requested_at', 'callback_url',
  'callback_status', 'callback_attempts', 'callback_next_at', 'callback_error', 'step_events_after'
] as const

const JSON_RUN_COLUMNS = new Set(['params', 'metadata', 'usage', 'output', 'required_action', 'error', 'pending_results'])
const PATCHABLE_RUN_COLUMNS = new Set<keyof RunPatch>([
  'status', 'stop_reason', 'started_at', 'completed_at', 'steps', 'tool_calls_total', 'tool_calls_errors',
  'usage', 'output', 'required_action', 'error', 'pending_results', 'callback_status', 'callback_next_at'
])

// A row limit bound as a plain `LIMIT ?` makes SQLite prepare its statement again at every run
// (the planner looks at the limit's value, so a new value might change the plan): 10 to 100 µs
// each time, the active-run count of every create among them. Cast, it is an expression whose
// value the plan does not depend on. PostgreSQL takes it the same (as a bigint, as it took `?`).
const LIMIT = 'LIMIT CAST(? AS BIGINT)'

// What a tool's write may change without a new revision: its secrets (a rotation) and when it was
// written. Every other column is fixed for a revision (a definition's write makes a new one).
const TOOL_LIVE_COLUMNS = new Set<string>(['name', 'revision', 'signing_secrets', 'updated_at'])

// How much of tools' definitions a store keeps, as read at their revision: their text's length
// (a definition is as large as a request body may be), plus some for the record around it.
const HELD_TOOLS_CHARS = 16 * 2 ** 20
const HELD_TOOL_OVERHEAD_CHARS = 1024

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
 * tool at a revision among the first parameter's (those the store holds) comes back with only its
 * live columns, the rest null; `known` says which. On PostgreSQL the text is the same whatever the
 * counts (array parameters); parameters: the known revisions, the tenant, the names.
 */
function toolsReadSql (dialect: 'sqlite' | 'postgres', knownCount: number, nameCount: number): string {
  return madeOnce(`tools ${dialect} ${knownCount} ${nameCount}`, () => {
    const known = dialect === 'postgres' ? 'revision = ANY (CAST(? AS TEXT[]))' : knownCount === 0 ? '0' : `revision IN (${placeholders(knownCount)})`
    const names = dialect === 'postgres' ? 'name = ANY (CAST(? AS TEXT[]))' : `name IN (${placeholders(nameCount)})`
    const columns = TOOL_COLUMNS.map((c) => TOOL_LIVE_COLUMNS.has(c) ? c : `CASE WHEN known THEN NULL ELSE ${c} END AS ${c}`)
    return `SELECT known, ${columns.join(', ')} FROM (SELECT *, ${known} AS known FROM tools WHERE tenant_id = ? AND ${names}) AS held`
  })
}
const PG_TOOLS_READ = toolsReadSql('postgres', 0, 0)

// How many of a tenant's runs are not yet final, counting no further than a cap: one range of
// runs_by_status (tenant_id, status, id) per status. Parameters: the tenant, the cap.
const ACTIVE_RUNS = `SELECT COUNT(*) AS n FROM (SELECT 1 FROM runs WHERE tenant_id = ? AND status IN ('queued', 'running', 'requires_action') ${LIMIT}) AS active`

// Rows per multi-row INSERT: well under both databases' limits on bound parameters.
const INSERT_CHUNK = 500

/** The one implementation of {@link Store}, over SQLite or PostgreSQL. */
export class SqlStore implements Store {
  readonly kind: 'sqlite' | 'postgres'
  readonly #db: SqlDriver
  /**
   * "Now" in SQL, in ms, for leases. PostgreSQL's clock is the one every replica shares, so a
   * replica whose own clock runs ahead cannot take live runs; SQLite has one process, whose clock
   * it is.
   */
  readonly #now: string
  /** Ends a claim's inner SELECT: on PostgreSQL, replicas claiming at once skip each other's rows rather than wait. */
  readonly #skipLocked: string
  /** Tools' definitions as last read, by tenant and name, and their size: see #toolsRead. */
  readonly #heldTools = new Map<string, { tool: ToolRecord, chars: number }>()
  #heldChars = 0

  constructor (driver: SqlDriver) {
    this.#db = driver
    this.kind = driver.dialect
    this.#now = driver.dialect === 'postgres' ? 'CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)' : CAST_NOW_SQLITE
    this.#skipLocked = driver.dialect === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : ''
  }

  async ping (): Promise<void> {
    await this.#db.query('SELECT 1')
  }

  async close (): Promise<void> {
    await this.#db.close()
  }

  // ---- tools ----

  async putTool (tool: ToolRecord): Promise<{ tool: ToolRecord, created: boolean }> {
    const values = toolValues(tool)
    const kept = new Set(['tenant_id', 'name', 'signing_secrets', 'created_at'])
    const updates = TOOL_COLUMNS.filter((c) => !kept.has(c)).map((c) => `${c} = excluded.${c}`).join(', ')
    const [row] = await this.#db.query(
      `INSERT INTO tools (${TOOL_COLUMNS.join(', ')}) VALUES (${placeholders(TOOL_COLUMNS.length)})
       ON CONFLICT (tenant_id, name) DO UPDATE SET ${updates} RETURNING *`,
      values
    )
    // A replace keeps the stored secrets, so the freshly made one comes back only on a create.
    const created = row!.signing_secrets === values[TOOL_COLUMNS.indexOf('signing_secrets')]
    return { tool: toToolRecord(row!), created }
  }

  async getTool (tenantId: string, name: string): Promise<ToolRecord | null> {
    const [row] = await this.#db.query('SELECT * FROM tools WHERE tenant_id = ? AND name = ?', [tenantId, name])
    return row === undefined ? null : toToolRecord(row)
  }

  async getTools (tenantId: string, names: readonly string[]): Promise<ToolRecord[]> {
    if (names.length === 0) return []
    // Read by runs as they start: on PostgreSQL one kept statement (see toolsReadSql).
    const { read, known } = this.#toolsRead(tenantId, names)
    return this.#toolsFrom(await this.#db.query(read.sql, read.params, { prepare: this.kind === 'postgres' }), known)
  }

  /**
   * The read of a tenant's tools by name (see toolsReadSql), and the definitions it may answer
   * with only a revision: those this store holds for these names, by revision. A run reads its
   * tools at each step, to see any change; most often none, and then only the live columns come.
   */
  #toolsRead (tenantId: string, names: readonly string[]): { read: Statement, known: Map<string, ToolRecord> } {
    const known = new Map<string, ToolRecord>()
    // Most writes read no tools (events, a run's end): nothing to make for them.
    if (names.length === 0) return { read: { sql: '', params: [] }, known }
    for (const name of names) {
      const held = this.#heldTools.get(heldKey(tenantId, name))
      if (held !== undefined) known.set(held.tool.revision, held.tool)
    }
    const revisions = [...known.keys()]
    const read = this.kind === 'postgres'
      ? { sql: PG_TOOLS_READ, params: [revisions, tenantId, names] }
      : { sql: toolsReadSql('sqlite', revisions.length, names.length), params: [...revisions, tenantId, ...names] }
    return { read, known }
  }

  /** The tools of rows read by #toolsRead with `known`; definitions read whole are held for next time. */
  #toolsFrom (rows: readonly Row[], known: ReadonlyMap<string, ToolRecord>): ToolRecord[] {
    return rows.map((row) => {
      const held = row.known === true || row.known === 1 ? known.get(row.revision as string) : undefined
      if (held !== undefined) return { ...held, signing_secrets: JSON.parse(row.signing_secrets as string), updated_at: Number(row.updated_at) }
      const tool = toToolRecord(row)
      this.#hold(tool, String(row.description).length + String(row.input_schema).length + String(row.headers).length + HELD_TOOL_OVERHEAD_CHARS)
      return tool
    })
  }

  #hold (tool: ToolRecord, chars: number): void {
    const key = heldKey(tool.tenant_id, tool.name)
    this.#forget(key)
    this.#heldTools.set(key, { tool, chars })
    this.#heldChars += chars
    // The oldest held go first (a Map keeps insertion order): a bound, not a cache policy.
    for (const oldest of this.#heldTools.keys()) {
      if (this.#heldChars <= HELD_TOOLS_CHARS) break
      this.#forget(oldest)
    }
  }

  #forget (key: string): void {
    const held = this.#heldTools.get(key)
    if (held === undefined) return
    this.#heldTools.delete(key)
    this.#heldChars -= held.chars
  }

  async listTools (tenantId: string, page: PageRequest): Promise<Page<ToolRecord>> {
    const params: unknown[] = [tenantId]
    let where = 'tenant_id = ?'
    if (page.after !== undefined) {
      const [createdAt, name] = decodeCursor(page.after, ['number', 'string']) as [number, string]
      where += ' AND (created_at < ? OR (created_at = ? AND name < ?))'
      params.push(createdAt, createdAt, name)
    }
    const rows = await this.#db.query(
      `SELECT * FROM tools WHERE ${where} ORDER BY created_at DESC, name DESC ${LIMIT}`,
      [...params, page.limit + 1]
    )
    return toPage(rows.map(toToolRecord), page.limit, (t) => [t.created_at, t.name])
  }

  async deleteTool (tenantId: string, name: string): Promise<boolean> {
    const rows = await this.#db.query('DELETE FROM tools WHERE tenant_id = ? AND name = ? RETURNING name', [tenantId, name])
    return rows.length > 0
  }

  async setToolSecrets (tenantId: string, name: string, secrets: readonly SigningSecret[], updatedAt: number, expected: readonly SigningSecret[]): Promise<ToolRecord | null> {
    // The stored text is exactly what JSON.stringify made of the secrets when they were written.
    const [row] = await this.#db.query(
      'UPDATE tools SET signing_secrets = ?, updated_at = ? WHERE tenant_id = ? AND name = ? AND signing_secrets = ? RETURNING *',
      [JSON.stringify(secrets), updatedAt, tenantId, name, JSON.stringify(expected)]
    )
    return row === undefined ? null : toToolRecord(row)
  }

  // ---- runs ----

  async createRun (input: NewRun): Promise<CreatedRun> {
    const { run, messages, event, started, admit } = input
    const events = started === undefined ? [event] : [event, started]
    // The creator's lease runs on the clock the other replicas judge it by: the database's.
    const leased = (column: string): boolean => column === 'lease_expires_at' && run.lease_owner !== null
    const values = RUN_INSERT_COLUMNS.map((c) => leased(c) ? Math.max(0, (run.lease_expires_at ?? 0) - run.created_at) : runValue(c, run[c]))
    const names = [...new Set(admit?.tools ?? [])]
    // The stored row is the run as given but for its lease's end, set by the database's clock:
    // only that comes back (parsing the whole row back cost more than storing it). With `admit`,
    // the row is inserted only where its conditions hold (an INSERT of a SELECT with a WHERE);
    // `found` and `active` are how the statement reads the tools and the count of active runs.
    const insertRun = (found: Statement, active: Statement): Statement => {
      const conditions: string[] = []
      const params: unknown[] = [...values]
      if (admit !== undefined) {
        if (names.length > 0) {
          conditions.push(`(SELECT COUNT(*) FROM (${found.sql}) AS found) = ?`)
          params.push(...found.params, names.length)
        }
        conditions.push(`(${active.sql}) < ?`)
        params.push(...active.params, admit.limit - admit.reserved)
      }
      return {
        sql: `INSERT INTO runs (${RUN_INSERT_COLUMNS.join(', ')}) SELECT ${RUN_INSERT_COLUMNS.map((c) => leased(c) ? `${this.#now} + ?` : '?').join(', ')}` +
          `${conditions.length === 0 ? '' : ` WHERE ${conditions.join(' AND ')}`} RETURNING lease_expires_at`,
        params
      }
    }
    const activeRead: Statement = { sql: ACTIVE_RUNS, params: [run.tenant_id, admit?.limit ?? 0] }
    const { read: toolsRead, known } = this.#toolsRead(run.tenant_id, names)
    try {
      let row: Row
      let tools: ToolRecord[] = []
      if (this.kind === 'postgres') {
        // One statement, so one round trip rather than five (BEGIN, three inserts, COMMIT), or
        // seven with the tools and the count of active runs read first. It always answers a row:
        // whether the run was inserted, its lease, the tools found and the count of active runs.
        const ctes = admit === undefined
          ? ''
          : `${names.length > 0 ? `found AS (${PG_TOOLS_READ}), ` : ''}active AS (${ACTIVE_RUNS}), `
        const ctesParams = admit === undefined ? [] : [...(names.length > 0 ? toolsRead.params : []), ...activeRead.params]
        const insert = insertRun({ sql: 'SELECT 1 FROM found', params: [] }, { sql: 'SELECT n FROM active', params: [] })
        const [answer] = await this.#db.query(
          `WITH ${ctes}new_run AS (${insert.sql}), ${pgInserts('new_run')}
           SELECT (SELECT lease_expires_at FROM new_run) AS lease_expires_at, (SELECT COUNT(*) FROM new_run) AS inserted` +
            (admit === undefined ? '' : ', (SELECT n FROM active) AS active') +
            (names.length > 0 ? ', (SELECT json_agg(found) FROM found) AS tools' : ''),
          [...ctesParams, ...insert.params, ...pgInsertParams(run.id, run.tenant_id, 0, messages, events)],
          { prepare: true }
        )
        tools = this.#toolsFrom((answer!.tools ?? []) as Row[], known)
        if (Number(answer!.inserted) === 0) throw refusal(names, tools, Number(answer!.active))
        row = answer!
      } else {
        // One transaction: the tools and the count read first (to say why, if refused), then the
        // insert, which checks them again within it.
        const reads = admit === undefined ? [] : [...(names.length > 0 ? [toolsRead] : []), activeRead]
        const statements: Statement[] = [
          ...reads,
          { ...insertRun(toolsRead, activeRead), expectRows: 1 },
          ...messageInserts(run.id, run.tenant_id, 0, messages),
          ...eventInserts(run.id, run.tenant_id, events)
        ]
        let results: Row[][]
        try {
          results = await this.#db.batch(statements)
        } catch (err) {
          if (err instanceof RowCountError && err.statementIndex === reads.length) {
            const found = names.length > 0 ? this.#toolsFrom(err.earlier[0]!, known) : []
            throw refusal(names, found, Number(err.earlier[reads.length - 1]![0]!.n))
          }
          throw err
        }
        row = results[reads.length]![0]!
        if (names.length > 0) tools = this.#toolsFrom(results[0]!, known)
      }
      return { run: { ...run, lease_expires_at: numberOrNull(row.lease_expires_at) }, created: true, tools }
    } catch (err) {
      if (run.idempotency_key === null || !isUniqueViolation(err)) throw err
      const existing = await this.getRunByIdempotencyKey(run.tenant_id, run.idempotency_key)
      if (existing === null) throw err
      return { run: existing, created: false, tools: [] }
    }
  }

  async getRun (tenantId: string, runId: string): Promise<RunRecord | null> {
    const [row] = await this.#db.query('SELECT * FROM runs WHERE tenant_id = ? AND id = ?', [tenantId, runId])
    return row === undefined ? null : toRunRecord(row)
  }

  async getRunByIdempotencyKey (tenantId: string, key: string): Promise<RunRecord | null> {
    const [row] = await this.#db.query('SELECT * FROM runs WHERE tenant_id = ? AND idempotency_key = ?', [tenantId, key])
    return row === undefined ? null : toRunRecord(row)
  }

  async listRuns (tenantId: string, filter: RunFilter): Promise<Page<RunRecord>> {
    const params: unknown[] = [tenantId]
    let where = 'tenant_id = ?'
    if (filter.status !== undefined) {
      where += ' AND status = ?'
      params.push(filter.status)
    }
    for (const [key, value] of Object.entries(filter.metadata ?? {})) {
      if (this.kind === 'postgres') {
        where += ' AND metadata ->> ? = ?'
        params.push(key, value)
      } else {
        where += ' AND json_extract(metadata, ?) = ?'
        params.push(`$."${key}"`, value)
      }
    }
    if (filter.after !== undefined) {
      const [id] = decodeCursor(filter.after, ['string']) as [string]
      where += ' AND id < ?'
      params.push(id)
    }
    const rows = await this.#db.query(`SELECT * FROM runs WHERE ${where} ORDER BY id DESC ${LIMIT}`, [...params, filter.limit + 1])
    return toPage(rows.map(toRunRecord), filter.limit, (r) => [r.id])
  }

  async getMessages (runId: string): Promise<MessageParam[]> {
    const rows = await this.#db.query('SELECT message FROM run_messages WHERE run_id = ? ORDER BY seq', [runId])
    return rows.map((r) => JSON.parse(r.message as string) as MessageParam)
  }

  async listEvents (runId: string, afterSeq: number, limit: number): Promise<EventRecord[]> {
    const rows = await this.#db.query(
      `SELECT run_id, seq, type, at, data FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq ${LIMIT}`,
      [runId, afterSeq, limit]
    )
    return rows.map((r) => ({
      run_id: r.run_id as string,
      seq: Number(r.seq),
      type: r.type as string,
      at: Number(r.at),
      data: JSON.parse(r.data as string) as Record<string, unknown>
    }))
  }

  async countUnfinishedRuns (): Promise<Record<'queued' | 'running' | 'requires_action', number>> {
    // Each half reads one partial index (runs_active, runs_waiting): the active runs, never the finished.
    const rows = await this.#db.query(
      "SELECT status, COUNT(*) AS n FROM runs WHERE status IN ('queued', 'running') GROUP BY status " +
      "UNION ALL SELECT 'requires_action' AS status, COUNT(*) AS n FROM runs WHERE status = 'requires_action'"
    )
    const counts = { queued: 0, running: 0, requires_action: 0 }
    for (const row of rows) counts[row.status as keyof typeof counts] = Number(row.n)
    return counts
  }

  // ---- leases and the driver's writes ----

  async claimRun (runId: string, owner: string, leaseMs: number): Promise<Lease | null> {
    const [row] = await this.#db.query(
      `UPDATE runs SET lease_owner = ?, lease_token = lease_token + 1, lease_expires_at = ${this.#now} + ?
       WHERE id = ? AND status IN ('queued', 'running') AND lease_expires_at < ${this.#now}
       RETURNING lease_token`,
      [owner, leaseMs, runId]
    )
    return row === undefined ? null : { owner, token: Number(row.lease_token) }
  }

  async renewLeases (owner: string, runIds: readonly string[], leaseMs: number): Promise<Array<{ id: string, cancelRequested: boolean }>> {
    if (runIds.length === 0) return []
    // In chunks: one bound parameter per run, and databases cap how many a statement may have.
    const held: Array<{ id: string, cancelRequested: boolean }> = []
    for (const chunk of chunks(runIds)) {
      const rows = await this.#db.query(
        `UPDATE runs SET lease_expires_at = ${this.#now} + ? WHERE lease_owner = ? AND id IN (${placeholders(chunk.length)}) RETURNING id, cancel_requested_at`,
        [leaseMs, owner, ...chunk]
      )
      held.push(...rows.map((r) => ({ id: r.id as string, cancelRequested: r.cancel_requested_at !== null })))
    }
    return held
  }

  async resumeWaitingRun (runId: string, eventCount: number, owner: string, leaseMs: number): Promise<RunRecord | null> {
    const [row] = await this.#db.query(
      `UPDATE runs SET status = 'running', lease_owner = ?, lease_token = lease_token + 1, lease_expires_at = ${this.#now} + ?
       WHERE id = ? AND status = 'requires_action' AND event_count = ? RETURNING *`,
      [owner, leaseMs, runId, eventCount]
    )
    return row === undefined ? null : toRunRecord(row)
  }

  async returnToWaiting (runId: string, lease: Lease): Promise<void> {
    await this.#db.query(
      "UPDATE runs SET status = 'requires_action', lease_owner = NULL, lease_expires_at = 0 WHERE id = ? AND lease_token = ?",
      [runId, lease.token]
    )
  }

  async requestCancel (tenantId: string, runId: string, at: number): Promise<RunRecord | null> {
    // Only runs being driven: a waiting run is cancelled by taking it (see the engine's cancel).
    const [row] = await this.#db.query(
      'UPDATE runs SET cancel_requested_at = ? WHERE tenant_id = ? AND id = ? AND status IN (\'queued\', \'running\') RETURNING *',
      [at, tenantId, runId]
    )
    return row === undefined ? null : toRunRecord(row)
  }

  async cancelRequested (owner: string): Promise<string[]> {
    const rows = await this.#db.query(
      "SELECT id FROM runs WHERE lease_owner = ? AND cancel_requested_at IS NOT NULL AND status IN ('queued', 'running')",
      [owner]
    )
    return rows.map((r) => r.id as string)
  }

  async expiredWaitingRuns (now: number, limit: number): Promise<RunRecord[]> {
    const rows = await this.#db.query(
      `SELECT * FROM runs WHERE status = 'requires_action' AND deadline_at < ? ORDER BY deadline_at ${LIMIT}`,
      [now, limit]
    )
    return rows.map(toRunRecord)
  }

  async claimDueCallbacks (now: number, claimUntil: number, limit: number): Promise<RunRecord[]> {
    // One UPDATE claims them: two replicas never deliver the same callback at once. PostgreSQL
    // skips rows another replica is claiming rather than waiting for it.
    const rows = await this.#db.query(
      `UPDATE runs SET callback_next_at = ? WHERE id IN (
         SELECT id FROM runs WHERE callback_status = 'pending' AND callback_next_at <= ? ORDER BY callback_next_at ${LIMIT}${this.#skipLocked}
       ) RETURNING *`,
      [claimUntil, now, limit]
    )
    return rows.map(toRunRecord)
  }

  async recordCallback (runId: string, claimedUntil: number, update: CallbackUpdate): Promise<boolean> {
    const rows = await this.#db.query(
      'UPDATE runs SET callback_status = ?, callback_attempts = ?, callback_next_at = ?, callback_error = ? WHERE id = ? AND callback_next_at = ? RETURNING id',
      [update.status, update.attempts, update.next_at, update.error, runId, claimedUntil]
    )
    return rows.length > 0
  }

  async getCallbackSecrets (tenantId: string): Promise<SigningSecret[] | null> {
    const [row] = await this.#db.query('SELECT signing_secrets FROM callback_secrets WHERE tenant_id = ?', [tenantId])
    return row === undefined ? null : JSON.parse(row.signing_secrets as string)
  }

  async setCallbackSecrets (tenantId: string, secrets: readonly SigningSecret[], updatedAt: number, expected: readonly SigningSecret[] | null): Promise<boolean> {
    const rows = expected === null
      ? await this.#db.query(
        'INSERT INTO callback_secrets (tenant_id, signing_secrets, updated_at) VALUES (?, ?, ?) ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id',
        [tenantId, JSON.stringify(secrets), updatedAt])
      : await this.#db.query(
        'UPDATE callback_secrets SET signing_secrets = ?, updated_at = ? WHERE tenant_id = ? AND signing_secrets = ? RETURNING tenant_id',
        [JSON.stringify(secrets), updatedAt, tenantId, JSON.stringify(expected)])
    return rows.length > 0
  }

  async serviceSecret (name: string, candidate: string): Promise<string> {
    // Whoever inserts first wins; everyone, the winner included, then reads what was stored.
    await this.#db.query('INSERT INTO service_secrets (name, secret, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING', [name, candidate, Date.now()])
    const [row] = await this.#db.query('SELECT secret FROM service_secrets WHERE name = ?', [name])
    return row!.secret as string
  }

  async claimAbandonedRuns (owner: string, leaseMs: number, limit: number): Promise<RunRecord[]> {
    if (limit <= 0) return []
    // Runs nobody holds have lease_expires_at 0, so that this is a range scan of the runs_active
    // index over expired leases only, however many runs are live.
    const runs = await this.#claimRuns(`status IN ('queued', 'running') AND lease_expires_at < ${this.#now}`, owner, leaseMs, limit)
    return runs.sort((a, b) => a.created_at - b.created_at)
  }

  async claimExpiredQueuedRuns (owner: string, leaseMs: number, limit: number): Promise<RunRecord[]> {
    return await this.#claimRuns(`status = 'queued' AND lease_expires_at < ${this.#now} AND deadline_at < ${this.#now}`, owner, leaseMs, limit)
  }

  /** Takes a lease on up to `limit` runs matching `where`, oldest lease first, each for one replica. */
  async #claimRuns (where: string, owner: string, leaseMs: number, limit: number): Promise<RunRecord[]> {
    const rows = await this.#db.query(
      `UPDATE runs SET lease_owner = ?, lease_token = lease_token + 1, lease_expires_at = ${this.#now} + ? WHERE id IN (
         SELECT id FROM runs WHERE ${where} ORDER BY lease_expires_at ${LIMIT}${this.#skipLocked}
       ) RETURNING *`,
      [owner, leaseMs, limit]
    )
    return rows.map(toRunRecord)
  }

  async releaseAllLeases (except: string): Promise<number> {
    const rows = await this.#db.query(
      "UPDATE runs SET lease_owner = NULL, lease_expires_at = 0 WHERE lease_owner IS NOT NULL AND lease_owner <> ? AND status IN ('queued', 'running') RETURNING id",
      [except]
    )
    return rows.length
  }

  async releaseRun (runId: string, lease: Lease): Promise<void> {
    await this.#db.query(
      'UPDATE runs SET lease_owner = NULL, lease_expires_at = 0 WHERE id = ? AND lease_token = ?',
      [runId, lease.token]
    )
  }

  async writeRun (run: RunRecord, lease: Lease, write: RunWrite): Promise<WrittenRun> {
    const messages = write.messages ?? []
    const events = write.events ?? []
    const readTools = write.readTools ?? []
    const { read: toolsRead, known } = this.#toolsRead(run.tenant_id, readTools)
    const columns: string[] = []
    const params: unknown[] = []
    for (const [column, value] of Object.entries(write.patch ?? {})) {
      if (!PATCHABLE_RUN_COLUMNS.has(column as keyof RunPatch)) throw new Error(`run column ${column} cannot be patched`)
      columns.push(column)
      params.push(runValue(column, value))
    }
    params.push(messages.length)
    const eventCount = events.length > 0 ? events[events.length - 1]!.seq : run.event_count
    if (events.length > 0) params.push(eventCount)
    // A write with messages commits a step: the next step's events begin after this one's.
    if (messages.length > 0) params.push(eventCount)
    const texts = writeTexts(columns, events.length > 0, messages.length > 0, readTools.length > 0)
    const fence: Statement = { sql: texts.fence, params: [...params, run.id, lease.token], expectRows: 1 }
    let row: Row
    let tools: ToolRecord[] = []
    if (this.kind === 'postgres') {
      // One statement (see writeTexts), so one round trip rather than five (BEGIN, fence, inserts,
      // COMMIT), kept prepared.
      const [fenced] = await this.#db.query(
        texts.postgres,
        [
          ...fence.params,
          ...pgInsertParams(run.id, run.tenant_id, run.message_count, messages, events),
          ...(readTools.length === 0 ? [] : toolsRead.params)
        ],
        { prepare: true }
      )
      if (fenced === undefined) throw new LeaseLostError(run.id)
      row = fenced
      if (readTools.length > 0) tools = this.#toolsFrom((fenced.tools ?? []) as Row[], known)
    } else {
      let results: Row[][]
      const statements = [
        fence,
        ...messageInserts(run.id, run.tenant_id, run.message_count, messages),
        ...eventInserts(run.id, run.tenant_id, events)
      ]
      if (readTools.length > 0) statements.push(toolsRead)
      try {
        results = await this.#db.batch(statements)
      } catch (err) {
        if (err instanceof RowCountError && err.statementIndex === 0) throw new LeaseLostError(run.id)
        throw err
      }
      row = results[0]![0]!
      if (readTools.length > 0) tools = this.#toolsFrom(results[results.length - 1]!, known)
    }
    const patched: Record<string, unknown> = {}
    for (const [column, value] of Object.entries(write.patch ?? {})) patched[column] = value === undefined ? null : value
    return {
      run: {
        ...run,
        ...patched,
        message_count: run.message_count + messages.length,
        event_count: eventCount,
        step_events_after: messages.length > 0 ? eventCount : run.step_events_after,
        cancel_requested_at: numberOrNull(row.cancel_requested_at),
        lease_expires_at: numberOrNull(row.lease_expires_at)
      },
      tools
    }
  }
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
 *   fence matched a row (see pgInserts), and the tools as one JSON column of their rows.
 */
function writeTexts (columns: readonly string[], withEvents: boolean, withMessages: boolean, withTools: boolean): { fence: string, postgres: string } {
  const key = `write ${columns.join(' ')}|${withEvents ? 'e' : ''}${withMessages ? 'm' : ''}${withTools ? 't' : ''}`
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
    return `WITH fence AS (${fence}), ${pgInserts('fence')} SELECT cancel_requested_at, lease_expires_at${tools} FROM fence`
  })
  return { fence, postgres }
}

/** Why a create was refused, from the tools and the count its insert saw: missing tools first. */
function refusal (names: readonly string[], found: readonly ToolRecord[], active: number): CreateRefusedError {
  const have = new Set(found.map((t) => t.name))
  const missing = names.filter((name) => !have.has(name))
  return missing.length > 0 ? new CreateRefusedError('unknown_tools', missing, active) : new CreateRefusedError('too_many_active', [], active)
}

function heldKey (tenantId: string, name: string): string {
  return `${tenantId}\n${name}`
}

function placeholders (count: number): string {
  return Array.from({ length: count }, () => '?').join(', ')
}

function chunks<T> (items: readonly T[]): T[][] {
  const out: T[][] = []
  for (let i = 0; i < items.length; i += INSERT_CHUNK) out.push(items.slice(i, i + INSERT_CHUNK))
  return out
}

function messageRows (runId: string, tenantId: string, first: number, messages: readonly MessageParam[]): unknown[][] {
  return messages.map((message, i) => [runId, first + i, tenantId, messageJson(message)])
}

function eventRows (runId: string, tenantId: string, events: readonly NewEvent[]): unknown[][] {
  return events.map((e) => [runId, e.seq, tenantId, e.type, e.at, JSON.stringify(e.data)])
}

/** Inserts messages numbered from `first`, in multi-row statements. */
function messageInserts (runId: string, tenantId: string, first: number, messages: readonly MessageParam[]): Statement[] {
  return chunks(messageRows(runId, tenantId, first, messages)).map((chunk) => ({
    sql: multiRowInsert('INSERT INTO run_messages (run_id, seq, tenant_id, message) VALUES ', '(?, ?, ?, ?)', chunk.length),
    params: chunk.flat()
  }))
}

function eventInserts (runId: string, tenantId: string, events: readonly NewEvent[]): Statement[] {
  return chunks(eventRows(runId, tenantId, events)).map((chunk) => ({
    sql: multiRowInsert('INSERT INTO run_events (run_id, seq, tenant_id, type, at, data) VALUES ', '(?, ?, ?, ?, ?, ?)', chunk.length),
    params: chunk.flat()
  }))
}

function multiRowInsert (head: string, row: string, rows: number): string {
  return madeOnce(`${head}${rows}`, () => `${head}${Array.from({ length: rows }, () => row).join(', ')}`)
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

/**
 * The parameters of {@link pgInserts}. The large values, a step's messages and its events' data,
 * go as one JSON text each rather than as text arrays: the driver escapes every element of an
 * array character by character, which cost more than the rest of the write, and a message goes in
 * as the text its run's driver already made of it.
 */
function pgInsertParams (runId: string, tenantId: string, first: number, messages: readonly MessageParam[], events: readonly NewEvent[]): unknown[] {
  return [
    runId, first, tenantId, `[${messages.map(messageJson).join(',')}]`,
    runId, tenantId, events.map((e) => e.seq), events.map((e) => e.type), events.map((e) => e.at), JSON.stringify(events.map((e) => e.data))
  ]
}

function toPage<T> (rows: T[], limit: number, position: (item: T) => unknown[]): Page<T> {
  const items = rows.slice(0, limit)
  const nextCursor = rows.length > limit ? encodeCursor(position(items[items.length - 1]!)) : null
  return { items, nextCursor }
}

function toolValues (tool: ToolRecord): unknown[] {
  return TOOL_COLUMNS.map((column) => {
    const value = tool[column]
    if (column === 'input_schema' || column === 'headers' || column === 'signing_secrets') return JSON.stringify(value)
    if (column === 'parallel') return value === true ? 1 : 0
    return value
  })
}

function toToolRecord (row: Row): ToolRecord {
  return {
    tenant_id: row.tenant_id as string,
    name: row.name as string,
    description: row.description as string,
    input_schema: JSON.parse(row.input_schema as string),
    url: row.url as string,
    headers: JSON.parse(row.headers as string),
    timeout_ms: Number(row.timeout_ms),
    effect: row.effect as ToolRecord['effect'],
    parallel: Number(row.parallel) === 1,
    max_concurrency: row.max_concurrency === null ? null : Number(row.max_concurrency),
    max_attempts: Number(row.max_attempts),
    signing_secrets: JSON.parse(row.signing_secrets as string),
    source: row.source as ToolRecord['source'],
    revision: row.revision as string,
    created_at: Number(row.created_at),
    updated_at: Number(row.updated_at)
  }
}

function runValue (column: string, value: unknown): unknown {
  if (JSON_RUN_COLUMNS.has(column)) return value === null || value === undefined ? null : JSON.stringify(value)
  return value === undefined ? null : value
}

function parseJson<T> (value: unknown): T {
  return (value === null ? null : JSON.parse(value as string)) as T
}

function numberOrNull (value: unknown): number | null {
  return value === null || value === undefined ? null : Number(value)
}

function toRunRecord (row: Row): RunRecord {
  return {
    id: row.id as string,
    tenant_id: row.tenant_id as string,
    status: row.status as RunRecord['status'],
    stop_reason: (row.stop_reason ?? null) as string | null,
    model: row.model as string,
    params: parseJson(row.params),
    metadata: parseJson(row.metadata),
    created_at: Number(row.created_at),
    started_at: numberOrNull(row.started_at),
    completed_at: numberOrNull(row.completed_at),
    deadline_at: Number(row.deadline_at),
    steps: Number(row.steps),
    tool_calls_total: Number(row.tool_calls_total),
    tool_calls_errors: Number(row.tool_calls_errors),
    usage: parseJson(row.usage),
    output: parseJson(row.output),
    required_action: parseJson(row.required_action),
    error: parseJson(row.error),
    message_count: Number(row.message_count),
    event_count: Number(row.event_count),
    idempotency_key: (row.idempotency_key ?? null) as string | null,
    request_hash: (row.request_hash ?? null) as string | null,
    trace_id: row.trace_id as string,
    lease_owner: (row.lease_owner ?? null) as string | null,
    lease_token: Number(row.lease_token),
    lease_expires_at: numberOrNull(row.lease_expires_at),
    pending_results: parseJson(row.pending_results ?? null),
    cancel_requested_at: numberOrNull(row.cancel_requested_at),
    callback_url: (row.callback_url ?? null) as string | null,
    callback_status: (row.callback_status ?? null) as RunRecord['callback_status'],
    callback_attempts: Number(row.callback_attempts ?? 0),
    callback_next_at: numberOrNull(row.callback_next_at),
    callback_error: (row.callback_error ?? null) as string | null,
    step_events_after: Number(row.step_events_after ?? 0)
  }
}

/** Whether a statement failed on a primary key or unique index, in either database. */
export function isUniqueViolation (err: unknown): boolean {
  const code = (err as { code?: string }).code
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY'
}
