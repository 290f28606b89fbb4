import { afterEach, describe, expect, it } from 'vitest'
import pg from 'pg'
import { backends } from '../support/backends.js'
import { auth, TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { turnNumber } from '../support/fake-messages-api.js'
import { WebhookServer } from '../support/webhook-server.js'

const confirm = { name: 'confirm', description: 'ask the user', input_schema: { type: 'object' } }

for (const backend of backends) {
  describe.skipIf(backend.skip)(`taking runs over, in one process: ${backend.name}`, () => {
    let h: Harness | undefined
    afterEach(async () => {
      await h?.close()
      h = undefined
    })
    const get = async (id: string) => (await h!.app.inject({ method: 'GET', url: `/runs/${id}`, headers: auth(TENANT_A) })).json()

    it('keeps MAX_RUNNING_RUNS when many runs are created at once', async () => {
      h = await startHarness(backend, { env: { MAX_RUNNING_RUNS: '2' } })
      await h.registerTool('work', '/delay/300', { effect: 'read_only' })
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'work', input: { q: request.body.messages[0].content } }] }
        : { content: [{ type: 'text', text: 'done' }] }
      const created = await Promise.all(Array.from({ length: 8 }, async (_, i) => (await h!.startRun({ input: `run ${i}`, tools: ['work'], background: true })).body))
      for (const run of created) await expect.poll(async () => (await get(run.id)).status, { timeout: 20_000 }).toBe('completed')
      // Each run made one call: at most two runs were ever driven at once.
      expect(h.tools.calls).toHaveLength(8)
      expect(WebhookServer.maxOverlap(h.tools.calls)).toBeLessThanOrEqual(2)
    })

    it('cancels a queued run, and ends one that waits past its deadline, although no slot frees up', async () => {
      h = await startHarness(backend, { env: { MAX_RUNNING_RUNS: '1' } })
      await h.registerTool('stuck', '/hang', { timeout_ms: 600_000 })
      h.model.respond = () => ({ content: [{ type: 'tool_use', name: 'stuck', input: {} }] })
      const busy = (await h.startRun({ input: 'busy', tools: ['stuck'], background: true })).body
      await expect.poll(() => h!.tools.callsTo('/hang').length).toBe(1)
      const queued = (await h.startRun({ input: 'queued', tools: ['stuck'], background: true })).body
      const late = (await h.startRun({ input: 'late', tools: ['stuck'], background: true, timeout_ms: 1500 })).body
      expect((await get(queued.id)).status).toBe('queued')
      const cancelled = await h.app.inject({ method: 'POST', url: `/runs/${queued.id as string}/cancel`, headers: auth(TENANT_A) })
      expect(cancelled.statusCode).toBe(200)
      // It never started, and says so: no started_at, no run.started, nothing asked of the model.
      expect(cancelled.json()).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled', steps: 0, started_at: null, completed_at: expect.any(String) })
      expect(await get(queued.id)).toMatchObject({ status: 'cancelled', started_at: null })
      expect((await h.events(queued.id)).map((e) => e.type)).toEqual(['run.created', 'run.cancelled'])
      expect((await h.events(queued.id))[1]!.data).toMatchObject({ status: 'cancelled', started_at: null })
      await expect.poll(async () => (await get(late.id)).status, { timeout: 10_000 }).toBe('failed')
      expect(await get(late.id)).toMatchObject({ stop_reason: 'timeout', steps: 0, error: { code: 'RUN_ERR_TIMEOUT' }, started_at: null })
      expect((await h.events(late.id)).map((e) => e.type)).toEqual(['run.created', 'run.failed'])
      expect(h.model.requests.map((r) => r.body.messages[0].content)).toEqual(['busy'])
      expect(h.tools.callsTo('/hang')).toHaveLength(1)
      await h.app.inject({ method: 'POST', url: `/runs/${busy.id as string}/cancel`, headers: auth(TENANT_A) })
    })

    it('puts a run back to waiting when the replica taking it out of requires_action died before storing the outputs', async () => {
      h = await startHarness(backend, { env: { RUN_LEASE_MS: '1000' } })
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'confirm', input: {} }] }
        : { content: [{ type: 'text', text: 'thanks' }] }
      const waiting = (await h.startRun({ input: 'x', client_tools: [confirm] })).body
      expect(waiting.status).toBe('requires_action')
      const stored = await h.app.store.getRun(TENANT_A.id, waiting.id)
      // What a replica does first when a caller's outputs arrive, and then it dies.
      expect(await h.app.store.resumeWaitingRun(waiting.id, stored!.event_count, 'a-replica-that-died', 1000)).not.toBeNull()
      expect((await get(waiting.id)).status).toBe('running')
      await expect.poll(async () => (await get(waiting.id)).status, { timeout: 10_000 }).toBe('requires_action')
      const res = await h.app.inject({ method: 'POST', url: `/runs/${waiting.id as string}/tool_outputs`, headers: auth(TENANT_A), payload: { tool_outputs: [{ tool_use_id: waiting.required_action.tool_calls[0].id, content: 'yes' }] } })
      expect(res.json()).toMatchObject({ status: 'completed', output_text: 'thanks' })
      expect(h.model.refusals).toEqual([])
    })
  })
}

const postgres = backends.find((b) => b.name === 'postgres')!
describe.skipIf(postgres.skip)('a run that cannot be resumed (PostgreSQL)', () => {
  let h: Harness | undefined
  afterEach(async () => h?.close())

  it('is failed after a few tries instead of being retried for ever', async () => {
    h = await startHarness(postgres, { env: { RUN_LEASE_MS: '1000' } })
    await h.registerTool('slow', '/delay/200', { effect: 'read_only' })
    h.model.respond = () => ({ content: [{ type: 'tool_use', name: 'slow', input: {} }] })
    const run = (await h.startRun({ input: 'x', tools: ['slow'], max_steps: 1 })).body
    // A replica that held it died, leaving an event nobody can read.
    const db = new pg.Client({ connectionString: h.config.DATABASE_URL })
    await db.connect()
    try {
      await db.query("UPDATE runs SET status = 'running', completed_at = NULL, lease_owner = 'dead', lease_expires_at = 0, step_events_after = 0 WHERE id = $1", [run.id])
      await db.query("INSERT INTO run_events (run_id, seq, tenant_id, type, at, data) SELECT id, event_count + 1, tenant_id, 'tool_call.started', 0, '{not json' FROM runs WHERE id = $1", [run.id])
      await db.query('UPDATE runs SET event_count = event_count + 1 WHERE id = $1', [run.id])
    } finally {
      await db.end()
    }
    await expect.poll(async () => (await h!.app.inject({ method: 'GET', url: `/runs/${run.id as string}`, headers: auth(TENANT_A) })).json().status, { timeout: 15_000 }).toBe('failed')
    const failed = (await h.app.inject({ method: 'GET', url: `/runs/${run.id as string}`, headers: auth(TENANT_A) })).json()
    expect(failed).toMatchObject({ stop_reason: 'error', error: { code: 'RUN_ERR_INTERNAL' } })
  })
})
