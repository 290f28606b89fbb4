import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Agent, request } from 'undici'
import { turnNumber, type RecordedRequest, type Turn } from '../test/support/fake-messages-api.js'
import { freePort } from '../test/support/process.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

export interface BenchOptions {
  readonly quick: boolean
  readonly log: (line: string) => void
}

export function median (values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export interface Switchboard {
  readonly url: string
  readonly child: ChildProcess
  api: (method: string, path: string, body?: unknown) => Promise<any>
  /** Everything the process wrote so far, stdout and stderr. */
  output: () => string
  stop: () => Promise<void>
}

/** The node settings Switchboard ships with: those of `npm start` (the image's command has the same). */
export const SERVICE_NODE_ARGS: readonly string[] = (() => {
  const start = String(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts.start)
  const words = start.split(/\s+/)
  return words.slice(words.indexOf('node') + 1, words.indexOf('dist/server.js'))
})()

/**
 * Switchboard as its own process, built and started as it ships (`dist/server.js` with the node
 * settings of `npm start`, so `npm run build` first),
 * in open mode on a free loopback port with SQLite in a temporary folder, or on PostgreSQL when
 * DATABASE_URL is given. `nodeArgs` (by default BENCH_NODE_ARGS, split on spaces) go to node before
 * the script: `BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=prof' npm run bench` profiles the service.
 */
export async function startSwitchboard (env: Record<string, string>, nodeArgs: readonly string[] = process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? []): Promise<Switchboard> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  const port = await freePort()
  const child = spawn(process.execPath, [...SERVICE_NODE_ARGS, ...nodeArgs, 'dist/server.js'], {
    // BENCH_SERVICE_DIR: another checkout's build (of another commit, say) instead of this one's.
    cwd: process.env.BENCH_SERVICE_DIR ?? ROOT,
    // The per-tenant limits are lifted: the loads here are one tenant's, bigger than a tenant's default share.
    env: { PATH: process.env.PATH ?? '', PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn', ANTHROPIC_API_KEY: 'bench', TOOL_EGRESS_ALLOW: '127.0.0.1', TENANT_MAX_ACTIVE_RUNS: '1000000', RATE_LIMIT_PER_MINUTE: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  stopOnExit(child)
  const removeData = (): void => rmSync(dataDir, { recursive: true, force: true })
  removeOnExit(removeData)
  let output = ''
  child.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`switchboard exited:\n${output}`)
    try {
      const res = await fetch(`${url}/readyz`)
      if (res.status === 200) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`switchboard not ready:\n${output}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const agent = new Agent({ connections: 512, keepAliveTimeout: 30_000 })
  return {
    url,
    child,
    api: async (method, path, body) => {
      const res = await request(`${url}${path}`, {
        dispatcher: agent,
        method: method as 'GET',
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: 600_000,
        bodyTimeout: 600_000
      })
      const json = await res.body.json()
      if (res.statusCode >= 400) throw new Error(`${method} ${path}: ${res.statusCode} ${JSON.stringify(json)}`)
      return json
    },
    output: () => output,
    stop: async () => {
      await agent.close()
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      }
      removeData()
      exitCleanups.delete(removeData)
    }
  }
}

// ---- used by the scenarios after fan-out ----

const children = new Set<ChildProcess>()
const exitCleanups = new Set<() => void>()
let exitHooked = false

function hookExit (): void {
  if (exitHooked) return
  exitHooked = true
  process.on('exit', () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    for (const cleanup of exitCleanups) {
      try {
        cleanup()
      } catch {}
    }
  })
}

/** Kills `child` if this process exits (an error, Ctrl-C) while it still runs. */
export function stopOnExit (child: ChildProcess): void {
  hookExit()
  children.add(child)
  child.once('exit', () => children.delete(child))
}

/** Runs `cleanup` (removing a temporary folder, say) if this process exits before it is done otherwise. */
function removeOnExit (cleanup: () => void): void {
  hookExit()
  exitCleanups.add(cleanup)
}

/** CPU time (user + system) a process has used so far, in seconds, from /proc (Linux). */
export function cpuSeconds (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in ticks of 1/100 s.
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
}

const CLOCK_TICKS = (() => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
  const ticks = Number(out.stdout?.trim())
  return Number.isFinite(ticks) && ticks > 0 ? ticks : 100
})()

/** This process's CPU time so far, in seconds. */
export function ownCpuSeconds (): number {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1e6
}

/** Resident memory of a process (VmRSS), in bytes, from /proc (Linux). */
export function rssBytes (pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (match === null) throw new Error(`no VmRSS for process ${pid}`)
  return Number(match[1]) * 1024
}

export interface Postgres {
  readonly url: string
  /** The server's processes: the postmaster and its children (backends, writers). */
  pids: () => number[]
  stop: () => void
}

/**
 * A throwaway PostgreSQL cluster, as the tests get one (scripts/pg-test-cluster.sh: a temporary
 * folder, a free loopback port, fsync off), or the reason there is none (no server binaries).
 */
export function startPostgres (): Postgres | { skipped: string } {
  const stateFile = join(mkdtempSync(join(tmpdir(), 'switchboard-bench-pg-')), 'state')
  const env = { ...process.env, PG_TEST_CLUSTER_STATE: stateFile }
  const script = join(ROOT, 'scripts', 'pg-test-cluster.sh')
  const stop = (): void => {
    spawnSync(script, ['stop'], { env, stdio: 'ignore', timeout: 60_000 })
    rmSync(join(stateFile, '..'), { recursive: true, force: true })
    exitCleanups.delete(stop)
  }
  hookExit()
  exitCleanups.add(stop)
  const started = spawnSync(script, ['start'], { env, encoding: 'utf8', timeout: 120_000 })
  const url = /TEST_DATABASE_URL=(\S+)/.exec(started.stdout ?? '')?.[1]
  if (started.status !== 0 || url === undefined) {
    stop()
    return { skipped: (started.stderr ?? '').trim().split('\n').pop() || `pg-test-cluster.sh exited with ${String(started.status)}` }
  }
  const dataDir = join(readFileSync(stateFile, 'utf8').split('\n')[1]!, 'data')
  const pids = (): number[] => {
    const postmaster = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
    const found = [postmaster]
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
        if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster) found.push(Number(entry))
      } catch {}
    }
    return found
  }
  return { url, pids, stop }
}

/**
 * Answers for a scripted run, read from its first user message, e.g. `bench steps=3 calls=8
 * tool=echo`: for each of the first `steps` model calls, `calls` tool_use blocks of `tool` (input
 * `{ i }`); then a text answer. `gap=<ms>` streams the blocks that far apart.
 */
export function scriptedTurn (request: RecordedRequest): Turn {
  const first = String(request.body.messages[0].content)
  const setting = (name: string, fallback: number): number => Number(new RegExp(`${name}=(\\d+)`).exec(first)?.[1] ?? fallback)
  const tool = /tool=(\w+)/.exec(first)?.[1] ?? 'echo'
  const turn = turnNumber(request)
  if (turn > setting('steps', 1)) return { content: [{ type: 'text', text: `done after ${turn - 1} steps` }] }
  const gap = setting('gap', 0)
  return {
    content: Array.from({ length: setting('calls', 1) }, (_, i) => ({ type: 'tool_use' as const, name: tool, input: { i } })),
    ...(gap > 0 ? { blockDelayMs: gap } : {})
  }
}

export interface FakesProcess {
  /** Base URL of the fake Messages API. */
  readonly modelUrl: string
  /** Base URL of the webhook test server. */
  readonly toolsUrl: string
  readonly child: ChildProcess
  stop: () => Promise<void>
}

/**
 * The fake Messages API (answering {@link scriptedTurn}) and the webhook test server in a process
 * of their own (bench/fakes.ts), so that their CPU time counts for neither side of a comparison.
 */
export async function startFakesProcess (): Promise<FakesProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/fakes.ts'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
  stopOnExit(child)
  let output = ''
  child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const urls = await new Promise<{ model: string, tools: string }>((resolve, reject) => {
    let line = ''
    const timer = setTimeout(() => reject(new Error(`fakes not ready after 30 s:\n${output}`)), 30_000)
    child.stdout!.on('data', (chunk: Buffer) => {
      line += chunk.toString()
      if (line.includes('\n')) {
        clearTimeout(timer)
        resolve(JSON.parse(line.slice(0, line.indexOf('\n'))))
      }
    })
    child.once('exit', () => {
      clearTimeout(timer)
      reject(new Error(`fakes exited:\n${output}`))
    })
  })
  return {
    modelUrl: urls.model,
    toolsUrl: urls.tools,
    child,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      // Closing its stdin is the signal to close its servers and exit.
      child.stdin!.end()
      await exited
    }
  }
}

/** Runs `task` for each item, at most `concurrency` at a time; resolves with the results in order. */
export async function pool<T, R> (items: readonly T[], concurrency: number, task: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++
      results[index] = await task(items[index]!, index)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker))
  return results
}

/** One line of the summary table: a scenario's target, what was measured, and whether it was met. */
export interface Verdict {
  readonly scenario: string
  readonly target: string
  readonly measured: string
  readonly met: boolean
}

/** A scenario's part of the report: its verdicts and its markdown section. */
export interface Section {
  readonly verdicts: Verdict[]
  readonly markdown: string
}
