import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { backends, type Backend } from '../support/backends.js'
import { auth, startApp, TENANT_A, TENANT_B, type StartedApp } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { startFakeMessagesApi, turnNumber, type RecordedRequest, type Turn } from '../support/fake-messages-api.js'
import { startWebhookServer } from '../support/webhook-server.js'

// Claude Sonnet 4.5: $3 input, $15 output, $3.75 and $6 for 5-minute and 1-hour cache writes,
// $0.30 cache reads, per million tokens.
const MODEL = 'claude-sonnet-4-5'
/** Every call of the looping script: 1000 input and 100 output tokens, $0.0030 + $0.0015. */
const CALL_USAGE = { input_tokens: 1000, output_tokens: 100, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 }
const CALL_USD = 0.0045
const METRICS_TOKEN = 'metrics-token-0123456789'

/** A model that never ends its turn: it asks for `lookup` every time, at CALL_USAGE. */
function looping (): Turn {
  return { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'more' } }], usage: CALL_USAGE }
}

/** The run once it is final, polled (background runs). */
async function finalRun (app: StartedApp['app'], id: string, tenant = TENANT_A): Promise<Record<string, any>> {
  for (;;) {
    const run = (await app.inject({ method: 'GET', url: `/runs/${id}`, headers: auth(tenant) })).json()
    if (['completed', 'failed', 'cancelled'].includes(run.status)) return run
    await sleep(20)
  }
}

async function usage (app: StartedApp['app'], query: string, tenant = TENANT_A): Promise<Record<string, any>> {
  const res = await app.inject({ method: 'GET', url: `/usage?${query}`, headers: auth(tenant) })
  expect(res.statusCode, res.body).toBe(200)
  return res.json()
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`cost and budgets: ${backend.name}`, () => {
    let h: Harness

    beforeAll(async () => {
      h = await startHarness(backend, { env: { DEFAULT_MODEL: MODEL, METRICS_TOKEN } })
      await h.registerTool('lookup', '/ok', { effect: 'read_only' })
      await h.registerTool('broken', '/status/500')
      await h.registerTool('lookup', '/ok', { effect: 'read_only' }, TENANT_B)
    })
    afterAll(async () => h?.close())
    afterEach(() => { expect(h.model.refusals).toEqual([]) })

    it('costs a scripted run exactly what its usage comes to at the table\'s prices, and GET /usage and the metrics agree', async () => {
      h.model.respond = (request: RecordedRequest): Turn => {
        switch (turnNumber(request)) {
          case 1:
            // 2000 × $3 + 300 × $15 + 600 × $3.75 + 400 × $6 = $0.01515
            return { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'a' } }], usage: { input_tokens: 2000, output_tokens: 300, cache_creation_input_tokens: 1000, cache_creation: { ephemeral_5m_input_tokens: 600, ephemeral_1h_input_tokens: 400 }, cache_read_input_tokens: 0 } }
          case 2:
            // 500 × $3 + 200 × $15 + 3000 × $0.30 = $0.0054
            return { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'b' } }, { type: 'tool_use', name: 'broken', input: { q: 'c' } }], usage: { input_tokens: 500, output_tokens: 200, cache_creation_input_tokens: 0, cache_read_input_tokens: 3000 } }
          default:
            // 800 × $3 + 50 × $15 + 3400 × $0.30 + 200 × $3.75 = $0.00492
            return { content: [{ type: 'text', text: 'done' }], usage: { input_tokens: 800, output_tokens: 50, cache_creation_input_tokens: 200, cache_read_input_tokens: 3400 } }
        }
      }
      const before = await usage(h.app, 'group_by=model')
      const { status, body: run } = await h.startRun({ input: 'look it up', tools: ['lookup', 'broken'] })
      expect(status).toBe(200)
      expect(run).toMatchObject({ status: 'completed', stop_reason: 'end_turn', steps: 3 })
      expect(run.usage).toEqual({
        input_tokens: 3300,
        output_tokens: 550,
        cache_creation_input_tokens: 1200,
        cache_creation: { ephemeral_5m_input_tokens: 800, ephemeral_1h_input_tokens: 400 },
        cache_read_input_tokens: 6400,
        cost_usd: 0.02547
      })
      // The run read back says the same.
      expect((await h.app.inject({ method: 'GET', url: `/runs/${run.id}`, headers: auth(TENANT_A) })).json().usage).toEqual(run.usage)

      const after = await usage(h.app, 'group_by=model')
      const model = after.data.find((d: { key: string }) => d.key === MODEL)
      const earlier = before.data.find((d: { key: string }) => d.key === MODEL) ?? { cost_usd: 0, model_calls: 0, tool_calls: 0, errors: 0 }
      expect(Math.round((model.cost_usd - earlier.cost_usd) * 1e9) / 1e9).toBe(0.02547)
      expect(model.model_calls - earlier.model_calls).toBe(3)
      expect(model.tool_calls - earlier.tool_calls).toBe(3)
      expect(model.errors - earlier.errors).toBe(1)

      const byTool = await usage(h.app, 'group_by=tool')
      expect(byTool.data.find((d: { key: string }) => d.key === 'broken')).toMatchObject({ tool_calls: 1, errors: 1, cost_usd: 0, input_tokens: 0 })

      const metrics = await h.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
      const cost = /switchboard_tenant_cost_usd_total\{tenant="acme",model="claude-sonnet-4-5"\} ([\d.e-]+)/.exec(metrics.body)
      expect(Number(cost?.[1])).toBeGreaterThanOrEqual(0.02547 - 1e-12)
      expect(metrics.body).toMatch(/switchboard_tenant_tokens_total\{tenant="acme",model="claude-sonnet-4-5",type="cache_write_1h"\} 400/)
    })

    it('has no cost for a model without a price, and refuses a budget in USD for one', async () => {
      h.model.respond = () => ({ content: [{ type: 'text', text: 'hi' }] })
      const { body: run } = await h.startRun({ input: 'hello', model: 'claude-unpriced-9' })
      expect(run.status).toBe('completed')
      expect(run.usage.cost_usd).toBeNull()
      expect(run.usage.input_tokens).toBeGreaterThan(0)
      const refused = await h.startRun({ input: 'hello', model: 'claude-unpriced-9', budget: { max_cost_usd: 1 } })
      expect(refused.status).toBe(400)
      expect(refused.body.code).toBe('RUN_ERR_INVALID_REQUEST')
      expect(refused.body.message).toMatch(/budget.max_cost_usd needs a model with a price/)
      // A token budget needs no price.
      expect((await h.startRun({ input: 'hello', model: 'claude-unpriced-9', budget: { max_output_tokens: 1000 } })).body.status).toBe('completed')
    })

    it('stops a run whose budget cannot afford its next call: every tool_use answered, completed with budget_exhausted', async () => {
      h.model.respond = looping
      const requestsBefore = h.model.requests.length
      const { body: run } = await h.startRun({ input: 'loop', tools: ['lookup'], max_steps: 50, budget: { max_cost_usd: 0.02 } })
      // Four calls ($0.018) fit; a fifth would pass $0.02 on its estimate alone.
      expect(run).toMatchObject({ status: 'completed', stop_reason: 'budget_exhausted', steps: 4, error: null })
      expect(run.usage.cost_usd).toBe(0.018)
      expect(h.model.requests.length - requestsBefore).toBe(4)

      const events = await h.events(run.id)
      const warnings = events.filter((e) => e.type === 'run.budget_warning')
      // 80% of $0.02 is crossed by the fourth call ($0.0135 to $0.018).
      expect(warnings.map((e) => e.data)).toEqual([{ step: 4, limit: 'max_cost_usd', spent: 0.018, max: 0.02, share: 0.9 }])
      expect(events.find((e) => e.type === 'run.budget_exhausted')?.data).toMatchObject({ step: 5, scope: 'run', limit: 'max_cost_usd', spent: 0.018, max: 0.02 })
      expect(events.filter((e) => e.type === 'step.started')).toHaveLength(4)

      // The stored transcript ends with the results of the last step's calls: nothing dangles.
      const messages = (await h.app.inject({ method: 'GET', url: `/runs/${run.id}?include=messages`, headers: auth(TENANT_A) })).json().messages
      const last = messages[messages.length - 1]
      expect(last.role).toBe('user')
      expect(last.content.map((b: { type: string }) => b.type)).toEqual(['tool_result'])
    })

    it('stops at a budget of output tokens before the call that would pass it', async () => {
      h.model.respond = looping
      const { body: run } = await h.startRun({ input: 'loop', tools: ['lookup'], max_steps: 50, budget: { max_output_tokens: 250 } })
      // 100 output tokens a call: a third call, estimated at 100 more, would pass 250.
      expect(run).toMatchObject({ status: 'completed', stop_reason: 'budget_exhausted', steps: 2 })
      expect(run.usage.output_tokens).toBe(200)
      const events = await h.events(run.id)
      expect(events.find((e) => e.type === 'run.budget_warning')?.data).toMatchObject({ step: 2, limit: 'max_output_tokens', spent: 200, max: 250 })
    })

    it('refuses a budget that is not one', async () => {
      for (const budget of [{ max_cost_usd: 0 }, { max_output_tokens: 0 }, { max_input_tokens: 1.5 }, { max_dollars: 5 }]) {
        const res = await h.startRun({ input: 'x', budget })
        expect(res.status, JSON.stringify(budget)).toBe(400)
      }
    })

    it('keeps each tenant\'s usage its own', async () => {
      h.model.respond = looping
      const { body: run } = await h.startRun({ input: 'loop', tools: ['lookup'], max_steps: 2 }, TENANT_B)
      expect(run).toMatchObject({ status: 'completed', stop_reason: 'max_steps' })
      const b = await usage(h.app, 'group_by=day', TENANT_B)
      expect(b.total).toMatchObject({ runs: 1, model_calls: 2, tool_calls: 2, input_tokens: 2000, output_tokens: 200, cost_usd: 0.009 })
      const a = await usage(h.app, 'group_by=tool')
      expect(a.total.runs).toBeGreaterThan(1)
      const other = await usage(h.app, 'group_by=tool', TENANT_B)
      expect(other.data).toEqual([{ key: 'lookup', ...other.total }])
    })
  })

  describe.skipIf(backend.skip)(`tenant budgets: ${backend.name}`, () => {
    let h: Harness
    // A day's budget for acme only; globex has none.
    const LIMIT = 0.05

    beforeAll(async () => {
      h = await startHarness(backend, { env: { DEFAULT_MODEL: MODEL, TENANT_BUDGETS: `${TENANT_A.id}:${LIMIT}usd/day` } })
      await h.registerTool('lookup', '/delay/5', { effect: 'read_only' })
      await h.registerTool('lookup', '/ok', { effect: 'read_only' }, TENANT_B)
      h.model.respond = looping
    })
    afterAll(async () => h?.close())

    it('stops runs of a tenant at once when together they reach its budget, overspending it by one call per run at most; then refuses creates with 429 until the day ends', async () => {
      const runs = 5
      const started = await Promise.all(Array.from({ length: runs }, async (_, i) => await h.startRun({ input: `loop ${i}`, tools: ['lookup'], max_steps: 100, background: true })))
      for (const s of started) expect(s.status).toBe(202)
      const ended = await Promise.all(started.map(async (s) => await finalRun(h.app, s.body.id)))
      for (const run of ended) expect(run).toMatchObject({ status: 'completed', stop_reason: 'budget_exhausted' })
      const spent = (await usage(h.app, 'group_by=day')).total.cost_usd
      // Each run stops only once what is stored, with its next call, would pass the budget...
      expect(spent).toBeGreaterThan(LIMIT - 2 * CALL_USD)
      // ...and runs that checked at the same moment overspend it by one call each at the most.
      expect(spent).toBeLessThanOrEqual(LIMIT + runs * CALL_USD)
      expect(ended.reduce((sum, run) => sum + run.usage.cost_usd, 0)).toBeCloseTo(spent, 9)
      const events = await h.events(ended[0]!.id)
      expect(events.find((e) => e.type === 'run.budget_exhausted')?.data).toMatchObject({ scope: 'tenant', limit: 'day', max: LIMIT })

      // A run's first call is estimated from its request alone: a small one still fits, and
      // costs more than its estimate, taking the tenant past its budget.
      let created: Awaited<ReturnType<Harness['startRun']>>
      for (;;) {
        created = await h.startRun({ input: 'one more', tools: ['lookup'], max_steps: 100 })
        if (created.status === 429) break
        expect(created.body).toMatchObject({ status: 'completed', stop_reason: 'budget_exhausted' })
      }
      expect(created.body).toMatchObject({ statusCode: 429, code: 'RUN_ERR_BUDGET_EXHAUSTED' })
      expect(created.body.message).toMatch(/budget of \$0.05 per day/)
      const retryAfter = Number(created.headers['retry-after'])
      const midnight = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate() + 1)
      expect(retryAfter).toBeGreaterThan(0)
      expect(Math.abs(retryAfter - (midnight - Date.now()) / 1000)).toBeLessThan(60)
      expect((await usage(h.app, 'group_by=day')).total.cost_usd).toBeGreaterThanOrEqual(LIMIT)

      // Another tenant is not held to acme's budget.
      const other = await h.startRun({ input: 'loop', tools: ['lookup'], max_steps: 3 }, TENANT_B)
      expect(other.body).toMatchObject({ status: 'completed', stop_reason: 'max_steps' })
    })
  })

  describe.skipIf(backend.skip)(`a run's budget across a restart: ${backend.name}`, () => {
    it('a replica that takes the run over mid-step counts what was spent before, once, and keeps to the same budget', async () => {
      await restartMidRun(backend)
    })
  })
}

async function restartMidRun (backend: Backend): Promise<void> {
  const model = await startFakeMessagesApi(looping)
  const tools = await startWebhookServer()
  const location = await backend.location()
  // The third call of the tool hangs until the first replica is gone.
  let held = true
  tools.on('/gate', (_req, res) => {
    if (tools.calls.length >= 3 && held) return
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ content: 'ok' }))
  })
  const env = { ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-ant-test-key-000', DEFAULT_MODEL: MODEL, SHUTDOWN_GRACE_MS: '100' }
  let second: StartedApp | undefined
  try {
    const first = await startApp(backend, { location, env })
    const put = await first.app.inject({ method: 'PUT', url: '/tools/lookup', headers: auth(TENANT_A), payload: { description: 'Look up', input_schema: { type: 'object' }, url: `${tools.url}/gate`, effect: 'read_only' } })
    expect(put.statusCode).toBe(201)
    const created = await first.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'loop', tools: ['lookup'], max_steps: 50, budget: { max_cost_usd: 0.02 }, background: true } })
    const id = created.json().id as string
    while (tools.calls.length < 3) await sleep(10)
    await first.app.close()
    held = false

    second = await startApp(backend, { location, env })
    const run = await finalRun(second.app, id)
    // The same four calls as without the restart: the step in flight was taken over from its
    // stored answer (the model was not asked again), and its cost counted once.
    expect(run).toMatchObject({ status: 'completed', stop_reason: 'budget_exhausted', steps: 4 })
    expect(run.usage.cost_usd).toBe(0.018)
    expect(model.requests).toHaveLength(4)
    expect(model.refusals).toEqual([])
    const report = await usage(second.app, 'group_by=model')
    expect(report.total).toMatchObject({ runs: 1, model_calls: 4, cost_usd: 0.018 })
  } finally {
    await second?.app.close()
    await location.destroy()
    await Promise.all([model.close(), tools.close()])
  }
}
