/**
 * Throughput: R runs at once, each of 3 steps in which the model asks for 8 tool calls, the tools
 * answering at once (then a fourth model call answers with text). Switchboard (POST /runs, sync,
 * every step and event stored) against a hand-written loop in this process doing the same work:
 * the SDK's messages.create, then one Promise.all over undici requests, R loops at once.
 *
 * The fake Messages API and the tool server run in a process of their own (bench/fakes.ts), so
 * that CPU time counts only each side's own work: for Switchboard, its process plus this one (the
 * client posting the runs); for the baseline, this process. Figures are medians of interleaved
 * repetitions; the ratios are what counts.
 */
import Anthropic from '@anthropic-ai/sdk'
import type { ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import { Agent, request } from 'undici'
import { HandStore, storedHandLoop } from './stored-loop.js'
import { cpuSeconds, median, ownCpuSeconds, startFakesProcess, startPostgres, startSwitchboard, type BenchOptions, type Section, type Switchboard } from './support.js'

const STEPS = 3
const CALLS = 8
/** Loads of each side before the measured ones (see measure). */
const WARM_UP_LOADS = 10

export interface ThroughputRow {
  readonly storage: string
  readonly runs: number
  readonly toolCalls: number
  /** Tool calls per second. */
  readonly baselineRate: number
  readonly switchboardRate: number
  /** CPU seconds per 1,000 tool calls. */
  readonly baselineCpu: number
  readonly switchboardCpu: number
  /** Of switchboardCpu: the service's process, and this process as its client. */
  readonly serviceCpu: number
  readonly clientCpu: number
  /** CPU seconds per 1,000 tool calls of the PostgreSQL server (not counted in switchboardCpu). */
  readonly databaseCpu: number | null
  /** CPU seconds per 1,000 tool calls of the fakes' process while each side ran (counted for neither). */
  readonly fakesCpuBaseline: number
  readonly fakesCpuSwitchboard: number
  /** The service's CPU seconds per 1,000 tool calls in each warm-up load, in order. */
  readonly warmUpCpu: number[]
  /** PostgreSQL only: the baseline storing every run as it goes (bench/stored-loop.ts). */
  readonly stored: StoredBaseline | null
}

export interface StoredBaseline {
  readonly rate: number
  /** CPU seconds per 1,000 tool calls: of this process, and of the PostgreSQL server. */
  readonly cpu: number
  readonly databaseCpu: number
}

export interface ThroughputResult {
  readonly rows: ThroughputRow[]
  readonly skipped: string[]
  readonly repetitions: number
}

/** The issue's targets: at least 80% of the baseline's tool calls per second, at most 1.5 times its CPU. */
export const MIN_RATE_RATIO = 0.8
export const MAX_CPU_RATIO = 1.5

export async function throughput (options: BenchOptions, storages: ReadonlyArray<'SQLite' | 'PostgreSQL'> = ['SQLite', 'PostgreSQL']): Promise<ThroughputResult> {
  const runs = options.quick ? 25 : 100
  const repetitions = options.quick ? 1 : 5
  const toolCalls = runs * STEPS * CALLS
  const input = `bench steps=${STEPS} calls=${CALLS} tool=echo`
  const fakes = await startFakesProcess()
  const rows: ThroughputRow[] = []
  const skipped: string[] = []
  try {
    const toolUrl = `${fakes.toolsUrl}/ok`
    const client = new Anthropic({ baseURL: fakes.modelUrl, apiKey: 'bench', maxRetries: 0 })
    const tools = new Agent({ keepAliveTimeout: 30_000 })
    const echoTool = { name: 'echo', description: 'Echoes', input_schema: { type: 'object' as const, properties: { i: { type: 'integer' } } } }

    async function callTool (use: ToolUseBlock): Promise<string> {
      const res = await request(toolUrl, {
        dispatcher: tools,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ run_id: 'baseline', tool_use_id: use.id, tool: use.name, input: use.input, attempt: 1 })
      })
      return JSON.stringify(await res.body.json())
    }

    async function createMessage (messages: Anthropic.MessageParam[]): Promise<Anthropic.Message> {
      return await client.messages.create({ model: 'bench', max_tokens: 1024, messages, tools: [echoTool] })
    }

    async function handLoop (): Promise<number> {
      const messages: Anthropic.MessageParam[] = [{ role: 'user', content: input }]
      let calls = 0
      for (;;) {
        const message = await createMessage(messages)
        messages.push({ role: 'assistant', content: message.content })
        const uses = message.content.filter((b): b is ToolUseBlock => b.type === 'tool_use')
        if (uses.length === 0) return calls
        const results = await Promise.all(uses.map(callTool))
        calls += uses.length
        messages.push({ role: 'user', content: uses.map((u, i) => ({ type: 'tool_result' as const, tool_use_id: u.id, content: results[i]! })) })
      }
    }

    async function viaSwitchboard (service: Switchboard): Promise<number> {
      const run = await service.api('POST', '/runs', { input, tools: ['echo'], max_tokens: 1024, max_steps: STEPS + 1 })
      if (run.status !== 'completed' || run.tool_calls.errors !== 0) throw new Error(`run ${run.id} ended ${run.status} with ${run.tool_calls.errors} failed calls: ${JSON.stringify(run.error)}`)
      return run.tool_calls.total
    }

    /** One load: `count` runs at once; wall seconds and CPU seconds of each process involved. */
    async function load (count: number, one: () => Promise<number>, pids: number[]): Promise<{ seconds: number, own: number, others: number[], calls: number }> {
      const cpuBefore = pids.map(cpuSeconds)
      const ownBefore = ownCpuSeconds()
      const start = performance.now()
      const calls = (await Promise.all(Array.from({ length: count }, one))).reduce((a, b) => a + b, 0)
      const seconds = (performance.now() - start) / 1000
      const own = ownCpuSeconds() - ownBefore
      // A database backend that ended meanwhile counts for nothing (its time is lost with it).
      const others = pids.map((pid, i) => {
        try {
          return cpuSeconds(pid) - cpuBefore[i]!
        } catch {
          return 0
        }
      })
      if (calls !== count * STEPS * CALLS) throw new Error(`expected ${count * STEPS * CALLS} tool calls, made ${calls}`)
      return { seconds, own, others, calls }
    }

    async function measure (storage: string, env: Record<string, string>, databasePids: () => number[]): Promise<void> {
      const service = await startSwitchboard({ ANTHROPIC_BASE_URL: fakes.modelUrl, ...env })
      let handStore: HandStore | null = null
      try {
        if (env.DATABASE_URL !== undefined) handStore = await HandStore.open(env.DATABASE_URL)
        const store = handStore
        const storedLoop = store === null ? null : async () => await storedHandLoop(store, input, createMessage, callTool)
        await service.api('PUT', '/tools/echo', { description: 'Echoes', input_schema: echoTool.input_schema, url: toolUrl, effect: 'read_only' })
        // Warm up both sides alike (connections, JIT, the database, the heap's size), until the
        // service's JIT has settled: each row's service starts cold, while the baseline, in this
        // process, lives through every row. V8 goes on optimizing the service's code for about a
        // thousand runs (ten loads): until then its compiler threads take cores from the rest,
        // and the service's CPU per load falls from load to load (bench/RESULTS.md).
        const warmUpCpu: number[] = []
        for (let w = 0; w < (options.quick ? 1 : WARM_UP_LOADS); w++) {
          await load(runs, handLoop, [])
          if (storedLoop !== null) await load(runs, storedLoop, [])
          const warm = await load(runs, async () => await viaSwitchboard(service), [service.child.pid!])
          warmUpCpu.push(warm.others[0]! / warm.calls * 1000)
        }
        const baseline: Array<{ rate: number, cpu: number, fakes: number }> = []
        const switchboard: Array<{ rate: number, cpu: number, service: number, client: number, database: number, fakes: number }> = []
        const stored: Array<{ rate: number, cpu: number, database: number }> = []
        for (let r = 0; r < repetitions; r++) {
          // Interleaved, so that a noisy moment on the machine hits every side alike, in an order
          // that turns each repetition: what a load leaves the database to do (vacuum, the
          // checkpointer) then weighs on each side in turn.
          const sides = [
            async (): Promise<void> => {
              const b = await load(runs, handLoop, [fakes.child.pid!])
              baseline.push({ rate: b.calls / b.seconds, cpu: b.own / b.calls * 1000, fakes: b.others[0]! / b.calls * 1000 })
              options.log(`throughput ${storage} #${r + 1}: baseline ${b.seconds.toFixed(2)} s ${b.own.toFixed(2)} cpu-s (fakes ${b.others[0]!.toFixed(2)})`)
            },
            async (): Promise<void> => {
              const dbPids = databasePids()
              const s = await load(runs, async () => await viaSwitchboard(service), [service.child.pid!, fakes.child.pid!, ...dbPids])
              const database = s.others.slice(2).reduce((a, c) => a + c, 0)
              switchboard.push({ rate: s.calls / s.seconds, cpu: (s.own + s.others[0]!) / s.calls * 1000, service: s.others[0]! / s.calls * 1000, client: s.own / s.calls * 1000, database: database / s.calls * 1000, fakes: s.others[1]! / s.calls * 1000 })
              options.log(`throughput ${storage} #${r + 1}: switchboard ${s.seconds.toFixed(2)} s, service ${s.others[0]!.toFixed(2)} + client ${s.own.toFixed(2)} cpu-s (fakes ${s.others[1]!.toFixed(2)})${dbPids.length > 0 ? `, database ${database.toFixed(2)} cpu-s` : ''}`)
            },
            ...(storedLoop === null
              ? []
              : [async (): Promise<void> => {
                  const h = await load(runs, storedLoop, databasePids())
                  const database = h.others.reduce((a, c) => a + c, 0)
                  stored.push({ rate: h.calls / h.seconds, cpu: h.own / h.calls * 1000, database: database / h.calls * 1000 })
                  options.log(`throughput ${storage} #${r + 1}: baseline storing by hand ${h.seconds.toFixed(2)} s ${h.own.toFixed(2)} cpu-s, database ${database.toFixed(2)} cpu-s`)
                }])
          ]
          for (let i = 0; i < sides.length; i++) await sides[(r + i) % sides.length]!()
        }
        const row: ThroughputRow = {
          storage,
          runs,
          toolCalls,
          baselineRate: median(baseline.map((x) => x.rate)),
          switchboardRate: median(switchboard.map((x) => x.rate)),
          baselineCpu: median(baseline.map((x) => x.cpu)),
          switchboardCpu: median(switchboard.map((x) => x.cpu)),
          serviceCpu: median(switchboard.map((x) => x.service)),
          clientCpu: median(switchboard.map((x) => x.client)),
          databaseCpu: databasePids().length > 0 ? median(switchboard.map((x) => x.database)) : null,
          fakesCpuBaseline: median(baseline.map((x) => x.fakes)),
          fakesCpuSwitchboard: median(switchboard.map((x) => x.fakes)),
          warmUpCpu,
          stored: stored.length === 0 ? null : { rate: median(stored.map((x) => x.rate)), cpu: median(stored.map((x) => x.cpu)), databaseCpu: median(stored.map((x) => x.database)) }
        }
        rows.push(row)
        options.log(`throughput ${storage}: ${row.switchboardRate.toFixed(0)} vs ${row.baselineRate.toFixed(0)} calls/s (${(row.switchboardRate / row.baselineRate * 100).toFixed(0)}%); ${row.switchboardCpu.toFixed(3)} vs ${row.baselineCpu.toFixed(3)} cpu-s per 1,000 calls (${(row.switchboardCpu / row.baselineCpu).toFixed(2)}×)`)
      } finally {
        try {
          await service.stop()
        } finally {
          await handStore?.close()
        }
      }
    }

    try {
      if (storages.includes('SQLite')) await measure('SQLite', {}, () => [])
      if (!storages.includes('PostgreSQL')) {
        // Not asked for.
      } else if (options.quick) {
        skipped.push('PostgreSQL: full run only (starting a cluster takes too long for --quick)')
      } else {
        const pg = startPostgres()
        if ('skipped' in pg) {
          skipped.push(`PostgreSQL: skipped, no cluster could be started (${pg.skipped})`)
          options.log(`throughput PostgreSQL skipped: ${pg.skipped}`)
        } else {
          try {
            await measure('PostgreSQL', { DATABASE_URL: pg.url }, pg.pids)
          } finally {
            pg.stop()
          }
        }
      }
    } finally {
      await tools.close()
    }
  } finally {
    await fakes.stop()
  }
  return { rows, skipped, repetitions }
}

export function throughputSection (result: ThroughputResult, quick: boolean): Section {
  const { rows, skipped, repetitions } = result
  const first = rows[0]
  const verdicts = rows.flatMap((r) => [
    { scenario: `2. Throughput, ${r.storage}: tool calls per second`, target: `≥ ${MIN_RATE_RATIO * 100}% of baseline`, measured: `${pct(r.switchboardRate / r.baselineRate)} (${r.switchboardRate.toFixed(0)} vs ${r.baselineRate.toFixed(0)})`, met: r.switchboardRate / r.baselineRate >= MIN_RATE_RATIO },
    { scenario: `2. Throughput, ${r.storage}: CPU per 1,000 tool calls`, target: `≤ ${MAX_CPU_RATIO}× baseline`, measured: `${(r.switchboardCpu / r.baselineCpu).toFixed(2)}× (${r.switchboardCpu.toFixed(3)} vs ${r.baselineCpu.toFixed(3)} s)`, met: r.switchboardCpu / r.baselineCpu <= MAX_CPU_RATIO }
  ])
  const lines = [
    `## 2. Throughput (${quick ? 'quick run: ' : ''}${first?.runs ?? '?'} runs at once × ${STEPS} steps × ${CALLS} calls = ${first?.toolCalls ?? '?'} tool calls; medians of ${repetitions})`,
    '',
    'Tools answer at once; every step and event is stored. The fake Messages API and the tool server run in a process of their own, so CPU time counts only the work of each side: for Switchboard its process plus the client posting the runs (POST /runs, sync), for the baseline its process. The CPU time of the PostgreSQL server is shown apart and not counted (the test cluster runs with fsync off).',
    '',
    '| storage | baseline calls/s | Switchboard calls/s | ratio (≥ 80%) | baseline CPU s / 1,000 calls | Switchboard CPU s / 1,000 calls (service + client) | ratio (≤ 1.5×) | database server CPU s / 1,000 calls |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.storage} | ${r.baselineRate.toFixed(0)} | ${r.switchboardRate.toFixed(0)} | ${pct(r.switchboardRate / r.baselineRate)} | ${r.baselineCpu.toFixed(3)} | ${r.switchboardCpu.toFixed(3)} (${r.serviceCpu.toFixed(3)} + ${r.clientCpu.toFixed(3)}) | ${(r.switchboardCpu / r.baselineCpu).toFixed(2)}× | ${r.databaseCpu === null ? '—' : r.databaseCpu.toFixed(3)} |`),
    ...skipped.map((why) => `| ${why} |||||||`),
    '',
    `The fakes' own CPU s per 1,000 calls (counted for neither side): ${rows.map((r) => `${r.storage} ${r.fakesCpuBaseline.toFixed(3)} while the baseline ran, ${r.fakesCpuSwitchboard.toFixed(3)} while Switchboard did`).join('; ')}. Switchboard streams every model answer (server-sent events, a write per event), the baseline asks for whole messages.`,
    '',
    ...storedLines(rows),
    `Before the measured loads, each side ran ${first?.warmUpCpu.length ?? '?'} load${first?.warmUpCpu.length === 1 ? '' : 's'} of the same runs (the baseline's process lives through every row; each row's service process starts cold). The service's CPU s per 1,000 calls, load by load through that warm-up, as V8 optimizes its code: ${rows.map((r) => `${r.storage} ${r.warmUpCpu.map((c) => c.toFixed(3)).join(', ')}`).join('; ')}.`
  ]
  return { verdicts, markdown: lines.join('\n') }
}

/**
 * The PostgreSQL row against the baseline storing by hand: how much of the baseline's rate storing
 * in PostgreSQL leaves on this machine at best, and how much of that Switchboard reaches.
 */
function storedLines (rows: readonly ThroughputRow[]): string[] {
  return rows.flatMap((r) => r.stored === null
    ? []
    : [
        `What storing in ${r.storage} costs by itself on this machine, where the database server shares the cores with both sides and the fakes: the same baseline, storing each run as it goes in the cheapest way we know (bench/stored-loop.ts: its creation, then each step, its messages and every event of the SPEC, in one prepared statement; tables with a primary key each and nothing else). It is the floor for storing each step of each run as its own write, as the SPEC asks, on this machine and its test cluster (a design storing less often, or several runs' steps in one commit, could go under it). Medians of the same interleaved loads.`,
        '',
        '| contender | calls/s | of the baseline\'s | own CPU s / 1,000 calls | database server CPU s / 1,000 calls |',
        '|---|---:|---:|---:|---:|',
        `| baseline (in memory) | ${r.baselineRate.toFixed(0)} | 100% | ${r.baselineCpu.toFixed(3)} | — |`,
        `| baseline storing by hand in ${r.storage} | ${r.stored.rate.toFixed(0)} | ${pct(r.stored.rate / r.baselineRate)} | ${r.stored.cpu.toFixed(3)} | ${r.stored.databaseCpu.toFixed(3)} |`,
        `| Switchboard | ${r.switchboardRate.toFixed(0)} | ${pct(r.switchboardRate / r.baselineRate)} | ${r.switchboardCpu.toFixed(3)} | ${r.databaseCpu?.toFixed(3) ?? '—'} |`,
        '',
        `Switchboard reaches ${pct(r.switchboardRate / r.stored.rate)} of the rate of the baseline storing by hand, its database server spending ${(r.databaseCpu! / r.stored.databaseCpu).toFixed(2)}× as much CPU per call.`,
        ''
      ])
}

function pct (ratio: number): string {
  return `${(ratio * 100).toFixed(0)}%`
}
