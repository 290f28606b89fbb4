/**
 * MCP fan-out latency (SPEC §11): one step in which the model asks for N calls (N = 1, 16, 64) of an
 * MCP tool that takes 100 ms, through POST /runs (sync), against a hand-written loop in this process
 * doing the same work with the same MCP client (`@modelcontextprotocol/client`: the SDK's
 * messages.create, then one Promise.all over callTool on one session). Same fake Messages API, same
 * MCP server (demo/mcp-server.ts, in a process of its own), same machine, same run.
 *
 * Run alone with `npx tsx bench/mcp.ts [--quick] [--write]` after `npm run build`, or within
 * `npm run bench -- --only=mcp`. The figure that counts is Switchboard minus the baseline.
 *
 * Besides wall time, the CPU time of a step on each side: the baseline's is this process's while
 * its loop runs; Switchboard's is the service process's (read from /proc) plus this process's for
 * the POST. On a machine that others share, wall times move with their load, while CPU time per
 * step stays close to what the code costs: it is the figure to compare changes with.
 */
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import Anthropic from '@anthropic-ai/sdk'
import type { ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { median, startFakesProcess, startSwitchboard, stopOnExit, type BenchOptions } from './support.js'

const TOOL_MS = 100
const SIZES = [1, 16, 64]
// Targets of issue #22, as for webhooks: within 5 ms of the baseline at N <= 16, 10 ms at 64.
const TARGET_MS = (n: number): number => n <= 16 ? 5 : 10
// Steps per CPU sample.
const CPU_STEPS = 4

export interface McpRow {
  readonly calls: number
  readonly baselineMs: number
  readonly switchboardMs: number
  readonly overheadMs: number
  /** CPU time (ms) of one step, medians: the hand-written loop's, and Switchboard's. */
  readonly baselineCpuMs: number
  readonly switchboardCpuMs: number
  /** The 1-minute load average when the row was measured. */
  readonly load: number
}

// Linux's USER_HZ: /proc/<pid>/stat counts CPU time in these ticks.
const CLOCK_TICKS_PER_S = 100

/** CPU time (ms) a process has used so far, from /proc; NaN where there is none. */
function processCpuMs (pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counted from the state, field 3.
    return (Number(fields[11]) + Number(fields[12])) * 1000 / CLOCK_TICKS_PER_S
  } catch {
    return Number.NaN
  }
}

function ownCpuMs (): number {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1000
}

/** The example MCP server as a process of its own; answers its endpoint's URL. */
async function startMcpServerProcess (): Promise<{ url: string, stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'demo/mcp-server.ts'], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  stopOnExit(child)
  const url = await new Promise<string>((resolve, reject) => {
    let line = ''
    const timer = setTimeout(() => reject(new Error('the MCP server did not start within 30 s')), 30_000)
    child.stdout!.on('data', (chunk: Buffer) => {
      line += chunk.toString()
      if (line.includes('\n')) {
        clearTimeout(timer)
        resolve((JSON.parse(line.slice(0, line.indexOf('\n'))) as { url: string }).url)
      }
    })
  })
  return {
    url,
    stop: async () => {
      if (child.exitCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    }
  }
}

export async function mcpFanOut (options: BenchOptions): Promise<McpRow[]> {
  const repetitions = options.quick ? 5 : 15
  const warmUp = options.quick ? 2 : 20
  const fakes = await startFakesProcess()
  const server = await startMcpServerProcess()
  const service = await startSwitchboard({ ANTHROPIC_BASE_URL: fakes.modelUrl })
  // The run names the tool `bench__sleep`; the fake model asks for it by that name.
  const prompt = (n: number): string => `bench steps=1 calls=${n} tool=bench__sleep`
  await service.api('PUT', '/mcp-servers/bench', { url: server.url, trust_annotations: true, tools: ['sleep'] })

  const model = new Anthropic({ baseURL: fakes.modelUrl, apiKey: 'bench', maxRetries: 0 })
  const mcp = new Client({ name: 'bench-hand-loop', version: '1.0.0' })
  await mcp.connect(new StreamableHTTPClientTransport(new URL(server.url)))
  const listed = (await mcp.listTools()).tools.find((t) => t.name === 'sleep')!
  const sleepTool = { name: 'bench__sleep', description: listed.description ?? 'sleep', input_schema: listed.inputSchema as Anthropic.Tool['input_schema'] }

  async function handLoop (n: number): Promise<void> {
    const messages: Anthropic.MessageParam[] = [{ role: 'user', content: prompt(n) }]
    for (;;) {
      const message = await model.messages.create({ model: 'bench', max_tokens: 1024, messages, tools: [sleepTool] })
      messages.push({ role: 'assistant', content: message.content })
      const uses = message.content.filter((b): b is ToolUseBlock => b.type === 'tool_use')
      if (uses.length === 0) return
      const results = await Promise.all(uses.map(async (use) => await mcp.callTool({ name: 'sleep', arguments: { ...(use.input as object), ms: TOOL_MS } })))
      messages.push({ role: 'user', content: uses.map((u, i) => ({ type: 'tool_result' as const, tool_use_id: u.id, content: JSON.stringify(results[i]!.content) })) })
    }
  }

  async function viaSwitchboard (n: number): Promise<void> {
    const run = await service.api('POST', '/runs', { input: prompt(n), tools: ['bench__sleep'], max_tokens: 1024 })
    if (run.status !== 'completed') throw new Error(`run ${run.id} ended ${run.status}: ${JSON.stringify(run.error)}`)
  }

  async function time (fn: () => Promise<void>): Promise<number> {
    const start = performance.now()
    await fn()
    return performance.now() - start
  }

  /** The CPU time (ms) of `times` runs of `fn`: this process's, and the service's if `service`. */
  async function cpu (fn: () => Promise<void>, times: number, withService: boolean): Promise<number> {
    const own = ownCpuMs()
    const theirs = withService ? processCpuMs(service.child.pid) : 0
    for (let i = 0; i < times; i++) await fn()
    return (ownCpuMs() - own + (withService ? processCpuMs(service.child.pid) - theirs : 0)) / times
  }

  const rows: McpRow[] = []
  try {
    // Both sides warmed alike, so that the service is measured with its code optimized.
    for (let round = 0; round < warmUp; round++) {
      await Promise.all(Array.from({ length: 20 }, async () => await handLoop(8)))
      await Promise.all(Array.from({ length: 20 }, async () => await viaSwitchboard(8)))
    }
    for (const n of SIZES) {
      const baseline: number[] = []
      const switchboard: number[] = []
      const baselineCpu: number[] = []
      const switchboardCpu: number[] = []
      for (let r = 0; r < repetitions; r++) {
        // Interleaved, so that a noisy moment on the machine hits both sides alike.
        baseline.push(await time(async () => await handLoop(n)))
        switchboard.push(await time(async () => await viaSwitchboard(n)))
        // CPU over a few steps each: /proc counts in 10 ms ticks.
        baselineCpu.push(await cpu(async () => await handLoop(n), CPU_STEPS, false))
        switchboardCpu.push(await cpu(async () => await viaSwitchboard(n), CPU_STEPS, true))
      }
      const row = {
        calls: n,
        baselineMs: median(baseline),
        switchboardMs: median(switchboard),
        overheadMs: median(switchboard) - median(baseline),
        baselineCpuMs: median(baselineCpu),
        switchboardCpuMs: median(switchboardCpu),
        load: loadavg()[0]!
      }
      rows.push(row)
      options.log(`mcp fan-out ${n}: baseline ${row.baselineMs.toFixed(1)} ms (CPU ${row.baselineCpuMs.toFixed(1)} ms), switchboard ${row.switchboardMs.toFixed(1)} ms (CPU ${row.switchboardCpuMs.toFixed(1)} ms), load ${row.load.toFixed(1)}`)
    }
  } finally {
    await mcp.close().catch(() => {})
    await service.stop()
    await server.stop()
    await fakes.stop()
  }
  return rows
}

/** The report's section for {@link mcpFanOut}'s rows. */
export function mcpSection (rows: readonly McpRow[], quick: boolean, date: string): string {
  return [
    `## MCP fan-out latency (${quick ? 'quick' : 'full'} run, ${date})`,
    '',
    'One step of N calls of an MCP tool that takes 100 ms (demo/mcp-server.ts, a process of its own, Streamable HTTP with sessions); the fake model answers at once. Baseline: the Anthropic SDK plus the same MCP client (`@modelcontextprotocol/client`), one session, `Promise.all` over `callTool`. Both sides warmed alike. Medians; overhead = Switchboard − baseline; target (issue #22): within 5 ms at N ≤ 16, 10 ms at 64.',
    '',
    '| calls | baseline (MCP client, Promise.all) | Switchboard | overhead | target | CPU per step: baseline | CPU per step: Switchboard | load |',
    '|---:|---:|---:|---:|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.calls} | ${r.baselineMs.toFixed(1)} ms | ${r.switchboardMs.toFixed(1)} ms | ${r.overheadMs >= 0 ? '+' : ''}${r.overheadMs.toFixed(1)} ms | ≤ ${TARGET_MS(r.calls)} ms: ${r.overheadMs <= TARGET_MS(r.calls) ? 'met' : '**missed**'} | ${r.baselineCpuMs.toFixed(1)} ms | ${r.switchboardCpuMs.toFixed(1)} ms | ${r.load.toFixed(1)} |`)
  ].join('\n')
}

// Run alone: `npx tsx bench/mcp.ts [--quick] [--write]` (after `npm run build`).
if (import.meta.url === `file://${process.argv[1] ?? ''}`) {
  const quick = process.argv.includes('--quick')
  const rows = await mcpFanOut({ quick, log: (line) => { process.stderr.write(`${line}\n`) } })
  const section = mcpSection(rows, quick, new Date().toISOString().slice(0, 10))
  process.stdout.write(`\n${section}\n`)
  if (process.argv.includes('--write')) {
    const path = new URL('./RESULTS.md', import.meta.url)
    const text = readFileSync(path, 'utf8')
    // The section replaces the last one it wrote, and keeps the sections after it.
    const start = text.indexOf('## MCP fan-out latency')
    const next = start === -1 ? -1 : text.indexOf('\n## ', start + 1)
    const before = start === -1 ? text.trimEnd() : text.slice(0, start).trimEnd()
    const after = next === -1 ? '' : `\n${text.slice(next + 1).trimEnd()}\n`
    writeFileSync(path, `${before}\n\n${section}\n${after}`)
  }
  process.exit(0)
}
