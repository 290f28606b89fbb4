import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends, openTestStore } from '../support/backends.js'
import type { Store, UsageEntry } from '../../src/store/index.js'

const DAY_MS = 86_400_000
const DAY = Date.parse('2026-12-06T00:00:00Z')

function modelCall (over: Partial<UsageEntry>): UsageEntry {
  return {
    tenant_id: 'acme',
    run_id: 'run_1',
    key: 'model:1:a',
    kind: 'model',
    at: DAY + 1000,
    model: 'claude-sonnet-4-5',
    tool: null,
    input_tokens: 1000,
    output_tokens: 100,
    cache_write_5m_tokens: 10,
    cache_write_1h_tokens: 20,
    cache_read_tokens: 30,
    cost_nano_usd: 4_500_000,
    is_error: false,
    ...over
  }
}

function toolCall (over: Partial<UsageEntry>): UsageEntry {
  return { ...modelCall({}), key: 'tool:t1', kind: 'tool', tool: 'lookup', input_tokens: 0, output_tokens: 0, cache_write_5m_tokens: 0, cache_write_1h_tokens: 0, cache_read_tokens: 0, cost_nano_usd: 0, ...over }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`the usage ledger: ${backend.name}`, () => {
    let store: Store
    let close: () => Promise<void>

    beforeAll(async () => {
      ({ store, close } = await openTestStore(backend))
      await store.usage.record([modelCall({}), toolCall({}), toolCall({ key: 'tool:t2', is_error: true })])
      // The same step written again (a replica that took the run over): counted once.
      await store.usage.record([modelCall({}), toolCall({})])
      await store.usage.record([modelCall({ run_id: 'run_2', key: 'model:1:b', at: DAY - 1000, model: 'claude-haiku-4-5', cost_nano_usd: 1_000_000 })])
      await store.usage.record([modelCall({ run_id: 'run_3', key: 'model:1:c', model: 'claude-unpriced', cost_nano_usd: null })])
      await store.usage.record([modelCall({ tenant_id: 'globex', run_id: 'run_4', key: 'model:1:d', cost_nano_usd: 7_000_000 })])
    })
    afterAll(async () => close?.())

    it('adds up a tenant\'s spending from the day of `since` on, each call once, other tenants apart', async () => {
      expect(await store.usage.spentSince('acme', DAY)).toBe(4_500_000)
      expect(await store.usage.spentSince('acme', DAY - DAY_MS)).toBe(5_500_000)
      expect(await store.usage.spentSince('globex', DAY)).toBe(7_000_000)
      expect(await store.usage.spentSince('initech', DAY)).toBe(0)
    })

    it('reports by day, model and tool; unpriced calls counted apart', async () => {
      const byDay = await store.usage.report('acme', DAY - DAY_MS, DAY + DAY_MS, 'day')
      expect(byDay.groups.map((g) => [g.group, g.model_calls, g.cost_nano_usd])).toEqual([[DAY / DAY_MS - 1, 1, 1_000_000], [DAY / DAY_MS, 2, 4_500_000]])
      expect(byDay.total).toMatchObject({ runs: 3, model_calls: 3, tool_calls: 2, errors: 1, unpriced_model_calls: 1, input_tokens: 3000, cache_write_1h_tokens: 60, cost_nano_usd: 5_500_000 })
      const byModel = await store.usage.report('acme', DAY - DAY_MS, DAY + DAY_MS, 'model')
      expect(byModel.groups.map((g) => [g.group, g.runs, g.tool_calls])).toEqual([['claude-haiku-4-5', 1, 0], ['claude-sonnet-4-5', 1, 2], ['claude-unpriced', 1, 0]])
      const byTool = await store.usage.report('acme', DAY, DAY + DAY_MS, 'tool')
      expect(byTool.groups).toEqual([expect.objectContaining({ group: 'lookup', tool_calls: 2, errors: 1, model_calls: 0, runs: 1 })])
      const empty = await store.usage.report('acme', DAY + DAY_MS, DAY + 2 * DAY_MS, 'day')
      expect(empty).toMatchObject({ groups: [], total: { runs: 0, model_calls: 0, cost_nano_usd: 0 } })
    })
  })
}
