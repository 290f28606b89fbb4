/** A statement with `?` placeholders; the PostgreSQL driver numbers them. */
export interface Statement {
  readonly sql: string
  readonly params: readonly unknown[]
  /** If set, the transaction is rolled back with {@link RowCountError} unless this many rows were touched. */
  readonly expectRows?: number
}

/** Thrown inside a batch when a statement touched an unexpected number of rows. */
export class RowCountError extends Error {
  override name = 'RowCountError'
  /** `earlier`: the rows the statements before it answered, within the transaction rolled back. */
  constructor (readonly statementIndex: number, readonly rows: number, readonly earlier: readonly Row[][] = []) {
    super(`statement ${statementIndex} touched ${rows} rows`)
  }
}

export type Row = Record<string, unknown>

export interface QueryOptions {
  /**
   * The statement is one of a small, fixed set run over and over (a run's writes, its tool
   * lookup): PostgreSQL keeps it parsed and planned on each connection rather than parsing and
   * planning it every time. Its text must not vary with its values, and it must name its result
   * columns (`SELECT *` in a kept statement fails once a migration adds a column).
   */
  readonly prepare?: boolean
}

/** One migration: a version number, a name, and the statements that apply it. */
export interface Migration {
  readonly version: number
  readonly name: string
  readonly statements: readonly string[]
}

/**
 * The little that differs between SQLite and PostgreSQL, under the one SQL store. Every statement
 * is written once, with `?` placeholders, in the SQL both understand.
 */
export interface SqlDriver {
  readonly dialect: 'sqlite' | 'postgres'
  /** Runs one statement; answers its rows (empty for statements without RETURNING). */
  query (sql: string, params?: readonly unknown[], options?: QueryOptions): Promise<Row[]>
  /** Runs statements in one transaction; answers the rows of each. */
  batch (statements: readonly Statement[]): Promise<Row[][]>
  /** Applies the migrations not yet applied, in order, once even with several processes starting. */
  migrate (migrations: readonly Migration[]): Promise<void>
  close (): Promise<void>
}
