/**
 * npm run bench [-- --quick] [-- --write]
 *
 * Measures Switchboard against a hand-written baseline in the same run, on this machine, and prints
 * one table. Everything talks to 127.0.0.1; every load is bounded. Ratios and differences against
 * the baseline are the figures that count: this machine is shared and noisy. `--write` keeps the
 * table in bench/RESULTS.md.
 */
import { cpus, totalmem, type as osType, release } from 'node:os'
import { readFileSync, writeFileSync } from 'node:fs'
import { fanOut } from './fan-out.js'

const quick = process.argv.includes('--quick')
const write = process.argv.includes('--write')
const log = (line: string): void => { process.stderr.write(`${line}\n`) }

const versions = (name: string): string => {
  try {
    return JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8')).version
  } catch {
    return '?'
  }
}

const started = new Date()
const rows = await fanOut({ quick, log })

const lines = [
  `## Fan-out latency (${quick ? 'quick' : 'full'} run, ${started.toISOString().slice(0, 10)})`,
  '',
  `\`npm run bench${quick ? ' -- --quick' : ''}\` on ${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, ${osType()} ${release()}, Node ${process.version}; fastify ${versions('fastify')}, undici ${versions('undici')}, @anthropic-ai/sdk ${versions('@anthropic-ai/sdk')}, SQLite (better-sqlite3 ${versions('better-sqlite3')}).`,
  'One step of N tool calls of 100 ms each; the fake model answers at once. Medians; overhead = Switchboard − parallel baseline.',
  '',
  '| calls | baseline (Promise.all) | Switchboard | overhead | sequential loop | sequential ÷ Switchboard |',
  '|---:|---:|---:|---:|---:|---:|',
  ...rows.map((r) => `| ${r.calls} | ${r.baselineMs.toFixed(1)} ms | ${r.switchboardMs.toFixed(1)} ms | ${r.overheadMs >= 0 ? '+' : ''}${r.overheadMs.toFixed(1)} ms | ${r.sequentialMs.toFixed(0)} ms | ${(r.sequentialMs / r.switchboardMs).toFixed(1)}× |`)
]
const table = lines.join('\n')
process.stdout.write(`\n${table}\n`)
if (write) {
  const path = new URL('./RESULTS.md', import.meta.url)
  writeFileSync(path, `# Benchmark results\n\nFigures from \`bench/\`, measured against a baseline in the same run (see bench/run.ts).\n\n${table}\n`)
  log('written to bench/RESULTS.md')
}
