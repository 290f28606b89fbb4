import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends, openTestStore } from '../support/backends.js'
import type { Store, UsageEntry } from '../../src/store/index.js'

const DAY_MS = 86_400_000
const DAY = Date.parse('2026-12-06T00:00:00Z')

/** A step's line: its model call, and its tool calls as counts. */
function step (over: Partial<UsageEntry>): UsageEntry {
  return {
    tenant_id: 'acme',
    run_id: 'run_1',
    key: 'model:1:a',
    at: DAY + 1000,
    model: 'claude-sonnet-4-5',
    input_tokens: 1000,
    output_tokens: 100,
    cache_write_5m_tokens: 10,
    cache_write_1h_tokens: 20,
    cache_read_tokens: 30,
    cost_nano_usd: 4_500_000,
    tool_calls: 0,
    tool_errors: 0,
    tools: {},
    ...over
  }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`the usage ledger: ${backend.name}`, () => {
    let store: Store
    let close: () => Promise<void>

    beforeAll(async () => {
      ({ store, close } = await openTestStore(backend))
      await store.usage.record([step({ tool_calls: 2, tool_errors: 1, tools: { lookup: [2, 1] } })])
      // The same step written again (a replica that took the run over): counted once.
      await store.usage.record([step({ tool_calls: 1, tool_errors: 0, tools: { lookup: [1, 0] } })])
      await store.usage.record([step({ key: 'model:2:e', at: DAY + 2000, input_tokens: 500, cost_nano_usd: 500_000, tool_calls: 2, tool_errors: 1, tools: { lookup: [1, 0], get_weather: [1, 1] } })])
      await store.usage.record([step({ run_id: 'run_2', key: 'model:1:b', at: DAY - 1000, model: 'claude-haiku-4-5', cost_nano_usd: 1_000_000 })])
      await store.usage.record([step({ run_id: 'run_3', key: 'model:1:c', model: 'claude-unpriced', cost_nano_usd: null })])
      await store.usage.record([step({ tenant_id: 'globex', run_id: 'run_4', key: 'model:1:d', cost_nano_usd: 7_000_000, tool_calls: 1, tools: { lookup: [1, 0] } })])
    })
    afterAll(async () => close?.())

    it('adds up a tenant\'s spending from the day of `since` on, each call once, other tenants apart', async () => {
      expect(await store.usage.spentSince('acme', DAY)).toBe(5_000_000)
      expect(await store.usage.spentSince('acme', DAY - DAY_MS)).toBe(6_000_000)
      expect(await store.usage.spentSince('globex', DAY)).toBe(7_000_000)
      expect(await store.usage.spentSince('initech', DAY)).toBe(0)
    })

    it('reports by day, model and tool (each step\'s tools expanded); unpriced calls counted apart', async () => {
      const byDay = await store.usage.report('acme', DAY - DAY_MS, DAY + DAY_MS, 'day')
      expect(byDay.groups.map((g) => [g.group, g.model_calls, g.tool_calls, g.cost_nano_usd])).toEqual([[DAY / DAY_MS - 1, 1, 0, 1_000_000], [DAY / DAY_MS, 3, 4, 5_000_000]])
      expect(byDay.total).toMatchObject({ runs: 3, model_calls: 4, tool_calls: 4, errors: 2, unpriced_model_calls: 1, input_tokens: 3500, cache_write_1h_tokens: 80, cost_nano_usd: 6_000_000 })
      const byModel = await store.usage.report('acme', DAY - DAY_MS, DAY + DAY_MS, 'model')
      expect(byModel.groups.map((g) => [g.group, g.runs, g.model_calls, g.tool_calls, g.errors])).toEqual([['claude-haiku-4-5', 1, 1, 0, 0], ['claude-sonnet-4-5', 1, 2, 4, 2], ['claude-unpriced', 1, 1, 0, 0]])
      const byTool = await store.usage.report('acme', DAY, DAY + DAY_MS, 'tool')
      const nothingButCalls = { model_calls: 0, input_tokens: 0, cost_nano_usd: 0, unpriced_model_calls: 0 }
      expect(byTool.groups).toEqual([
        { ...byTool.groups[0], group: 'get_weather', runs: 1, tool_calls: 1, errors: 1, ...nothingButCalls },
        { ...byTool.groups[1], group: 'lookup', runs: 1, tool_calls: 3, errors: 1, ...nothingButCalls }
      ])
      expect(byTool.total).toMatchObject({ group: null, runs: 1, tool_calls: 4, errors: 2, ...nothingButCalls })
      const empty = await store.usage.report('acme', DAY + DAY_MS, DAY + 2 * DAY_MS, 'day')
      expect(empty).toMatchObject({ groups: [], total: { runs: 0, model_calls: 0, cost_nano_usd: 0 } })
    })
  })
}
