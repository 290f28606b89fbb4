import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { turnNumber, type RecordedRequest, type Turn } from '../support/fake-messages-api.js'

const DAY_MS = 86_400_000

for (const backend of backends) {
  describe.skipIf(backend.skip)(`GET /usage: ${backend.name}`, () => {
    let h: Harness
    const get = async (query: string, tenant = TENANT_A) => await h.app.inject({ method: 'GET', url: `/usage${query}`, headers: auth(tenant) })

    beforeAll(async () => {
      h = await startHarness(backend, { env: { DEFAULT_MODEL: 'claude-haiku-4-5' } })
      await h.registerTool('lookup', '/ok', { effect: 'read_only' })
      // One call of lookup, then an answer; 100 input and 10 output tokens a call ($0.00015).
      h.model.respond = (request: RecordedRequest): Turn => turnNumber(request) === 1 && request.body.tools !== undefined
        ? { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'x' } }], usage: { input_tokens: 100, output_tokens: 10 } }
        : { content: [{ type: 'text', text: 'done' }], usage: { input_tokens: 100, output_tokens: 10 } }
      for (let i = 0; i < 2; i++) expect((await h.startRun({ input: `run ${i}`, tools: ['lookup'] })).body.status).toBe('completed')
      expect((await h.startRun({ input: 'other model', model: 'claude-opus-4-5' })).body.status).toBe('completed')
    })
    afterAll(async () => h?.close())

    it('answers the last 30 days by UTC day, with the period\'s totals', async () => {
      const res = await get('')
      expect(res.statusCode).toBe(200)
      const report = res.json()
      expect(report).toMatchObject({ object: 'usage', group_by: 'day' })
      expect(Date.parse(report.to) - Date.parse(report.from)).toBe(30 * DAY_MS)
      const today = new Date().toISOString().slice(0, 10)
      expect(report.data).toEqual([{ key: today, ...report.total }])
      // Haiku 4.5: four calls of 100 × $1 + 10 × $5; Opus 4.5: one of 100 × $5 + 10 × $25 ... per million.
      expect(report.total).toMatchObject({ runs: 3, model_calls: 5, tool_calls: 2, errors: 0, unpriced_model_calls: 0 })
      const opusCall = (report.total.input_tokens - 400) * 5 + (report.total.output_tokens - 40) * 25
      expect(report.total.cost_usd).toBeCloseTo((4 * (100 + 50) + opusCall) / 1e6, 12)
    })

    it('groups by model and by tool', async () => {
      const byModel = (await get('?group_by=model')).json()
      expect(byModel.data.map((d: { key: string }) => d.key)).toEqual(['claude-haiku-4-5', 'claude-opus-4-5'])
      expect(byModel.data[0]).toMatchObject({ runs: 2, model_calls: 4, input_tokens: 400, output_tokens: 40, cost_usd: 0.0006, tool_calls: 2 })
      const byTool = (await get('?group_by=tool')).json()
      expect(byTool.data).toEqual([{ key: 'lookup', ...byTool.total }])
      expect(byTool.total).toMatchObject({ runs: 2, model_calls: 0, tool_calls: 2, input_tokens: 0, cost_usd: 0 })
    })

    it('takes a period: from included, to excluded; a period without usage is all zeros', async () => {
      const now = Date.now()
      const past = (await get('?from=2020-01-01&to=2020-01-31')).json()
      expect(past).toMatchObject({ from: '2020-01-01T00:00:00.000Z', to: '2020-01-31T00:00:00.000Z', data: [] })
      expect(past.total).toMatchObject({ runs: 0, model_calls: 0, cost_usd: 0, tool_calls: 0 })
      const around = (await get(`?from=${new Date(now - DAY_MS).toISOString()}&to=${new Date(now + DAY_MS).toISOString()}`)).json()
      expect(around.total.model_calls).toBe(5)
    })

    it('refuses a period it cannot read, with a 400 that says why', async () => {
      const cases: Array<[string, string, RegExp]> = [
        ['?from=last-monday', 'USAGE_ERR_INVALID_RANGE', /from is "last-monday", which is not a date/],
        ['?from=2026-12-05&to=2026-12-01', 'USAGE_ERR_INVALID_RANGE', /must be before to/],
        ['?from=2024-01-01&to=2026-01-01', 'USAGE_ERR_INVALID_RANGE', /longer than 366 days/],
        ['?to=2026-13-45', 'USAGE_ERR_INVALID_RANGE', /to is "2026-13-45"/],
        ['?group_by=week', 'REQUEST_ERR_VALIDATION', /group_by/],
        ['?tenant=globex', 'REQUEST_ERR_VALIDATION', /tenant/]
      ]
      for (const [query, code, message] of cases) {
        const res = await get(query)
        expect(res.statusCode, query).toBe(400)
        expect(res.json().code, query).toBe(code)
        expect(res.json().message, query).toMatch(message)
      }
    })

    it('wants an API key, and shows a tenant only its own usage', async () => {
      expect((await h.app.inject({ method: 'GET', url: '/usage' })).statusCode).toBe(401)
      const other = (await get('?group_by=model', TENANT_B)).json()
      expect(other.data).toEqual([])
      expect(other.total).toMatchObject({ runs: 0, model_calls: 0, cost_usd: 0 })
    })

    it('is in the OpenAPI document as getUsage, with its 4xx answers', async () => {
      const doc = (await h.app.inject({ method: 'GET', url: '/openapi.json' })).json()
      const operation = doc.paths['/usage'].get
      expect(operation).toMatchObject({ operationId: 'getUsage', tags: ['usage'] })
      expect(Object.keys(operation.responses)).toEqual(expect.arrayContaining(['200', '400', '401', '429']))
    })
  })
}
