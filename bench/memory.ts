/**
 * Memory and scale: N runs at once on one Switchboard process (POST /runs with `background`),
 * each waiting on one call to a tool that takes 5 s. The tool server holds every call until all N
 * have arrived, then answers each 5 s after that (at most 60 s after the call came), so that all
 * N runs are waiting at the same time. Every run must complete, without error, and the service's
 * resident memory (VmRSS) while they wait, less its memory idle after a warm-up, divided by N, must
 * be at most 100 KB per waiting run.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { startFakeMessagesApi } from '../test/support/fake-messages-api.js'
import { startWebhookServer, type RecordedCall } from '../test/support/webhook-server.js'
import { median, pool, rssBytes, scriptedTurn, startSwitchboard, type BenchOptions, type Section } from './support.js'

const HOLD_CAP_MS = 60_000
/** The target: at most 100 KB of resident memory per waiting run. */
export const MAX_BYTES_PER_RUN = 100 * 1024

export interface MemoryResult {
  readonly runs: number
  readonly toolMs: number
  readonly idleRss: number
  /** Median and highest RSS sampled while every run was waiting. */
  readonly waitingRss: number
  readonly peakRss: number
  /** (waitingRss − idleRss) / runs, in bytes. */
  readonly perRun: number
  readonly createSeconds: number
  readonly completed: number
  readonly failed: number
  /** Lines the service logged at level error or worse. */
  readonly errorLogs: number
}

export async function memory (options: BenchOptions): Promise<MemoryResult> {
  const runs = options.quick ? 300 : 2000
  const toolMs = options.quick ? 1500 : 5000
  const warmUpRuns = options.quick ? 50 : 200
  const tools = await startWebhookServer()
  // Calls held until all `expected` have come; then answered `holdMs` later.
  let expected = 0
  let holdMs = 0
  let arrived = 0
  let allArrived: (() => void) | null = null
  const everyone = (): Promise<void> => new Promise((resolve) => { allArrived = resolve })
  let gate = everyone()
  tools.on('/hold', async (_req: IncomingMessage, res: ServerResponse, call: RecordedCall) => {
    if (++arrived >= expected) allArrived?.()
    // Unreferenced timers: a call cut short leaves none that would keep this process alive.
    await Promise.race([gate.then(async () => await sleep(holdMs, undefined, { ref: false })), sleep(HOLD_CAP_MS, undefined, { ref: false })])
    if (!res.destroyed) {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ content: `held ${JSON.stringify(call.body.input)}` }))
    }
  })
  const model = await startFakeMessagesApi(scriptedTurn)
  const service = await startSwitchboard({ ANTHROPIC_BASE_URL: model.url, MAX_RUNNING_RUNS: String(runs + 100), LOG_LEVEL: 'error' })
  try {
    const pid = service.child.pid!
    await service.api('PUT', '/tools/wait', { description: 'Waits', input_schema: { type: 'object' }, url: `${tools.url}/hold`, effect: 'read_only' })
    const input = 'memory steps=1 calls=1 tool=wait'

    /** Starts `count` background runs, at most 64 requests at once; their ids. */
    async function start (count: number): Promise<string[]> {
      return await pool(Array.from({ length: count }), 64, async () => (await service.api('POST', '/runs', { input, tools: ['wait'], max_tokens: 256, background: true })).id as string)
    }
    /** Waits until none of `ids` is active any more; answers how many completed without error. */
    async function settle (ids: string[]): Promise<{ completed: number, failed: number }> {
      const deadline = Date.now() + HOLD_CAP_MS + 60_000
      for (;;) {
        const active = await service.api('GET', '/runs?status=running&limit=1')
        const queued = await service.api('GET', '/runs?status=queued&limit=1')
        if (active.data.length === 0 && queued.data.length === 0) break
        if (Date.now() > deadline) throw new Error('runs still active after the deadline')
        await sleep(250)
      }
      const outcomes = await pool(ids, 32, async (id) => await service.api('GET', `/runs/${id}`))
      const completed = outcomes.filter((r) => r.status === 'completed' && r.tool_calls.errors === 0 && r.tool_calls.total === 1).length
      return { completed, failed: ids.length - completed }
    }

    // Warm-up: a round of the same runs, fewer and shorter, so that the idle figure is a process
    // that has already done this work once (JIT, pools, caches), not a cold one.
    expected = warmUpRuns
    holdMs = 200
    arrived = 0
    gate = everyone()
    const warm = await settle(await start(expected))
    if (warm.failed > 0) throw new Error(`${warm.failed} warm-up runs did not complete`)
    await sleep(options.quick ? 500 : 2000)
    const idleSamples: number[] = []
    for (let i = 0; i < 5; i++) {
      idleSamples.push(rssBytes(pid))
      await sleep(200)
    }
    const idleRss = median(idleSamples)

    expected = runs
    holdMs = toolMs
    arrived = 0
    gate = everyone()
    const samples: number[] = []
    let waiting = false
    let peakRss = 0
    const sampler = setInterval(() => {
      const rss = rssBytes(pid)
      peakRss = Math.max(peakRss, rss)
      if (waiting) samples.push(rss)
    }, 100)
    const createStart = performance.now()
    let ids: string[]
    let createSeconds: number
    try {
      ids = await start(runs)
      createSeconds = (performance.now() - createStart) / 1000
      await Promise.race([gate, sleep(HOLD_CAP_MS, undefined, { ref: false })])
      if (arrived < runs) throw new Error(`only ${arrived} of ${runs} tool calls arrived`)
      // Every run is waiting on its call now, for toolMs: sample the middle of that wait.
      await sleep(toolMs * 0.2)
      waiting = true
      await sleep(toolMs * 0.6)
      waiting = false
    } finally {
      clearInterval(sampler)
    }
    const { completed, failed } = await settle(ids)
    const errorLogs = service.output().split('\n').filter((line) => /"level":"(error|fatal)"|"level":(50|60)\b/.test(line)).length
    const waitingRss = median(samples)
    const result: MemoryResult = { runs, toolMs, idleRss, waitingRss, peakRss, perRun: (waitingRss - idleRss) / runs, createSeconds, completed, failed, errorLogs }
    options.log(`memory: ${runs} runs waiting: RSS idle ${mb(idleRss)}, waiting ${mb(waitingRss)} (peak ${mb(peakRss)}), ${(result.perRun / 1024).toFixed(1)} KB per run; created in ${createSeconds.toFixed(1)} s; ${completed} completed, ${failed} not, ${errorLogs} error logs`)
    return result
  } finally {
    await service.stop()
    await Promise.all([model.close(), tools.close()])
  }
}

function mb (bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MB`
}

export function memorySection (result: MemoryResult, quick: boolean): Section {
  const r = result
  const verdicts = [
    { scenario: `5. Memory: ${r.runs} runs waiting on one replica, all completed without error`, target: 'no error', measured: `${r.completed} of ${r.runs} completed; ${r.errorLogs} error logs`, met: r.failed === 0 && r.errorLogs === 0 },
    { scenario: '5. Memory: resident memory per waiting run', target: `≤ ${MAX_BYTES_PER_RUN / 1024} KB`, measured: `${(r.perRun / 1024).toFixed(1)} KB`, met: r.perRun <= MAX_BYTES_PER_RUN }
  ]
  const lines = [
    `## 5. Memory and scale (${quick ? 'quick run: ' : ''}${r.runs} runs at once, each waiting on a ${(r.toolMs / 1000).toFixed(1)} s tool; one process, SQLite)`,
    '',
    `Runs started with POST /runs (background), at most 64 requests at once. The tool holds every call until all ${r.runs} have arrived, then answers ${(r.toolMs / 1000).toFixed(1)} s later, so that all runs wait at the same time. RSS is the service's VmRSS: idle after a warm-up round, then sampled every 100 ms through the middle of the wait.`,
    '',
    '| runs waiting | RSS idle | RSS waiting (median) | RSS peak | per waiting run (≤ 100 KB) | runs created in | completed | error logs |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
    `| ${r.runs} | ${mb(r.idleRss)} | ${mb(r.waitingRss)} | ${mb(r.peakRss)} | ${(r.perRun / 1024).toFixed(1)} KB | ${r.createSeconds.toFixed(1)} s (${(r.runs / r.createSeconds).toFixed(0)}/s) | ${r.completed} | ${r.errorLogs} |`
  ]
  return { verdicts, markdown: lines.join('\n') }
}
