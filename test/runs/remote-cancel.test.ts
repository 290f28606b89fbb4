import { afterEach, describe, expect, it } from 'vitest'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../src/config.js'
import { createStore, type RunPatch, type Store } from '../../src/store/index.js'
import { auth, BASE_ENV, TENANT_A } from '../support/app.js'
import { backends } from '../support/backends.js'
import { startFakeMessagesApi, turnNumber, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { silentLog } from '../support/log.js'
import { startWebhookServer, type WebhookServer } from '../support/webhook-server.js'

/**
 * A cancel asked through another replica is only recorded (cancel_requested_at): these tests
 * record it as that replica would, on the real store, and watch this replica act on it. `sweep`
 * off stands for a sweep that has not looked yet.
 */
function watched (store: Store) {
  const state = { sweep: true, patches: [] as RunPatch[] }
  const wrapped = new Proxy(store, {
    get (target, property) {
      if (property === 'cancelRequested') {
        return async (owner: string) => state.sweep ? await target.cancelRequested(owner) : []
      }
      if (property === 'writeRun') {
        return async (...args: Parameters<Store['writeRun']>) => {
          if (args[2].patch !== undefined) state.patches.push(args[2].patch)
          return await target.writeRun(...args)
        }
      }
      const value = Reflect.get(target, property, target)
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
  return { store: wrapped, state }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`a cancel asked through another replica: ${backend.name}`, () => {
    let cleanup: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const fn of cleanup.reverse()) await fn().catch(() => {})
      cleanup = []
    })

    async function setup (env: Record<string, string> = {}) {
      const location = await backend.location()
      const real = await createStore({ dataDir: location.dataDir, databaseUrl: location.databaseUrl, log: silentLog })
      const model: FakeMessagesApi = await startFakeMessagesApi()
      const tools: WebhookServer = await startWebhookServer()
      const { store, state } = watched(real)
      const config = loadConfig({ ...BASE_ENV, DATA_DIR: location.dataDir, ...(location.databaseUrl === undefined ? {} : { DATABASE_URL: location.databaseUrl }), ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'k', ...env })
      const app = await buildApp({ config, logger: silentLog, store })
      await app.ready()
      cleanup.push(async () => { await app.close(); await real.close(); await model.close(); await tools.close(); await location.destroy() })
      return { app, real, model, tools, state }
    }

    it('a run that went to wait for its caller after the cancel never takes another step when its outputs come', async () => {
      const { app, real, model, tools, state } = await setup()
      state.sweep = false
      await app.inject({ method: 'PUT', url: '/tools/lookup', headers: auth(TENANT_A), payload: { description: 'look up', input_schema: { type: 'object' }, url: `${tools.url}/delay/300`, effect: 'read_only' } })
      model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'lookup', input: {} }, { type: 'tool_use', name: 'confirm', input: {} }] }
        : { content: [{ type: 'text', text: 'went on' }] }
      const confirm = { name: 'confirm', description: 'ask', input_schema: { type: 'object' } }
      const started = app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', tools: ['lookup'], client_tools: [confirm] } })
      await expect.poll(() => tools.calls.length).toBeGreaterThan(0)
      const runId = (await app.inject({ method: 'GET', url: '/runs', headers: auth(TENANT_A) })).json().data[0].id
      expect(await real.requestCancel(TENANT_A.id, runId, Date.now())).not.toBeNull()
      const waiting = (await started).json()
      expect(waiting.status).toBe('requires_action')
      const outputs = await app.inject({ method: 'POST', url: `/runs/${runId}/tool_outputs`, headers: auth(TENANT_A), payload: { tool_outputs: [{ tool_use_id: waiting.required_action.tool_calls[0].id, content: 'yes' }] } })
      expect(outputs.json()).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled', steps: 1 })
      expect(model.requests).toHaveLength(1)
    })

    it('is honoured while this replica drains: the runs a drain lets finish can still be cancelled', async () => {
      const { app, real, model, state } = await setup({ SHUTDOWN_GRACE_MS: '20000' })
      let calls = 0
      model.respond = async () => {
        calls++
        await sleep(15_000)
        return { content: [{ type: 'text', text: 'late' }] }
      }
      const created = await app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', background: true } })
      await expect.poll(() => calls).toBe(1)
      const closing = app.close()
      expect(await real.requestCancel(TENANT_A.id, created.json().id, Date.now())).not.toBeNull()
      // Cancelled by the sweep within a few seconds, rather than let run out its 15 s model call.
      await expect.poll(() => state.patches.some((p) => p.status === 'cancelled'), { timeout: 8000 }).toBe(true)
      await closing
    }, 30_000)
  })
}
