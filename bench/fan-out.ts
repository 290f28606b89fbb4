/**
 * Fan-out latency: one step in which the model asks for N tool calls of 100 ms each and answers at
 * once, through POST /runs (sync), against a hand-written loop in this process doing the same work
 * (the SDK's messages.create, then one Promise.all over undici requests), and that loop done one
 * call after another. Same fake Messages API, same tool server, same machine, same run.
 *
 * The fakes run in a process of their own, as they do for the throughput scenario: a tool is
 * another process, for the service and for the baseline alike. (Served from the baseline's own
 * process, a request the baseline sends costs less to write: nobody on the other side is woken
 * until the baseline itself yields. That favoured the baseline by 1 to 4 ms at 16 and 64 calls.)
 *
 * The figure that counts is Switchboard minus the parallel baseline: what the service adds.
 */
import Anthropic from '@anthropic-ai/sdk'
import type { ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import { request } from 'undici'
import { median, startFakesProcess, startSwitchboard, type BenchOptions } from './support.js'

const TOOL_MS = 100
// The warm-up: rounds of runs at once, each run of one step of calls.
export const WARM_UP_ROUNDS = 20
export const QUICK_WARM_UP_ROUNDS = 2
export const WARM_UP_RUNS = 50
export const WARM_UP_CALLS = 8

export interface FanOutRow {
  readonly calls: number
  readonly baselineMs: number
  readonly switchboardMs: number
  readonly overheadMs: number
  readonly sequentialMs: number
}

export async function fanOut (options: BenchOptions): Promise<FanOutRow[]> {
  const sizes = [1, 4, 16, 64]
  const repetitions = options.quick ? 5 : 15
  // The fake model answers the first request of a run with N tool_use blocks of `sleep` (see
  // scriptedTurn), then with text.
  const fakes = await startFakesProcess()
  const prompt = (n: number): string => `bench steps=1 calls=${n} tool=sleep`
  const service = await startSwitchboard({ ANTHROPIC_BASE_URL: fakes.modelUrl })
  const toolUrl = `${fakes.toolsUrl}/delay/${TOOL_MS}`
  await service.api('PUT', '/tools/sleep', {
    description: 'Sleeps', input_schema: { type: 'object', properties: { i: { type: 'integer' } } }, url: toolUrl, effect: 'read_only'
  })
  const client = new Anthropic({ baseURL: fakes.modelUrl, apiKey: 'bench', maxRetries: 0 })
  const sleepTool = { name: 'sleep', description: 'Sleeps', input_schema: { type: 'object' as const, properties: { i: { type: 'integer' } } } }

  async function callTool (use: ToolUseBlock): Promise<string> {
    const res = await request(toolUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ run_id: 'baseline', tool_use_id: use.id, tool: use.name, input: use.input, attempt: 1 })
    })
    return JSON.stringify(await res.body.json())
  }

  async function handLoop (n: number, parallel: boolean): Promise<void> {
    const messages: Anthropic.MessageParam[] = [{ role: 'user', content: prompt(n) }]
    for (;;) {
      const message = await client.messages.create({ model: 'bench', max_tokens: 1024, messages, tools: [sleepTool] })
      messages.push({ role: 'assistant', content: message.content })
      const uses = message.content.filter((b): b is ToolUseBlock => b.type === 'tool_use')
      if (uses.length === 0) return
      let results: string[]
      if (parallel) {
        results = await Promise.all(uses.map(callTool))
      } else {
        results = []
        for (const use of uses) results.push(await callTool(use))
      }
      messages.push({ role: 'user', content: uses.map((u, i) => ({ type: 'tool_result' as const, tool_use_id: u.id, content: results[i]! })) })
    }
  }

  async function viaSwitchboard (n: number): Promise<void> {
    const run = await service.api('POST', '/runs', { input: prompt(n), tools: ['sleep'], max_tokens: 1024 })
    if (run.status !== 'completed') throw new Error(`run ${run.id} ended ${run.status}: ${JSON.stringify(run.error)}`)
  }

  async function time (fn: () => Promise<void>): Promise<number> {
    const start = performance.now()
    await fn()
    return performance.now() - start
  }

  const rows: FanOutRow[] = []
  try {
    // Warm up both sides alike until the JIT has settled: a service process takes about a
    // thousand runs before V8 stops optimizing its code (bench/RESULTS.md), and measured cold,
    // a step spent milliseconds in the interpreter that it never spends in service. Runs at once,
    // so that this takes seconds rather than minutes.
    for (let round = 0; round < (options.quick ? QUICK_WARM_UP_ROUNDS : WARM_UP_ROUNDS); round++) {
      await Promise.all(Array.from({ length: WARM_UP_RUNS }, async () => await handLoop(WARM_UP_CALLS, true)))
      await Promise.all(Array.from({ length: WARM_UP_RUNS }, async () => await viaSwitchboard(WARM_UP_CALLS)))
    }
    // Then every path once: each size's connections.
    for (const n of sizes) {
      await handLoop(n, true)
      await viaSwitchboard(n)
    }
    for (const n of sizes) {
      const baseline: number[] = []
      const switchboard: number[] = []
      const sequential: number[] = []
      for (let r = 0; r < repetitions; r++) {
        // Interleave, so that a noisy moment on the machine hits both sides alike.
        baseline.push(await time(async () => await handLoop(n, true)))
        switchboard.push(await time(async () => await viaSwitchboard(n)))
      }
      // The sequential loop only shows the gain (N × 100 ms): one repetition is enough in a quick run.
      for (let r = 0; r < (options.quick ? 1 : 3); r++) sequential.push(await time(async () => await handLoop(n, false)))
      const row = { calls: n, baselineMs: median(baseline), switchboardMs: median(switchboard), overheadMs: median(switchboard) - median(baseline), sequentialMs: median(sequential) }
      rows.push(row)
      options.log(`fan-out ${n}: baseline ${row.baselineMs.toFixed(1)} ms, switchboard ${row.switchboardMs.toFixed(1)} ms, sequential ${row.sequentialMs.toFixed(1)} ms`)
    }
  } finally {
    await service.stop()
    await fakes.stop()
  }
  return rows
}
