/**
 * Cost as runs grow: runs of 100 steps (the model asks for 8 calls at each, the tools and the model
 * answering at once; a 101st model call ends the run), through Switchboard (POST /runs, sync), and
 * through the hand-written baseline loop (the SDK's messages.create, then one Promise.all over
 * undici requests), whose transcript grows the same way. The baseline runs in a process of its own
 * (bench/hand-loop.ts) so that, like Switchboard's, its CPU time can be read apart from the fakes'.
 *
 * Two measures per step, both taken by the fake Messages API as each model request arrives:
 * - CPU: the client process's (Switchboard's or the baseline's) main-thread CPU time between two
 *   model requests (/proc/<pid>/schedstat, in ns): all it did for the step, from reading the
 *   model's answer to sending the next, growing, request. Steady on a busy machine.
 * - Wall: from the end of the model's answer to the start of the next request. Noisy here.
 * Part of what grows is inherent: serializing and sending a request that carries the whole
 * transcript (the SDK does it for both). Switchboard's own overhead is its figure minus the
 * baseline's; at step 100 it must be at most 1.2 times that at step 1: nothing is rewritten or
 * re-read in full per step. Single steps are noisy, so steps 1-10 and 91-100 are pooled too.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { startFakeMessagesApi, type RecordedRequest } from '../test/support/fake-messages-api.js'
import { startWebhookServer } from '../test/support/webhook-server.js'
import { median, scriptedTurn, startSwitchboard, stopOnExit, type BenchOptions, type Section } from './support.js'

const CALLS = 8
const STEPS = 100
/** The target: Switchboard's overhead at step 100 at most 1.2 times that at step 1. */
export const MAX_GROWTH = 1.2

/** Medians at the first and last step, and over the first and last ten, of one measure. */
export interface StepFigures {
  readonly first: number
  readonly last: number
  readonly firstTen: number
  readonly lastTen: number
  /** The median of every run at each step, steps 1 to 100. */
  readonly perStep: number[]
}

export interface GrowthResult {
  readonly steps: number
  readonly runs: number
  /** Client CPU per step, in ms. */
  readonly cpu: { readonly baseline: StepFigures, readonly switchboard: StepFigures }
  /** Wall time per step outside the model's answer, in ms. */
  readonly wall: { readonly baseline: StepFigures, readonly switchboard: StepFigures }
  /** Bytes of the last model request's messages. */
  readonly lastRequestBytes: number
}

interface Arrival {
  readonly request: RecordedRequest
  /** The client's main-thread CPU time when the request arrived, in ns. */
  readonly cpuNs: number
}

/** Main-thread CPU time of a process so far, in ns (the first field of /proc/<pid>/schedstat). */
function mainThreadCpuNs (pid: number): number {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0])
}

export async function growth (options: BenchOptions): Promise<GrowthResult> {
  const runs = options.quick ? 2 : 10
  const tools = await startWebhookServer()
  const toolUrl = `${tools.url}/ok`
  // Which process a run's requests come from, by the run's first message.
  const clients = new Map<string, number>()
  const arrivals = new Map<string, Arrival[]>()
  let lastRequestBytes = 0
  const model = await startFakeMessagesApi((req: RecordedRequest) => {
    const key = String(req.body.messages[0].content)
    const pid = clients.get(key)
    if (pid !== undefined) {
      const seen = arrivals.get(key) ?? []
      seen.push({ request: req, cpuNs: mainThreadCpuNs(pid) })
      arrivals.set(key, seen)
      if (seen.length === STEPS + 1) lastRequestBytes = JSON.stringify(req.body.messages).length
    }
    return scriptedTurn(req)
  })
  const service = await startSwitchboard({ ANTHROPIC_BASE_URL: model.url })
  const loop = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./hand-loop.ts', import.meta.url)), model.url, toolUrl], { stdio: ['pipe', 'pipe', 'inherit'] })
  stopOnExit(loop)
  const loopLines = createInterface({ input: loop.stdout! })[Symbol.asyncIterator]()
  const nextLine = async (): Promise<string> => {
    const line = await loopLines.next()
    if (line.done === true) throw new Error('the baseline loop process ended')
    return line.value
  }
  try {
    if (await nextLine() !== 'ready') throw new Error('the baseline loop process did not start')
    await service.api('PUT', '/tools/echo', { description: 'Echoes', input_schema: { type: 'object', properties: { i: { type: 'integer' } } }, url: toolUrl, effect: 'read_only' })

    const baselineRun = async (input: string): Promise<void> => {
      loop.stdin!.write(`${input}\n`)
      if (await nextLine() !== 'done') throw new Error('the baseline loop process failed')
    }
    const switchboardRun = async (input: string): Promise<void> => {
      const run = await service.api('POST', '/runs', { input, tools: ['echo'], max_tokens: 1024, max_steps: STEPS + 1 })
      if (run.status !== 'completed' || run.stop_reason !== 'end_turn' || run.tool_calls.errors !== 0) throw new Error(`run ${run.id} ended ${run.status} (${run.stop_reason}) after ${run.steps} steps: ${JSON.stringify(run.error)}`)
    }

    let serial = 0
    /** CPU (ms) and wall overhead (ms) of each step of one run of `size` steps. */
    async function measure (side: 'baseline' | 'switchboard', size = STEPS): Promise<{ cpu: number[], wall: number[] }> {
      const input = `growth ${side} steps=${size} calls=${CALLS} tool=echo #${++serial}`
      clients.set(input, side === 'baseline' ? loop.pid! : service.child.pid!)
      await (side === 'baseline' ? baselineRun(input) : switchboardRun(input))
      const seen = arrivals.get(input) ?? []
      arrivals.delete(input)
      clients.delete(input)
      // What the fakes keep of every request would otherwise pile up here (megabytes per run).
      model.requests.length = 0
      tools.calls.length = 0
      if (seen.length !== size + 1) throw new Error(`expected ${size + 1} model calls, saw ${seen.length}`)
      const steps = seen.slice(1).map((next, i) => ({ next, previous: seen[i]! }))
      return {
        cpu: steps.map(({ next, previous }) => (next.cpuNs - previous.cpuNs) / 1e6),
        wall: steps.map(({ next, previous }) => next.request.receivedAt - previous.request.answeredAt!)
      }
    }

    // Warm up both sides with a short run.
    await measure('baseline', 10)
    await measure('switchboard', 10)
    const samples = { baseline: [] as Array<{ cpu: number[], wall: number[] }>, switchboard: [] as Array<{ cpu: number[], wall: number[] }> }
    for (let r = 0; r < runs; r++) {
      // Interleaved, so that a noisy moment on the machine hits both sides alike.
      for (const side of ['baseline', 'switchboard'] as const) {
        const s = await measure(side)
        samples[side].push(s)
        options.log(`growth #${r + 1} ${side}: CPU step 1 ${s.cpu[0]!.toFixed(2)} ms, step ${STEPS} ${s.cpu[STEPS - 1]!.toFixed(2)} ms; wall step 1 ${s.wall[0]!.toFixed(1)} ms, step ${STEPS} ${s.wall[STEPS - 1]!.toFixed(1)} ms`)
      }
    }
    const figures = (perRun: number[][]): StepFigures => ({
      first: median(perRun.map((t) => t[0]!)),
      last: median(perRun.map((t) => t[STEPS - 1]!)),
      firstTen: median(perRun.flatMap((t) => t.slice(0, 10))),
      lastTen: median(perRun.flatMap((t) => t.slice(-10))),
      perStep: Array.from({ length: STEPS }, (_, k) => median(perRun.map((t) => t[k]!)))
    })
    const result: GrowthResult = {
      steps: STEPS,
      runs,
      cpu: { baseline: figures(samples.baseline.map((s) => s.cpu)), switchboard: figures(samples.switchboard.map((s) => s.cpu)) },
      wall: { baseline: figures(samples.baseline.map((s) => s.wall)), switchboard: figures(samples.switchboard.map((s) => s.wall)) },
      lastRequestBytes
    }
    const line = fit(result.cpu)
    options.log(`growth: Switchboard's own CPU per step, fitted: ${line.atFirst.toFixed(2)} ms at step 1, ${line.atLast.toFixed(2)} ms at step ${STEPS} (${line.perStepUs.toFixed(1)} µs more per step)`)
    return result
  } finally {
    loop.stdin!.end()
    await service.stop()
    await Promise.all([model.close(), tools.close()])
  }
}

/**
 * Switchboard's own CPU per step (its per-step median minus the baseline's), as a straight line
 * fitted over all the steps: steadier than any one step, or ten.
 */
function fit (cpu: GrowthResult['cpu']): { atFirst: number, atLast: number, perStepUs: number } {
  const own = cpu.switchboard.perStep.map((v, k) => v - cpu.baseline.perStep[k]!)
  const n = own.length
  const meanK = (n + 1) / 2
  const meanY = own.reduce((a, b) => a + b, 0) / n
  let num = 0
  let den = 0
  own.forEach((y, i) => {
    num += (i + 1 - meanK) * (y - meanY)
    den += (i + 1 - meanK) ** 2
  })
  const slope = num / den
  return { atFirst: meanY + slope * (1 - meanK), atLast: meanY + slope * (n - meanK), perStepUs: slope * 1000 }
}

export function growthSection (result: GrowthResult, quick: boolean): Section {
  const { steps, runs } = result
  const own = (measure: GrowthResult['cpu'], pick: (t: StepFigures) => number): number => pick(measure.switchboard) - pick(measure.baseline)
  const pooled = own(result.cpu, (t) => t.lastTen) / own(result.cpu, (t) => t.firstTen)
  const line = fit(result.cpu)
  const fitted = line.atLast / line.atFirst
  const verdicts = [{
    scenario: `4. Cost as runs grow: Switchboard's own CPU per step, step ${steps} ÷ step 1`,
    target: `≤ ${MAX_GROWTH}`,
    // A ratio means something only while Switchboard does more than the baseline at step 1.
    measured: line.atFirst > 0
      ? `${fitted.toFixed(2)} (fitted over every step: ${line.atLast.toFixed(2)} ÷ ${line.atFirst.toFixed(2)} ms; steps ${steps - 9}–${steps} ÷ 1–10: ${pooled.toFixed(2)})`
      : `no overhead at step 1 (${line.atFirst.toFixed(2)} ms, fitted); ${line.atLast.toFixed(2)} ms at step ${steps}`,
    met: line.atFirst > 0 ? fitted <= MAX_GROWTH : line.atLast <= 0
  }]
  const ms = (v: number, digits: number): string => `${v.toFixed(digits)} ms`
  const table = (measure: GrowthResult['cpu'], digits: number): string[] => [
    `| | step 1 | step ${steps} | steps 1–10 | steps ${steps - 9}–${steps} |`,
    '|---|---:|---:|---:|---:|',
    ...(['baseline', 'switchboard'] as const).map((side) => {
      const f = measure[side]
      return `| ${side === 'baseline' ? 'baseline (messages.create + Promise.all, growing messages)' : 'Switchboard'} | ${ms(f.first, digits)} | ${ms(f.last, digits)} | ${ms(f.firstTen, digits)} | ${ms(f.lastTen, digits)} |`
    }),
    `| Switchboard's own (− baseline) | ${ms(own(measure, (t) => t.first), digits)} | ${ms(own(measure, (t) => t.last), digits)} | ${ms(own(measure, (t) => t.firstTen), digits)} | ${ms(own(measure, (t) => t.lastTen), digits)} |`
  ]
  const lines = [
    `## 4. Cost as runs grow (${quick ? 'quick run: ' : ''}${runs} runs of ${steps} steps × ${CALLS} calls on each side; medians)`,
    '',
    `The model and the tools answer at once; the transcript grows to ${(result.lastRequestBytes / 1024).toFixed(0)} KB of messages by the last request, on both sides. Both measures are taken by the fake Messages API as each model request arrives. CPU: the client process's main-thread CPU time between two model requests (all it did for the step: reading the answer, calling the tools, storing, sending the next request). Wall: from the end of the model's answer to the start of the next request; noisy on this machine. Single steps are noisy, so steps 1–10 and ${steps - 9}–${steps} of every run are pooled too.`,
    '',
    'CPU per step:',
    '',
    ...table(result.cpu, 2),
    '',
    'Wall time per step, outside the model\'s answer:',
    '',
    ...table(result.wall, 1),
    '',
    `Switchboard's own CPU per step, as a line fitted over all ${steps} steps (its per-step median minus the baseline's): ${line.atFirst.toFixed(2)} ms at step 1, ${line.atLast.toFixed(2)} ms at step ${steps}, ${line.perStepUs.toFixed(1)} µs more per step: ${fitted.toFixed(2)}× (target ≤ ${MAX_GROWTH}). Pooled steps ${steps - 9}–${steps} ÷ 1–10: ${pooled.toFixed(2)}×. Whole CPU per step, steps ${steps - 9}–${steps} ÷ 1–10: Switchboard ${(result.cpu.switchboard.lastTen / result.cpu.switchboard.firstTen).toFixed(2)}×, baseline ${(result.cpu.baseline.lastTen / result.cpu.baseline.firstTen).toFixed(2)}× (the request it serializes and sends grows on both sides).${line.atLast < 0 ? ' A figure below zero: by then Switchboard spends less CPU per step than the baseline, whose messages.create serializes the whole history again at every step (Switchboard serializes each message once).' : ''}`
  ]
  return { verdicts, markdown: lines.join('\n') }
}
