import { afterEach, describe, expect, it } from 'vitest'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../src/config.js'
import { createStore, LeaseLostError, type Store, type UsageEntry } from '../../src/store/index.js'
import { auth, BASE_ENV, TENANT_A } from '../support/app.js'
import { backends, openTestStore, type StorageLocation } from '../support/backends.js'
import { startFakeMessagesApi, toolsThenAnswer, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { silentLog } from '../support/log.js'
import { newRun } from '../support/runs.js'
import { startWebhookServer, type WebhookServer } from '../support/webhook-server.js'

// A step's usage lines (SPEC §17) are part of the step's own write: stored exactly when the step
// is, in its transaction (SQLite) or statement (PostgreSQL), once whoever writes them.

const MODEL = 'claude-sonnet-4-5'

function line (runId: string, over: Partial<UsageEntry> = {}): UsageEntry {
  return {
    tenant_id: 'acme',
    run_id: runId,
    key: 'model:1:a',
    at: Date.now(),
    model: MODEL,
    input_tokens: 1000,
    output_tokens: 100,
    cache_write_5m_tokens: 0,
    cache_write_1h_tokens: 0,
    cache_read_tokens: 0,
    cost_nano_usd: 4_500_000,
    tool_calls: 0,
    tool_errors: 0,
    tools: {},
    ...over
  }
}

/** The real store, with the writes of step `failStep` (not the run's end) failing as a broken connection would. */
function failingStep (store: Store) {
  const plan = { failStep: 0, failures: 0 }
  const wrapped = new Proxy(store, {
    get (target, property) {
      if (property !== 'writeRun') {
        const value = Reflect.get(target, property, target)
        return typeof value === 'function' ? value.bind(target) : value
      }
      return async (...args: Parameters<Store['writeRun']>) => {
        if (plan.failStep > 0 && args[2].patch?.steps === plan.failStep && args[2].patch.status === undefined) {
          plan.failures++
          throw Object.assign(new Error('connection terminated unexpectedly'), { code: 'ECONNRESET' })
        }
        return await target.writeRun(...args)
      }
    }
  })
  return { store: wrapped, plan }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`a step's usage lines, stored with the step: ${backend.name}`, () => {
    let cleanup: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const fn of cleanup.reverse()) await fn()
      cleanup = []
    })

    it('are stored by the write that stores the step, once however often it is written, and not at all when the lease is lost', async () => {
      const { store, close } = await openTestStore(backend)
      cleanup.push(close)
      const day = Date.now() - 86_400_000
      const { run } = await store.createRun(newRun('acme'))
      const lease = { owner: 'replica-a', token: run.lease_token }
      const lines = [line(run.id, { tool_calls: 1, tool_errors: 1, tools: { lookup: [1, 1] } })]
      const step = { messages: [{ role: 'assistant' as const, content: 'hi' }], patch: { steps: 1 }, usage: lines }

      // Another replica holds the run: nothing of the write is stored, its lines neither.
      await expect(store.writeRun(run, { ...lease, token: run.lease_token + 1 }, step)).rejects.toBeInstanceOf(LeaseLostError)
      expect(await store.usage.spentSince('acme', day)).toBe(0)
      expect((await store.usage.report('acme', day, Date.now() + 1000, 'day')).total).toMatchObject({ model_calls: 0, tool_calls: 0 })

      const written = await store.writeRun(run, lease, step)
      expect(written.run.steps).toBe(1)
      // The same lines again (a replica that took the run over and stored the step again): counted once.
      await store.writeRun(written.run, lease, { patch: { steps: 1 }, usage: lines })
      expect(await store.usage.spentSince('acme', day)).toBe(4_500_000)
      expect((await store.usage.report('acme', day, Date.now() + 1000, 'day')).total)
        .toMatchObject({ runs: 1, model_calls: 1, tool_calls: 1, errors: 1, input_tokens: 1000, cost_nano_usd: 4_500_000 })
    })

    it('a step whose write fails until the run is cancelled is stored with the cancel, its model call and tool calls counted once', async () => {
      const location: StorageLocation = await backend.location()
      const store = await createStore({ dataDir: location.dataDir, databaseUrl: location.databaseUrl, log: silentLog })
      const model: FakeMessagesApi = await startFakeMessagesApi(toolsThenAnswer([{ name: 'ok', input: {} }, { name: 'ok', input: { q: 'b' } }]))
      const tools: WebhookServer = await startWebhookServer()
      const { store: wrapped, plan } = failingStep(store)
      const config = loadConfig({ ...BASE_ENV, DEFAULT_MODEL: MODEL, DATA_DIR: location.dataDir, ...(location.databaseUrl === undefined ? {} : { DATABASE_URL: location.databaseUrl }), ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'k' })
      const app = await buildApp({ config, logger: silentLog, store: wrapped })
      cleanup.push(async () => { await app.close(); await store.close(); await model.close(); await tools.close(); await location.destroy() })
      await app.inject({ method: 'PUT', url: '/tools/ok', headers: auth(TENANT_A), payload: { description: 'ok', input_schema: { type: 'object' }, url: `${tools.url}/ok` } })

      plan.failStep = 1
      const created = await app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', tools: ['ok'], background: true } })
      const id = created.json().id
      await expect.poll(() => plan.failures).toBeGreaterThan(1)
      // Nothing of the step is stored yet: its lines neither.
      const before = (await app.inject({ method: 'GET', url: '/usage?group_by=model', headers: auth(TENANT_A) })).json()
      expect(before.total).toMatchObject({ model_calls: 0, tool_calls: 0 })

      const cancelled = (await app.inject({ method: 'POST', url: `/runs/${id}/cancel`, headers: auth(TENANT_A) })).json()
      expect(cancelled).toMatchObject({ status: 'cancelled', steps: 1, tool_calls: { total: 2 } })
      const after = (await app.inject({ method: 'GET', url: '/usage?group_by=model', headers: auth(TENANT_A) })).json()
      expect(after.total).toMatchObject({ runs: 1, model_calls: 1, tool_calls: 2, errors: 0 })
      expect(after.total.cost_usd).toBe(cancelled.usage.cost_usd)
    })
  })
}
