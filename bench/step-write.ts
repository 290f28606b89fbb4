/**
 * What a step's usage lines (SPEC §17) cost the store's step writes: RUNS runs at once, each
 * writing STEPS steps as the driver does (the assistant message of CALLS tool_use blocks and the
 * user message of their results, the run's counters, the step's events), three ways, in the same
 * run, on SQLite and then PostgreSQL (a throwaway cluster, skipped without the server binaries):
 *
 * - `none`: the step writes alone, no usage lines (the floor);
 * - `with`: the step's one line (its model call, its CALLS tool calls as counts) in the step's own
 *   write (RunWrite.usage), as Switchboard writes it;
 * - `apart`: the step write, then the line as a write of its own (UsageStore.record), awaited:
 *   how lines were written before they joined the step's write.
 *
 * Prints step writes per second of each, and `with` and `apart` as ratios to `none` (medians of
 * REPS repetitions, the three ways in turn).
 *
 * Run: npx tsx bench/step-write.ts [--quick]
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createStore, type Lease, type NewEvent, type RunRecord, type RunWrite, type Store, type UsageEntry } from '../src/store/index.js'
import { newRun } from '../test/support/runs.js'
import { silentLog } from '../test/support/log.js'
import { median, pool, startPostgres } from './support.js'

const quick = process.argv.includes('--quick')
const RUNS = quick ? 20 : 50
const STEPS = quick ? 5 : 20
const CALLS = 8
const REPS = quick ? 2 : 5
const WAYS = ['none', 'with', 'apart'] as const
type Way = typeof WAYS[number]

function stepWrite (run: RunRecord, step: number): { write: RunWrite, lines: UsageEntry[] } {
  const ids = Array.from({ length: CALLS }, (_, i) => `toolu_${run.id}_${step}_${i}`)
  const content = ids.map((id, i) => ({ type: 'tool_use' as const, id, name: 'lookup', input: { q: `shipment ${step}-${i}` } }))
  const results = ids.map((id) => ({ type: 'tool_result' as const, tool_use_id: id, content: '{"status":"in transit","eta":"2026-12-09"}' }))
  let seq = run.event_count
  const at = Date.now()
  const events: NewEvent[] = [
    { seq: ++seq, type: 'step.started', at, data: { step } },
    ...ids.map((id) => ({ seq: ++seq, type: 'tool_call.started', at, data: { step, tool_use_id: id, name: 'lookup' } })),
    ...ids.map((id) => ({ seq: ++seq, type: 'tool_call.completed', at, data: { step, tool_use_id: id, name: 'lookup', duration_ms: 3, is_error: false } })),
    { seq: ++seq, type: 'step.completed', at, data: { step, stop_reason: 'tool_use' } }
  ]
  const usage = { input_tokens: 1000 * step, output_tokens: 100 * step, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, cost_usd: 0.0045 * step }
  const lines: UsageEntry[] = [{
    tenant_id: run.tenant_id,
    run_id: run.id,
    key: `model:${step}:abc`,
    at,
    model: 'claude-sonnet-4-5',
    input_tokens: 1000,
    output_tokens: 100,
    cache_write_5m_tokens: 0,
    cache_write_1h_tokens: 0,
    cache_read_tokens: 0,
    cost_nano_usd: 4_500_000,
    tool_calls: CALLS,
    tool_errors: 0,
    tools: { lookup: [CALLS, 0] }
  }]
  return {
    write: {
      messages: [{ role: 'assistant', content }, { role: 'user', content: results }],
      patch: { steps: step, usage, output: content, tool_calls_total: step * CALLS, tool_calls_errors: 0 },
      events
    },
    lines
  }
}

/** Step writes per second of RUNS runs at once, each writing STEPS steps the way `way`. */
async function measure (store: Store, way: Way, rep: number): Promise<number> {
  const runs: Array<{ run: RunRecord, lease: Lease }> = []
  for (let i = 0; i < RUNS; i++) {
    const { run } = await store.createRun(newRun(`bench-${way}-${rep}`))
    runs.push({ run, lease: { owner: 'replica-a', token: run.lease_token } })
  }
  const started = performance.now()
  await pool(runs, RUNS, async (entry) => {
    for (let step = 1; step <= STEPS; step++) {
      const { write, lines } = stepWrite(entry.run, step)
      entry.run = (await store.writeRun(entry.run, entry.lease, way === 'with' ? { ...write, usage: lines } : write)).run
      if (way === 'apart') await store.usage.record(lines)
    }
  })
  return (RUNS * STEPS) / ((performance.now() - started) / 1000)
}

async function bench (name: string, store: Store): Promise<void> {
  // Warm-up: statements prepared, caches filled.
  for (const way of WAYS) await measure(store, way, -1)
  const rates: Record<Way, number[]> = { none: [], with: [], apart: [] }
  for (let rep = 0; rep < REPS; rep++) {
    // The three ways in turn, starting with another each time.
    for (let i = 0; i < WAYS.length; i++) {
      const way = WAYS[(i + rep) % WAYS.length]!
      rates[way].push(await measure(store, way, rep))
    }
  }
  const none = median(rates.none)
  for (const way of WAYS) {
    const rate = median(rates[way])
    console.log(`${name.padEnd(10)} ${way.padEnd(6)} ${rate.toFixed(0).padStart(7)} step writes/s   ${(rate / none).toFixed(3)} of none`)
  }
}

console.log(`${RUNS} runs at once x ${STEPS} steps, ${CALLS} calls a step (1 usage line, its calls as counts); medians of ${REPS}`)
const dir = mkdtempSync(join(tmpdir(), 'switchboard-bench-step-write-'))
try {
  const sqlite = await createStore({ dataDir: dir, log: silentLog })
  try {
    await bench('sqlite', sqlite)
  } finally {
    await sqlite.close()
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
const pg = startPostgres()
if ('skipped' in pg) {
  console.log(`postgres   skipped: ${pg.skipped}`)
} else {
  const pgDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-step-write-'))
  try {
    const store = await createStore({ dataDir: pgDir, databaseUrl: pg.url, log: silentLog })
    try {
      await bench('postgres', store)
    } finally {
      await store.close()
    }
  } finally {
    pg.stop()
    rmSync(pgDir, { recursive: true, force: true })
  }
}
