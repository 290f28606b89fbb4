/**
 * What programmatic tool calling saves (SPEC §16): one task of 32 lookups through Switchboard,
 * against the same fake Messages API and the same webhook, done three ways:
 *
 * - direct, in turns: the model asks for one lookup per turn (as it does when each depends on the
 *   last), 32 turns and a 33rd to answer;
 * - direct, at once: one turn of 32 parallel calls, then the answer;
 * - by code: one turn whose code makes the 32 calls (`caller` naming it), then the answer.
 *
 * Each lookup answers a record of about 1 KB after LOOKUP_MS; each model answer comes after
 * MODEL_MS (a fast model's time to first token). The fake bills input tokens as the API does (a
 * quarter of the JSON's characters to a token, prompt caching on), a result sent to code not
 * counting: it reaches the code, not the model's context. Prints, for each way, the median wall
 * time of REPS runs, the model requests, and the run's input tokens (all kinds, and billed as input
 * at the API's multipliers: a 5-minute cache write 1.25 times, a read 0.1 times).
 *
 * Run: npx tsx bench/code-execution.ts [--quick]
 */
import { startHarness } from '../test/support/harness.js'
import { codeCalls, codeResult, toolResults, turnNumber, type RecordedRequest, type Respond } from '../test/support/fake-messages-api.js'

const LOOKUPS = 32
const MODEL_MS = 300
const LOOKUP_MS = 20
const quick = process.argv.includes('--quick')
const REPS = quick ? 1 : 5

const ids = Array.from({ length: LOOKUPS }, (_, i) => i + 1)
const lookup = (id: number) => ({ name: 'get_expenses', input: { employee: `e${id}` } })
/** A record of about 1 KB: what one lookup brings back. */
const record = (employee: string): string => JSON.stringify({
  employee,
  quarter: '2026-Q3',
  lines: Array.from({ length: 12 }, (_, i) => ({ date: `2026-0${7 + (i % 3)}-${10 + i}`, category: ['travel', 'meals', 'lodging'][i % 3], amount_usd: 40 + ((i * 37) % 300) }))
})

const ways: Record<string, { respond: Respond, run: Record<string, unknown> }> = {
  'direct, in turns': {
    // One lookup a turn; the answer after the last.
    respond: (request: RecordedRequest) => {
      const turn = turnNumber(request)
      return turn <= LOOKUPS
        ? { delayMs: MODEL_MS, content: [{ type: 'tool_use', ...lookup(turn) }] }
        : { delayMs: MODEL_MS, content: [{ type: 'text', text: '3 employees are over budget.' }] }
    },
    run: { max_steps: LOOKUPS + 1 }
  },
  'direct, at once': {
    respond: (request: RecordedRequest) => turnNumber(request) === 1
      ? { delayMs: MODEL_MS, content: ids.map((id) => ({ type: 'tool_use' as const, ...lookup(id) })) }
      : { delayMs: MODEL_MS, content: [{ type: 'text', text: '3 employees are over budget.' }] },
    run: {}
  },
  'by code': {
    respond: (request: RecordedRequest) => turnNumber(request) === 1
      ? { delayMs: MODEL_MS, content: codeCalls(ids.map(lookup), 'over = [e for e in employees if sum(await get_expenses(employee=e)) > limit]') }
      : { delayMs: MODEL_MS, content: [codeResult(request, `over budget: ${toolResults(request).length > 0 ? 'e3, e17, e29' : ''}`), { type: 'text', text: '3 employees are over budget.' }] },
    run: { code_execution: true }
  }
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

const h = await startHarness(undefined, { env: { LOG_LEVEL: 'silent' } })
try {
  h.tools.on('/expenses', async (_req, res, call) => {
    await new Promise((resolve) => setTimeout(resolve, LOOKUP_MS))
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ content: record(String(call.body.input.employee)) }))
  })
  await h.registerTool('get_expenses', '/expenses', {
    description: 'The expense lines of one employee for the quarter, as JSON.',
    input_schema: { type: 'object', properties: { employee: { type: 'string' } }, required: ['employee'] },
    effect: 'read_only',
    callers: ['direct', 'code']
  })
  const rows: Array<Record<string, number | string>> = []
  for (const [way, { respond, run: fields }] of Object.entries(ways)) {
    h.model.respond = respond
    const walls: number[] = []
    let last: Record<string, any> = {}
    let requests = 0
    for (let rep = 0; rep < REPS; rep++) {
      const before = h.model.requests.length
      const started = performance.now()
      const { body: run } = await h.startRun({ input: `Which of employees e1 to e${LOOKUPS} went over budget this quarter?`, tools: ['get_expenses'], ...fields })
      walls.push(performance.now() - started)
      if (run.status !== 'completed' || run.tool_calls.total !== LOOKUPS) throw new Error(`${way}: the run ended ${String(run.status)} after ${String(run.tool_calls?.total)} calls: ${JSON.stringify(run.error)}`)
      requests = h.model.requests.length - before
      last = run
    }
    if (h.model.refusals.length > 0) throw new Error(`${way}: the fake refused a request: ${h.model.refusals[0]!.message}`)
    const { input_tokens: input, cache_creation_input_tokens: written, cache_read_input_tokens: read } = last.usage
    rows.push({
      way,
      wall_ms: Math.round(median(walls)),
      model_requests: requests,
      tool_calls: last.tool_calls.total,
      input_tokens: input + written + read,
      billed_as_input: Math.round(input + 1.25 * written + 0.1 * read)
    })
  }
  console.log(`A task of ${LOOKUPS} lookups (${LOOKUP_MS} ms each, about 1 KB of record), each model answer after ${MODEL_MS} ms; medians of ${REPS}.`)
  console.table(rows)
  const byWay = Object.fromEntries(rows.map((r) => [r.way, r]))
  const turns = byWay['direct, in turns']!
  const code = byWay['by code']!
  const atOnce = byWay['direct, at once']!
  console.log(`by code vs direct in turns: wall ${(Number(code.wall_ms) / Number(turns.wall_ms)).toFixed(3)}×, model requests ${String(code.model_requests)} vs ${String(turns.model_requests)}, input tokens ${(Number(code.input_tokens) / Number(turns.input_tokens)).toFixed(3)}× (billed ${(Number(code.billed_as_input) / Number(turns.billed_as_input)).toFixed(3)}×)`)
  console.log(`by code vs direct at once: input tokens ${(Number(code.input_tokens) / Number(atOnce.input_tokens)).toFixed(3)}× (billed ${(Number(code.billed_as_input) / Number(atOnce.billed_as_input)).toFixed(3)}×)`)
} finally {
  await h.close()
}
