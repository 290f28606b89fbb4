import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, turnNumber } from '../support/fake-messages-api.js'
import { Webhook } from 'standardwebhooks'
import { readEvents } from '../support/sse.js'
import { McpTestServer } from '../support/mcp-server.js'

const confirm = { name: 'confirm_with_user', description: 'Ask the user to confirm', input_schema: { type: 'object', properties: { question: { type: 'string' } }, required: ['question'] } }

for (const backend of backends) {
  describe.skipIf(backend.skip)(`approvals: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend, { env: { RUN_MAX_TIMEOUT_MS: '3600000' } })
      await h.registerTool('lookup', '/ok', { effect: 'read_only' })
      await h.registerTool('refund', '/ok', { approval: 'always' })
      await h.registerTool('email', '/ok')
    })
    afterAll(async () => h?.close())
    beforeEach(() => {
      h.model.refusals.length = 0
      // Turn 1: a lookup, and two refunds in parallel; then an answer quoting every result.
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'order 7' } }, { type: 'tool_use', name: 'refund', input: { q: 'order 7' } }, { type: 'tool_use', name: 'refund', input: { q: 'order 8' } }] }
        : { content: [{ type: 'text', text: `final: ${toolResults(request).map(resultText).join(' | ')}` }] }
    })

    const approve = (id: string, body: Record<string, unknown>, tenant = TENANT_A) =>
      h.app.inject({ method: 'POST', url: `/runs/${id}/approvals`, headers: auth(tenant), payload: body })
    const getRun = async (id: string, query = '') => (await h.app.inject({ method: 'GET', url: `/runs/${id}${query}`, headers: auth(TENANT_A) })).json()

    async function waiting (extra: Record<string, unknown> = {}) {
      const { status, body } = await h.startRun({ input: 'refund?', tools: ['lookup', 'refund'], ...extra })
      expect(status).toBe(200)
      expect(body.status).toBe('requires_action')
      return body
    }

    it('makes the calls that need no approval at once, then waits with the others listed', async () => {
      h.tools.calls.length = 0
      const run = await waiting()
      expect(run).toMatchObject({ status: 'requires_action', stop_reason: null })
      expect(run.required_action).toEqual({
        type: 'approve_tool_calls',
        tool_calls: [
          { tool_use_id: expect.stringMatching(/^toolu_/), name: 'refund', input: { q: 'order 7' }, effect: 'side_effecting' },
          { tool_use_id: expect.stringMatching(/^toolu_/), name: 'refund', input: { q: 'order 8' }, effect: 'side_effecting' }
        ]
      })
      // Only the lookup was called; the refunds wait for their decisions.
      expect(h.tools.calls.map((c) => c.body.tool)).toEqual(['lookup'])
      const events = await h.events(run.id)
      expect(events.at(-1)).toMatchObject({ type: 'run.requires_action', data: { status: 'requires_action' } })
      expect((await h.app.inject({ method: 'GET', url: '/tools/refund', headers: auth(TENANT_A) })).json().approval).toBe('always')
    })

    it('takes partial decisions: an approved call waits for its siblings; once all are decided, approved calls run and denied ones are answered', async () => {
      h.tools.calls.length = 0
      const run = await waiting()
      const [first, second] = run.required_action.tool_calls
      const partial = await approve(run.id, { decisions: [{ tool_use_id: first.tool_use_id, approve: true }] })
      expect(partial.statusCode).toBe(200)
      expect(partial.json()).toMatchObject({ status: 'requires_action', required_action: { type: 'approve_tool_calls', tool_calls: [{ tool_use_id: second.tool_use_id }] } })
      expect(partial.json().required_action.tool_calls).toHaveLength(1)
      // The approved refund is not made while its sibling waits.
      expect(h.tools.calls.map((c) => c.body.tool)).toEqual(['lookup'])
      expect((await getRun(run.id)).status).toBe('requires_action')

      const rest = await approve(run.id, { decisions: [{ tool_use_id: second.tool_use_id, approve: false, reason: 'order 8 was refunded already' }] })
      expect(rest.statusCode).toBe(200)
      expect(rest.json()).toMatchObject({ status: 'completed', required_action: null, steps: 2, tool_calls: { total: 3, errors: 1 } })
      expect(rest.json().output_text).toBe('final: ok lookup {"q":"order 7"} | ok refund {"q":"order 7"} | Not run: denied by the reviewer: order 8 was refunded already')
      expect(h.tools.calls.map((c) => c.body.tool)).toEqual(['lookup', 'refund'])
      expect(h.model.refusals).toEqual([])
      const events = await h.events(run.id)
      expect(events.filter((e) => e.type === 'tool_call.approved').map((e) => e.data)).toEqual([{ step: 1, tool_use_id: first.tool_use_id, name: 'refund' }])
      expect(events.filter((e) => e.type === 'tool_call.denied').map((e) => e.data)).toEqual([{ step: 1, tool_use_id: second.tool_use_id, name: 'refund', reason: 'order 8 was refunded already' }])
      expect(events.find((e) => e.type === 'tool_call.completed' && e.data.tool_use_id === second.tool_use_id)!.data).toMatchObject({ is_error: true, outcome: 'denied' })
      // Each step is stored once: one model call asked for the calls, one read their results.
      expect(events.filter((e) => e.type === 'step.started')).toHaveLength(2)
      expect(events.filter((e) => e.type === 'run.resumed')).toHaveLength(0)
      // The timeline marks the wait and the decisions; the approved refund's bar starts once it was made.
      const timeline = await h.app.engine.timeline(await h.app.engine.get(TENANT_A.id, run.id))
      expect(timeline.markers.map((m) => m.label)).toEqual(['waits for approvals', 'refund approved', 'refund denied'])
      const waitedAt = timeline.markers[0]!.at
      const decidedAt = timeline.markers[2]!.at
      const refundRows = timeline.rows.filter((r) => r.name === 'refund')
      expect(refundRows).toHaveLength(2)
      const made = refundRows.find((r) => r.bars[0]!.outcome === 'ok')!
      expect(made.bars[0]!.start).toBeGreaterThanOrEqual(decidedAt)
      expect(decidedAt).toBeGreaterThanOrEqual(waitedAt)
    })

    it('gives a denial without a reason a result that says so', async () => {
      const run = await waiting()
      const decisions = run.required_action.tool_calls.map((c: { tool_use_id: string }) => ({ tool_use_id: c.tool_use_id, approve: false }))
      const res = await approve(run.id, { decisions })
      expect(res.json().output_text).toBe('final: ok lookup {"q":"order 7"} | Not run: denied by the reviewer: no reason given | Not run: denied by the reviewer: no reason given')
    })

    it('asks approval for the tools a run lists in require_approval, and refuses a name that is not one of its tools', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'email', input: { q: 'hi' } }] }
        : { content: [{ type: 'text', text: `final: ${toolResults(request).map(resultText).join(' | ')}` }] }
      const { body: run } = await h.startRun({ input: 'mail them', tools: ['email'], require_approval: ['email'] })
      expect(run.required_action).toMatchObject({ type: 'approve_tool_calls', tool_calls: [{ name: 'email', input: { q: 'hi' } }] })
      const res = await approve(run.id, { decisions: [{ tool_use_id: run.required_action.tool_calls[0].tool_use_id, approve: true, reason: 'fine' }] })
      expect(res.json()).toMatchObject({ status: 'completed', output_text: 'final: ok email {"q":"hi"}' })
      // Without require_approval, the same tool is called at once.
      const { body: plain } = await h.startRun({ input: 'mail them', tools: ['email'] })
      expect(plain.status).toBe('completed')
      const bad = await h.startRun({ input: 'x', tools: ['email'], require_approval: ['refund'] })
      expect(bad.status).toBe(400)
      expect(bad.body.message).toMatch(/require_approval names refund, which is not one of this run's registered or MCP tools/)
    })

    it('refuses unknown or repeated ids (400), a run not waiting for approvals (409), another tenant\'s run (404), and outputs before the decisions', async () => {
      const run = await waiting()
      const [first] = run.required_action.tool_calls
      const cases: Array<[Record<string, unknown>, RegExp]> = [
        [{ decisions: [{ tool_use_id: 'toolu_unknown', approve: true }] }, /names toolu_unknown, which is not a call waiting for a decision/],
        [{ decisions: [{ tool_use_id: first.tool_use_id, approve: true }, { tool_use_id: first.tool_use_id, approve: false }] }, /more than once/]
      ]
      for (const [body, message] of cases) {
        const res = await approve(run.id, body)
        expect(res.statusCode).toBe(400)
        expect(res.json()).toMatchObject({ code: 'RUN_ERR_INVALID_APPROVALS' })
        expect(res.json().message).toMatch(message)
      }
      expect((await approve(run.id, { decisions: [] })).statusCode).toBe(400)
      expect((await approve(run.id, { decisions: [{ tool_use_id: first.tool_use_id, approve: true }] }, TENANT_B)).statusCode).toBe(404)
      const outputs = await h.app.inject({ method: 'POST', url: `/runs/${run.id}/tool_outputs`, headers: auth(TENANT_A), payload: { tool_outputs: [{ tool_use_id: first.tool_use_id, content: 'x' }] } })
      expect(outputs.statusCode).toBe(409)
      expect(outputs.json().message).toMatch(/waits for approvals first/)
      // Once decided, the same id again is not waiting any more.
      await approve(run.id, { decisions: [{ tool_use_id: first.tool_use_id, approve: true }] })
      const again = await approve(run.id, { decisions: [{ tool_use_id: first.tool_use_id, approve: true }] })
      expect(again.statusCode).toBe(400)
      const decisions = (await getRun(run.id)).required_action.tool_calls.map((c: { tool_use_id: string }) => ({ tool_use_id: c.tool_use_id, approve: true }))
      expect((await approve(run.id, { decisions })).json().status).toBe('completed')
      const late = await approve(run.id, { decisions })
      expect(late.statusCode).toBe(409)
      expect(late.json().code).toBe('RUN_ERR_NOT_WAITING')
    })

    it('takes one of two reviewers deciding at once; the other gets a 409', async () => {
      const run = await waiting()
      const decisions = run.required_action.tool_calls.map((c: { tool_use_id: string }) => ({ tool_use_id: c.tool_use_id, approve: true }))
      const [a, b] = await Promise.all([approve(run.id, { decisions, background: true }), approve(run.id, { decisions, background: true })])
      expect([a.statusCode, b.statusCode].sort()).toEqual([202, 409])
      await expect.poll(async () => (await getRun(run.id)).status).toBe('completed')
      expect((await getRun(run.id)).tool_calls).toEqual({ total: 3, errors: 0 })
    })

    it('decides approvals before asking the caller for its tools\' outputs', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'refund', input: { q: 'order 7' } }, { type: 'tool_use', name: 'confirm_with_user', input: { question: 'sure?' } }] }
        : { content: [{ type: 'text', text: `final: ${toolResults(request).map(resultText).join(' | ')}` }] }
      const run = await waiting({ client_tools: [confirm] })
      expect(run.required_action.type).toBe('approve_tool_calls')
      expect(run.required_action.tool_calls.map((c: { name: string }) => c.name)).toEqual(['refund'])
      const decided = await approve(run.id, { decisions: [{ tool_use_id: run.required_action.tool_calls[0].tool_use_id, approve: true }] })
      expect(decided.json()).toMatchObject({ status: 'requires_action', required_action: { type: 'submit_tool_outputs', tool_calls: [{ name: 'confirm_with_user' }] } })
      const answered = await h.app.inject({ method: 'POST', url: `/runs/${run.id}/tool_outputs`, headers: auth(TENANT_A), payload: { tool_outputs: [{ tool_use_id: decided.json().required_action.tool_calls[0].id, content: 'yes' }] } })
      expect(answered.json()).toMatchObject({ status: 'completed', output_text: 'final: ok refund {"q":"order 7"} | yes' })
      expect(h.model.refusals).toEqual([])
    })

    it('cancels a run waiting for approvals: calls not made are answered so, and the transcript stays whole', async () => {
      h.tools.calls.length = 0
      const run = await waiting()
      const [first] = run.required_action.tool_calls
      await approve(run.id, { decisions: [{ tool_use_id: first.tool_use_id, approve: true }] })
      const res = await h.app.inject({ method: 'POST', url: `/runs/${run.id}/cancel`, headers: auth(TENANT_A) })
      expect(res.json()).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled', required_action: null })
      const full = await getRun(run.id, '?include=messages')
      const results = full.messages.at(-1).content
      expect(results.map(resultText)).toEqual([
        'ok lookup {"q":"order 7"}',
        'Tool refund was cancelled: the run was cancelled',
        'Not run: the run was cancelled before the reviewer decided.'
      ])
      expect(full.messages.at(-2).role).toBe('assistant')
      expect(h.tools.calls.map((c) => c.body.tool)).toEqual(['lookup'])
    })

    it('fails a run whose reviewer does not decide by its deadline, answering its calls so', async () => {
      const run = await waiting({ timeout_ms: 1500 })
      await expect.poll(async () => (await getRun(run.id)).status, { timeout: 10_000 }).toBe('failed')
      const full = await getRun(run.id, '?include=messages')
      expect(full).toMatchObject({ stop_reason: 'timeout', error: { code: 'RUN_ERR_TIMEOUT' } })
      const results = full.messages.at(-1).content
      expect(results.map((r: { is_error?: boolean }) => r.is_error === true)).toEqual([false, true, true])
      expect(resultText(results[1])).toMatch(/^Not run: the run reached its timeout.* before the reviewer decided\.$/)
    })

    it('POSTs the run object, signed, to its callback URL when it waits for approvals, and again when it ends', async () => {
      const secret = (await h.app.inject({ method: 'POST', url: '/callbacks/rotate-secret', headers: auth(TENANT_A) })).json().signing_secret as string
      h.tools.on('/approval-hook', (_req, res) => { res.writeHead(204).end() })
      const run = await waiting({ callback_url: `${h.tools.url}/approval-hook` })
      await expect.poll(() => h.tools.callsTo('/approval-hook').length, { timeout: 10_000 }).toBe(1)
      const [told] = h.tools.callsTo('/approval-hook')
      expect(told!.body).toMatchObject({ id: run.id, status: 'requires_action', required_action: { type: 'approve_tool_calls' } })
      expect(told!.headers['webhook-id']).toMatch(new RegExp(`^${run.id as string}:callback:\\d+$`))
      expect(new Webhook(secret).verify(told!.raw, told!.headers as Record<string, string>)).toMatchObject({ id: run.id })
      const decisions = run.required_action.tool_calls.map((c: { tool_use_id: string }) => ({ tool_use_id: c.tool_use_id, approve: true }))
      expect((await approve(run.id, { decisions })).json().status).toBe('completed')
      await expect.poll(() => h.tools.callsTo('/approval-hook').length, { timeout: 10_000 }).toBe(2)
      const ended = h.tools.callsTo('/approval-hook')[1]!
      expect(ended.body).toMatchObject({ id: run.id, status: 'completed' })
      expect(ended.headers['webhook-id']).toBe(`${run.id as string}:callback`)
      await expect.poll(async () => (await getRun(run.id)).callback?.status, { timeout: 10_000 }).toBe('delivered')
    })

    it('streams run.requires_action, then what follows the decisions when asked to', async () => {
      const base = await h.app.listen({ port: 0, host: '127.0.0.1' })
      try {
        const started = await fetch(`${base}/runs`, {
          method: 'POST',
          headers: { ...auth(TENANT_A), 'content-type': 'application/json' },
          body: JSON.stringify({ input: 'refund?', tools: ['lookup', 'refund'], stream: true })
        })
        const first = await readEvents(started)
        expect(first.ended).toBe(true)
        const waitingEvent = first.events.at(-1)!
        expect(waitingEvent.event).toBe('run.requires_action')
        const run = waitingEvent.data
        const decisions = run.data.required_action.tool_calls.map((c: { tool_use_id: string }) => ({ tool_use_id: c.tool_use_id, approve: true }))
        const res = await fetch(`${base}/runs/${run.run_id as string}/approvals`, {
          method: 'POST',
          headers: { ...auth(TENANT_A), 'content-type': 'application/json' },
          body: JSON.stringify({ decisions, stream: true })
        })
        const { events, ended } = await readEvents(res)
        expect(ended).toBe(true)
        const stored = await h.events(run.run_id)
        const waitingAt = stored.findIndex((e) => e.type === 'run.requires_action')
        expect(events.map((e) => Number(e.id))).toEqual(stored.slice(waitingAt + 1).map((e) => e.id))
        expect(events.map((e) => e.event)).toContain('tool_call.approved')
        expect(events.at(-1)!.event).toBe('run.completed')
      } finally {
        await h.app.server.close()
      }
    })

    describe('MCP tools', () => {
      let mcp: McpTestServer
      beforeAll(async () => {
        mcp = await new McpTestServer().start()
        const res = await h.app.inject({ method: 'PUT', url: '/mcp-servers/files', headers: auth(TENANT_A), payload: { url: mcp.url, overrides: { echo: { approval: 'always' } } } })
        expect(res.statusCode, res.body).toBe(201)
      })
      afterAll(async () => mcp?.close())

      it('holds the calls of an MCP tool whose override asks for approval until they are decided', async () => {
        h.model.respond = (request) => turnNumber(request) === 1
          ? { content: [{ type: 'tool_use', name: 'files__echo', input: { q: 'hi' } }] }
          : { content: [{ type: 'text', text: `final: ${toolResults(request).map(resultText).join(' | ')}` }] }
        const { body: run } = await h.startRun({ input: 'go', tools: ['files__echo'] })
        expect(run.required_action).toMatchObject({ type: 'approve_tool_calls', tool_calls: [{ name: 'files__echo', input: { q: 'hi' } }] })
        expect(mcp.callsOf('echo')).toHaveLength(0)
        const res = await approve(run.id, { decisions: [{ tool_use_id: run.required_action.tool_calls[0].tool_use_id, approve: true }] })
        expect(res.json()).toMatchObject({ status: 'completed', output_text: 'final: echo {"q":"hi"}' })
        expect(mcp.callsOf('echo')).toHaveLength(1)
      })
    })
  })
}
