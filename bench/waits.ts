/**
 * Waiting runs (SPEC §13): N runs at once on one Switchboard process, each waiting on a call its
 * tool answered 202 (a result posted later), against N runs each waiting in `requires_action` for
 * its caller's tool outputs, the wait that was known to hold nothing. Each kind in a service process
 * of its own, started and warmed alike; the claim is that the first costs no more resident memory
 * per run than the second: both are rows in storage, with no driver, timer or connection held.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { startFakeMessagesApi } from '../test/support/fake-messages-api.js'
import { startWebhookServer } from '../test/support/webhook-server.js'
import { median, pool, rssBytes, scriptedTurn, startSwitchboard, type BenchOptions, type Section } from './support.js'

/** How long after the runs are created (or the warm-up ended) memory is sampled. */
const SETTLE_MS = 6000

/** Within this of the requires_action wait (RSS is noisy): "no more memory". */
export const MAX_RATIO = 1.1

type Kind = 'pending' | 'requires_action'

export interface WaitPhase {
  readonly kind: Kind
  readonly idleRss: number
  readonly waitingRss: number
  /** (waitingRss − idleRss) / runs, in bytes. */
  readonly perRun: number
  /** Runs seen waiting when memory was sampled. */
  readonly waiting: number
  readonly createSeconds: number
}

export interface WaitsResult {
  readonly runs: number
  readonly requiresAction: WaitPhase
  readonly pending: WaitPhase
  /** pending.perRun ÷ requiresAction.perRun. */
  readonly ratio: number
}

export async function waits (options: BenchOptions): Promise<WaitsResult> {
  const runs = options.quick ? 500 : 2000
  const requiresAction = await phase('requires_action', runs, options)
  const pending = await phase('pending', runs, options)
  const ratio = pending.perRun / requiresAction.perRun
  options.log(`waits: ${runs} runs waiting: ${kb(pending.perRun)} per run on pending calls, ${kb(requiresAction.perRun)} in requires_action (${ratio.toFixed(2)}×)`)
  return { runs, requiresAction, pending, ratio }
}

async function phase (kind: Kind, runs: number, options: BenchOptions): Promise<WaitPhase> {
  const warmUpRuns = options.quick ? 50 : 200
  const model = await startFakeMessagesApi(scriptedTurn)
  const tools = await startWebhookServer()
  tools.on('/later', (_req: IncomingMessage, res: ServerResponse) => { res.writeHead(202).end() })
  const service = await startSwitchboard({ ANTHROPIC_BASE_URL: model.url, LOG_LEVEL: 'error' })
  try {
    const pid = service.child.pid!
    const schema = { type: 'object' }
    await service.api('PUT', '/tools/later', { description: 'Answers later', input_schema: schema, url: `${tools.url}/later`, async_timeout_ms: 3_600_000 })
    const body = kind === 'pending'
      ? { input: 'waits steps=1 calls=1 tool=later', tools: ['later'], max_tokens: 256, background: true, timeout_ms: 3_600_000 }
      : { input: 'waits steps=1 calls=1 tool=ask', client_tools: [{ name: 'ask', description: 'The caller answers', input_schema: schema }], max_tokens: 256, background: true, timeout_ms: 3_600_000 }
    const start = async (count: number): Promise<string[]> =>
      await pool(Array.from({ length: count }), 64, async () => (await service.api('POST', '/runs', body)).id as string)
    const isWaiting = (run: any): boolean => kind === 'pending' ? run.pending_tool_calls != null : run.status === 'requires_action'
    /** Waits until every run of `ids` waits (two minutes at most); answers how many do. */
    const allWaiting = async (ids: string[]): Promise<number> => {
      const deadline = Date.now() + 120_000
      for (;;) {
        const runsNow = await pool(ids, 32, async (id) => await service.api('GET', `/runs/${id}`))
        const count = runsNow.filter(isWaiting).length
        if (count === ids.length || Date.now() > deadline) return count
        await sleep(250)
      }
    }

    // Warm-up: a round of the same runs, waited on then cancelled, so that the idle figure is a
    // process that has done this work once (JIT, pools, caches).
    const warm = await start(warmUpRuns)
    await allWaiting(warm)
    await pool(warm, 32, async (id) => await service.api('POST', `/runs/${id}/cancel`))
    await sleep(SETTLE_MS)
    const idleRss = median(await samples(pid, 5))

    const created = performance.now()
    const ids = await start(runs)
    const createSeconds = (performance.now() - created) / 1000
    const waiting = await allWaiting(ids)
    // Past the webhook pool's keep-alive (4 s): its idle connections to the tool are closed, as
    // they are a while after any burst of calls; what is left is what the waiting runs hold.
    await sleep(SETTLE_MS)
    const waitingRss = median(await samples(pid, 10))
    const result = { kind, idleRss, waitingRss, perRun: (waitingRss - idleRss) / runs, waiting, createSeconds }
    options.log(`waits (${kind}): ${waiting} of ${runs} runs waiting: RSS idle ${mb(idleRss)}, waiting ${mb(waitingRss)}, ${kb(result.perRun)} per run`)
    return result
  } finally {
    await service.stop()
    await Promise.all([model.close(), tools.close()])
  }
}

async function samples (pid: number, count: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < count; i++) {
    out.push(rssBytes(pid))
    await sleep(200)
  }
  return out
}

function mb (bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MB`
}

function kb (bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KB`
}

export function waitsSection (result: WaitsResult, quick: boolean): Section {
  const { runs, pending, requiresAction, ratio } = result
  const verdicts = [{
    scenario: `Waits: ${runs} runs waiting on pending calls vs in requires_action, memory per run`,
    target: `≤ ${MAX_RATIO}× (no more, within RSS's noise)`,
    measured: `${ratio.toFixed(2)}× (${kb(pending.perRun)} vs ${kb(requiresAction.perRun)}); ${pending.waiting} and ${requiresAction.waiting} of ${runs} waiting`,
    met: ratio <= MAX_RATIO && pending.waiting === runs && requiresAction.waiting === runs
  }]
  const row = (p: WaitPhase, what: string): string =>
    `| ${what} | ${p.waiting} of ${runs} | ${mb(p.idleRss)} | ${mb(p.waitingRss)} | ${kb(p.perRun)} | ${p.createSeconds.toFixed(1)} s |`
  const lines = [
    `## Waiting runs (${quick ? 'quick run: ' : ''}${runs} runs at once; one process each, SQLite)`,
    '',
    'Background runs whose one call waits: for a result its tool posts later (the tool answered 202), or for the caller\'s tool outputs (`requires_action`). Each kind on a service process of its own, warmed with a round of the same runs (cancelled), then RSS (VmRSS) sampled idle and once every run waits. Per run: (waiting − idle) ÷ runs.',
    '',
    '| waits for | runs waiting | RSS idle | RSS waiting (median) | per waiting run | runs created in |',
    '|---|---:|---:|---:|---:|---:|',
    row(requiresAction, 'the caller\'s tool outputs (`requires_action`)'),
    row(pending, 'results posted later (202)'),
    '',
    `Pending calls ÷ requires_action, per run: **${ratio.toFixed(2)}×**.`
  ]
  return { verdicts, markdown: lines.join('\n') }
}
