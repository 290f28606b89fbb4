import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../../support/backends.js'
import { auth, TENANT_A, TENANT_B, type TestTenant } from '../../support/app.js'
import { startHarness, type Harness } from '../../support/harness.js'
import { resultText, toolResults, turnNumber, type RecordedRequest } from '../../support/fake-messages-api.js'
import { HealthToolServer } from './tool-server.js'

/** The model asks for `calls` at once, then ends its turn. */
function ask (calls: Array<{ name: string, input: unknown }>) {
  return (request: RecordedRequest) => turnNumber(request) === 1
    ? { content: calls.map((c) => ({ type: 'tool_use' as const, ...c })) }
    : { content: [{ type: 'text' as const, text: 'done' }] }
}

const METRICS_TOKEN = 'metrics-token-0123456789abcdef'

for (const backend of backends) {
  describe.skipIf(backend.skip)(`tool health: ${backend.name}`, () => {
    let h: Harness
    let server: HealthToolServer

    beforeAll(async () => {
      server = await new HealthToolServer().start()
      h = await startHarness(backend, { env: { METRICS_TOKEN } })
    })
    afterAll(async () => {
      await h?.close()
      await server?.close()
    })

    async function register (name: string, fields: Record<string, unknown>, tenant: TestTenant = TENANT_A) {
      return await h.app.inject({
        method: 'PUT',
        url: `/tools/${name}`,
        headers: auth(tenant),
        payload: { description: `The ${name} tool`, input_schema: { type: 'object' }, url: `${server.url}/${name}`, max_attempts: 1, ...fields }
      })
    }

    /** One run whose single step asks for `calls`; answers its results (in order) and its completed events. */
    async function run (calls: Array<{ name: string, input?: unknown }>, tenant: TestTenant = TENANT_A) {
      h.model.respond = ask(calls.map((c) => ({ name: c.name, input: c.input ?? {} })))
      const { body } = await h.startRun({ input: 'go', tools: [...new Set(calls.map((c) => c.name))] }, tenant)
      expect(body.status, JSON.stringify(body.error)).toBe('completed')
      const last = h.model.requests[h.model.requests.length - 1]!
      const events = await h.events(body.id, tenant)
      const completed = events.filter((e) => e.type === 'tool_call.completed')
      const byId = new Map(completed.map((e) => [e.data.tool_use_id as string, e.data]))
      return toolResults(last).map((r) => ({ text: resultText(r), isError: r.is_error === true, event: byId.get(r.tool_use_id)! }))
    }

    async function circuitOf (name: string, tenant: TestTenant = TENANT_A) {
      const res = await h.app.inject({ method: 'GET', url: `/tools/${name}`, headers: auth(tenant) })
      expect(res.statusCode, res.body).toBe(200)
      return res.json().circuit
    }

    describe('circuit breaker', () => {
      it('a tool failing with resets trips it; the next run fails fast without a connection; after open_ms one probe closes it', async () => {
        server.behaviours.set('/dead', 'reset')
        expect((await register('dead', { effect: 'read_only', circuit_breaker: { failures: 3, window_ms: 60_000, open_ms: 2000 } })).statusCode).toBe(201)
        const first = await run([{ name: 'dead' }, { name: 'dead' }, { name: 'dead' }])
        expect(first.map((r) => r.event.outcome)).toEqual(['unreachable', 'unreachable', 'unreachable'])
        // The call whose failure opened it says so.
        expect(first.filter((r) => r.event.circuit === 'open')).toHaveLength(1)
        const open = await circuitOf('dead')
        expect(open).toMatchObject({ state: 'open', failures: 3, replica: h.app.engine.replicaId })
        expect(Date.parse(open.retry_at)).toBeGreaterThan(Date.now() - 1000)

        const requests = server.requestsTo('/dead')
        const connections = server.connections
        const [refused] = await run([{ name: 'dead' }])
        expect(refused!.isError).toBe(true)
        expect(refused!.text).toBe(`Tool dead is unavailable: 3 failures in a row; retried after ${open.retry_at}.`)
        expect(refused!.event).toMatchObject({ outcome: 'circuit_open', attempts: 0, status: null, is_error: true })
        expect(server.requestsTo('/dead')).toBe(requests)
        expect(server.connections).toBe(connections)

        // The tool is back; once open_ms has passed, the next call is the probe, and it closes the breaker.
        server.behaviours.set('/dead', 'ok')
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, Date.parse(open.retry_at) - Date.now()) + 20))
        const [probe] = await run([{ name: 'dead' }])
        expect(probe!.event).toMatchObject({ outcome: 'ok', attempts: 1, circuit: 'closed' })
        expect(await circuitOf('dead')).toMatchObject({ state: 'closed', failures: 0, retry_at: null })
        const [after] = await run([{ name: 'dead' }])
        expect(after!.event.outcome).toBe('ok')
      })

      it('a probe that fails opens it again, with one failure more', async () => {
        server.behaviours.set('/relapse', 503)
        await register('relapse', { circuit_breaker: { failures: 2, window_ms: 60_000, open_ms: 300 } })
        await run([{ name: 'relapse' }, { name: 'relapse' }])
        const open = await circuitOf('relapse')
        expect(open).toMatchObject({ state: 'open', failures: 2 })
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, Date.parse(open.retry_at) - Date.now()) + 20))
        const requests = server.requestsTo('/relapse')
        // Two calls at once after open_ms: one probe is sent, the other is refused while it is under way.
        const results = await run([{ name: 'relapse' }, { name: 'relapse' }])
        expect(server.requestsTo('/relapse')).toBe(requests + 1)
        expect(results.map((r) => r.event.outcome).sort()).toEqual(['circuit_open', 'error'])
        expect(await circuitOf('relapse')).toMatchObject({ state: 'open', failures: 3 })
      })

      it('4xx answers and is_error results never trip it; 5xx do', async () => {
        const breaker = { failures: 2, window_ms: 60_000, open_ms: 60_000 }
        server.behaviours.set('/picky', 404)
        server.behaviours.set('/honest', 'is_error')
        await register('picky', { circuit_breaker: breaker })
        await register('honest', { circuit_breaker: breaker })
        for (let i = 0; i < 3; i++) {
          const results = await run([{ name: 'picky' }, { name: 'picky' }, { name: 'honest' }, { name: 'honest' }])
          expect(results.map((r) => r.event.outcome)).toEqual(['error', 'error', 'error', 'error'])
          expect(results.map((r) => r.event.status)).toEqual([404, 404, 200, 200])
        }
        expect(await circuitOf('picky')).toMatchObject({ state: 'closed', failures: 0 })
        expect(await circuitOf('honest')).toMatchObject({ state: 'closed', failures: 0 })
        expect(server.requestsTo('/picky')).toBe(6)

        server.behaviours.set('/picky', 500)
        await run([{ name: 'picky' }, { name: 'picky' }])
        expect(await circuitOf('picky')).toMatchObject({ state: 'open', failures: 2 })
      })

      it('is per tool: another tool, and the same name of another tenant, are called while one is open', async () => {
        server.behaviours.set('/lonely', 'reset')
        const breaker = { failures: 1, window_ms: 60_000, open_ms: 60_000 }
        await register('lonely', { circuit_breaker: breaker })
        await register('lonely', { circuit_breaker: breaker, url: `${server.url}/lonely_b` }, TENANT_B)
        await register('sturdy', { circuit_breaker: breaker })
        await run([{ name: 'lonely' }])
        expect(await circuitOf('lonely')).toMatchObject({ state: 'open' })
        const results = await run([{ name: 'lonely' }, { name: 'sturdy' }])
        expect(results.map((r) => r.event.outcome)).toEqual(['circuit_open', 'ok'])
        const [other] = await run([{ name: 'lonely' }], TENANT_B)
        expect(other!.event.outcome).toBe('ok')
        expect(await circuitOf('lonely', TENANT_B)).toMatchObject({ state: 'closed' })
        expect(await circuitOf('sturdy')).toMatchObject({ state: 'closed' })
      })

      it('`circuit_breaker: false` turns it off; a tool has one by default', async () => {
        server.behaviours.set('/unguarded', 'reset')
        const created = await register('unguarded', { circuit_breaker: false })
        expect(created.json()).toMatchObject({ circuit_breaker: false })
        for (let i = 0; i < 3; i++) await run([{ name: 'unguarded' }, { name: 'unguarded' }])
        expect(server.requestsTo('/unguarded')).toBe(6)
        expect(await circuitOf('unguarded')).toMatchObject({ state: 'off' })
        const plain = await register('plain', {})
        expect(plain.json()).toMatchObject({ circuit_breaker: { failures: 5, window_ms: 60_000, open_ms: 30_000 }, cache_ttl_ms: 0 })
        const partial = await register('partial', { circuit_breaker: { failures: 2 } })
        expect(partial.json().circuit_breaker).toEqual({ failures: 2, window_ms: 60_000, open_ms: 30_000 })
      })

      it('shows in the metrics and on the timeline', async () => {
        const metrics = (await h.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).body
        expect(metrics).toMatch(/switchboard_tool_circuit_open\{tool="lonely"\} 1/)
        expect(metrics).toMatch(/switchboard_tool_circuit_changes_total\{tool="dead",state="closed"\} 1/)
        expect(metrics).toMatch(/switchboard_tool_calls_total\{tool="lonely",outcome="circuit_open"\} [1-9]/)
        h.model.respond = ask([{ name: 'lonely', input: {} }])
        const { body } = await h.startRun({ input: 'go', tools: ['lonely'] })
        const page = await h.app.inject({ method: 'GET', url: body.timeline_url.replace(/^https?:\/\/[^/]+/, '') })
        expect(page.statusCode).toBe(200)
        expect(page.body).toContain('data-outcome="circuit_open"')
        expect(page.body).toContain('not called: circuit open')

        // The call that opens a breaker marks the moment on its run's timeline.
        server.behaviours.set('/tripping', 'reset')
        await register('tripping', { circuit_breaker: { failures: 1, window_ms: 60_000, open_ms: 60_000 } })
        h.model.respond = ask([{ name: 'tripping', input: {} }])
        const tripped = (await h.startRun({ input: 'go', tools: ['tripping'] })).body
        const trippedPage = await h.app.inject({ method: 'GET', url: tripped.timeline_url.replace(/^https?:\/\/[^/]+/, '') })
        expect(trippedPage.body).toContain('circuit breaker of tripping opened')
      })
    })

    describe('cached results of read_only tools', () => {
      it('the same input, in any key order, reuses the stored result with no call; another input calls', async () => {
        await register('weather', { effect: 'read_only', cache_ttl_ms: 60_000 })
        const [first] = await run([{ name: 'weather', input: { city: 'Paris', units: { temp: 'C', wind: 'kmh' } } }])
        expect(first!.event).toMatchObject({ outcome: 'ok', attempts: 1 })
        const [again] = await run([{ name: 'weather', input: { units: { wind: 'kmh', temp: 'C' }, city: 'Paris' } }])
        expect(again!.event).toMatchObject({ outcome: 'cached', attempts: 0, is_error: false, status: 200 })
        expect(again!.text).toBe(first!.text)
        expect(server.requestsTo('/weather')).toBe(1)
        const [other] = await run([{ name: 'weather', input: { city: 'Tokyo', units: { temp: 'C', wind: 'kmh' } } }])
        expect(other!.event.outcome).toBe('ok')
        expect(server.requestsTo('/weather')).toBe(2)
      })

      it('never for another tenant, nor for a tool written again', async () => {
        await register('quote', { effect: 'read_only', cache_ttl_ms: 60_000 })
        await register('quote', { effect: 'read_only', cache_ttl_ms: 60_000 }, TENANT_B)
        await run([{ name: 'quote', input: { symbol: 'ACME' } }])
        const [b] = await run([{ name: 'quote', input: { symbol: 'ACME' } }], TENANT_B)
        expect(b!.event.outcome).toBe('ok')
        expect(b!.text).toBe('answer 2 for {"symbol":"ACME"}')
        const [a] = await run([{ name: 'quote', input: { symbol: 'ACME' } }])
        expect(a!.event.outcome).toBe('cached')
        expect(a!.text).toBe('answer 1 for {"symbol":"ACME"}')
        await register('quote', { effect: 'read_only', cache_ttl_ms: 60_000, description: 'Quotes, now better' })
        const [rewritten] = await run([{ name: 'quote', input: { symbol: 'ACME' } }])
        expect(rewritten!.event.outcome).toBe('ok')
        expect(server.requestsTo('/quote')).toBe(3)
      })

      it('keeps no error, and nothing past its TTL', async () => {
        server.behaviours.set('/moody', 'is_error')
        await register('moody', { effect: 'read_only', cache_ttl_ms: 60_000 })
        await run([{ name: 'moody', input: { q: 1 } }])
        server.behaviours.set('/moody', 'ok')
        const [second] = await run([{ name: 'moody', input: { q: 1 } }])
        expect(second!.event.outcome).toBe('ok')
        expect(server.requestsTo('/moody')).toBe(2)

        await register('brief', { effect: 'read_only', cache_ttl_ms: 200 })
        await run([{ name: 'brief', input: { q: 1 } }])
        await new Promise((resolve) => setTimeout(resolve, 250))
        const [late] = await run([{ name: 'brief', input: { q: 1 } }])
        expect(late!.event.outcome).toBe('ok')
        expect(server.requestsTo('/brief')).toBe(2)
      })

      it('is refused for tools that are not read_only (400), and a cached answer is served while the circuit is open', async () => {
        for (const effect of ['idempotent', 'side_effecting', undefined]) {
          const res = await register('writer', { cache_ttl_ms: 1000, ...(effect === undefined ? {} : { effect }) })
          expect(res.statusCode, res.body).toBe(400)
          expect(res.json()).toMatchObject({ code: 'TOOL_ERR_CACHE_NOT_READ_ONLY' })
          expect(res.json().message).toContain(`this one is ${effect ?? 'side_effecting'}`)
        }
        await register('atlas', { effect: 'read_only', cache_ttl_ms: 60_000, circuit_breaker: { failures: 1, window_ms: 60_000, open_ms: 60_000 } })
        await run([{ name: 'atlas', input: { q: 'kept' } }])
        server.behaviours.set('/atlas', 'reset')
        await run([{ name: 'atlas', input: { q: 'new' } }])
        expect(await circuitOf('atlas')).toMatchObject({ state: 'open' })
        const results = await run([{ name: 'atlas', input: { q: 'kept' } }, { name: 'atlas', input: { q: 'other' } }])
        expect(results.map((r) => r.event.outcome)).toEqual(['cached', 'circuit_open'])
      })
    })
  })
}
