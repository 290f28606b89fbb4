import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends, openTestStore } from '../../support/backends.js'
import type { Store, ToolCallRow } from '../../../src/store/index.js'

for (const backend of backends) {
  describe.skipIf(backend.skip)(`tool health storage: ${backend.name}`, () => {
    let store: Store
    let close: () => Promise<void>
    beforeAll(async () => {
      ({ store, close } = await openTestStore(backend))
    })
    afterAll(async () => close?.())

    const call = (fields: Partial<ToolCallRow>): ToolCallRow => ({ tenant_id: 'a', name: 't', at: 1_000_000, outcome: 'ok', status: 200, duration_ms: 10, attempts: 1, ...fields })

    it('percentiles pick the same calls on both databases (percentile_disc): of durations 1 to 200, 100, 190 and 198', async () => {
      const rows = Array.from({ length: 200 }, (_, i) => call({ duration_ms: 200 - i }))
      // Not sent (attempts 0), older than the window, another tool or tenant: none of them count.
      rows.push(call({ outcome: 'cached', duration_ms: 0, attempts: 0 }), call({ at: 999_999, duration_ms: 5000 }), call({ name: 'u', duration_ms: 5000 }), call({ tenant_id: 'b', duration_ms: 5000 }))
      await store.toolHealth.recordCalls(rows)
      const totals = await store.toolHealth.callTotals('a', 't', 1_000_000)
      expect(totals).toMatchObject({ sent: 200, p50: 100, p95: 190, p99: 198 })
      expect(totals.outcomes).toEqual(expect.arrayContaining([{ outcome: 'ok', statusClass: 0, count: 200 }, { outcome: 'cached', statusClass: 0, count: 1 }]))
      expect(await store.toolHealth.callTotals('a', 't', 2_000_000)).toEqual({ outcomes: [], sent: 0, p50: null, p95: null, p99: null })
    })

    it('a stored result is found until it expires; prune drops expired results and old calls', async () => {
      const result = { tenant_id: 'a', name: 't', revision: 'rev_1', input_hash: 'h', content: '"x"', status: 200, stored_at: 100, expires_at: 200 }
      await store.toolHealth.putResult(result)
      expect(await store.toolHealth.getResult('a', 't', 'rev_1', 'h', 199)).toEqual(result)
      expect(await store.toolHealth.getResult('a', 't', 'rev_1', 'h', 200)).toBeNull()
      expect(await store.toolHealth.getResult('a', 't', 'rev_2', 'h', 150)).toBeNull()
      await store.toolHealth.putResult({ ...result, content: '"y"', expires_at: 300 })
      expect((await store.toolHealth.getResult('a', 't', 'rev_1', 'h', 250))?.content).toBe('"y"')
      await store.toolHealth.prune(300, 1_000_000)
      expect(await store.toolHealth.getResult('a', 't', 'rev_1', 'h', 0)).toBeNull()
      expect((await store.toolHealth.callTotals('a', 't', 0)).sent).toBe(200)
    })
  })
}
