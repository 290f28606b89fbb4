import type { Log } from '../logger.js'
import { POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS } from './migrations.js'
import { openPostgres } from './postgres-driver.js'
import { openSqlite } from './sqlite-driver.js'
import { SqlStore } from './sql-store.js'
import type { Store } from './store.js'

export * from './store.js'
export { isUniqueViolation } from './sql-store.js'

export interface StoreOptions {
  /** PostgreSQL when set; otherwise SQLite in `dataDir`. */
  readonly databaseUrl?: string | undefined
  readonly dataDir: string
  readonly log: Log
  /** The run lease: PostgreSQL ends a transaction left idle for a third of it. */
  readonly leaseMs?: number
}

/** Opens the configured storage and brings its schema up to date. */
export async function createStore (options: StoreOptions): Promise<Store> {
  const postgres = options.databaseUrl !== undefined
  const driver = postgres
    ? openPostgres({
      connectionString: options.databaseUrl!,
      idleInTransactionMs: Math.max(1000, Math.min(5000, Math.floor((options.leaseMs ?? 15_000) / 3))),
      onError: (err) => options.log.warn({ err }, 'idle PostgreSQL connection failed')
    })
    : openSqlite(options.dataDir)
  try {
    await driver.migrate(postgres ? POSTGRES_MIGRATIONS : SQLITE_MIGRATIONS)
  } catch (err) {
    await driver.close().catch(() => {})
    throw err
  }
  return new SqlStore(driver)
}
