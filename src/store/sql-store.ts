import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import { decodeCursor } from '../lib/pagination.js'
import { RowCountError, type Row, type SqlDriver, type Statement } from './sql-driver.js'
import { eventRows, messageRows, numberOrNull, pgInsertParams, runValue, toEventRecord, toPage, toRunRecord, toToolRecord, toolValues } from './sql-rows.js'
import {
  ACTIVE_RUNS, CAST_NOW_POSTGRES, CAST_NOW_SQLITE, chunks, eventInserts, LIMIT, messageInserts, PATCHABLE_RUN_COLUMNS, pgCreateRunSql,
  PG_TOOLS_READ, placeholders, PUT_TOOL, RUN_INSERT_COLUMNS, runInsertSql, SKIP_LOCKED_POSTGRES, TOOL_COLUMNS, toolsReadSql, writeTexts
} from './sql-statements.js'
import {
  CreateRefusedError, LeaseLostError,
  type CreatedRun, type EventRecord, type Lease, type NewRun, type Page, type PageRequest,
  type CallbackUpdate, type RunFilter, type RunPatch, type RunRecord, type RunWrite, type SigningSecret, type Store, type ToolRecord, type WrittenRun,
  type McpListedTool, type McpServerRecord
} from './store.js'
import { ToolCache } from './tool-cache.js'
import { SqlToolHealthStore, type ToolHealthStore } from './tool-health.js'
import { SqlUsageStore, usageParam, usageStatements, type UsageStore } from './usage-ledger.js'
import { mcpServerValues, PUT_MCP_SERVER, toMcpServerRecord } from './mcp-server-rows.js'
import { SqlCallWaitStore, type CallWaitStore } from './call-waits.js'

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
  /** Tools' definitions as last read: a step's read of its tools then answers only what changed. */
  readonly #tools = new ToolCache()
  readonly toolHealth: ToolHealthStore
  readonly usage: UsageStore
  readonly callWaits: CallWaitStore

  constructor (driver: SqlDriver) {
    this.#db = driver
    this.toolHealth = new SqlToolHealthStore(driver)
    this.usage = new SqlUsageStore(driver)
    this.callWaits = new SqlCallWaitStore(driver)
    this.kind = driver.dialect
    this.#now = driver.dialect === 'postgres' ? CAST_NOW_POSTGRES : CAST_NOW_SQLITE
    this.#skipLocked = driver.dialect === 'postgres' ? SKIP_LOCKED_POSTGRES : ''
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
    const [row] = await this.#db.query(PUT_TOOL, values)
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
    return this.#tools.toolsFrom(await this.#db.query(read.sql, read.params, { prepare: this.kind === 'postgres' }), known)
  }

  /**
   * The read of a tenant's tools by name (see toolsReadSql), and the definitions it may answer
   * with only a revision: those this store holds for these names, by revision (see ToolCache).
   */
  #toolsRead (tenantId: string, names: readonly string[]): { read: Statement, known: Map<string, ToolRecord> } {
    const known = this.#tools.known(tenantId, names)
    // Most writes read no tools (events, a run's end): nothing to make for them.
    if (names.length === 0) return { read: { sql: '', params: [] }, known }
    const revisions = [...known.keys()]
    const read = this.kind === 'postgres'
      ? { sql: PG_TOOLS_READ, params: [revisions, tenantId, names] }
      : { sql: toolsReadSql('sqlite', revisions.length, names.length), params: [...revisions, tenantId, ...names] }
    return { read, known }
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

  // ---- MCP servers ----

  async putMcpServer (server: McpServerRecord): Promise<{ server: McpServerRecord, created: boolean }> {
    const [row] = await this.#db.query(PUT_MCP_SERVER, mcpServerValues(server))
    const stored = toMcpServerRecord(row!)
    // A replace keeps the stored creation time: the one given comes back only on a create.
    return { server: stored, created: stored.created_at === server.created_at }
  }

  async getMcpServer (tenantId: string, name: string): Promise<McpServerRecord | null> {
    const [row] = await this.#db.query('SELECT * FROM mcp_servers WHERE tenant_id = ? AND name = ?', [tenantId, name])
    return row === undefined ? null : toMcpServerRecord(row)
  }

  async listMcpServers (tenantId: string, page: PageRequest): Promise<Page<McpServerRecord>> {
    const params: unknown[] = [tenantId]
    let where = 'tenant_id = ?'
    if (page.after !== undefined) {
      const [createdAt, name] = decodeCursor(page.after, ['number', 'string']) as [number, string]
      where += ' AND (created_at < ? OR (created_at = ? AND name < ?))'
      params.push(createdAt, createdAt, name)
    }
    const rows = await this.#db.query(`SELECT * FROM mcp_servers WHERE ${where} ORDER BY created_at DESC, name DESC ${LIMIT}`, [...params, page.limit + 1])
    return toPage(rows.map(toMcpServerRecord), page.limit, (s) => [s.created_at, s.name])
  }

  async deleteMcpServer (tenantId: string, name: string): Promise<boolean> {
    const rows = await this.#db.query('DELETE FROM mcp_servers WHERE tenant_id = ? AND name = ? RETURNING name', [tenantId, name])
    return rows.length > 0
  }

  async setMcpServerTools (tenantId: string, name: string, listed: readonly McpListedTool[], listedAt: number): Promise<McpServerRecord | null> {
    const [row] = await this.#db.query('UPDATE mcp_servers SET listed = ?, listed_at = ? WHERE tenant_id = ? AND name = ? RETURNING *', [JSON.stringify(listed), listedAt, tenantId, name])
    return row === undefined ? null : toMcpServerRecord(row)
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
      return { sql: runInsertSql(this.#now, run.lease_owner !== null, conditions), params }
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
        const ctesParams = admit === undefined ? [] : [...(names.length > 0 ? toolsRead.params : []), ...activeRead.params]
        const insert = insertRun({ sql: 'SELECT 1 FROM found', params: [] }, { sql: 'SELECT n FROM active', params: [] })
        const [answer] = await this.#db.query(
          pgCreateRunSql(insert.sql, admit !== undefined, names.length > 0),
          [...ctesParams, ...insert.params, ...pgInsertParams(run.id, run.tenant_id, 0, messages, events)],
          { prepare: true }
        )
        tools = this.#tools.toolsFrom((answer!.tools ?? []) as Row[], known)
        if (Number(answer!.inserted) === 0) throw refusal(names, tools, Number(answer!.active))
        row = answer!
      } else {
        // One transaction: the tools and the count read first (to say why, if refused), then the
        // insert, which checks them again within it.
        const reads = admit === undefined ? [] : [...(names.length > 0 ? [toolsRead] : []), activeRead]
        const statements: Statement[] = [
          ...reads,
          { ...insertRun(toolsRead, activeRead), expectRows: 1 },
          ...messageInserts(messageRows(run.id, run.tenant_id, 0, messages)),
          ...eventInserts(eventRows(run.id, run.tenant_id, events))
        ]
        let results: Row[][]
        try {
          results = await this.#db.batch(statements)
        } catch (err) {
          if (err instanceof RowCountError && err.statementIndex === reads.length) {
            const found = names.length > 0 ? this.#tools.toolsFrom(err.earlier[0]!, known) : []
            throw refusal(names, found, Number(err.earlier[reads.length - 1]![0]!.n))
          }
          throw err
        }
        row = results[reads.length]![0]!
        if (names.length > 0) tools = this.#tools.toolsFrom(results[0]!, known)
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
    return rows.map(toEventRecord)
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

  async renewLeases (owner: string, runIds: readonly string[], leaseMs: number): Promise<string[]> {
    if (runIds.length === 0) return []
    // In chunks: one bound parameter per run, and databases cap how many a statement may have.
    const held: string[] = []
    for (const chunk of chunks(runIds)) {
      const rows = await this.#db.query(
        `UPDATE runs SET lease_expires_at = ${this.#now} + ? WHERE lease_owner = ? AND id IN (${placeholders(chunk.length)}) RETURNING id`,
        [leaseMs, owner, ...chunk]
      )
      held.push(...rows.map((r) => r.id as string))
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

  async parkRun (runId: string, lease: Lease, until: number): Promise<boolean> {
    const rows = await this.#db.query(
      'UPDATE runs SET lease_owner = NULL, lease_token = lease_token + 1, lease_expires_at = ? WHERE id = ? AND lease_token = ? AND pending_calls IS NOT NULL RETURNING id',
      [until, runId, lease.token]
    )
    return rows.length > 0
  }

  async takeParkedRun (runId: string, eventCount: number, owner: string, leaseMs: number): Promise<RunRecord | null> {
    const [row] = await this.#db.query(
      `UPDATE runs SET lease_owner = ?, lease_token = lease_token + 1, lease_expires_at = ${this.#now} + ?
       WHERE id = ? AND status = 'running' AND lease_owner IS NULL AND pending_calls IS NOT NULL AND event_count = ? RETURNING *`,
      [owner, leaseMs, runId, eventCount]
    )
    return row === undefined ? null : toRunRecord(row)
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
    const usage = write.usage ?? []
    const texts = writeTexts(columns, events.length > 0, messages.length > 0, readTools.length > 0, usage.length > 0)
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
          // The step's usage lines, in the same statement: stored exactly when the step is.
          ...(usage.length === 0 ? [] : [usageParam(usage)]),
          ...(readTools.length === 0 ? [] : toolsRead.params)
        ],
        { prepare: true }
      )
      if (fenced === undefined) throw new LeaseLostError(run.id)
      row = fenced
      if (readTools.length > 0) tools = this.#tools.toolsFrom((fenced.tools ?? []) as Row[], known)
    } else {
      let results: Row[][]
      const statements = [
        fence,
        ...messageInserts(messageRows(run.id, run.tenant_id, run.message_count, messages)),
        ...eventInserts(eventRows(run.id, run.tenant_id, events)),
        // The step's usage lines, in the same transaction: the fence failing stores none.
        ...usageStatements(usage)
      ]
      if (readTools.length > 0) statements.push(toolsRead)
      try {
        results = await this.#db.batch(statements)
      } catch (err) {
        if (err instanceof RowCountError && err.statementIndex === 0) throw new LeaseLostError(run.id)
        throw err
      }
      row = results[0]![0]!
      if (readTools.length > 0) tools = this.#tools.toolsFrom(results[results.length - 1]!, known)
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

/** Why a create was refused, from the tools and the count its insert saw: missing tools first. */
function refusal (names: readonly string[], found: readonly ToolRecord[], active: number): CreateRefusedError {
  const have = new Set(found.map((t) => t.name))
  const missing = names.filter((name) => !have.has(name))
  return missing.length > 0 ? new CreateRefusedError('unknown_tools', missing, active) : new CreateRefusedError('too_many_active', [], active)
}

/** Whether a statement failed on a primary key or unique index, in either database. */
export function isUniqueViolation (err: unknown): boolean {
  const code = (err as { code?: string }).code
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY'
}
