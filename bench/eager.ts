/**
 * Eager dispatch: the model streams 8 tool_use blocks 100 ms apart (the first after 100 ms, the
 * message ending after the eighth, at about 800 ms); the first call takes 1,000 ms, the other
 * seven 100 ms. A loop that waits for the end of the message before calling anything takes about
 * 800 + 1,000 = 1.8 s for the step; one that calls each tool the moment its block is complete
 * takes about 100 + 1,000 = 1.1 s. Switchboard (read_only tools, which it calls eagerly) must
 * finish the step within 50 ms of 1.1 s.
 *
 * The step's time is measured the same way for every contender, from the fake Messages API's
 * side: from the moment the step's model request begins to arrive to the moment the next one
 * (which carries the step's tool results) does. Baselines in this process, with the SDK streaming: one that
 * starts each call as its block completes (the SDK's `contentBlock` event), and one that waits for
 * the whole message, then one Promise.all. Switchboard with side_effecting tools, which it calls
 * only once the message is complete and stored, is shown for comparison.
 */
import Anthropic from '@anthropic-ai/sdk'
import type { ContentBlock, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'
import { request } from 'undici'
import { startFakeMessagesApi, turnNumber, type RecordedRequest } from '../test/support/fake-messages-api.js'
import { startWebhookServer } from '../test/support/webhook-server.js'
import { median, startSwitchboard, type BenchOptions, type Section } from './support.js'

const BLOCKS = 8
const GAP_MS = 100
const SLOW_MS = 1000
const FAST_MS = 100
/** What eager dispatch achieves at best, and the margin allowed. */
export const EAGER_TARGET_MS = GAP_MS + SLOW_MS
export const EAGER_MARGIN_MS = 50

export interface EagerRow {
  readonly contender: string
  readonly stepMs: number
  readonly samples: number
}

export async function eager (options: BenchOptions): Promise<EagerRow[]> {
  const repetitions = options.quick ? 1 : 7
  const tools = await startWebhookServer()
  // When each model request began to arrive (performance.now), by the run's first message.
  const arrivals = new Map<string, number[]>()
  const model = await startFakeMessagesApi((req: RecordedRequest) => {
    const key = String(req.body.messages[0].content)
    const seen = arrivals.get(key) ?? []
    seen.push(req.receivedAt)
    arrivals.set(key, seen)
    if (turnNumber(req) > 1) return { content: [{ type: 'text', text: 'done' }] }
    const effect = key.includes('side_effecting') ? '_se' : ''
    return {
      content: Array.from({ length: BLOCKS }, (_, i) => ({ type: 'tool_use' as const, name: `${i === 0 ? 'slow' : 'fast'}${effect}`, input: { i } })),
      blockDelayMs: GAP_MS
    }
  })
  const service = await startSwitchboard({ ANTHROPIC_BASE_URL: model.url })
  const rows: EagerRow[] = []
  try {
    const schema = { type: 'object' as const, properties: { i: { type: 'integer' } } }
    const url = (name: string): string => `${tools.url}/delay/${name.startsWith('slow') ? SLOW_MS : FAST_MS}`
    for (const name of ['slow', 'fast']) {
      await service.api('PUT', `/tools/${name}`, { description: name, input_schema: schema, url: url(name), effect: 'read_only' })
      await service.api('PUT', `/tools/${name}_se`, { description: name, input_schema: schema, url: url(name), effect: 'side_effecting' })
    }
    const client = new Anthropic({ baseURL: model.url, apiKey: 'bench', maxRetries: 0 })
    const modelTools = ['slow', 'fast'].map((name) => ({ name, description: name, input_schema: schema }))

    async function callTool (use: ToolUseBlock): Promise<string> {
      const res = await request(url(use.name), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ run_id: 'baseline', tool_use_id: use.id, tool: use.name, input: use.input, attempt: 1 })
      })
      return JSON.stringify(await res.body.json())
    }

    /** A hand-written loop over the SDK's stream: eagerly, or waiting for the end of each message. */
    async function handLoop (input: string, eagerly: boolean): Promise<void> {
      const messages: Anthropic.MessageParam[] = [{ role: 'user', content: input }]
      for (;;) {
        const calls = new Map<string, Promise<string>>()
        const stream = client.messages.stream({ model: 'bench', max_tokens: 1024, messages, tools: modelTools })
        if (eagerly) {
          stream.on('contentBlock', (block: ContentBlock) => {
            if (block.type === 'tool_use') calls.set(block.id, callTool(block))
          })
        }
        const message = await stream.finalMessage()
        messages.push({ role: 'assistant', content: message.content })
        const uses = message.content.filter((b): b is ToolUseBlock => b.type === 'tool_use')
        if (uses.length === 0) return
        const results = await Promise.all(uses.map(async (use) => await (calls.get(use.id) ?? callTool(use))))
        messages.push({ role: 'user', content: uses.map((u, i) => ({ type: 'tool_result' as const, tool_use_id: u.id, content: results[i]! })) })
      }
    }

    async function viaSwitchboard (input: string, effect: string): Promise<void> {
      const suffix = effect === 'side_effecting' ? '_se' : ''
      const run = await service.api('POST', '/runs', { input, tools: [`slow${suffix}`, `fast${suffix}`], max_tokens: 1024 })
      if (run.status !== 'completed' || run.tool_calls.errors !== 0) throw new Error(`run ${run.id} ended ${run.status}: ${JSON.stringify(run.error)}`)
    }

    let serial = 0
    /** The first step's time, from the model's side, of one run of `contender`. */
    async function step (contender: string, go: (input: string) => Promise<void>): Promise<number> {
      const input = `eager ${contender} #${++serial}`
      await go(input)
      const [first, second] = arrivals.get(input) ?? []
      arrivals.delete(input)
      if (first === undefined || second === undefined) throw new Error(`${contender}: the model was not asked twice`)
      return second - first
    }

    const contenders: Array<[string, (input: string) => Promise<void>, number]> = [
      ['Switchboard (read_only tools: eager)', async (input) => await viaSwitchboard(input, 'read_only'), repetitions],
      ['baseline, eager (SDK stream, call on contentBlock)', async (input) => await handLoop(input, true), repetitions],
      ['baseline, waiting for the end of the message', async (input) => await handLoop(input, false), options.quick ? 1 : 3],
      ['Switchboard (side_effecting tools: after the message)', async (input) => await viaSwitchboard(input, 'side_effecting'), options.quick ? 0 : 3]
    ]
    // Warm up the paths that are measured most.
    await step('warm-up', contenders[0]![1])
    if (!options.quick) await step('warm-up', contenders[1]![1])
    const samples = new Map<string, number[]>(contenders.map(([name]) => [name, []]))
    for (let r = 0; r < repetitions; r++) {
      // Interleaved, so that a noisy moment on the machine hits every contender alike.
      for (const [name, go, times] of contenders) {
        if (r >= times) continue
        samples.get(name)!.push(await step(name, go))
      }
    }
    for (const [name] of contenders) {
      const values = samples.get(name)!
      if (values.length === 0) continue
      rows.push({ contender: name, stepMs: median(values), samples: values.length })
      options.log(`eager: ${name}: ${median(values).toFixed(0)} ms (${values.map((v) => v.toFixed(0)).join(', ')})`)
    }
  } finally {
    await service.stop()
    await Promise.all([model.close(), tools.close()])
  }
  return rows
}

export function eagerSection (rows: EagerRow[], quick: boolean): Section {
  const switchboard = rows[0]
  const verdicts = switchboard === undefined
    ? []
    : [{
        scenario: '3. Eager dispatch: the step',
        target: `within ${EAGER_MARGIN_MS} ms of ${(EAGER_TARGET_MS / 1000).toFixed(1)} s`,
        measured: `${switchboard.stepMs.toFixed(0)} ms (${signed(switchboard.stepMs - EAGER_TARGET_MS)} ms)`,
        met: Math.abs(switchboard.stepMs - EAGER_TARGET_MS) <= EAGER_MARGIN_MS
      }]
  const lines = [
    `## 3. Eager dispatch (${quick ? 'quick run, ' : ''}medians)`,
    '',
    `The fake model streams ${BLOCKS} tool_use blocks ${GAP_MS} ms apart; the first call takes ${SLOW_MS} ms, the others ${FAST_MS} ms. A step is timed from the model's side: from the moment its model request begins to arrive to the moment the next one (with the tool results) does. Calling each tool as its block completes gives ${(EAGER_TARGET_MS / 1000).toFixed(1)} s; waiting for the end of the message about ${((GAP_MS * BLOCKS + SLOW_MS) / 1000).toFixed(1)} s.`,
    '',
    '| contender | step | vs 1.1 s | runs |',
    '|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.contender} | ${r.stepMs.toFixed(0)} ms | ${signed(r.stepMs - EAGER_TARGET_MS)} ms | ${r.samples} |`)
  ]
  return { verdicts, markdown: lines.join('\n') }
}

function signed (value: number): string {
  return `${value >= 0 ? '+' : ''}${value.toFixed(0)}`
}
