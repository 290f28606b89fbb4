import type { SqlDriver } from './sql-driver.js'

// (No import of store.ts or sql-statements.ts: store.ts reads this file's types.)

/**
 * A tool call its webhook answered `202 Accepted` (SPEC §13): it waits for its result, posted to
 * its result_url. `pending` until the result comes (`answered`) or the call is given another
 * result (`closed`: its async_timeout_ms passed, the run was cancelled or reached its deadline);
 * whichever comes first wins, once.
 */
export interface CallWait {
  readonly run_id: string
  readonly tool_use_id: string
  readonly tenant_id: string
  /** The tool's name: its signing secrets sign the result. */
  readonly name: string
  readonly step: number
  readonly state: 'pending' | 'answered' | 'closed'
  readonly accepted_at: number
  /** When the call gives up waiting (async_timeout_ms, never past the run's deadline). */
  readonly deadline_at: number
  /** The result's content as JSON text, once answered. */
  readonly content: string | null
  readonly is_error: boolean
  readonly answered_at: number | null
}

/** What storage keeps of calls that answer later (see CallWait), shared by every replica. */
export interface CallWaitStore {
  /** Records a call answered 202; a call already recorded (a step taken over) is kept as it is. */
  add (wait: Omit<CallWait, 'state' | 'content' | 'is_error' | 'answered_at'>): Promise<void>
  get (runId: string, toolUseId: string): Promise<CallWait | null>
  /** Whether a run of that id exists, of any tenant (a result for none is refused at once). */
  runExists (runId: string): Promise<boolean>
  /** The waits of a run's step. */
  ofStep (runId: string, step: number): Promise<CallWait[]>
  /**
   * Stores a call's result if it still waits and its deadline has not passed by `now`; false
   * otherwise (answered already, closed, or too late).
   */
  answer (runId: string, toolUseId: string, content: string, isError: boolean, now: number): Promise<boolean>
  /** Closes the calls of `ids` that still wait: they get another result. Answers their ids. */
  close (runId: string, ids: readonly string[]): Promise<string[]>
}

const COLUMNS = ['run_id', 'tool_use_id', 'tenant_id', 'name', 'step', 'state', 'accepted_at', 'deadline_at'] as const

/** {@link CallWaitStore} over SQLite or PostgreSQL: the table `tool_call_waits`. */
export class SqlCallWaitStore implements CallWaitStore {
  readonly #db: SqlDriver

  constructor (driver: SqlDriver) {
    this.#db = driver
  }

  async add (wait: Omit<CallWait, 'state' | 'content' | 'is_error' | 'answered_at'>): Promise<void> {
    const row = { ...wait, state: 'pending' }
    await this.#db.query(
      `INSERT INTO tool_call_waits (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map(() => '?').join(', ')}) ON CONFLICT (run_id, tool_use_id) DO NOTHING`,
      COLUMNS.map((c) => row[c])
    )
  }

  async get (runId: string, toolUseId: string): Promise<CallWait | null> {
    const [row] = await this.#db.query('SELECT * FROM tool_call_waits WHERE run_id = ? AND tool_use_id = ?', [runId, toolUseId])
    return row === undefined ? null : toCallWait(row)
  }

  async runExists (runId: string): Promise<boolean> {
    return (await this.#db.query('SELECT 1 AS found FROM runs WHERE id = ?', [runId])).length > 0
  }

  async ofStep (runId: string, step: number): Promise<CallWait[]> {
    const rows = await this.#db.query('SELECT * FROM tool_call_waits WHERE run_id = ? AND step = ? ORDER BY accepted_at, tool_use_id', [runId, step])
    return rows.map(toCallWait)
  }

  async answer (runId: string, toolUseId: string, content: string, isError: boolean, now: number): Promise<boolean> {
    const rows = await this.#db.query(
      "UPDATE tool_call_waits SET state = 'answered', content = ?, is_error = ?, answered_at = ? WHERE run_id = ? AND tool_use_id = ? AND state = 'pending' AND deadline_at > ? RETURNING tool_use_id",
      [content, isError ? 1 : 0, now, runId, toolUseId, now]
    )
    return rows.length > 0
  }

  async close (runId: string, ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return []
    const rows = await this.#db.query(
      `UPDATE tool_call_waits SET state = 'closed' WHERE run_id = ? AND state = 'pending' AND tool_use_id IN (${ids.map(() => '?').join(', ')}) RETURNING tool_use_id`,
      [runId, ...ids]
    )
    return rows.map((r) => r.tool_use_id as string)
  }
}

function toCallWait (row: Record<string, unknown>): CallWait {
  return {
    run_id: row.run_id as string,
    tool_use_id: row.tool_use_id as string,
    tenant_id: row.tenant_id as string,
    name: row.name as string,
    step: Number(row.step),
    state: row.state as CallWait['state'],
    accepted_at: Number(row.accepted_at),
    deadline_at: Number(row.deadline_at),
    content: (row.content ?? null) as string | null,
    is_error: Number(row.is_error) === 1,
    answered_at: row.answered_at === null || row.answered_at === undefined ? null : Number(row.answered_at)
  }
}
