import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { auth, TENANT_A, TENANT_B } from '../../support/app.js'
import { startHarness, type Harness } from '../../support/harness.js'
import { resultText, toolResults, turnNumber } from '../../support/fake-messages-api.js'
import { callThenEnd, McpTestServer, standardTools } from '../../support/mcp-server.js'

describe('runs with MCP tools', () => {
  let h: Harness
  let mcp: McpTestServer
  beforeAll(async () => {
    mcp = await new McpTestServer().start()
    h = await startHarness(undefined, { env: { TOOL_MAX_RESULT_CHARS: '500' } })
    const res = await h.app.inject({
      method: 'PUT',
      url: '/mcp-servers/files',
      headers: auth(TENANT_A),
      payload: { url: mcp.url, trust_annotations: true, defaults: { timeout_ms: 2000, max_attempts: 2 }, overrides: { hang: { timeout_ms: 300 } } }
    })
    expect(res.statusCode, res.body).toBe(201)
  })
  afterAll(async () => {
    await h?.close()
    await mcp?.close()
  })
  beforeEach(() => {
    mcp.calls.length = 0
  })

  /** Runs one call of `name` and answers its tool_result and its tool_call.completed event. */
  async function resultOf (name: string, input: unknown = {}) {
    h.model.respond = callThenEnd([{ name, input }])
    const { body } = await h.startRun({ input: 'go', tools: [name] })
    expect(body.status, JSON.stringify(body.error)).toBe('completed')
    const last = h.model.requests[h.model.requests.length - 1]!
    const [result] = toolResults(last)
    const events = await h.events(body.id)
    const completed = events.find((e) => e.type === 'tool_call.completed')!
    return { result: result!, text: resultText(result!), completed, events, run: body }
  }

  it('offers the tools to the model and calls them with _meta (run id, tool_use id, idempotency key) and traceparent', async () => {
    const { text, run } = await resultOf('files__echo', { q: 'hello' })
    expect(text).toBe('echo {"q":"hello"}')
    const first = h.model.requests[h.model.requests.length - 2]!
    expect(first.body.tools).toEqual([expect.objectContaining({ name: 'files__echo', description: 'Echoes its input.', input_schema: { type: 'object', properties: {}, additionalProperties: true } })])
    const [call] = mcp.callsOf('echo')
    expect(call!.args).toEqual({ q: 'hello' })
    const toolUseId = String(call!.meta!['switchboard/tool_use_id'])
    expect(call!.meta).toMatchObject({ 'switchboard/run_id': run.id, 'switchboard/idempotency_key': `${run.id}:${toolUseId}` })
    expect(toolUseId).toMatch(/^toolu_/)
    expect(String(call!.headers.traceparent)).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
  })

  it('calls of one step overlap at the server, through one shared session', async () => {
    h.model.respond = callThenEnd(Array.from({ length: 8 }, () => ({ name: 'files__delay', input: { ms: 200 } })))
    const { body } = await h.startRun({ input: 'go', tools: ['files__delay'] })
    expect(body.status).toBe('completed')
    const calls = mcp.callsOf('delay')
    expect(calls).toHaveLength(8)
    expect(McpTestServer.maxOverlap(calls)).toBe(8)
    expect(new Set(calls.map((c) => c.sessionId)).size).toBe(1)
  })

  it('a hanging tool times out, and the server sees notifications/cancelled', async () => {
    const { text, completed } = await resultOf('files__hang')
    expect(text).toBe('Tool files__hang timed out after 300 ms')
    // hang is side_effecting (no annotation): a timeout is not retried.
    expect(completed.data).toMatchObject({ is_error: true, outcome: 'timeout', attempts: 1 })
    await expect.poll(() => mcp.callsOf('hang').every((c) => c.cancelled)).toBe(true)
  })

  it('isError is is_error, with the tool\'s own text', async () => {
    const { result, text } = await resultOf('files__fail')
    expect(result.is_error).toBe(true)
    expect(text).toBe('the tool broke')
  })

  it('image content passes through as an image block; structuredContent alone becomes its JSON; other blocks a description', async () => {
    const image = await resultOf('files__image')
    expect(image.result.content).toEqual([{ type: 'text', text: 'a pixel' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }])
    expect((await resultOf('files__structured')).text).toBe('{"temperature":21,"unit":"C"}')
    expect((await resultOf('files__resource')).text).toBe('[resource block: file:///notes.txt, text/plain]')
  })

  it('an unknown tool of a server, or an unknown server, is a 400 at POST /runs', async () => {
    const unknownTool = await h.startRun({ input: 'go', tools: ['files__nope'] })
    expect(unknownTool.status).toBe(400)
    expect(unknownTool.body).toMatchObject({ code: 'RUN_ERR_UNKNOWN_TOOL' })
    expect(unknownTool.body.message).toContain('nope')
    const unknownServer = await h.startRun({ input: 'go', mcp_servers: ['nothere'] })
    expect(unknownServer.status).toBe(400)
    expect(unknownServer.body).toMatchObject({ code: 'RUN_ERR_UNKNOWN_TOOL' })
  })

  it('another tenant cannot use the server\'s tools', async () => {
    const res = await h.startRun({ input: 'go', tools: ['files__echo'] }, TENANT_B)
    expect(res.status).toBe(400)
    expect(res.body).toMatchObject({ code: 'RUN_ERR_UNKNOWN_TOOL' })
    expect(mcp.calls).toHaveLength(0)
  })

  it('mcp_servers offers every tool of a server', async () => {
    h.model.respond = callThenEnd([{ name: 'files__read' }, { name: 'files__echo', input: { x: 1 } }])
    const { body } = await h.startRun({ input: 'go', mcp_servers: ['files'] })
    expect(body.status).toBe('completed')
    const first = h.model.requests[h.model.requests.length - 2]!
    expect((first.body.tools as Array<{ name: string }>).map((t) => t.name)).toEqual(standardTools().map((t) => `files__${t.name}`))
    expect(mcp.calls.map((c) => c.tool).sort()).toEqual(['echo', 'read'])
  })

  it('an expired session is initialized again once, and the call goes through', async () => {
    await resultOf('files__echo')
    const before = mcp.initializations
    mcp.expireSessions()
    const { result, text } = await resultOf('files__echo', { again: true })
    expect(result.is_error).toBeUndefined()
    expect(text).toBe('echo {"again":true}')
    expect(mcp.initializations).toBe(before + 1)
  })

  it('a run keeps the tool definitions it started with, though the server\'s list changes meanwhile', async () => {
    const changing = await new McpTestServer([{ name: 'old', description: 'The old tool.', run: () => ({ content: [{ type: 'text', text: 'old' }] }) }]).start()
    try {
      const res = await h.app.inject({ method: 'PUT', url: '/mcp-servers/moving', headers: auth(TENANT_A), payload: { url: changing.url } })
      expect(res.statusCode).toBe(201)
      let changed = false
      h.model.respond = async (request) => {
        if (turnNumber(request) === 1) return { content: [{ type: 'tool_use' as const, name: 'moving__old', input: {} }] }
        if (turnNumber(request) === 2 && !changed) {
          changed = true
          changing.setTools([{ name: 'new', description: 'The new tool.', run: () => ({ content: [] }) }])
          await h.app.inject({ method: 'POST', url: '/mcp-servers/moving/refresh', headers: auth(TENANT_A) })
          return { content: [{ type: 'tool_use' as const, name: 'moving__old', input: {} }] }
        }
        return { content: [{ type: 'text' as const, text: 'done' }] }
      }
      const { body } = await h.startRun({ input: 'go', mcp_servers: ['moving'] })
      expect(body.status).toBe('completed')
      const runRequests = h.model.requests.slice(-3)
      for (const request of runRequests) expect((request.body.tools as Array<{ name: string, description: string }>)).toEqual([expect.objectContaining({ name: 'moving__old', description: 'The old tool.' })])
      // The server no longer has it: its answer (a JSON-RPC error or isError) is an is_error result, and the run goes on.
      expect(toolResults(runRequests[2]!)[0]!.is_error).toBe(true)
      // A new run gets the new list.
      h.model.respond = callThenEnd([])
      await h.startRun({ input: 'go', mcp_servers: ['moving'] })
      expect((h.model.requests[h.model.requests.length - 1]!.body.tools as Array<{ name: string }>).map((t) => t.name)).toEqual(['moving__new'])
    } finally {
      await changing.close()
    }
  })

  it('a server that dies mid-call gives an is_error result naming the server and tool; the step goes on', async () => {
    const dying = await new McpTestServer([
      { name: 'slow', run: async (_args, signal) => { await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true })); return { content: [] } } }
    ]).start()
    try {
      const res = await h.app.inject({ method: 'PUT', url: '/mcp-servers/dying', headers: auth(TENANT_A), payload: { url: dying.url, defaults: { max_attempts: 1 } } })
      expect(res.statusCode).toBe(201)
      h.model.respond = callThenEnd([{ name: 'dying__slow' }, { name: 'files__echo', input: { still: 'here' } }])
      const started = h.startRun({ input: 'go', tools: ['dying__slow', 'files__echo'] })
      await expect.poll(() => dying.calls.length).toBe(1)
      await dying.close()
      const { body } = await started
      expect(body.status).toBe('completed')
      const [slow, echo] = toolResults(h.model.requests[h.model.requests.length - 1]!)
      expect(slow!.is_error).toBe(true)
      expect(resultText(slow!)).toContain('dying__slow')
      expect(resultText(echo!)).toBe('echo {"still":"here"}')
    } finally {
      await dying.close().catch(() => {})
    }
  })

  it('a read_only call whose server refuses connections is retried; a side_effecting one is not retried after it was sent', async () => {
    const flaky = await new McpTestServer().start()
    try {
      const res = await h.app.inject({ method: 'PUT', url: '/mcp-servers/flaky', headers: auth(TENANT_A), payload: { url: flaky.url, trust_annotations: true, defaults: { max_attempts: 3 } } })
      expect(res.statusCode).toBe(201)
      flaky.breakWith('garbage')
      const { completed: read } = await resultOf('flaky__read')
      expect(read.data).toMatchObject({ is_error: true, attempts: 3 })
      const { completed: write } = await resultOf('flaky__write')
      expect(write.data).toMatchObject({ is_error: true, attempts: 1 })
    } finally {
      await flaky.close()
    }
  })
})

describe('MCP calls under the caps and cancel of webhook tools', () => {
  let h: Harness
  let mcp: McpTestServer
  beforeAll(async () => {
    mcp = await new McpTestServer().start()
    h = await startHarness()
  })
  afterAll(async () => {
    await h?.close()
    await mcp?.close()
  })

  it('a failure that echoes the server\'s credentials reaches the model without them', async () => {
    const leaky = await new McpTestServer([
      { name: 'leaky', run: (args) => ({ content: [{ type: 'text', text: `denied for ${String(args.auth)}` }], isError: true }) }
    ]).start()
    try {
      const res = await h.app.inject({ method: 'PUT', url: '/mcp-servers/leaky', headers: auth(TENANT_A), payload: { url: leaky.url, headers: { authorization: 'Bearer mcp-credential-4242' } } })
      expect(res.statusCode).toBe(201)
      h.model.respond = callThenEnd([{ name: 'leaky__leaky', input: { auth: 'Bearer mcp-credential-4242' } }])
      const { body } = await h.startRun({ input: 'go', tools: ['leaky__leaky'] })
      expect(body.status).toBe('completed')
      const [result] = toolResults(h.model.requests[h.model.requests.length - 1]!)
      expect(result!.is_error).toBe(true)
      expect(resultText(result!)).toMatch(/^denied for /)
      expect(resultText(result!)).not.toContain('mcp-credential-4242')
    } finally {
      await leaky.close()
    }
  })

  it('max_concurrency bounds the calls in flight at the server; parallel: false runs a call alone', async () => {
    const res = await h.app.inject({ method: 'PUT', url: '/mcp-servers/capped', headers: auth(TENANT_A), payload: { url: mcp.url, defaults: { max_concurrency: 2 }, overrides: { echo: { parallel: false } } } })
    expect(res.statusCode, res.body).toBe(201)
    h.model.respond = callThenEnd([...Array.from({ length: 6 }, () => ({ name: 'capped__delay', input: { ms: 100 } })), { name: 'capped__echo' }, { name: 'capped__delay', input: { ms: 100 } }])
    const { body } = await h.startRun({ input: 'go', mcp_servers: ['capped'] })
    expect(body.status).toBe('completed')
    const delays = mcp.callsOf('delay')
    expect(delays).toHaveLength(7)
    expect(McpTestServer.maxOverlap(mcp.calls)).toBe(2)
    const [echo] = mcp.callsOf('echo')
    // The echo call started after the six before it ended, and the last one after it ended.
    expect(delays.slice(0, 6).every((c) => c.end! <= echo!.start)).toBe(true)
    expect(delays[6]!.start).toBeGreaterThanOrEqual(echo!.end!)
  })

  it('cancelling a run aborts its MCP call; the server sees notifications/cancelled', async () => {
    await h.app.inject({ method: 'PUT', url: '/mcp-servers/c', headers: auth(TENANT_A), payload: { url: mcp.url } })
    mcp.calls.length = 0
    h.model.respond = callThenEnd([{ name: 'c__hang' }])
    const { body: run } = await h.startRun({ input: 'go', tools: ['c__hang'], background: true })
    await expect.poll(() => mcp.callsOf('hang').length).toBe(1)
    const res = await h.app.inject({ method: 'POST', url: `/runs/${run.id as string}/cancel`, headers: auth(TENANT_A) })
    expect(res.json()).toMatchObject({ status: 'cancelled' })
    await expect.poll(() => mcp.callsOf('hang')[0]!.cancelled).toBe(true)
    const events = await h.events(run.id)
    expect(events.find((e) => e.type === 'tool_call.completed')!.data).toMatchObject({ name: 'c__hang', is_error: true, outcome: 'cancelled' })
  })
})
