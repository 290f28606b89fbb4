/**
 * npm run demo: Switchboard doing real work on this machine, offline.
 *
 * Starts the example tool server (weather, local time, currency, and a forecast that answers
 * later), Switchboard itself (embedded
 * SQLite in ./data/demo), and, unless ANTHROPIC_API_KEY is set, a local fake of the Messages API
 * that plays Claude; registers the tools through the API, runs one question, and prints the answer
 * with each tool call's timing; then asks for a forecast, whose tool answers 202 and posts its
 * result a few seconds later, while the run waits. Then it keeps serving until Ctrl-C, so you can try the API.
 *
 *   npm run demo                         the default question
 *   npm run demo -- "Weather in London and Sydney?"
 *   npm run demo -- --once               exit after the answer
 *   ANTHROPIC_API_KEY=sk-ant-… npm run demo     the same against Claude
 */
import pino from 'pino'
import { buildApp } from '../app.js'
import { loadConfig } from '../src/config.js'
import { loggerOptions } from '../src/logger.js'
import { startFakeMessagesApi, type FakeMessagesApi } from '../test/support/fake-messages-api.js'
import { Switchboard } from '../clients/typescript/src/index.js'
import { registerTools } from '../clients/typescript/src/tools/index.js'
import { demoAgent } from './demo-agent.js'
import { DEMO_TOOLS, DemoToolServer } from './tool-server.js'

const args = process.argv.slice(2)
const once = args.includes('--once')
const question = args.filter((a) => !a.startsWith('--')).join(' ') ||
  'What is the weather and the local time in Paris, Tokyo and New York right now?'

const bold = (s: string) => process.stdout.isTTY ? `\u001b[1m${s}\u001b[22m` : s
const dim = (s: string) => process.stdout.isTTY ? `\u001b[2m${s}\u001b[22m` : s

const tools = await new DemoToolServer().start()
let fakeModel: FakeMessagesApi | undefined
const live = process.env.ANTHROPIC_API_KEY !== undefined && process.env.ANTHROPIC_API_KEY !== ''
if (!live) fakeModel = await startFakeMessagesApi(demoAgent)

const config = loadConfig({
  ...process.env,
  DATA_DIR: process.env.DATA_DIR ?? './data/demo',
  API_KEYS: '',
  HOST: '127.0.0.1',
  PORT: process.env.PORT ?? '3000',
  LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
  TOOL_EGRESS_ALLOW: '127.0.0.1',
  ...(live ? {} : { ANTHROPIC_BASE_URL: fakeModel!.url, ANTHROPIC_API_KEY: 'demo-offline' })
})
const app = await buildApp({ config, logger: pino(loggerOptions(config.LOG_LEVEL)) })
let base: string
try {
  base = await app.listen({ port: config.PORT, host: '127.0.0.1' })
} catch {
  base = await app.listen({ port: 0, host: '127.0.0.1' })
}

// The TypeScript client (clients/typescript); open mode, so no API key.
const client = new Switchboard({ baseURL: base, apiKey: null })

async function shutdown (code: number): Promise<never> {
  await app.close()
  await tools.close()
  await fakeModel?.close()
  process.exit(code)
}

try {
  console.log(bold('Switchboard demo') + dim(` — ${base} (docs at ${base}/docs), model: ${live ? 'Claude (ANTHROPIC_API_KEY)' : 'offline fake of the Messages API'}`))
  // Each tool's definition goes to PUT /tools/{name}; the signing secrets come back into the tool
  // server's ToolSecrets, which verifies every call with them.
  await registerTools(client, { url: (name) => `${tools.url}/tools/${name}`, tools: DEMO_TOOLS, secrets: tools.secrets })
  console.log(dim(`registered ${Object.keys(DEMO_TOOLS).join(', ')} → ${tools.url}`))
  console.log(`\n${bold('Q:')} ${question}\n`)

  const run = await client.runs.create({
    input: question,
    tools: Object.keys(DEMO_TOOLS),
    system: 'Answer briefly. Use the tools, all at once when you can.',
    max_tokens: 1024,
    metadata: { source: 'demo' }
  })
  const events: Array<{ type: string, at: string, data: Record<string, any> }> = []
  for await (const event of client.runs.events(run.id, { limit: 100 })) events.push(event as typeof events[number])
  printTimeline(events)
  console.log(`\n${bold('A:')} ${run.status === 'completed' ? run.output_text : `the run ${run.status}: ${JSON.stringify(run.error)}`}\n`)
  console.log(dim(`run ${run.id}: ${run.steps} model calls, ${run.tool_calls.total} tool calls (${run.tool_calls.errors} errors), ${run.usage.input_tokens} + ${run.usage.output_tokens} tokens`))
  console.log(dim(`see it all: curl -s '${base}/runs/${run.id}?include=messages'   and   curl -s '${base}/runs/${run.id}/events'`))
  console.log(`${bold('timeline:')} ${base}${run.timeline_url}  ${dim('(open it in a browser; the link works for an hour)')}`)
  const later = await forecast()
  if (once) await shutdown(run.status === 'completed' && later ? 0 : 1)
  console.log(dim('\nServing until Ctrl-C. Try another question with:'))
  console.log(dim(`  curl -s ${base}/runs -H 'content-type: application/json' -d '{"input":"Weather in London and Sydney?","tools":["get_weather","get_local_time"]}'`))
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => { shutdown(0).catch(() => process.exit(1)) })
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}`)
  await shutdown(1)
}

/**
 * A run whose tool answers later (SPEC §13): the request answers at once, the run `running` with the
 * call pending; the tool posts its result a few seconds later and the run goes on. True if it completed.
 */
async function forecast (): Promise<boolean> {
  const asked = 'What is the forecast for Paris for the next 3 days?'
  console.log(`\n${bold('Q:')} ${asked}\n`)
  const started = Date.now()
  const run = await client.runs.create({ input: asked, tools: ['get_forecast'], max_tokens: 1024, metadata: { source: 'demo' } })
  const waiting = run.pending_tool_calls ?? []
  console.log(dim(`the request answered after ${Date.now() - started} ms: run ${run.status}, waiting for ${waiting.map((c) => c.name).join(', ') || 'nothing'} (answered 202; its result comes later, to result_url), on no replica`))
  let current = run
  while (current.status === 'running' || current.status === 'queued') {
    await new Promise((resolve) => setTimeout(resolve, 250))
    current = await client.runs.get(run.id)
  }
  console.log(`${bold('A:')} ${current.status === 'completed' ? current.output_text : `the run ${current.status}: ${JSON.stringify(current.error)}`}`)
  console.log(dim(`  the result came ${((Date.now() - started) / 1000).toFixed(1)} s after the question; timeline: ${base}${current.timeline_url ?? ''}`))
  return current.status === 'completed'
}

/** Each step's tool calls as bars on the step's time axis: what ran together, and for how long. */
function printTimeline (events: Array<{ type: string, at: string, data: Record<string, any> }>): void {
  const steps = new Map<number, { start: number, modelDone: number, calls: Array<{ label: string, start: number, end: number, error: boolean }> }>()
  const starts = new Map<string, number>()
  for (const event of events) {
    const at = Date.parse(event.at)
    const step = event.data.step as number
    if (event.type === 'step.started') steps.set(step, { start: at, modelDone: at, calls: [] })
    if (event.type === 'step.completed') steps.get(step)!.modelDone = at
    if (event.type === 'tool_call.started' && !starts.has(event.data.tool_use_id)) starts.set(event.data.tool_use_id, at)
    if (event.type === 'tool_call.completed') {
      const start = starts.get(event.data.tool_use_id) ?? at
      steps.get(step)!.calls.push({ label: `${event.data.name} ${JSON.stringify(event.data.input ?? findInput(events, event.data.tool_use_id))}`, start, end: at, error: event.data.is_error })
    }
  }
  const width = 36
  for (const [step, { start, modelDone, calls }] of steps) {
    if (calls.length === 0) {
      console.log(dim(`step ${step}: the model answered in ${modelDone - start} ms`))
      continue
    }
    const end = Math.max(...calls.map((c) => c.end), modelDone)
    const span = Math.max(1, end - start)
    calls.sort((a, b) => a.start - b.start)
    const labelWidth = Math.max(...calls.map((c) => c.label.length))
    console.log(`step ${step}: the model asked for ${calls.length} tools; each bar is one call on the step's ${span} ms`)
    for (const call of calls) {
      const from = Math.round((call.start - start) / span * width)
      const to = Math.max(from + 1, Math.round((call.end - start) / span * width))
      const bar = ' '.repeat(from) + '█'.repeat(to - from) + ' '.repeat(width - to)
      console.log(`  ${call.label.padEnd(labelWidth)} │${bar}│ ${String(call.end - call.start).padStart(4)} ms${call.error ? ' (error)' : ''}`)
    }
    const sum = calls.reduce((total, c) => total + (c.end - c.start), 0)
    const wall = Math.max(...calls.map((c) => c.end)) - Math.min(...calls.map((c) => c.start))
    console.log(dim(`  the calls took ${wall} ms side by side; one after another they would have taken ${sum} ms`))
  }
}

function findInput (events: Array<{ type: string, data: Record<string, any> }>, toolUseId: string): unknown {
  return events.find((e) => e.type === 'tool_call.started' && e.data.tool_use_id === toolUseId)?.data.input
}
