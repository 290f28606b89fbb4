import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { createStore, type Store } from '../../src/store/index.js'
import { silentLog } from './log.js'

/** The PostgreSQL server the suites may use; unset, they are skipped (see global-setup.ts). */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL === '' ? undefined : process.env.TEST_DATABASE_URL

/** Where a test's storage lives: exactly one of the two is set, as in the service's config. */
export interface StorageLocation {
  readonly dataDir: string
  readonly databaseUrl?: string | undefined
  /** Deletes the folder or drops the database. */
  readonly destroy: () => Promise<void>
}

export interface Backend {
  readonly name: 'sqlite' | 'postgres'
  readonly skip: boolean
  /** A fresh, empty storage location of this kind. */
  readonly location: () => Promise<StorageLocation>
}

async function sqliteLocation (): Promise<StorageLocation> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-test-'))
  return { dataDir, destroy: async () => rmSync(dataDir, { recursive: true, force: true }) }
}

/** A new database on the test server, so that test files never see each other's rows. */
async function postgresLocation (): Promise<StorageLocation> {
  const name = `sb_test_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  const url = new URL(TEST_DATABASE_URL!)
  url.pathname = `/${name}`
  return {
    dataDir: join(tmpdir(), 'switchboard-unused'),
    databaseUrl: url.toString(),
    destroy: async () => {
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL })
      await client.connect()
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      } finally {
        await client.end()
      }
    }
  }
}

export const backends: Backend[] = [
  { name: 'sqlite', skip: false, location: sqliteLocation },
  { name: 'postgres', skip: TEST_DATABASE_URL === undefined, location: postgresLocation }
]

/** Opens a store on a fresh location; `close` closes it and destroys the location. */
export async function openTestStore (backend: Backend): Promise<{ store: Store, location: StorageLocation, close: () => Promise<void> }> {
  const location = await backend.location()
  const store = await createStore({ dataDir: location.dataDir, databaseUrl: location.databaseUrl, log: silentLog })
  return {
    store,
    location,
    close: async () => {
      await store.close()
      await location.destroy()
    }
  }
}
