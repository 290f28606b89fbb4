/**
 * How long `GET /tools/{name}/stats` takes to read a window of 100,000 calls (SPEC §18: well under
 * a second on PostgreSQL, fast enough for a dashboard). The store is filled with 100,000 calls of
 * one tool in the last hour (outcomes and durations spread as a busy, partly failing tool's), plus
 * four times as many of another tool and of another tenant, which the read must skip; then the statistics'
 * read (ToolHealth.stats: the outcomes, the percentiles, the breakers) is timed, medians of
 * repeated reads, against a baseline measured in the same run: a bare COUNT(*) of the same range.
 *
 * PostgreSQL twice: just after the inserts (the index's pages not yet marked all-visible, so each
 * row is also looked up in the table) and after VACUUM ANALYZE (what autovacuum leaves: the read
 * is then the index alone). SQLite once.
 *
 *   scripts/pg-test-cluster.sh run npx tsx bench/tool-stats.ts          # PostgreSQL and SQLite
 *   npx tsx bench/tool-stats.ts                                          # SQLite alone
 *   npx tsx bench/tool-stats.ts --calls=10000                            # smaller
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import type { ToolCallRow, ToolHealthStore, ToolRecord } from '../src/store/index.js'
import { POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS } from '../src/store/migrations.js'
import { openPostgres } from '../src/store/postgres-driver.js'
import { openSqlite } from '../src/store/sqlite-driver.js'
import type { SqlDriver } from '../src/store/sql-driver.js'
import { SqlToolHealthStore } from '../src/store/tool-health.js'
import { ToolHealth } from '../src/tools/health/tool-health.js'
import { Metrics } from '../src/telemetry/metrics.js'
import { silentLog } from '../test/support/log.js'
import { median } from './support.js'

const CALLS = Number(process.argv.find((a) => a.startsWith('--calls='))?.slice(8) ?? 100_000)
const REPEATS = 15
const HOUR = 3_600_000

const OUTCOMES: Array<{ outcome: string, status: number | null, share: number }> = [
  { outcome: 'ok', status: 200, share: 0.86 },
  { outcome: 'error', status: 500, share: 0.03 },
  { outcome: 'error', status: 404, share: 0.02 },
  { outcome: 'error', status: 200, share: 0.02 },
  { outcome: 'timeout', status: null, share: 0.02 },
  { outcome: 'unreachable', status: null, share: 0.01 },
  { outcome: 'cached', status: 200, share: 0.03 },
  { outcome: 'circuit_open', status: null, share: 0.01 }
]

function callRows (tenant: string, name: string, count: number, now: number): ToolCallRow[] {
  const rows: ToolCallRow[] = []
  for (let i = 0; i < count; i++) {
    let r = Math.random()
    const kind = OUTCOMES.find((o) => (r -= o.share) < 0) ?? OUTCOMES[0]!
    const sent = kind.outcome !== 'cached' && kind.outcome !== 'circuit_open'
    // Durations: mostly 20-120 ms, a tail to 5 s.
    const duration = sent ? Math.round(20 + Math.random() * 100 + (Math.random() < 0.05 ? Math.random() * 5000 : 0)) : 0
    rows.push({ tenant_id: tenant, name, at: now - Math.floor(Math.random() * HOUR), outcome: kind.outcome, status: kind.status, duration_ms: duration, attempts: sent ? 1 : 0 })
  }
  return rows
}

const TOOL = { tenant_id: 'acme', name: 'get_weather', circuit_breaker: { failures: 5, window_ms: 60_000, open_ms: 30_000 } } as unknown as ToolRecord

async function measure (label: string, driver: SqlDriver, before?: () => Promise<void>): Promise<{ label: string, stats: number, baseline: number, calls: number }> {
  const health = new ToolHealth({ store: new SqlToolHealthStore(driver), replicaId: 'bench', log: silentLog, metrics: new Metrics() })
  if (before !== undefined) await before()
  const statsMs: number[] = []
  const countMs: number[] = []
  let calls = 0
  for (let i = 0; i < REPEATS; i++) {
    const started = performance.now()
    const answer = await health.stats(TOOL, '1h')
    statsMs.push(performance.now() - started)
    calls = answer.calls
    const counted = performance.now()
    await driver.query('SELECT COUNT(*) AS n FROM tool_calls WHERE tenant_id = ? AND name = ? AND at >= ?', ['acme', 'get_weather', Date.now() - HOUR])
    countMs.push(performance.now() - counted)
  }
  await health.close()
  return { label, stats: median(statsMs), baseline: median(countMs), calls }
}

async function fill (store: ToolHealthStore): Promise<number> {
  const now = Date.now()
  const started = performance.now()
  const batches = [
    callRows('acme', 'get_weather', CALLS, now),
    callRows('acme', 'get_time', CALLS * 2, now),
    callRows('globex', 'get_weather', CALLS * 2, now)
  ]
  for (const rows of batches) {
    for (let i = 0; i < rows.length; i += 5000) await store.recordCalls(rows.slice(i, i + 5000))
  }
  return performance.now() - started
}

async function postgres (url: string): Promise<Array<Awaited<ReturnType<typeof measure>>>> {
  const name = `sb_bench_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  const dbUrl = new URL(url)
  dbUrl.pathname = `/${name}`
  const driver = openPostgres({ connectionString: dbUrl.toString() })
  try {
    await driver.migrate(POSTGRES_MIGRATIONS)
    const fillMs = await fill(new SqlToolHealthStore(driver))
    console.log(`PostgreSQL: ${(CALLS * 5).toLocaleString('en-US')} calls stored in ${(fillMs / 1000).toFixed(1)} s`)
    const fresh = await measure('PostgreSQL, just after the inserts', driver)
    const vacuumed = await measure('PostgreSQL, after VACUUM ANALYZE', driver, async () => { await driver.query('VACUUM ANALYZE tool_calls') })
    const plan = await driver.query('EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) AS sent, percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50 FROM tool_calls WHERE tenant_id = ? AND name = ? AND at >= ? AND attempts > 0', ['acme', 'get_weather', Date.now() - HOUR])
    console.log(plan.map((r) => `  ${String(r['QUERY PLAN'])}`).join('\n'))
    return [fresh, vacuumed]
  } finally {
    await driver.close()
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
  }
}

async function sqlite (): Promise<Awaited<ReturnType<typeof measure>>> {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  const driver = openSqlite(dir)
  try {
    await driver.migrate(SQLITE_MIGRATIONS)
    const fillMs = await fill(new SqlToolHealthStore(driver))
    console.log(`SQLite: ${(CALLS * 5).toLocaleString('en-US')} calls stored in ${(fillMs / 1000).toFixed(1)} s`)
    return await measure('SQLite', driver)
  } finally {
    await driver.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

const results: Array<Awaited<ReturnType<typeof measure>>> = []
const url = process.env.TEST_DATABASE_URL
if (url !== undefined && url !== '') results.push(...await postgres(url))
else console.log('PostgreSQL skipped: TEST_DATABASE_URL is not set (run under scripts/pg-test-cluster.sh run)')
results.push(await sqlite())

console.log(`\nGET /tools/{name}/stats?window=1h over ${CALLS.toLocaleString('en-US')} calls of the tool (and ${(CALLS * 4).toLocaleString('en-US')} of others), medians of ${REPEATS} reads:\n`)
console.log('| storage | calls counted | statistics read | baseline: COUNT(*) of the range | ratio |')
console.log('|---|---:|---:|---:|---:|')
for (const r of results) console.log(`| ${r.label} | ${r.calls.toLocaleString('en-US')} | ${r.stats.toFixed(1)} ms | ${r.baseline.toFixed(1)} ms | ${(r.stats / r.baseline).toFixed(1)}× |`)
