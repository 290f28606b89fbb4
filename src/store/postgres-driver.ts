import pg from 'pg'
import { RowCountError, type Migration, type QueryOptions, type Row, type SqlDriver, type Statement } from './sql-driver.js'

const INT8_OID = 20
const JSONB_OID = 3802

// Timestamps are stored as milliseconds in BIGINT; they fit a JS number for 285,000 years.
// jsonb comes back as text so that both drivers hand the store the same thing to parse.
const types = {
  getTypeParser (oid: number, format?: 'text' | 'binary') {
    if (oid === INT8_OID) return (value: string) => Number(value)
    if (oid === JSONB_OID) return (value: string) => value
    return pg.types.getTypeParser(oid, format)
  }
} as pg.CustomTypesConfig

// Any number, so two different deployments' schemas in one database never share the lock.
const MIGRATION_LOCK = 7_403_112_001

export interface PostgresOptions {
  readonly connectionString: string
  readonly maxConnections?: number
  /**
   * A session idle inside a transaction longer than this is ended by the server, releasing its
   * locks: a replica frozen mid-write (a paused VM, a long GC) must not block the takeover of its
   * runs. Keep it well under the lease.
   */
  readonly idleInTransactionMs?: number
  /** Called when an idle pooled connection fails (the server restarted, say). */
  readonly onError?: (err: Error) => void
}

/** A pool of connections to PostgreSQL. */
export function openPostgres (options: PostgresOptions): SqlDriver {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.maxConnections ?? 10,
    types,
    // A statement that hangs (a lock held by a dead session, say) must not hang a run for ever.
    statement_timeout: 30_000,
    // A write waits at most this long for a row lock (then it is retried), never indefinitely.
    lock_timeout: 5_000,
    idle_in_transaction_session_timeout: options.idleInTransactionMs ?? 5_000,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    application_name: 'switchboard'
  })
  pool.on('error', (err) => options.onError?.(err))
  return new PostgresDriver(pool)
}

const numbered = new Map<string, string>()

/** `?` placeholders → `$1, $2…` (no statement of the store has a `?` inside a literal). */
function numberPlaceholders (sql: string): string {
  let out = numbered.get(sql)
  if (out === undefined) {
    let n = 0
    out = sql.replace(/\?/g, () => `$${++n}`)
    numbered.set(sql, out)
  }
  return out
}

// Names of the statements kept prepared, by their text: the same name on every connection.
const prepared = new Map<string, string>()

function preparedName (text: string): string {
  let name = prepared.get(text)
  if (name === undefined) {
    name = `switchboard_${prepared.size + 1}`
    prepared.set(text, name)
  }
  return name
}

class PostgresDriver implements SqlDriver {
  readonly dialect = 'postgres' as const
  readonly #pool: pg.Pool

  constructor (pool: pg.Pool) {
    this.#pool = pool
  }

  async query (sql: string, params: readonly unknown[] = [], options?: QueryOptions): Promise<Row[]> {
    const text = numberPlaceholders(sql)
    const result = options?.prepare === true
      ? await this.#pool.query({ name: preparedName(text), text, values: params as unknown[] })
      : await this.#pool.query(text, params as unknown[])
    return result.rows as Row[]
  }

  async batch (statements: readonly Statement[]): Promise<Row[][]> {
    const client = await this.#pool.connect()
    let broken: Error | undefined
    try {
      await client.query('BEGIN')
      const results: Row[][] = []
      for (const [index, statement] of statements.entries()) {
        const result = await client.query(numberPlaceholders(statement.sql), statement.params as unknown[])
        if (statement.expectRows !== undefined && result.rowCount !== statement.expectRows) {
          throw new RowCountError(index, result.rowCount ?? 0, results)
        }
        results.push(result.rows as Row[])
      }
      await client.query('COMMIT')
      return results
    } catch (err) {
      try {
        await client.query('ROLLBACK')
      } catch (rollbackError) {
        broken = rollbackError as Error
      }
      throw err
    } finally {
      // A connection whose rollback failed is in an unknown state: drop it rather than reuse it.
      client.release(broken)
    }
  }

  async migrate (migrations: readonly Migration[]): Promise<void> {
    const client = await this.#pool.connect()
    try {
      // Replicas starting together: the first applies the migrations, the others wait for it.
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK])
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)')
      const { rows } = await client.query('SELECT version FROM schema_migrations')
      const applied = new Set(rows.map((r: { version: number }) => r.version))
      for (const migration of migrations) {
        if (applied.has(migration.version)) continue
        await client.query('BEGIN')
        try {
          for (const sql of migration.statements) await client.query(sql)
          await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [migration.version, migration.name, Date.now()])
          await client.query('COMMIT')
        } catch (err) {
          await client.query('ROLLBACK')
          throw err
        }
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {})
      client.release()
    }
  }

  async close (): Promise<void> {
    await this.#pool.end()
  }
}
