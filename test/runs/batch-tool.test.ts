import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, turnNumber, type RecordedRequest, type Respond } from '../support/fake-messages-api.js'

const WEATHER_SCHEMA = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false }

/** A scripted model that asks for one batch_tool call with these invocations, then ends with the result's text. */
function batchOnce (invocations: unknown[], id = 'toolu_batch01'): Respond {
  return (request: RecordedRequest) => turnNumber(request) === 1
    ? { content: [{ type: 'tool_use', id, name: 'batch_tool', input: { invocations } }] }
    : { content: [{ type: 'text', text: 'done' }] }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`the batch meta-tool: ${backend.name}`, () => {
    let h: Harness
    /** Calls waiting at /barrier until `expected` have arrived: they can only all answer if they overlap. */
    let waiting: Array<() => void> = []
    let expected = 2
    beforeAll(async () => {
      h = await startHarness(backend)
      h.tools.on('/barrier', async (_req, res, call) => {
        await new Promise<void>((resolve) => {
          waiting.push(resolve)
          if (waiting.length >= expected) for (const go of waiting.splice(0)) go()
        })
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ content: `${call.body.tool as string} says ${JSON.stringify(call.body.input)}` }))
      })
      await h.registerTool('get_weather', '/barrier', { input_schema: WEATHER_SCHEMA, effect: 'read_only', timeout_ms: 10_000, max_attempts: 1 })
      await h.registerTool('get_time', '/barrier', { effect: 'side_effecting', timeout_ms: 10_000, max_attempts: 1 })
    })
    afterAll(async () => h?.close())
    beforeEach(() => {
      h.tools.calls.length = 0
      h.model.refusals.length = 0
      waiting = []
      expected = 2
    })

    it('runs each invocation as a call of its own, at the same time, and answers one text with a section each', async () => {
      h.model.respond = batchOnce([
        { name: 'get_weather', arguments: '{"city": "Paris"}' },
        // An object is taken as well as JSON text.
        { name: 'get_time', arguments: { q: 'UTC' } },
        { name: 'get_stock', arguments: '{}' },
        { name: 'get_weather', arguments: '{"city": ' },
        { name: 'get_weather', arguments: '{"city": 5}' },
        { name: 'batch_tool', arguments: '{"invocations": []}' }
      ])
      const { body: run } = await h.startRun({ input: 'weather and time', tools: ['get_weather', 'get_time'], batch_tool: true })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.model.refusals).toEqual([])

      // The two good calls were in flight together: each waited at the barrier for the other.
      expect(h.tools.calls.map((c) => c.body.tool).sort()).toEqual(['get_time', 'get_weather'])
      const [result] = toolResults(h.model.requests[1]!)
      expect(result!.is_error).toBeUndefined()
      const sections = resultText(result!).split('\n\n')
      expect(sections).toEqual([
        '[1] get_weather: get_weather says {"city":"Paris"}',
        '[2] get_time: get_time says {"q":"UTC"}',
        // The tools in the order the store reads them.
        expect.stringMatching(/^\[3\] get_stock: error: Tool get_stock is not available in this run \(available: (get_time, get_weather|get_weather, get_time)\)\.$/),
        expect.stringMatching(/^\[4\] get_weather: error: Tool get_weather was not called: its arguments are not valid JSON \(.+\): write them as the JSON text of an object/),
        '[5] get_weather: error: Tool get_weather was not called: invalid input: input.city: must be string',
        '[6] batch_tool: error: batch_tool cannot invoke batch_tool: list the tools themselves in one batch.'
      ])

      // Each call's idempotency key is {run_id}:{tool_use_id}:{index}.
      const keys = Object.fromEntries(h.tools.calls.map((c) => [c.body.tool, c.headers['idempotency-key']]))
      expect(keys).toEqual({ get_weather: `${run.id}:toolu_batch01:0`, get_time: `${run.id}:toolu_batch01:1` })

      // Events show each invocation under its batch, and the batch's own result.
      const events = await h.events(run.id)
      const started = events.filter((e) => e.type === 'tool_call.started')
      expect(started.map((e) => [e.data.name, e.data.batch])).toEqual(expect.arrayContaining([
        ['get_weather', { tool_use_id: 'toolu_batch01', index: 0 }],
        ['get_time', { tool_use_id: 'toolu_batch01', index: 1 }]
      ]))
      const completed = events.filter((e) => e.type === 'tool_call.completed')
      expect(completed.filter((e) => e.data.batch !== undefined)).toHaveLength(6)
      expect(completed.find((e) => e.data.tool_use_id === 'toolu_batch01')!.data).toMatchObject({ name: 'batch_tool', is_error: false, invocations: 6 })
      // The run counts the batch as the one call the model made.
      expect(run.tool_calls).toMatchObject({ total: 1, errors: 0 })
    })

    it('is an error result only when every invocation failed', async () => {
      h.model.respond = batchOnce([{ name: 'nope', arguments: '{}' }, { arguments: '{}' }])
      const { body: run } = await h.startRun({ input: 'x', tools: ['get_weather'], batch_tool: true })
      expect(run.status).toBe('completed')
      const [result] = toolResults(h.model.requests[h.model.requests.length - 1]!)
      expect(result!.is_error).toBe(true)
      expect(resultText(result!)).toBe('[1] nope: error: Tool nope is not available in this run (available: get_weather).\n\n[2] (no name): error: invocations[1] has no `name`: give the name of one of your tools.')
      expect(h.tools.calls).toHaveLength(0)
    })

    it('never makes a call that needs a reviewer\'s approval: the model is told to call it directly', async () => {
      expected = 1
      h.model.respond = batchOnce([{ name: 'get_weather', arguments: '{"city": "Oslo"}' }, { name: 'get_time', arguments: '{}' }])
      const { body: run } = await h.startRun({ input: 'x', tools: ['get_weather', 'get_time'], batch_tool: true, require_approval: ['get_time'] })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.tools.calls.map((c) => c.body.tool)).toEqual(['get_weather'])
      const [result] = toolResults(h.model.requests.at(-1)!)
      expect(resultText(result!)).toBe('[1] get_weather: get_weather says {"city":"Oslo"}\n\n[2] get_time: error: Tool get_time was not called: its calls need a reviewer\'s approval, which batch_tool does not wait for; call get_time directly.')
    })

    it('a batch without invocations is answered with what to send', async () => {
      h.model.respond = batchOnce([])
      const { body: run } = await h.startRun({ input: 'x', tools: ['get_weather'], batch_tool: true })
      const [result] = toolResults(h.model.requests[h.model.requests.length - 1]!)
      expect(run.status).toBe('completed')
      expect(result).toMatchObject({ is_error: true, content: expect.stringContaining('`invocations` is empty') })
    })

    it('is offered to the model only when the run asks for it', async () => {
      h.model.respond = () => ({ content: [{ type: 'text', text: 'hi' }] })
      await h.startRun({ input: 'x', tools: ['get_weather'] })
      expect(h.model.requests.at(-1)!.body.tools.map((t: { name: string }) => t.name)).toEqual(['get_weather'])
      await h.startRun({ input: 'x', tools: ['get_weather'], batch_tool: true })
      const offered = h.model.requests.at(-1)!.body.tools.find((t: { name: string }) => t.name === 'batch_tool')
      expect(offered).toMatchObject({ description: 'Invoke multiple other tool calls simultaneously', input_schema: { required: ['invocations'] } })
    })

    it('batch_tool is a reserved name: no registered or client tool may take it', async () => {
      const res = await h.app.inject({ method: 'PUT', url: '/tools/batch_tool', headers: auth(TENANT_A), payload: { description: 'mine', input_schema: { type: 'object' }, url: `${h.tools.url}/ok` } })
      expect(res.statusCode).toBe(400)
      expect(res.json().code).toBe('TOOL_ERR_RESERVED_NAME')
      const run = await h.startRun({ input: 'x', client_tools: [{ name: 'batch_tool', description: 'mine', input_schema: { type: 'object' } }] })
      expect(run.status).toBe(400)
      expect(run.body.message).toContain('batch meta-tool')
    })
  })
}

describe('BATCH_TOOL_DEFAULT', () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness(undefined, { env: { BATCH_TOOL_DEFAULT: 'true' } })
    await h.registerTool('lookup', '/ok', { effect: 'read_only' })
  })
  afterAll(async () => h?.close())

  it('offers batch_tool to runs that do not say, and a run can still say no', async () => {
    h.model.respond = () => ({ content: [{ type: 'text', text: 'hi' }] })
    await h.startRun({ input: 'x', tools: ['lookup'] })
    expect(h.model.requests.at(-1)!.body.tools.map((t: { name: string }) => t.name)).toEqual(['lookup', 'batch_tool'])
    await h.startRun({ input: 'x', tools: ['lookup'], batch_tool: false })
    expect(h.model.requests.at(-1)!.body.tools.map((t: { name: string }) => t.name)).toEqual(['lookup'])
  })
})
