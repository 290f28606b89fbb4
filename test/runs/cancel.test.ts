import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, startApp, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, turnNumber } from '../support/fake-messages-api.js'
import { findTranscriptProblem } from '../../src/runs/transcript.js'

for (const backend of backends) {
  describe.skipIf(backend.skip)(`cancel: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend)
      await h.registerTool('stuck', '/hang', { timeout_ms: 600_000 })
      await h.registerTool('quick', '/ok')
    })
    afterAll(async () => h?.close())

    const cancel = (id: string, tenant = TENANT_A) => h.app.inject({ method: 'POST', url: `/runs/${id}/cancel`, headers: auth(tenant) })
    const transcript = async (id: string) => (await h.app.inject({ method: 'GET', url: `/runs/${id}?include=messages`, headers: auth(TENANT_A) })).json().messages

    it('stops a run waiting on a slow tool at once: the call is aborted, answered "cancelled", the run ends cancelled', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'stuck', input: { q: 'forever' } }, { type: 'tool_use', name: 'quick', input: { q: 'now' } }] }
        : { content: [{ type: 'text', text: 'never' }] }
      const { body: run } = await h.startRun({ input: 'x', tools: ['stuck', 'quick'], background: true })
      await expect.poll(() => h.tools.callsTo('/hang').length).toBeGreaterThan(0)
      // The quick call's answer is in before the cancel (on a loaded machine it may still be in flight
      // when the slow one has arrived), so that what the cancel does to each call is known.
      await expect.poll(async () => (await h.events(run.id)).some((e) => e.type === 'tool_call.completed' && e.data.name === 'quick'), { timeout: 10_000 }).toBe(true)
      const res = await cancel(run.id)
      expect(res.statusCode).toBe(200)
      expect(res.json()).toMatchObject({ id: run.id, status: 'cancelled', stop_reason: 'cancelled', completed_at: expect.any(String) })
      // The webhook server saw its connection closed.
      await expect.poll(() => h.tools.callsTo('/hang').every((c) => c.aborted)).toBe(true)
      const messages = await transcript(run.id)
      expect(findTranscriptProblem(messages)).toBeNull()
      const results = messages.at(-1).content
      expect(results.map((r: { is_error?: boolean }) => r.is_error === true)).toEqual([true, false])
      expect(resultText(results[0])).toBe('Tool stuck was cancelled: the run was cancelled')
      const events = await h.events(run.id)
      expect(events.at(-1)).toMatchObject({ type: 'run.cancelled', data: { status: 'cancelled' } })
    })

    it('stops a run waiting on the model: the model call is aborted', async () => {
      const aborted = h.model.aborted.length
      h.model.respond = () => ({ kind: 'hang' })
      const { body: run } = await h.startRun({ input: 'x', background: true })
      await expect.poll(() => h.model.requests.some((r) => r.body.messages[0].content === 'x' && r.at >= Date.parse(run.created_at))).toBe(true)
      const res = await cancel(run.id)
      expect(res.json()).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled', steps: 0 })
      await expect.poll(() => h.model.aborted.length).toBeGreaterThan(aborted)
      // Nothing half-done was stored: the transcript is the question alone.
      expect(await transcript(run.id)).toEqual([{ role: 'user', content: 'x' }])
    })

    it('answers 409 for a run that already ended, and 404 for another tenant\'s', async () => {
      h.model.respond = () => ({ content: [{ type: 'text', text: 'done' }] })
      const { body: run } = await h.startRun({ input: 'x' })
      const again = await cancel(run.id)
      expect(again.statusCode).toBe(409)
      expect(again.json()).toMatchObject({ code: 'RUN_ERR_NOT_ACTIVE' })
      expect(again.json().message).toContain('already ended (completed)')
      const other = await cancel(run.id, TENANT_B)
      expect(other.statusCode).toBe(404)
    })
  })
}

const postgres = backends.find((b) => b.name === 'postgres')!
describe.skipIf(postgres.skip)('cancel through another replica (PostgreSQL)', () => {
  it('cancels a run that reaches requires_action on its replica while the cancel is under way, or waits there already', async () => {
    const location = await postgres.location()
    const a = await startHarness(postgres, { env: { DATABASE_URL: location.databaseUrl! } })
    const b = await startApp(postgres, { location, env: { ANTHROPIC_BASE_URL: a.model.url, ANTHROPIC_API_KEY: 'k' } })
    const confirm = { name: 'confirm', description: 'ask', input_schema: { type: 'object' } }
    try {
      await a.registerTool('slowish', '/delay/300', { effect: 'read_only' })
      a.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'slowish', input: { q: 'x' } }, { type: 'tool_use', name: 'confirm', input: {} }] }
        : { content: [{ type: 'text', text: 'done' }] }
      // Cancelled through b while a's step still runs its webhook call, then stops to wait.
      const { body: first } = await a.startRun({ input: 'x', tools: ['slowish'], client_tools: [confirm], background: true })
      await expect.poll(() => a.tools.calls.length).toBeGreaterThan(0)
      const racing = await b.app.inject({ method: 'POST', url: `/runs/${first.id}/cancel`, headers: auth(TENANT_A) })
      expect(racing.json()).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled' })
      // Cancelled through b while it waits for its caller.
      const { body: second } = await a.startRun({ input: 'x', tools: ['slowish'], client_tools: [confirm] })
      expect(second.status).toBe('requires_action')
      const waiting = await b.app.inject({ method: 'POST', url: `/runs/${second.id}/cancel`, headers: auth(TENANT_A) })
      expect(waiting.json()).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled' })
    } finally {
      await b.close()
      await a.close()
      await location.destroy()
    }
  })

  it('reaches the replica that drives the run', async () => {
    const location = await postgres.location()
    const a = await startHarness(postgres, { env: { DATABASE_URL: location.databaseUrl! } })
    const b = await startApp(postgres, { location, env: { ANTHROPIC_BASE_URL: a.model.url, ANTHROPIC_API_KEY: 'k' } })
    try {
      await a.registerTool('stuck', '/hang', { timeout_ms: 600_000 })
      a.model.respond = () => ({ content: [{ type: 'tool_use', name: 'stuck', input: { q: 'x' } }] })
      const { body: run } = await a.startRun({ input: 'x', tools: ['stuck'], background: true })
      await expect.poll(() => a.tools.callsTo('/hang').length).toBeGreaterThan(0)
      // Replica b does not drive the run: it records the request, and replica a acts on it.
      const res = await b.app.inject({ method: 'POST', url: `/runs/${run.id}/cancel`, headers: auth(TENANT_A) })
      expect(res.statusCode).toBe(200)
      expect(res.json()).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled' })
      await expect.poll(() => a.tools.callsTo('/hang').every((c) => c.aborted)).toBe(true)
    } finally {
      await b.close()
      await a.close()
      await location.destroy()
    }
  })
})
