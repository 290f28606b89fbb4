import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, startApp, TENANT_A, TENANT_B, type StartedApp, type TestTenant } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { turnNumber, type RecordedRequest } from '../support/fake-messages-api.js'
import { HealthToolServer } from '../tools/health/tool-server.js'

/** The model asks for `calls` at once, then ends its turn. */
function ask (calls: Array<{ name: string, input: unknown }>) {
  return (request: RecordedRequest) => turnNumber(request) === 1
    ? { content: calls.map((c) => ({ type: 'tool_use' as const, ...c })) }
    : { content: [{ type: 'text' as const, text: 'done' }] }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`GET /tools/{name}/stats: ${backend.name}`, () => {
    let h: Harness
    let server: HealthToolServer

    beforeAll(async () => {
      server = await new HealthToolServer().start()
      h = await startHarness(backend)
    })
    afterAll(async () => {
      await h?.close()
      await server?.close()
    })

    async function register (app: StartedApp['app'], name: string, fields: Record<string, unknown>, tenant: TestTenant = TENANT_A) {
      const res = await app.inject({
        method: 'PUT',
        url: `/tools/${name}`,
        headers: auth(tenant),
        payload: { description: `The ${name} tool`, input_schema: { type: 'object' }, url: `${server.url}/echo`, max_attempts: 1, ...fields }
      })
      expect(res.statusCode, res.body).toBeLessThan(300)
    }

    async function run (name: string, qs: string[], tenant: TestTenant = TENANT_A) {
      h.model.respond = ask(qs.map((q) => ({ name, input: { q } })))
      const { body } = await h.startRun({ input: 'go', tools: [name] }, tenant)
      expect(body.status, JSON.stringify(body.error)).toBe('completed')
      return body
    }

    async function stats (name: string, query = '', tenant: TestTenant = TENANT_A, app = h.app) {
      return await app.inject({ method: 'GET', url: `/tools/${name}/stats${query}`, headers: auth(tenant) })
    }

    it('counts the calls a test made: outcomes, errors by kind, latency of the calls sent, the error rate', async () => {
      await register(h.app, 'mixed', { circuit_breaker: false })
      await run('mixed', ['ok', 'slow150', '500', '404', 'is_error', 'reset'])
      await run('mixed', ['ok', 'ok'])
      const res = await stats('mixed', '?window=1h')
      expect(res.statusCode, res.body).toBe(200)
      const body = res.json()
      expect(body).toMatchObject({
        object: 'tool_stats',
        name: 'mixed',
        window: '1h',
        calls: 8,
        outcomes: { ok: 4, error: 3, unreachable: 1 },
        errors: { timeout: 0, unreachable: 1, http_5xx: 1, http_4xx: 1, tool_error: 1, refused: 0, circuit_open: 0, cancelled: 0 },
        error_rate: 4 / 8,
        circuit: { state: 'off', replicas: [] }
      })
      expect(Date.parse(body.until) - Date.parse(body.since)).toBe(3_600_000)
      // Every call was sent; the slow one (150 ms) is the slowest, so it is the 99th percentile.
      expect(body.latency_ms.sent).toBe(8)
      expect(body.latency_ms.p99).toBeGreaterThanOrEqual(150)
      expect(body.latency_ms.p50).toBeLessThanOrEqual(body.latency_ms.p95)
      expect(body.latency_ms.p95).toBeLessThanOrEqual(body.latency_ms.p99)
      // The default window is an hour.
      expect((await stats('mixed')).json()).toMatchObject({ window: '1h', calls: 8 })
    })

    it('counts calls never sent (circuit open, cached) apart from the latency, and shows the breaker', async () => {
      await register(h.app, 'guarded', { effect: 'read_only', cache_ttl_ms: 60_000, circuit_breaker: { failures: 2, window_ms: 60_000, open_ms: 60_000 } })
      await run('guarded', ['kept'])
      await run('guarded', ['kept'])
      await run('guarded', ['503', '503'])
      await run('guarded', ['503', 'kept'])
      const body = (await stats('guarded', '?window=15m')).json()
      expect(body).toMatchObject({
        calls: 6,
        outcomes: { ok: 1, cached: 2, error: 2, circuit_open: 1 },
        errors: { http_5xx: 2, circuit_open: 1 },
        error_rate: 3 / 6,
        latency_ms: { sent: 3 },
        circuit: { state: 'open', replicas: [{ replica: h.app.engine.replicaId, state: 'open', failures: 2 }] }
      })
    })

    it('a tool without calls in the window answers zeros and nulls; another tenant\'s calls never count', async () => {
      await register(h.app, 'quiet', {})
      await register(h.app, 'quiet', {}, TENANT_B)
      await run('quiet', ['ok', 'ok'], TENANT_B)
      const body = (await stats('quiet', '?window=1m')).json()
      expect(body).toMatchObject({ calls: 0, outcomes: {}, error_rate: null, latency_ms: { sent: 0, p50: null, p95: null, p99: null }, circuit: { state: 'closed', replicas: [] } })
      expect((await stats('quiet', '?window=1m', TENANT_B)).json()).toMatchObject({ calls: 2 })
    })

    it('lists another replica\'s breaker while it is open or changed within the window; never one a stopped replica left behind', async () => {
      await register(h.app, 'remote', {})
      const now = Date.now()
      const row = { tenant_id: TENANT_A.id, name: 'remote', failures: 5 }
      await h.app.store.toolHealth.putCircuit({ ...row, replica: 'gone', state: 'open', retry_at: now - 7_170_000, updated_at: now - 7_200_000 })
      await h.app.store.toolHealth.putCircuit({ ...row, replica: 'elsewhere', state: 'open', retry_at: now + 30_000, updated_at: now })
      const body = (await stats('remote')).json()
      expect(body.circuit).toEqual({ state: 'open', replicas: [{ replica: 'elsewhere', state: 'open', failures: 5, retry_at: new Date(now + 30_000).toISOString() }] })
      // Over three hours, the stopped replica's last change is in the window again.
      expect((await stats('remote', '?window=3h')).json().circuit.replicas.map((r: { replica: string }) => r.replica)).toEqual(['elsewhere', 'gone'])
    })

    it('refuses a window it does not answer for (400), and an unknown tool (404)', async () => {
      for (const window of ['8d', '0h', '1w', 'abc', '90', '-1h']) {
        const res = await stats('mixed', `?window=${window}`)
        expect(res.statusCode, window).toBe(400)
        expect(['TOOL_ERR_INVALID_WINDOW', 'REQUEST_ERR_VALIDATION']).toContain(res.json().code)
      }
      const tooLong = (await stats('mixed', '?window=169h')).json()
      expect(tooLong).toMatchObject({ code: 'TOOL_ERR_INVALID_WINDOW' })
      expect(tooLong.message).toContain('at most 7d')
      expect((await stats('mixed', '?window=7d')).statusCode).toBe(200)
      const missing = await stats('nothing_here')
      expect(missing.statusCode).toBe(404)
      expect(missing.json().code).toBe('TOOL_ERR_NOT_FOUND')
    })

    it('is in the OpenAPI document as getToolStats', async () => {
      const doc = (await h.app.inject({ method: 'GET', url: '/openapi.json' })).json()
      const operation = doc.paths['/tools/{name}/stats'].get
      expect(operation).toMatchObject({ operationId: 'getToolStats', tags: ['tools'] })
      expect(Object.keys(operation.responses)).toEqual(expect.arrayContaining(['200', '400', '401', '404']))
    })

    // On PostgreSQL only (replicas share a database there); not defined at all for SQLite, so that
    // a run of the PostgreSQL suite skips nothing.
    if (backend.name === 'postgres') {
      it('counts the calls of every replica, and lists each replica\'s breaker', async () => {
        const location = { dataDir: h.config.DATA_DIR, databaseUrl: h.config.DATABASE_URL, destroy: async () => {} }
        const other = await startApp(backend, {
          location,
          env: { ANTHROPIC_BASE_URL: h.model.url, ANTHROPIC_API_KEY: 'sk-ant-test-key-000' }
        })
        try {
          await register(h.app, 'shared', { circuit_breaker: { failures: 1, window_ms: 60_000, open_ms: 60_000 } })
          await run('shared', ['ok', 'reset'])
          h.model.respond = ask([{ name: 'shared', input: { q: 'ok' } }])
          const res = await other.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'go', tools: ['shared'] } })
          expect(res.json().status).toBe('completed')
          // Each replica answers for both, once the first has stored its calls (within about a second).
          await expect.poll(async () => (await stats('shared', '', TENANT_A, other.app)).json().calls, { timeout: 5000 }).toBe(3)
          const body = (await stats('shared')).json()
          expect(body).toMatchObject({ calls: 3, outcomes: { ok: 2, unreachable: 1 } })
          expect(body.circuit.state).toBe('open')
          expect(body.circuit.replicas).toEqual([expect.objectContaining({ replica: h.app.engine.replicaId, state: 'open' })])
          expect((await stats('shared', '', TENANT_A, other.app)).json().circuit.replicas).toEqual([expect.objectContaining({ replica: h.app.engine.replicaId, state: 'open' })])
        } finally {
          await other.close()
        }
      })
    }
  })
}
