import { mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import Database from 'better-sqlite3'
import { ConfigError } from '../errors.js'
import { RowCountError, type Migration, type Row, type SqlDriver, type Statement } from './sql-driver.js'

const SQLITE_FILE_NAME = 'switchboard.db'

/**
 * Opens (creating if need be) the database in `dataDir`. The connection holds an exclusive lock
 * on the file for as long as the process lives (SQLite's EXCLUSIVE locking mode): a second
 * process pointed at the same folder is refused at start-up, and the lock dies with the process,
 * so a crash never leaves a stale lock behind.
 */
export function openSqlite (dataDir: string): SqlDriver {
  const dir = resolve(dataDir)
  try {
    mkdirSync(dir, { recursive: true })
  } catch (err) {
    throw new ConfigError(`DATA_DIR ${dir} cannot be created: ${(err as Error).message}`)
  }
  const db = new Database(join(dir, SQLITE_FILE_NAME), { timeout: 0 })
  try {
    db.pragma('locking_mode = EXCLUSIVE')
    db.pragma('journal_mode = WAL')
    // In WAL mode, NORMAL survives a process crash (kill -9) without losing a commit; only a
    // power loss can roll back the last transactions. FULL would fsync every commit.
    db.pragma('synchronous = NORMAL')
    db.pragma('foreign_keys = ON')
    // Each batch of a group commit runs in a savepoint, whose undo pages go to a statement journal:
    // kept in memory, rather than written to a temporary file once past 64 KiB (a system call per page).
    db.pragma('temp_store = MEMORY')
    db.exec('BEGIN IMMEDIATE; COMMIT')
  } catch (err) {
    db.close()
    if ((err as { code?: string }).code === 'SQLITE_BUSY') {
      throw new ConfigError(`DATA_DIR ${dir} is in use by another Switchboard process: give each process its own DATA_DIR, or use DATABASE_URL (PostgreSQL) to run several replicas.`)
    }
    throw err
  }
  return new SqliteDriver(db)
}

interface QueuedBatch {
  readonly statements: readonly Statement[]
  readonly resolve: (rows: Row[][]) => void
  readonly reject: (err: unknown) => void
}

class SqliteDriver implements SqlDriver {
  readonly dialect = 'sqlite' as const
  readonly #db: Database.Database
  readonly #statements = new Map<string, Database.Statement>()
  /** Batches asked for in this turn of the event loop, committed together (see batch). */
  #queue: QueuedBatch[] = []
  /** One batch's statements; called inside the group's transaction, it runs in a savepoint of its own. */
  readonly #one: (statements: readonly Statement[]) => Row[][]

  constructor (db: Database.Database) {
    this.#db = db
    this.#one = db.transaction((statements: readonly Statement[]) => {
      const results: Row[][] = []
      for (const [index, statement] of statements.entries()) {
        const { rows, changes } = this.#run(statement.sql, statement.params)
        if (statement.expectRows !== undefined && changes !== statement.expectRows) {
          throw new RowCountError(index, changes, results)
        }
        results.push(rows)
      }
      return results
    })
  }

  #prepare (sql: string): Database.Statement {
    let statement = this.#statements.get(sql)
    if (statement === undefined) {
      statement = this.#db.prepare(sql)
      this.#statements.set(sql, statement)
    }
    return statement
  }

  #run (sql: string, params: readonly unknown[]): { rows: Row[], changes: number } {
    const statement = this.#prepare(sql)
    if (statement.reader) {
      const rows = statement.all(...params) as Row[]
      return { rows, changes: rows.length }
    }
    return { rows: [], changes: statement.run(...params).changes }
  }

  async query (sql: string, params: readonly unknown[] = []): Promise<Row[]> {
    return this.#run(sql, params).rows
  }

  /**
   * Group commit: the batches asked for in one turn of the event loop (the writes of every run
   * whose tool calls just answered, say) run in one transaction, each in a savepoint of its own, so
   * that one that fails (a lost lease) is rolled back alone and the others are committed with one
   * COMMIT rather than one each: on a busy replica that is most of what storing costs. Each batch
   * still runs whole in one turn, with nothing else in between; a batch is answered once the
   * transaction that holds it has committed.
   */
  async batch (statements: readonly Statement[]): Promise<Row[][]> {
    return await new Promise((resolve, reject) => {
      this.#queue.push({ statements, resolve, reject })
      if (this.#queue.length === 1) setImmediate(() => this.#commitQueued())
    })
  }

  #commitQueued (): void {
    const queue = this.#queue
    if (queue.length === 0) return
    this.#queue = []
    const outcomes: Array<{ rows: Row[][] } | { error: unknown }> = []
    try {
      this.#db.transaction(() => {
        for (const batch of queue) {
          try {
            outcomes.push({ rows: this.#one(batch.statements) })
          } catch (error) {
            // Some errors (a full disk, an I/O error) end the whole transaction, not only the
            // savepoint: then nothing of the group stands.
            if (!this.#db.inTransaction) throw error
            outcomes.push({ error })
          }
        }
      })()
    } catch (err) {
      // The group's transaction failed as a whole (its COMMIT, a full disk): nothing of it was stored.
      for (const batch of queue) batch.reject(err)
      return
    }
    queue.forEach((batch, i) => {
      const outcome = outcomes[i]!
      if ('rows' in outcome) batch.resolve(outcome.rows)
      else batch.reject(outcome.error)
    })
  }

  async migrate (migrations: readonly Migration[]): Promise<void> {
    this.#db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)')
    const applied = new Set((this.#db.prepare('SELECT version FROM schema_migrations').all() as Array<{ version: number }>).map((r) => r.version))
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue
      this.#db.transaction(() => {
        for (const sql of migration.statements) this.#db.exec(sql)
        this.#db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(migration.version, migration.name, Date.now())
      })()
    }
  }

  async close (): Promise<void> {
    if (!this.#db.open) return
    // Batches asked for before the close are stored, not lost.
    this.#commitQueued()
    this.#db.close()
  }
}
