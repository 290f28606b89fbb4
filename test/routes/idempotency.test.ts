import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { turnNumber } from '../support/fake-messages-api.js'

for (const backend of backends) {
  describe.skipIf(backend.skip)(`Idempotency-Key on POST /runs: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend)
      await h.registerTool('slow', '/delay/300', { effect: 'read_only' })
      await h.registerTool('slow', '/delay/300', { effect: 'read_only' }, TENANT_B)
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'slow', input: { q: 'x' } }] }
        : { content: [{ type: 'text', text: 'done' }] }
    })
    afterAll(async () => h?.close())

    const post = (key: string, body: Record<string, unknown>, tenant = TENANT_A) =>
      h.app.inject({ method: 'POST', url: '/runs', headers: { ...auth(tenant), 'idempotency-key': key }, payload: body })

    it('returns the same run for the same key and body, even while it runs, and starts nothing more', async () => {
      const body = { input: 'charge once', tools: ['slow'], background: true, metadata: { a: '1', b: '2' } }
      const first = await post('key-1', body)
      expect(first.statusCode).toBe(202)
      const modelCalls = h.model.requests.length
      // Same body, its keys in another order: the same request.
      const again = await post('key-1', { metadata: { b: '2', a: '1' }, background: true, tools: ['slow'], input: 'charge once' })
      expect(again.statusCode).toBe(202)
      expect(again.json().id).toBe(first.json().id)
      expect(again.headers['idempotent-replayed']).toBe('true')
      await expect.poll(async () => (await h.app.inject({ method: 'GET', url: `/runs/${first.json().id as string}`, headers: auth(TENANT_A) })).json().status).toBe('completed')
      expect(h.model.requests.length - modelCalls).toBe(2)
      const list = (await h.app.inject({ method: 'GET', url: '/runs?limit=100', headers: auth(TENANT_A) })).json().data
      expect(list.filter((r: { id: string }) => r.id === first.json().id)).toHaveLength(1)
    })

    it('answers a sync repeat with the finished run', async () => {
      const body = { input: 'once, synchronously', tools: ['slow'] }
      const first = await post('key-sync', body)
      const again = await post('key-sync', body)
      expect(again.statusCode).toBe(200)
      // The same run; only its timeline link is signed afresh on every answer.
      expect({ ...again.json(), timeline_url: null }).toEqual({ ...first.json(), timeline_url: null })
      expect(again.json().timeline_url).toMatch(/^\/runs\/run_\w+\/timeline\?/)
    })

    it('answers 409 when the key was used for another body', async () => {
      await post('key-2', { input: 'first', tools: ['slow'] })
      const res = await post('key-2', { input: 'second', tools: ['slow'] })
      expect(res.statusCode).toBe(409)
      expect(res.json()).toMatchObject({ code: 'RUN_ERR_IDEMPOTENCY_CONFLICT' })
    })

    it('keeps keys per tenant', async () => {
      const a = await post('shared-key', { input: 'x', tools: ['slow'], background: true }, TENANT_A)
      const b = await post('shared-key', { input: 'x', tools: ['slow'], background: true }, TENANT_B)
      expect(a.json().id).not.toBe(b.json().id)
    })

    it('makes one run of two requests racing with one key', async () => {
      const body = { input: 'race', tools: ['slow'], background: true }
      const [a, b] = await Promise.all([post('key-race', body), post('key-race', body)])
      expect(a.json().id).toBe(b.json().id)
    })

    it('refuses a key that is not 1 to 255 printable characters', async () => {
      const res = await post('x'.repeat(256), { input: 'x' })
      expect(res.statusCode).toBe(400)
      expect(res.json().message).toContain('Idempotency-Key')
    })
  })
}
