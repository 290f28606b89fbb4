import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { setTimeout as sleep } from 'node:timers/promises'
import { Webhook } from 'standardwebhooks'
import { backends, type StorageLocation } from '../support/backends.js'
import { auth, startApp, TENANT_A, TENANT_B, type StartedApp, type TestTenant } from '../support/app.js'
import { resultText, startFakeMessagesApi, toolResults, turnNumber, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { startWebhookServer, type RecordedCall, type WebhookServer } from '../support/webhook-server.js'
import { renderTimelinePage } from '../../src/runs/timeline-page.js'

// Tools that answer later (SPEC §13): a webhook answers 202, posts its result to result_url
// signed with its own secret, and the run, held by no replica meanwhile, goes on.

const accept = (_req: unknown, res: import('node:http').ServerResponse): void => {
  res.writeHead(202, { 'content-type': 'application/json' }).end('{"status":"queued"}')
}

/** Standard Webhooks headers for `payload`, signed with `secret` as a tool's own library would. */
function signed (secret: string, id: string, payload: string): Record<string, string> {
  const now = new Date()
  return { 'webhook-id': id, 'webhook-timestamp': String(Math.floor(now.getTime() / 1000)), 'webhook-signature': new Webhook(secret).sign(id, now, payload) }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`tools that answer later: ${backend.name}`, () => {
    let model: FakeMessagesApi
    let tools: WebhookServer
    let location: StorageLocation
    let replica: StartedApp
    const secrets = new Map<string, string>()
    const env = (): Record<string, string> => ({ ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-ant-test-key-000', RUN_MAX_TIMEOUT_MS: '3600000', RUN_LEASE_MS: '2000' })

    const register = async (name: string, path: string, fields: Record<string, unknown> = {}, tenant: TestTenant = TENANT_A): Promise<void> => {
      const res = await replica.app.inject({
        method: 'PUT',
        url: `/tools/${name}`,
        headers: auth(tenant),
        payload: { description: `The ${name} tool`, input_schema: { type: 'object', properties: { q: { type: 'string' } } }, url: `${tools.url}${path}`, ...fields }
      })
      expect(res.statusCode).toBe(201)
      secrets.set(`${tenant.id}/${name}`, res.json().signing_secret)
    }

    beforeAll(async () => {
      model = await startFakeMessagesApi()
      tools = await startWebhookServer()
      tools.on('/later', accept)
      location = await backend.location()
      replica = await startApp(backend, { location, env: env() })
      await register('build', '/later')
      await register('slow_build', '/later', { async_timeout_ms: 1000 })
      await register('lookup', '/ok', { effect: 'read_only' })
      await register('build', '/later', {}, TENANT_B)
    })
    afterAll(async () => {
      await replica?.close()
      await Promise.all([model?.close(), tools?.close()])
      await location?.destroy()
    })
    beforeEach(() => {
      model.refusals.length = 0
      tools.calls.length = 0
    })

    /** Turn 1 asks for `calls`; turn 2 quotes every result. */
    const plan = (...calls: Array<{ name: string, q: string }>): void => {
      model.respond = (request) => turnNumber(request) === 1
        ? { content: calls.map((c) => ({ type: 'tool_use', name: c.name, input: { q: c.q } })) }
        : { content: [{ type: 'text', text: `final: ${toolResults(request).map((r) => `${r.is_error === true ? 'ERR ' : ''}${resultText(r)}`).join(' | ')}` }] }
    }
    const start = async (body: Record<string, unknown>, tenant: TestTenant = TENANT_A) => {
      const res = await replica.app.inject({ method: 'POST', url: '/runs', headers: auth(tenant), payload: { input: 'go', ...body } })
      expect(res.statusCode).toBe(200)
      return res.json()
    }
    const getRun = async (id: string, app = replica.app) => (await app.inject({ method: 'GET', url: `/runs/${id}`, headers: auth(TENANT_A) })).json()
    const events = async (id: string) => (await replica.app.inject({ method: 'GET', url: `/runs/${id}/events?limit=100`, headers: auth(TENANT_A) })).json().data as Array<{ type: string, data: Record<string, any> }>
    const until = async <T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> => {
      for (let i = 0; ; i++) {
        const value = await read()
        if (done(value) || i > 200) return value
        await sleep(50)
      }
    }
    const settledRun = async (id: string, app = replica.app) => await until(async () => await getRun(id, app), (r) => ['completed', 'failed', 'cancelled'].includes(r.status))

    /** A result signed as a tool signs it: with `secret`, over the exact body. */
    const post = async (call: RecordedCall | { run_id: string, tool_use_id: string }, body: unknown, options: { secret?: string | null, app?: StartedApp['app'] } = {}) => {
      const target = 'body' in call ? call.body : call
      const payload = JSON.stringify(body)
      const headers: Record<string, string> = { 'content-type': 'application/json' }
      const secret = options.secret === undefined ? secrets.get(`${TENANT_A.id}/${String((call as RecordedCall).body?.tool ?? 'build')}`)! : options.secret
      if (secret !== null) Object.assign(headers, signed(secret, `${String(target.run_id)}:${String(target.tool_use_id)}:result`, payload))
      return await (options.app ?? replica.app).inject({ method: 'POST', url: `/runs/${String(target.run_id)}/tool_calls/${String(target.tool_use_id)}/result`, headers, payload })
    }

    it('leaves a call answered 202 pending: the sync request answers the run running, waiting on it, and its posted result lets the step go on', async () => {
      plan({ name: 'build', q: 'app' }, { name: 'lookup', q: 'docs' })
      const run = await start({ tools: ['build', 'lookup'], timeout_ms: 3_600_000 })
      // The lookup answered at once; the build waits, and the request did not wait for it.
      expect(run).toMatchObject({ status: 'running', steps: 0, pending_tool_calls: [{ name: 'build', tool_use_id: expect.stringMatching(/^toolu_/) }] })
      expect(Date.parse(run.pending_tool_calls[0].deadline)).toBeGreaterThan(Date.now() + 3_500_000)
      const [call] = tools.callsTo('/later')
      // Every call body carries its result_url: the scheme and host the run was created through.
      expect(call!.body.result_url).toBe(`http://localhost:80/runs/${run.id}/tool_calls/${call!.body.tool_use_id}/result`)
      expect(tools.callsTo('/ok')[0]!.body.result_url).toMatch(/\/tool_calls\/toolu_\w+\/result$/)
      expect((await events(run.id)).find((e) => e.type === 'tool_call.accepted')!.data).toMatchObject({ step: 1, name: 'build', status: 202, tool_use_id: call!.body.tool_use_id })

      await sleep(300)
      const res = await post(call!, { content: 'built v2' })
      expect(res.statusCode).toBe(204)
      const done = await settledRun(run.id)
      expect(done).toMatchObject({ status: 'completed', steps: 2, pending_tool_calls: null, tool_calls: { total: 2, errors: 0 } })
      expect(done.output_text).toBe('final: built v2 | ok lookup {"q":"docs"}')
      expect(model.refusals).toEqual([])
      const stored = await events(run.id)
      expect(stored.filter((e) => e.type === 'step.started')).toHaveLength(2)
      expect(stored.filter((e) => e.type === 'run.resumed')).toHaveLength(0)
      expect(stored.find((e) => e.type === 'tool_call.completed' && e.data.name === 'build')!.data).toMatchObject({ is_error: false, answered_later: true, content: 'built v2' })
      // The tool was called once: a result posted later is never asked for again.
      expect(tools.callsTo('/later')).toHaveLength(1)
      // The timeline draws the request, then the wait for its result apart: waiting is not the tool running.
      const timeline = await replica.app.engine.timeline(await replica.app.engine.get(TENANT_A.id, run.id))
      const build = timeline.rows.find((r) => r.name === 'build')!
      expect(build.bars.map((b) => [b.outcome, b.wait === true])).toEqual([['accepted', false], ['ok', true]])
      expect(build.bars[1]!.end - build.bars[1]!.start).toBeGreaterThanOrEqual(250)
      expect(timeline.summary.toolBusyMs).toBeLessThan(250)
      expect(renderTimelinePage(timeline)).toContain('waiting for its result (posted later)')
    })

    it('waits for every pending call of a step: the first result stores its event and the run waits on for the other', async () => {
      plan({ name: 'build', q: 'a' }, { name: 'lookup', q: 'b' }, { name: 'build', q: 'c' })
      const run = await start({ tools: ['build', 'lookup'] })
      expect(run.pending_tool_calls).toHaveLength(2)
      const [first, second] = tools.callsTo('/later')
      expect((await post(first!, { content: [{ type: 'text', text: 'a done' }] })).statusCode).toBe(204)
      const between = await until(async () => await getRun(run.id), (r) => r.pending_tool_calls?.length === 1)
      expect(between).toMatchObject({ status: 'running', steps: 0, pending_tool_calls: [{ tool_use_id: second!.body.tool_use_id }] })
      expect((await events(run.id)).filter((e) => e.type === 'tool_call.completed' && e.data.answered_later === true)).toHaveLength(1)
      expect((await post(second!, { content: 'c failed', is_error: true })).statusCode).toBe(204)
      const done = await settledRun(run.id)
      expect(done.output_text).toBe('final: a done | ok lookup {"q":"b"} | ERR c failed')
      expect(done.tool_calls).toEqual({ total: 3, errors: 1 })
      expect(model.refusals).toEqual([])
    })

    it('takes a result posted the moment the tool answered 202, before the step ended', async () => {
      tools.on('/at-once', (_req, res, call) => {
        accept(_req, res)
        setImmediate(() => { post(call, { content: 'instant' }, { secret: secrets.get(`${TENANT_A.id}/quick`)! }).catch(() => {}) })
      })
      await register('quick', '/at-once')
      plan({ name: 'quick', q: 'x' })
      const run = await start({ tools: ['quick'] })
      const done = run.status === 'completed' ? run : await settledRun(run.id)
      expect(done).toMatchObject({ status: 'completed', output_text: 'final: instant' })
    })

    it('refuses a result without a valid signature of the call\'s own tool (401), for an unknown call (404), a second one (409), and one not shaped as a tool answer (400)', async () => {
      plan({ name: 'build', q: 'x' })
      const run = await start({ tools: ['build'] })
      const [call] = tools.callsTo('/later')
      expect((await post(call!, { content: 'x' }, { secret: null })).json()).toMatchObject({ statusCode: 401, code: 'TOOL_RESULT_ERR_BAD_SIGNATURE' })
      // Signed by another tool (of this tenant, or another tenant's tool of the same name): refused.
      expect((await post(call!, { content: 'x' }, { secret: secrets.get(`${TENANT_A.id}/lookup`)! })).statusCode).toBe(401)
      expect((await post(call!, { content: 'x' }, { secret: secrets.get(`${TENANT_B.id}/build`)! })).statusCode).toBe(401)
      // A signature over another body is no signature of this one.
      const id = `${run.id}:${String(call!.body.tool_use_id)}:result`
      const other = signed(secrets.get(`${TENANT_A.id}/build`)!, id, JSON.stringify({ content: 'a' }))
      const forged = await replica.app.inject({ method: 'POST', url: `/runs/${run.id}/tool_calls/${String(call!.body.tool_use_id)}/result`, headers: { ...other, 'content-type': 'application/json' }, payload: JSON.stringify({ content: 'b' }) })
      expect(forged.statusCode).toBe(401)
      // Rightly signed, but for another message id: a result signed for one call is no result of another.
      const payload = JSON.stringify({ content: 'b' })
      const elsewhere = await replica.app.inject({ method: 'POST', url: `/runs/${run.id}/tool_calls/${String(call!.body.tool_use_id)}/result`, headers: { ...signed(secrets.get(`${TENANT_A.id}/build`)!, `${run.id}:toolu_other:result`, payload), 'content-type': 'application/json' }, payload })
      expect(elsewhere.json()).toMatchObject({ statusCode: 401, code: 'TOOL_RESULT_ERR_BAD_SIGNATURE' })
      expect(elsewhere.json().message).toContain(`webhook-id "${id}"`)
      expect((await post({ run_id: run.id, tool_use_id: 'toolu_nope' }, { content: 'x' })).json()).toMatchObject({ statusCode: 404, code: 'TOOL_RESULT_ERR_NOT_FOUND' })
      expect((await post({ run_id: 'run_00000000000000000000000000', tool_use_id: String(call!.body.tool_use_id) }, { content: 'x' })).statusCode).toBe(404)
      expect((await post(call!, { content: [{ type: 'video', url: 'x' }] })).json()).toMatchObject({ statusCode: 400, code: 'TOOL_RESULT_ERR_INVALID' })
      expect((await post(call!, { content: 'x', extra: 1 })).statusCode).toBe(400)
      // Still waiting after all that.
      expect((await getRun(run.id)).pending_tool_calls).toHaveLength(1)
      expect((await post(call!, { content: 'first' })).statusCode).toBe(204)
      expect((await post(call!, { content: 'second' })).json()).toMatchObject({ statusCode: 409, code: 'TOOL_RESULT_ERR_NOT_PENDING' })
      expect((await settledRun(run.id)).output_text).toBe('final: first')
    })

    it('takes one of two results posted at the same moment (204), refuses the other (409), and goes on once, with the one it took', async () => {
      plan({ name: 'build', q: 'x' })
      const run = await start({ tools: ['build'] })
      const [call] = tools.callsTo('/later')
      const replies = await Promise.all([post(call!, { content: 'one' }), post(call!, { content: 'two' })])
      expect(replies.map((r) => r.statusCode).sort()).toEqual([204, 409])
      const loser = replies.find((r) => r.statusCode === 409)!.json()
      expect(loser.code).toBe('TOOL_RESULT_ERR_NOT_PENDING')
      const winner = replies[0]!.statusCode === 204 ? 'one' : 'two'
      const done = await settledRun(run.id)
      expect(done).toMatchObject({ status: 'completed', steps: 2, output_text: `final: ${winner}` })
      const stored = await events(run.id)
      expect(stored.filter((e) => e.type === 'step.started')).toHaveLength(2)
      expect(stored.filter((e) => e.type === 'tool_call.completed' && e.data.answered_later === true).map((e) => e.data.content)).toEqual([winner])
      expect(model.refusals).toEqual([])
    })

    it('takes the same result posted again (a retry whose answer was lost) as the first, and the run goes on once with it', async () => {
      plan({ name: 'build', q: 'x' })
      const run = await start({ tools: ['build'] })
      const [call] = tools.callsTo('/later')
      const replies = await Promise.all([post(call!, { content: 'same' }), post(call!, { content: 'same' })])
      expect(replies.map((r) => r.statusCode)).toEqual([204, 204])
      expect((await settledRun(run.id)).output_text).toBe('final: same')
      expect((await post(call!, { content: 'same' })).statusCode).toBe(204)
      expect((await post(call!, { content: 'same', is_error: true })).statusCode).toBe(409)
      const stored = await events(run.id)
      expect(stored.filter((e) => e.type === 'step.started')).toHaveLength(2)
      expect(stored.filter((e) => e.type === 'tool_call.completed' && e.data.answered_later === true)).toHaveLength(1)
    })

    it('answers bad input on the result route with a 4xx that says what is wrong, and the call still waits', async () => {
      plan({ name: 'build', q: 'x' })
      const run = await start({ tools: ['build'] })
      const [call] = tools.callsTo('/later')
      const url = `/runs/${run.id}/tool_calls/${String(call!.body.tool_use_id)}/result`
      const secret = secrets.get(`${TENANT_A.id}/build`)!
      const send = async (payload: string, headers: Record<string, string>, target = url) =>
        await replica.app.inject({ method: 'POST', url: target, headers: { 'content-type': 'application/json', ...headers }, payload })
      const malformed = await send('{"content": ', signed(secret, 'bad-json', '{"content": '))
      expect(malformed.json()).toMatchObject({ statusCode: 400, code: 'REQUEST_ERR_INVALID_JSON' })
      // Past TOOL_MAX_RESPONSE_BYTES: refused before it is read whole.
      const big = JSON.stringify({ content: 'x'.repeat(1_100_000) })
      expect((await send(big, signed(secret, 'big', big))).statusCode).toBe(413)
      // A signature made six minutes ago, and one whose headers are incomplete.
      const body = JSON.stringify({ content: 'late' })
      const old = new Date(Date.now() - 6 * 60_000)
      const id = `${run.id}:${String(call!.body.tool_use_id)}:result`
      const stale = { 'webhook-id': id, 'webhook-timestamp': String(Math.floor(old.getTime() / 1000)), 'webhook-signature': new Webhook(secret).sign(id, old, body) }
      expect((await send(body, stale)).json()).toMatchObject({ statusCode: 401, code: 'TOOL_RESULT_ERR_BAD_SIGNATURE' })
      const { 'webhook-id': _id, ...noId } = signed(secret, id, body)
      expect((await send(body, noId)).statusCode).toBe(401)
      // A run id of another shape (400), and a call id longer than the router takes (414): refused before anything is looked up.
      expect((await send(body, signed(secret, 'shape', body), `/runs/run_1/tool_calls/${String(call!.body.tool_use_id)}/result`)).json()).toMatchObject({ statusCode: 400 })
      expect((await send(body, signed(secret, 'long', body), `/runs/${run.id}/tool_calls/${'t'.repeat(257)}/result`)).statusCode).toBe(414)
      // Not a JSON object at all.
      expect((await replica.app.inject({ method: 'POST', url, headers: { 'content-type': 'text/plain', ...signed(secret, 'text', 'done') }, payload: 'done' })).json()).toMatchObject({ statusCode: 400, code: 'REQUEST_ERR_VALIDATION' })
      expect((await getRun(run.id)).pending_tool_calls).toHaveLength(1)
      expect((await post(call!, { content: 'good' })).statusCode).toBe(204)
      expect((await settledRun(run.id)).output_text).toBe('final: good')
    })

    it('limits the posts to one run\'s result_urls (429 past 600 a minute on a replica), signed or not', async () => {
      plan({ name: 'build', q: 'x' })
      const run = await start({ tools: ['build'] })
      const [call] = tools.callsTo('/later')
      const statuses: number[] = []
      for (let i = 0; i < 601; i++) statuses.push((await post(call!, { content: 'x' }, { secret: null })).statusCode)
      expect(statuses.slice(0, 600).every((s) => s === 401)).toBe(true)
      const limited = await post(call!, { content: 'x' })
      expect(limited.json()).toMatchObject({ statusCode: 429, code: 'REQUEST_ERR_RATE_LIMITED' })
      expect(statuses[600]).toBe(429)
      // Another run's results are counted apart.
      plan({ name: 'build', q: 'y' })
      const other = await start({ tools: ['build'] })
      expect((await post(tools.callsTo('/later').at(-1)!, { content: 'y' })).statusCode).toBe(204)
      expect((await settledRun(other.id)).output_text).toBe('final: y')
      expect((await getRun(run.id)).pending_tool_calls).toHaveLength(1)
    })

    it('takes a result signed with the previous secret during a rotation', async () => {
      await register('rotating', '/later')
      const old = secrets.get(`${TENANT_A.id}/rotating`)!
      const rotated = await replica.app.inject({ method: 'POST', url: '/tools/rotating/rotate-secret', headers: auth(TENANT_A) })
      expect(rotated.statusCode).toBe(200)
      plan({ name: 'rotating', q: 'x' }, { name: 'rotating', q: 'y' })
      const run = await start({ tools: ['rotating'] })
      const [a, b] = tools.callsTo('/later')
      expect((await post(a!, { content: 'old' }, { secret: old })).statusCode).toBe(204)
      expect((await post(b!, { content: 'new' }, { secret: rotated.json().signing_secret })).statusCode).toBe(204)
      expect((await settledRun(run.id)).output_text).toBe('final: old | new')
    })

    it('gives a call with no result within async_timeout_ms an is_error result, with no replica holding the run meanwhile; a late result is a 409', async () => {
      plan({ name: 'slow_build', q: 'x' }, { name: 'lookup', q: 'y' })
      const run = await start({ tools: ['slow_build', 'lookup'] })
      expect(run.pending_tool_calls).toHaveLength(1)
      expect(replica.app.engine.driving).toBe(0)
      const done = await settledRun(run.id)
      expect(done.status).toBe('completed')
      expect(done.output_text).toBe('final: ERR Tool slow_build answered 202 Accepted but posted no result within its async_timeout_ms (1000 ms) | ok lookup {"q":"y"}')
      const late = await post(tools.callsTo('/later')[0]!, { content: 'too late' }, { secret: secrets.get(`${TENANT_A.id}/slow_build`)! })
      expect(late.json()).toMatchObject({ statusCode: 409, code: 'TOOL_RESULT_ERR_NOT_PENDING' })
      expect((await events(run.id)).find((e) => e.type === 'tool_call.completed' && e.data.name === 'slow_build')!.data).toMatchObject({ outcome: 'timeout', is_error: true })
    })

    it('ends a run whose deadline comes while a call is pending: failed (timeout), the call answered', async () => {
      plan({ name: 'build', q: 'x' })
      const run = await start({ tools: ['build'], timeout_ms: 1500 })
      expect(Date.parse(run.pending_tool_calls[0].deadline)).toBeLessThanOrEqual(Date.parse(run.created_at) + 1500)
      const done = await settledRun(run.id)
      expect(done).toMatchObject({ status: 'failed', stop_reason: 'timeout', tool_calls: { total: 1, errors: 1 } })
      expect((await post(tools.callsTo('/later')[0]!, { content: 'late' })).statusCode).toBe(409)
    })

    it('cancels a run waiting on a pending call: the call gets a "cancelled" result and a late result a 409', async () => {
      plan({ name: 'build', q: 'x' })
      const run = await start({ tools: ['build'] })
      const cancelled = await replica.app.inject({ method: 'POST', url: `/runs/${run.id}/cancel`, headers: auth(TENANT_A) })
      expect(cancelled.json()).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled', pending_tool_calls: null })
      const late = await post(tools.callsTo('/later')[0]!, { content: 'late' })
      expect(late.json()).toMatchObject({ statusCode: 409, code: 'TOOL_RESULT_ERR_NOT_PENDING' })
      const completed = (await events(run.id)).find((e) => e.type === 'tool_call.completed')!
      expect(completed.data).toMatchObject({ is_error: true, outcome: 'cancelled', content: 'Tool build was cancelled: the run was cancelled before its result came' })
      // The stored transcript stays whole: every tool_use has its result.
      const messages = (await replica.app.inject({ method: 'GET', url: `/runs/${run.id}?include=messages`, headers: auth(TENANT_A) })).json().messages
      expect(messages.at(-1).content[0]).toMatchObject({ type: 'tool_result', is_error: true })
    })

    it('a result racing a cancel: the run ends once, the result taken (204) or refused (409), never a 5xx', async () => {
      for (let i = 0; i < 5; i++) {
        plan({ name: 'build', q: `x${i}` })
        tools.calls.length = 0
        const run = await start({ tools: ['build'] })
        const [posted, cancelled] = await Promise.all([
          post(tools.callsTo('/later')[0]!, { content: 'raced' }),
          replica.app.inject({ method: 'POST', url: `/runs/${run.id}/cancel`, headers: auth(TENANT_A) })
        ])
        expect([204, 409]).toContain(posted.statusCode)
        const done = await settledRun(run.id)
        const stored = await events(run.id)
        expect(stored.filter((e) => ['run.cancelled', 'run.completed', 'run.failed'].includes(e.type))).toHaveLength(1)
        expect(stored.filter((e) => e.type === 'tool_call.completed')).toHaveLength(1)
        expect(done.pending_tool_calls).toBeNull()
        if (done.status === 'completed') {
          // The result came first and the run went on with it; the cancel found it ended.
          expect(posted.statusCode).toBe(204)
          expect(done.output_text).toBe('final: raced')
        } else {
          expect(done.status).toBe('cancelled')
          expect(cancelled.statusCode).toBe(200)
          expect(stored.filter((e) => e.type === 'step.started')).toHaveLength(1)
        }
      }
    })

    it('answers a 202 from a batch_tool invocation as an error: answering later is for calls of the model\'s own', async () => {
      model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'batch_tool', input: { invocations: [{ name: 'build', arguments: '{"q":"x"}' }, { name: 'lookup', arguments: '{"q":"y"}' }] } }] }
        : { content: [{ type: 'text', text: `final: ${toolResults(request).map(resultText).join(' | ')}` }] }
      const run = await start({ tools: ['build', 'lookup'], batch_tool: true })
      expect(run.status).toBe('completed')
      expect(tools.callsTo('/later')[0]!.body.result_url).toBeUndefined()
      expect(run.output_text).toMatch(/build answered 202 Accepted, but this call cannot be answered later \(it was made inside batch_tool/)
    })

    if (backend.name === 'postgres') {
      it('goes on, exactly once, on the replica that received the result, while the one that started the run holds nothing', async () => {
        const other = await startApp(backend, { location, env: env() })
        try {
          plan({ name: 'build', q: 'x' }, { name: 'build', q: 'y' })
          const run = await start({ tools: ['build'] })
          const [a, b] = tools.callsTo('/later')
          // One result to each replica, at once: the run goes on once, on one of them.
          const [ra, rb] = await Promise.all([post(a!, { content: 'A' }), post(b!, { content: 'B' }, { app: other.app })])
          expect([ra.statusCode, rb.statusCode]).toEqual([204, 204])
          const done = await settledRun(run.id, other.app)
          expect(done.output_text).toBe('final: A | B')
          const stored = await events(run.id)
          expect(stored.filter((e) => e.type === 'step.started')).toHaveLength(2)
          expect(stored.filter((e) => e.type === 'tool_call.completed')).toHaveLength(2)
          expect(stored.filter((e) => e.type === 'run.completed')).toHaveLength(1)
          expect(model.refusals).toEqual([])
        } finally {
          await other.close()
        }
      })
    }
  })
}
