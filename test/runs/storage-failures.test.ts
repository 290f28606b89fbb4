import { afterEach, describe, expect, it } from 'vitest'
import { buildApp } from '../../app.js'
import { loadConfig } from '../../src/config.js'
import { createStore, type Store } from '../../src/store/index.js'
import { auth, BASE_ENV, TENANT_A } from '../support/app.js'
import { startFakeMessagesApi, toolsThenAnswer, type FakeMessagesApi } from '../support/fake-messages-api.js'
import { startWebhookServer, type WebhookServer } from '../support/webhook-server.js'
import { silentLog } from '../support/log.js'
import { backends, type StorageLocation } from '../support/backends.js'

/**
 * The real store, with writeRun failing as a flaky database would: `failNext` writes throw before
 * touching anything; `commitThenFail` writes are stored and then throw, as when a connection breaks
 * while COMMIT is being answered.
 */
function flaky (store: Store) {
  const plan = { failNext: 0, commitThenFail: 0, failures: 0, failEndWrites: 0, down: false, failStep: 0 }
  const wrapped = new Proxy(store, {
    get (target, property) {
      if (property !== 'writeRun') {
        const value = Reflect.get(target, property, target)
        return typeof value === 'function' ? value.bind(target) : value
      }
      return async (...args: Parameters<Store['writeRun']>) => {
        if (plan.failEndWrites > 0 && args[2].patch?.status === 'completed') {
          plan.failEndWrites--
          plan.failures++
          throw Object.assign(new Error('connection terminated unexpectedly'), { code: 'ECONNRESET' })
        }
        if (plan.failStep > 0 && args[2].patch?.steps === plan.failStep && args[2].patch.status === undefined) {
          plan.failures++
          throw Object.assign(new Error('connection terminated unexpectedly'), { code: 'ECONNRESET' })
        }
        if (plan.down || plan.failNext > 0) {
          if (!plan.down) plan.failNext--
          plan.failures++
          throw Object.assign(new Error('connection terminated unexpectedly'), { code: 'ECONNRESET' })
        }
        const result = await target.writeRun(...args)
        if (plan.commitThenFail > 0) {
          plan.commitThenFail--
          plan.failures++
          throw Object.assign(new Error('connection lost during COMMIT'), { code: 'ECONNRESET' })
        }
        return result
      }
    }
  })
  return { store: wrapped, plan }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`storage that fails for a moment: ${backend.name}`, () => {
    let cleanup: Array<() => Promise<void>> = []
    afterEach(async () => {
      for (const fn of cleanup.reverse()) await fn()
      cleanup = []
    })

    async function setup (env: Record<string, string> = {}) {
      const location: StorageLocation = await backend.location()
      const store = await createStore({ dataDir: location.dataDir, databaseUrl: location.databaseUrl, log: silentLog })
      const model: FakeMessagesApi = await startFakeMessagesApi(toolsThenAnswer([{ name: 'ok', input: {} }, { name: 'ok', input: { q: 'b' } }]))
      const tools: WebhookServer = await startWebhookServer()
      const { store: wrapped, plan } = flaky(store)
      const config = loadConfig({ ...BASE_ENV, DATA_DIR: location.dataDir, ...(location.databaseUrl === undefined ? {} : { DATABASE_URL: location.databaseUrl }), ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'k', ...env })
      const app = await buildApp({ config, logger: silentLog, store: wrapped })
      cleanup.push(async () => { await app.close(); await store.close(); await model.close(); await tools.close(); await location.destroy() })
      await app.inject({ method: 'PUT', url: '/tools/ok', headers: auth(TENANT_A), payload: { description: 'ok', input_schema: { type: 'object' }, url: `${tools.url}/ok` } })
      return { app, plan, store, model }
    }

    // Storage down for longer than its retries would last (about 30 s): a run that stops meanwhile
    // must not go on waiting them out.
    it('a run reaching its deadline while storage is down stops retrying at once, and ends timeout once storage is back', async () => {
      const { app, plan, model } = await setup()
      model.respond = async () => {
        // Storage goes down while the model answers: the step's write is the first to fail.
        plan.down = true
        return { content: [{ type: 'tool_use', name: 'ok', input: {} }] }
      }
      const created = await app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', tools: ['ok'], timeout_ms: 1500, background: true } })
      expect(created.statusCode).toBe(202)
      await expect.poll(() => plan.failures).toBeGreaterThan(0)
      // Let go soon after the deadline, although storage is still down (it used to hold on for 30 s).
      await expect.poll(() => app.engine.driving, { timeout: 10_000 }).toBe(0)
      expect(plan.down).toBe(true)
      plan.down = false
      // Taken up again (by the sweep) and ended at its deadline.
      await expect.poll(async () => (await app.inject({ method: 'GET', url: `/runs/${created.json().id}`, headers: auth(TENANT_A) })).json(), { timeout: 10_000 })
        .toMatchObject({ status: 'failed', stop_reason: 'timeout' })
    }, 30_000)

    it('a run cancelled while its step\'s write is being retried keeps that step: its messages, results and events are stored with the cancel', async () => {
      const { app, plan } = await setup()
      plan.failStep = 1
      const created = await app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', tools: ['ok'], background: true } })
      const id = created.json().id
      await expect.poll(() => plan.failures).toBeGreaterThan(1)
      const cancelled = await app.inject({ method: 'POST', url: `/runs/${id}/cancel`, headers: auth(TENANT_A) })
      expect(cancelled.json()).toMatchObject({ status: 'cancelled', steps: 1, tool_calls: { total: 2, errors: 0 } })
      const run = (await app.inject({ method: 'GET', url: `/runs/${id}?include=messages`, headers: auth(TENANT_A) })).json()
      expect(run.messages.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant', 'user'])
      const events = (await app.inject({ method: 'GET', url: `/runs/${id}/events?limit=100`, headers: auth(TENANT_A) })).json().data
      expect(events.filter((e: { type: string }) => e.type === 'tool_call.completed')).toHaveLength(2)
      expect(events.map((e: { id: number }) => e.id)).toEqual(events.map((_: unknown, i: number) => i + 1))
      expect(events[events.length - 1].type).toBe('run.cancelled')
    })

    it('a replica shutting down while storage is down hands its runs back at once, rather than waiting out the retries', async () => {
      const { app, plan, model } = await setup({ SHUTDOWN_GRACE_MS: '100' })
      model.respond = async () => {
        plan.down = true
        return { content: [{ type: 'tool_use', name: 'ok', input: {} }] }
      }
      await app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', tools: ['ok'], background: true } })
      await expect.poll(() => plan.failures).toBeGreaterThan(0)
      let closed = false
      const closing = app.close().then(() => { closed = true })
      // Closed within a few seconds (the retries alone would take about 30).
      await expect.poll(() => closed, { timeout: 10_000 }).toBe(true)
      await closing
    }, 30_000)

    it('retries failed writes within the lease: the run completes with every event, in order, once', async () => {
      const { app, plan } = await setup()
      plan.failNext = 3
      const res = await app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', tools: ['ok'] } })
      expect(res.json()).toMatchObject({ status: 'completed', tool_calls: { total: 2, errors: 0 } })
      expect(plan.failures).toBe(3)
      const events = (await app.inject({ method: 'GET', url: `/runs/${res.json().id}/events?limit=100`, headers: auth(TENANT_A) })).json().data
      expect(events.map((e: { id: number }) => e.id)).toEqual(events.map((_: unknown, i: number) => i + 1))
      expect(events.filter((e: { type: string }) => e.type === 'tool_call.completed')).toHaveLength(2)
    })

    it('recognises a write that was committed although it reported failure, and does not store it twice', async () => {
      const { app, plan } = await setup()
      plan.commitThenFail = 2
      const res = await app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', tools: ['ok'] } })
      expect(res.json()).toMatchObject({ status: 'completed' })
      const run = (await app.inject({ method: 'GET', url: `/runs/${res.json().id}?include=messages`, headers: auth(TENANT_A) })).json()
      expect(run.messages.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant'])
      const events = (await app.inject({ method: 'GET', url: `/runs/${res.json().id}/events?limit=100`, headers: auth(TENANT_A) })).json().data
      expect(new Set(events.map((e: { id: number }) => e.id)).size).toBe(events.length)
      expect(events[events.length - 1].type).toBe('run.completed')
    })

    it('a run whose end cannot be stored through every retry ends failed once, with its last step kept', async () => {
      const { app, plan } = await setup()
      // The write of the last step and run.completed fails through the whole retry schedule (about
      // 30 s); then storage answers again, for the last try to record the end.
      plan.failEndWrites = 9
      const res = await app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', tools: ['ok'] } })
      expect(res.json()).toMatchObject({ status: 'failed', error: { code: 'RUN_ERR_STORAGE' } })
      const run = (await app.inject({ method: 'GET', url: `/runs/${res.json().id}?include=messages`, headers: auth(TENANT_A) })).json()
      expect(run).toMatchObject({ status: 'failed', steps: 2 })
      expect(run.messages.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant'])
      const events = (await app.inject({ method: 'GET', url: `/runs/${res.json().id}/events?limit=100`, headers: auth(TENANT_A) })).json().data
      // One end, and no number skipped where the end that was never stored had been counted.
      expect(events.filter((e: { type: string }) => /^run\.(completed|failed|cancelled)$/.test(e.type)).map((e: { type: string }) => e.type)).toEqual(['run.failed'])
      expect(events.map((e: { id: number }) => e.id)).toEqual(events.map((_: unknown, i: number) => i + 1))
    }, 60_000)
  })
}
