import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, startApp, TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { codeCalls, codeResult, resultText, toolResults, turnNumber, type RecordedRequest } from '../support/fake-messages-api.js'
import { McpTestServer } from '../support/mcp-server.js'

/**
 * Programmatic tool calling (SPEC §16) through registered webhooks: the model's code calls the
 * run's tools, each call dispatched like any other, its result sent back as text, and the
 * container the code waits in carried from request to request.
 */

const LOOKUP_SCHEMA = { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'], additionalProperties: false }
const CODE = 'code_execution_20260120'
const METRICS_TOKEN = 'metrics-token-code-execution-0123'

/** The last user message of a request (the continuation of the answer before it). */
function lastMessage (request: RecordedRequest): { role: string, content: Array<Record<string, any>> } {
  return request.body.messages[request.body.messages.length - 1]
}

/** The container each answer of the fake named, in order (from the next request that carried it). */
function containers (h: Harness): unknown[] {
  return h.model.requests.map((r) => r.body.container)
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`programmatic tool calling: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend, { env: { METRICS_TOKEN } })
      // A lookup answers with the record of the id it is given.
      h.tools.on('/lookup', async (_req, res, call) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ content: `record ${String(call.body.input.id)}: price ${Number(call.body.input.id) * 10}` }))
      })
      // An answer with an image: fine for the model, not for its code.
      h.tools.on('/chart', async (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ content: [{ type: 'text', text: 'the chart: ' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }] }))
      })
      await h.registerTool('lookup', '/lookup', { input_schema: LOOKUP_SCHEMA, effect: 'read_only', callers: ['direct', 'code'], timeout_ms: 600_000, max_attempts: 1 })
      await h.registerTool('code_only', '/lookup', { input_schema: LOOKUP_SCHEMA, effect: 'idempotent', callers: ['code'] })
      await h.registerTool('chart', '/chart', { effect: 'read_only', callers: ['direct', 'code'] })
      await h.registerTool('direct_only', '/lookup', { input_schema: LOOKUP_SCHEMA, effect: 'read_only' })
      // A tool that is down: every attempt answers 503.
      h.tools.on('/down', async (_req, res) => {
        res.writeHead(503, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ error: 'down for maintenance' }))
      })
      // A tool that would answer later (SPEC §13): 202 now, the result posted afterwards.
      h.tools.on('/later', async (_req, res) => {
        res.writeHead(202)
        res.end()
      })
      await h.registerTool('later', '/later', { effect: 'read_only', callers: ['direct', 'code'] })
      await h.registerTool('slow_down', '/down', { effect: 'read_only', callers: ['direct', 'code'], timeout_ms: 100_000, max_attempts: 3 })
    })
    afterAll(async () => h?.close())
    beforeEach(() => {
      h.tools.calls.length = 0
      h.model.requests.length = 0
      h.model.refusals.length = 0
      h.model.containers.clear()
      h.model.containerIdleMs = 270_000
    })

    it('does a many-lookup task through code in one model turn: the code calls the webhooks, the results go back as text with the container', async () => {
      const ids = Array.from({ length: 16 }, (_, i) => i + 1)
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'text', text: 'Looking them up.' }, ...codeCalls(ids.map((id) => ({ name: 'lookup', input: { id } })))] }
        : { content: [codeResult(request, `total ${toolResults(request).length}`), { type: 'text', text: `sum of ${toolResults(request).length} prices` }] }
      const { status, body: run } = await h.startRun({ input: 'Sum the prices of records 1 to 16', tools: ['lookup', 'code_only', 'direct_only'], code_execution: true })
      expect(status).toBe(200)
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.model.refusals).toEqual([])
      expect(h.model.requests).toHaveLength(2)

      // The request offers the code execution tool, and each tool to the callers it lists.
      const tools = h.model.requests[0]!.body.tools as Array<Record<string, any>>
      expect(tools.find((t) => t.name === 'code_execution')).toMatchObject({ type: CODE })
      expect(tools.find((t) => t.name === 'lookup')!.allowed_callers).toEqual(['direct', CODE])
      expect(tools.find((t) => t.name === 'code_only')!.allowed_callers).toEqual([CODE])
      expect(tools.find((t) => t.name === 'direct_only')!.allowed_callers).toBeUndefined()

      // Every lookup reached the webhook, and the continuation holds their results alone, as text.
      expect(h.tools.calls.map((c) => c.body.input.id).sort((a, b) => a - b)).toEqual(ids)
      const continuation = lastMessage(h.model.requests[1]!)
      expect(continuation.content.map((b) => b.type)).toEqual(ids.map(() => 'tool_result'))
      expect(continuation.content.map((b) => typeof b.content)).toEqual(ids.map(() => 'string'))
      expect(resultText(continuation.content[2]!)).toBe('record 3: price 30')
      // The container the first answer ran the code in is named by the next request.
      const first = h.model.containers.keys().next().value!
      expect(containers(h)).toEqual([undefined, first])
      // The run shows its container, and when the API said it expires (from the last answer).
      const expiresAt = new Date(h.model.containers.get(first)! + h.model.containerIdleMs).toISOString()
      expect(run.container).toEqual({ id: first, expires_at: expiresAt })
      const read = await h.app.inject({ method: 'GET', url: `/runs/${run.id as string}`, headers: auth(TENANT_A) })
      expect(read.json().container).toEqual({ id: first, expires_at: expiresAt })

      // Events show who made each call: the code, and which code execution call it was.
      const events = await h.events(run.id)
      const completed = events.filter((e) => e.type === 'tool_call.completed')
      expect(completed).toHaveLength(16)
      const server = (h.model.requests[1]!.body.messages[1].content as Array<Record<string, any>>).find((b) => b.type === 'server_tool_use')!
      for (const event of completed) expect(event.data).toMatchObject({ caller: 'code', caller_tool_id: server.id, is_error: false })
      expect(events.find((e) => e.type === 'tool_call.started')!.data).toMatchObject({ caller: 'code', caller_tool_id: server.id })

      // The server tool blocks are in the stored history as the API sent them.
      const res = await h.app.inject({ method: 'GET', url: `/runs/${run.id as string}?include=messages`, headers: auth(TENANT_A) })
      const stored = res.json().messages as Array<{ role: string, content: Array<Record<string, any>> }>
      expect(stored[1]!.content.find((b) => b.type === 'server_tool_use')).toEqual(server)
      expect(stored[3]!.content[0]).toMatchObject({ type: 'code_execution_tool_result', tool_use_id: server.id })
    })

    it('answers direct and code calls of one step together, and tells them apart in the events', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'lookup', input: { id: 7 }, caller: { type: 'direct' } }, ...codeCalls([{ name: 'lookup', input: { id: 8 } }, { name: 'code_only', input: { id: 9 } }])] }
        : { content: [codeResult(request, 'done'), { type: 'text', text: toolResults(request).map(resultText).join(' | ') }] }
      const { body: run } = await h.startRun({ input: 'mixed', tools: ['lookup', 'code_only'], code_execution: true })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.model.refusals).toEqual([])
      expect(run.output_text).toBe('record 7: price 70 | record 8: price 80 | record 9: price 90')
      const events = await h.events(run.id)
      expect(events.filter((e) => e.type === 'tool_call.completed').map((e) => e.data.caller).sort()).toEqual(['code', 'code', 'direct'])
      const started = events.filter((e) => e.type === 'tool_call.started').map((e) => [e.data.input.id, e.data.caller])
      expect(started.sort()).toEqual([[7, 'direct'], [8, 'code'], [9, 'code']])

      // The timeline marks the calls the code made, and names the code execution call that made them.
      const page = await h.app.inject({ method: 'GET', url: run.timeline_url })
      expect(page.statusCode).toBe(200)
      const server = (h.model.requests[1]!.body.messages[1].content as Array<Record<string, any>>).find((b) => b.type === 'server_tool_use')!
      expect(page.body.match(/>lookup \(code\)<title>/g)).toHaveLength(1)
      expect(page.body.match(/>code_only \(code\)<title>/g)).toHaveLength(1)
      expect(page.body).toContain(`called by the model&#39;s code (${server.id as string})`)
    })

    it('caps a code call\'s timeout at 240 s, where the same tool called directly keeps its own (600 s)', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'lookup', input: { id: 1 }, caller: { type: 'direct' } }, ...codeCalls([{ name: 'lookup', input: { id: 2 } }])] }
        : { content: [codeResult(request, 'done'), { type: 'text', text: 'ok' }] }
      const { body: run } = await h.startRun({ input: 'timeouts', tools: ['lookup'], code_execution: true, timeout_ms: 3_600_000 })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      // The deadline each attempt was given, as the webhook saw it, from when it was sent.
      const allowed = Object.fromEntries(h.tools.calls.map((c) => [c.body.input.id, Date.parse(c.body.deadline) - c.start - performance.timeOrigin]))
      expect(allowed[1]).toBeGreaterThan(590_000)
      expect(allowed[1]).toBeLessThanOrEqual(600_000)
      expect(allowed[2]).toBeGreaterThan(230_000)
      expect(allowed[2]).toBeLessThanOrEqual(240_000)
    })

    it('flattens a result with an image to text for the code, and leaves it whole for a direct call', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', id: 'toolu_direct_chart', name: 'chart', input: {}, caller: { type: 'direct' } }, ...codeCalls([{ name: 'chart', input: {} }])] }
        : { content: [codeResult(request, 'done'), { type: 'text', text: 'seen' }] }
      const { body: run } = await h.startRun({ input: 'charts', tools: ['chart'], code_execution: true })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.model.refusals).toEqual([])
      const [direct, code] = toolResults(h.model.requests[1]!)
      expect(direct!.tool_use_id).toBe('toolu_direct_chart')
      expect(direct!.content).toEqual([{ type: 'text', text: 'the chart: ' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }])
      expect(code!.content).toBe('the chart: [image image/png left out: a result for code is text only]')
    })

    it('carries the container across steps: every later request names the one the first answer made', async () => {
      h.model.respond = (request) => {
        const turn = turnNumber(request)
        if (turn <= 3) return { content: codeCalls([{ name: 'lookup', input: { id: turn } }, { name: 'lookup', input: { id: turn + 10 } }]) }
        return { content: [codeResult(request, 'done'), { type: 'text', text: 'three rounds' }] }
      }
      const { body: run } = await h.startRun({ input: 'three rounds', tools: ['lookup'], code_execution: true })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.model.refusals).toEqual([])
      expect(h.model.requests).toHaveLength(4)
      const [first] = [...h.model.containers.keys()]
      expect(h.model.containers.size).toBe(1)
      expect(containers(h)).toEqual([undefined, first, first, first])
      // Its expiry is the last answer's: each request moved it on.
      expect(run.container).toEqual({ id: first, expires_at: new Date(h.model.containers.get(first!)! + h.model.containerIdleMs).toISOString() })
    })

    it('fails the run clearly, without retrying, when the API says its container has expired', async () => {
      h.model.respond = (request) => {
        // The container sits idle past its time while the first answer's calls are made.
        h.model.containerIdleMs = -1
        return turnNumber(request) === 1 ? { content: codeCalls([{ name: 'lookup', input: { id: 1 } }]) } : { content: [{ type: 'text', text: 'never' }] }
      }
      const { body: run } = await h.startRun({ input: 'slow', tools: ['lookup'], code_execution: true })
      expect(run.status).toBe('failed')
      expect(run.error.code).toBe('RUN_ERR_CONTAINER_EXPIRED')
      expect(run.error.message).toMatch(/code execution container expired or is gone .*start the task again in a new run/)
      // One refused continuation, not one per retry.
      expect(h.model.requests).toHaveLength(2)
      // The run names the container that is gone.
      expect(run.container.id).toBe(h.model.requests[1]!.body.container)
      expect(run.error.message).toContain(run.container.id)
    })

    it('fails the run the same way when the API answers 404 that the container was not found, and refuses it once', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: codeCalls([{ name: 'lookup', input: { id: 1 } }]) }
        : { kind: 'error', status: 404, type: 'not_found_error', message: `container ${String(request.body.container)} not found` }
      const { body: run } = await h.startRun({ input: 'gone', tools: ['lookup'], code_execution: true })
      expect(run.status).toBe('failed')
      expect(run.error).toMatchObject({ code: 'RUN_ERR_CONTAINER_EXPIRED', message: expect.stringContaining('404 not_found_error') })
      expect(h.model.requests).toHaveLength(2)
    })

    it('gives a failing code call no more attempts than fit 240 s, where the same tool called directly gets all of its own', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'slow_down', input: {}, caller: { type: 'direct' } }, ...codeCalls([{ name: 'slow_down', input: { from: 'code' } }])] }
        : { content: [codeResult(request, 'failed'), { type: 'text', text: 'both failed' }] }
      const { body: run } = await h.startRun({ input: 'retries', tools: ['slow_down'], code_execution: true })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.model.refusals).toEqual([])
      // 100 s a attempt: 3 attempts directly (the tool's max_attempts), 2 from code (200 s of 240).
      expect(h.tools.calls.filter((c) => c.body.input.from === undefined)).toHaveLength(3)
      expect(h.tools.calls.filter((c) => c.body.input.from === 'code')).toHaveLength(2)
      const events = await h.events(run.id)
      const retrying = events.filter((e) => e.type === 'tool_call.retrying')
      expect(retrying.map((e) => e.data.caller).sort()).toEqual(['code', 'direct', 'direct'])
      const completed = events.filter((e) => e.type === 'tool_call.completed')
      expect(completed.map((e) => [e.data.caller, e.data.attempts, e.data.is_error]).sort()).toEqual([['code', 2, true], ['direct', 3, true]])
      // The code gets the failure as text, and the model sees it called out as an error.
      const code = toolResults(h.model.requests[1]!).find((r) => typeof r.content === 'string' && r.is_error === true && r.tool_use_id !== completed.find((e) => e.data.caller === 'direct')!.data.tool_use_id)
      expect(code?.content).toMatch(/503/)
      // The metrics count both calls under their tool, with every attempt each made.
      const metrics = await h.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
      expect(metrics.body).toMatch(/^switchboard_tool_calls_total\{tool="slow_down",outcome="error"\} 2$/m)
      expect(metrics.body).toMatch(/^switchboard_tool_call_attempts_total\{tool="slow_down"\} 5$/m)
    })

    it('answers a code call whose input breaks the tool\'s schema without calling the tool, telling the code why', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: codeCalls([{ name: 'lookup', input: { id: 'seven' } }, { name: 'lookup', input: { id: 7 } }]) }
        : { content: [codeResult(request, 'one failed'), { type: 'text', text: 'one of two' }] }
      const { body: run } = await h.startRun({ input: 'bad input', tools: ['lookup'], code_execution: true })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(h.model.refusals).toEqual([])
      expect(h.tools.calls.map((c) => c.body.input)).toEqual([{ id: 7 }])
      const [bad, good] = toolResults(h.model.requests[1]!)
      expect(bad).toMatchObject({ is_error: true, content: expect.stringMatching(/^Tool lookup was not called: invalid input: .*id/) })
      expect(good).toMatchObject({ content: 'record 7: price 70' })
      const refused = (await h.events(run.id)).find((e) => e.type === 'tool_call.completed' && e.data.outcome === 'refused')
      expect(refused?.data).toMatchObject({ caller: 'code', attempts: 0, is_error: true })
    })

    it('shows the container, with its expiry, on a run whose code waits for a reviewer, and names it again once the call is approved', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: codeCalls([{ name: 'lookup', input: { id: 5 } }]) }
        : { content: [codeResult(request, 'approved'), { type: 'text', text: toolResults(request).map(resultText).join('') }] }
      const { body: waiting } = await h.startRun({ input: 'approve', tools: ['lookup'], code_execution: true, require_approval: ['lookup'] })
      expect(waiting.status, JSON.stringify(waiting.error)).toBe('requires_action')
      const [container] = [...h.model.containers.keys()]
      // The reviewer can see by when to decide: the container's expiry, from the answer that asked.
      expect(waiting.container).toEqual({ id: container, expires_at: new Date(h.model.containers.get(container!)! + h.model.containerIdleMs).toISOString() })
      const [call] = waiting.required_action.tool_calls
      const decided = await h.app.inject({ method: 'POST', url: `/runs/${waiting.id as string}/approvals`, headers: auth(TENANT_A), payload: { decisions: [{ tool_use_id: call.tool_use_id, approve: true }] } })
      expect(decided.statusCode, decided.body).toBeLessThan(300)
      await expect.poll(async () => (await h.app.inject({ method: 'GET', url: `/runs/${waiting.id as string}`, headers: auth(TENANT_A) })).json().status, { timeout: 10_000 }).toBe('completed')
      const done = (await h.app.inject({ method: 'GET', url: `/runs/${waiting.id as string}`, headers: auth(TENANT_A) })).json()
      expect(done.output_text).toBe('record 5: price 50')
      expect(h.model.refusals).toEqual([])
      expect(containers(h)).toEqual([undefined, container])
      expect(done.container.id).toBe(container)
    })

    it('does not let a code call wait for a result posted later: a 202 is an error result for the code, at once', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: codeCalls([{ name: 'later', input: { n: 1 } }]) }
        : { content: [codeResult(request, 'no result'), { type: 'text', text: 'gave up' }] }
      const { body: run } = await h.startRun({ input: 'later', tools: ['later'], code_execution: true })
      expect(run.status, JSON.stringify(run.error)).toBe('completed')
      expect(run.pending_tool_calls).toBeNull()
      expect(h.model.refusals).toEqual([])
      // The tool was given nowhere to post a result, and the code was told why it got none.
      expect(h.tools.calls).toHaveLength(1)
      expect(h.tools.calls[0]!.body.result_url).toBeUndefined()
      const [result] = toolResults(h.model.requests[1]!)
      expect(result).toMatchObject({ is_error: true, content: expect.stringMatching(/later answered 202 Accepted, but this call cannot be answered later \(.*the model's code\)/) })
    })

    it('refuses at registration a side_effecting tool that lists "code" in callers, and a run with code execution on a model without it', async () => {
      for (const fields of [{ effect: 'side_effecting', callers: ['direct', 'code'] }, { callers: ['code'] }]) {
        const res = await h.app.inject({ method: 'PUT', url: '/tools/writer', headers: auth(TENANT_A), payload: { description: 'writes', input_schema: { type: 'object' }, url: `${h.tools.url}/ok`, ...fields } })
        expect(res.statusCode).toBe(400)
        expect(res.json()).toMatchObject({ code: 'TOOL_ERR_CALLERS_NOT_ALLOWED', message: expect.stringMatching(/tool writer is side_effecting, but callers lists "code": only read_only and idempotent/) })
      }
      const unknown = await h.app.inject({ method: 'PUT', url: '/tools/writer', headers: auth(TENANT_A), payload: { description: 'w', input_schema: { type: 'object' }, url: `${h.tools.url}/ok`, effect: 'read_only', callers: ['robot'] } })
      expect(unknown.statusCode).toBe(400)
      // A direct-only side_effecting tool is fine, and shows its callers back.
      const fine = await h.app.inject({ method: 'PUT', url: '/tools/writer', headers: auth(TENANT_A), payload: { description: 'w', input_schema: { type: 'object' }, url: `${h.tools.url}/ok`, callers: ['direct'] } })
      expect(fine.statusCode).toBe(201)
      expect(fine.json().callers).toEqual(['direct'])

      const refused = await h.startRun({ input: 'x', tools: ['lookup'], code_execution: true, model: 'claude-haiku-4-5' })
      expect(refused.status).toBe(400)
      expect(refused.body).toMatchObject({ code: 'RUN_ERR_MODEL_UNSUPPORTED', message: expect.stringMatching(/^code_execution: model claude-haiku-4-5 does not take programmatic tool calling/) })
      expect(h.model.requests).toHaveLength(0)
    })

    it('holds MCP tools to the same rule: an override may add "code" only to a read_only or idempotent tool, and such a tool is offered to code', async () => {
      const mcp = await new McpTestServer().start()
      try {
        const put = async (name: string, payload: Record<string, unknown>) => await h.app.inject({ method: 'PUT', url: `/mcp-servers/${name}`, headers: auth(TENANT_A), payload: { url: mcp.url, ...payload } })
        // `write` is side_effecting (destructiveHint); without trust_annotations, so is `read`.
        const writer = await put('writer', { trust_annotations: true, overrides: { write: { callers: ['code'] } } })
        expect(writer.statusCode).toBe(400)
        expect(writer.json()).toMatchObject({ code: 'TOOL_ERR_CALLERS_NOT_ALLOWED', message: expect.stringMatching(/^tool write of MCP server writer is side_effecting, but callers lists "code"/) })
        const untrusted = await put('untrusted', { overrides: { read: { callers: ['direct', 'code'] } } })
        expect(untrusted.statusCode).toBe(400)
        const good = await put('good', { trust_annotations: true, overrides: { read: { callers: ['direct', 'code'] }, echo: { effect: 'idempotent', callers: ['code'] } } })
        expect(good.statusCode, good.body).toBe(201)
        expect(good.json().overrides.read.callers).toEqual(['direct', 'code'])

        h.model.respond = (request) => turnNumber(request) === 1
          ? { content: codeCalls([{ name: 'good__read', input: {} }, { name: 'good__echo', input: { q: 'hi' } }]) }
          : { content: [codeResult(request, 'done'), { type: 'text', text: toolResults(request).map(resultText).join(' | ') }] }
        const { body: run } = await h.startRun({ input: 'mcp', tools: [], mcp_servers: ['good'], code_execution: true })
        expect(run.status, JSON.stringify(run.error)).toBe('completed')
        expect(h.model.refusals).toEqual([])
        expect(run.output_text).toBe('read ok | echo {"q":"hi"}')
        const tools = Object.fromEntries((h.model.requests[0]!.body.tools as Array<Record<string, any>>).map((t) => [t.name, t.allowed_callers]))
        expect(tools).toMatchObject({ good__read: ['direct', CODE], good__echo: [CODE], good__write: undefined, code_execution: undefined })
        expect(mcp.calls.map((c) => c.tool).sort()).toEqual(['echo', 'read'])
        const events = await h.events(run.id)
        expect(events.filter((e) => e.type === 'tool_call.completed').map((e) => e.data.caller)).toEqual(['code', 'code'])
      } finally {
        await h.app.inject({ method: 'DELETE', url: '/mcp-servers/good', headers: auth(TENANT_A) })
        await mcp.close()
      }
    })

    it('offers no code execution tool nor allowed_callers to a run without code_execution', async () => {
      h.model.respond = () => ({ content: [{ type: 'text', text: 'plain' }] })
      const { body: run } = await h.startRun({ input: 'plain', tools: ['lookup', 'code_only'] })
      expect(run.status).toBe('completed')
      const tools = h.model.requests[0]!.body.tools as Array<Record<string, any>>
      expect(tools.map((t) => t.name)).toEqual(['lookup', 'code_only'])
      expect(tools.every((t) => t.allowed_callers === undefined)).toBe(true)
      expect(h.model.requests[0]!.body.container).toBeUndefined()
      expect(run.container).toBeNull()
    })
  })
}

describe('callers in TOOLS_FILE', () => {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-code-callers-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  const file = (name: string, fields: string): string => {
    const path = join(dir, `${name}.yaml`)
    writeFileSync(path, `tenants:\n  ${TENANT_A.id}:\n    ${name}:\n      description: d\n      url: http://127.0.0.1:9/\n      input_schema: { type: object }\n${fields}`)
    return path
  }

  it('holds a tool of the file to the same rule, and keeps the callers of one that may be called from code', async () => {
    await expect(startApp(backends[0]!, { env: { TOOLS_FILE: file('writer', '      callers: [direct, code]\n') } }))
      .rejects.toThrow(/tool "writer" of tenant "acme": tool writer is side_effecting, but callers lists "code"/)
    const started = await startApp(backends[0]!, { env: { TOOLS_FILE: file('reader', '      effect: read_only\n      callers: [direct, code]\n') } })
    try {
      const res = await started.app.inject({ method: 'GET', url: '/tools/reader', headers: auth(TENANT_A) })
      expect(res.json()).toMatchObject({ source: 'file', effect: 'read_only', callers: ['direct', 'code'] })
    } finally {
      await started.close()
    }
  })
})
