/**
 * npm run bench [-- --quick] [-- --write] [-- --only=fan-out,throughput,eager,growth,memory,waits,mcp]
 *
 * Measures Switchboard against a hand-written baseline in the same run, on this machine, and prints
 * one table. Everything talks to 127.0.0.1; every load is bounded. Ratios and differences against
 * the baseline are the figures that count: this machine is shared and noisy. `--write` keeps the
 * table in bench/RESULTS.md.
 */
import { spawnSync } from 'node:child_process'
import { cpus, totalmem, type as osType, release } from 'node:os'
import { readFileSync, writeFileSync } from 'node:fs'
import { fanOut, QUICK_WARM_UP_ROUNDS, WARM_UP_CALLS, WARM_UP_ROUNDS, WARM_UP_RUNS } from './fan-out.js'
import { throughput, throughputSection } from './throughput.js'
import { eager, eagerSection } from './eager.js'
import { growth, growthSection } from './growth.js'
import { memory, memorySection } from './memory.js'
import { waits, waitsSection } from './waits.js'
import { mcpFanOut, mcpSection } from './mcp.js'
import { SERVICE_NODE_ARGS, type Section } from './support.js'

// The baselines (and the client of the service) run in this process: with the node settings the
// service ships with, so that both sides run alike. Started without them, run again with them.
if (SERVICE_NODE_ARGS.some((arg) => !process.execArgv.includes(arg))) {
  const again = spawnSync(process.execPath, [...process.execArgv, ...SERVICE_NODE_ARGS, ...process.argv.slice(1)], { stdio: 'inherit' })
  process.exit(again.status ?? 1)
}

const quick = process.argv.includes('--quick')
const write = process.argv.includes('--write')
const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',') ?? null
const wanted = (scenario: string): boolean => only === null || only.includes(scenario)
// Ctrl-C or a kill: exit, so that the services, fakes and database clusters started are stopped
// (bench/support.ts stops them on exit).
// A second signal (Ctrl-C reaches tsx, which passes it on too) must not cut that short.
let exiting = false
const exit = (code: number): void => {
  if (exiting) return
  exiting = true
  process.exit(code)
}
process.on('SIGINT', () => exit(130))
process.on('SIGTERM', () => exit(143))
const log = (line: string): void => { process.stderr.write(`${line}\n`) }

const versions = (name: string): string => {
  try {
    return JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8')).version
  } catch {
    return '?'
  }
}

const started = new Date()
const rows = wanted('fan-out') ? await fanOut({ quick, log }) : []
const machine = `\`npm run bench${quick ? ' -- --quick' : ''}\` on ${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, ${osType()} ${release()}, Node ${process.version} (${SERVICE_NODE_ARGS.join(' ') || 'default settings'}, on both sides); fastify ${versions('fastify')}, undici ${versions('undici')}, @anthropic-ai/sdk ${versions('@anthropic-ai/sdk')}, SQLite (better-sqlite3 ${versions('better-sqlite3')}).`

const lines: string[] = []
if (rows.length > 0) {
  lines.push(
    `## Fan-out latency (${quick ? 'quick' : 'full'} run, ${started.toISOString().slice(0, 10)})`,
    '',
    machine,
    `One step of N tool calls of 100 ms each; the fake model answers at once. The fakes run in a process of their own, apart from both sides. Both sides are warmed alike first (${quick ? QUICK_WARM_UP_ROUNDS : WARM_UP_ROUNDS} rounds of ${WARM_UP_RUNS} runs of ${WARM_UP_CALLS} calls at once), so that the service is measured with its code optimized, as in production. Medians; overhead = Switchboard − parallel baseline.`,
    '',
    '| calls | baseline (Promise.all) | Switchboard | overhead | sequential loop | sequential ÷ Switchboard |',
    '|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.calls} | ${r.baselineMs.toFixed(1)} ms | ${r.switchboardMs.toFixed(1)} ms | ${r.overheadMs >= 0 ? '+' : ''}${r.overheadMs.toFixed(1)} ms | ${r.sequentialMs.toFixed(0)} ms | ${(r.sequentialMs / r.switchboardMs).toFixed(1)}× |`)
  )
}

// Scenarios 2 to 5, each with its targets from the issue.
const sections: Section[] = []
if (wanted('throughput')) sections.push(throughputSection(await throughput({ quick, log }), quick))
if (wanted('eager')) sections.push(eagerSection(await eager({ quick, log }), quick))
if (wanted('growth')) sections.push(growthSection(await growth({ quick, log }), quick))
if (wanted('memory')) sections.push(memorySection(await memory({ quick, log }), quick))
if (wanted('waits')) sections.push(waitsSection(await waits({ quick, log }), quick))
if (sections.length > 0) {
  const verdicts = sections.flatMap((s) => s.verdicts)
  lines.push(
    ...(lines.length > 0 ? [''] : []),
    `## Targets of scenarios 2 to 5 (${quick ? 'quick run: smaller counts, see each section' : 'full run'}, ${started.toISOString().slice(0, 10)})`,
    '',
    ...(rows.length === 0 ? [machine, ''] : []),
    'This machine is shared and noisy (other work runs on its 2 cores meanwhile): the ratios to the baseline, measured in the same run, are what counts.',
    '',
    '| scenario | target | measured | |',
    '|---|---|---|---|',
    ...verdicts.map((v) => `| ${v.scenario} | ${v.target} | ${v.measured} | ${v.met ? 'met' : '**missed**'} |`),
    ...sections.flatMap((s) => ['', s.markdown])
  )
}
if (wanted('mcp')) lines.push(...(lines.length > 0 ? [''] : []), mcpSection(await mcpFanOut({ quick, log }), quick, started.toISOString().slice(0, 10)))
log(`bench took ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s`)
const table = lines.join('\n')
process.stdout.write(`\n${table}\n`)
if (write) {
  const path = new URL('./RESULTS.md', import.meta.url)
  writeFileSync(path, `# Benchmark results\n\nFigures from \`bench/\`, measured against a baseline in the same run (see bench/run.ts).\n\n${table}\n`)
  log('written to bench/RESULTS.md')
}
