/**
 * What prompt caching saves (SPEC §15): one run of 10 steps, each asking for 8 calls, with the
 * cache breakpoints Switchboard sets (`cache: "auto"`) and without (`cache: "off"`), against the
 * fake Messages API, which bills cached input tokens as the API does (a quarter of the JSON's
 * characters to a token; prefixes under 1,024 tokens are not cached). Prints the run's input
 * tokens of each kind, and what they come to at the API's multipliers (a 5-minute cache write is
 * 1.25 times an input token, a read 0.1 times).
 *
 * Run: npx tsx bench/prompt-cache.ts
 */
import { startHarness } from '../test/support/harness.js'
import { turnNumber, type RecordedRequest } from '../test/support/fake-messages-api.js'

const STEPS = 10
const CALLS = 8
const SYSTEM = `You are the operations assistant of a logistics company. ${'Answer with the data the tools return, name the tool each figure came from, and keep answers short. '.repeat(30)}`

const h = await startHarness(undefined, { env: { LOG_LEVEL: 'silent' } })
try {
  const tools = Array.from({ length: CALLS }, (_, i) => `tool_${i}`)
  for (const name of tools) await h.registerTool(name, '/ok', { effect: 'read_only', description: `Looks up figure ${name} of a shipment by its reference; answers JSON.` })
  h.model.respond = (request: RecordedRequest) => ({
    content: tools.map((name) => ({ type: 'tool_use' as const, name, input: { q: `shipment ${turnNumber(request)}-${name}` } }))
  })
  const rows: Array<Record<string, number | string>> = []
  for (const cache of ['off', 'auto']) {
    const { body: run } = await h.startRun({ input: 'Where are shipments 1 to 80?', system: SYSTEM, tools, max_steps: STEPS, cache })
    if (run.steps !== STEPS) throw new Error(`the run made ${String(run.steps)} steps: ${JSON.stringify(run.error)}`)
    const { input_tokens: input, cache_creation_input_tokens: written, cache_read_input_tokens: read } = run.usage
    rows.push({ cache, input_tokens: input, cache_write_tokens: written, cache_read_tokens: read, total: input + written + read, billed_as_input: Math.round(input + 1.25 * written + 0.1 * read) })
  }
  console.table(rows)
  const [off, auto] = rows as [Record<string, number>, Record<string, number>]
  console.log(`with caching, a run of ${STEPS} steps of ${CALLS} calls is billed ${(auto.billed_as_input! / off.billed_as_input!).toFixed(3)} of its input without`)
} finally {
  await h.close()
}
