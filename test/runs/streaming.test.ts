import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { turnNumber } from '../support/fake-messages-api.js'
import { readEvents } from '../support/sse.js'

for (const backend of backends) {
  describe.skipIf(backend.skip)(`streamed events: ${backend.name}`, () => {
    let h: Harness
    let base: string
    beforeAll(async () => {
      h = await startHarness(backend)
      base = await h.app.listen({ port: 0, host: '127.0.0.1' })
      await h.registerTool('slow', '/delay/400', { effect: 'read_only' })
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'text', text: 'Looking that up for you.' }, { type: 'tool_use', name: 'slow', input: { q: 'a' } }, { type: 'tool_use', name: 'slow', input: { q: 'b' } }] }
        : { content: [{ type: 'text', text: 'Here is the whole answer, streamed piece by piece.' }] }
    })
    afterAll(async () => h?.close())

    const post = (body: Record<string, unknown>, headers: Record<string, string> = {}) => fetch(`${base}/runs`, {
      method: 'POST', headers: { ...auth(TENANT_A), 'content-type': 'application/json', ...headers }, body: JSON.stringify(body)
    })
    const stream = (runId: string, headers: Record<string, string> = {}, query = '') => fetch(`${base}/runs/${runId}/events${query}`, {
      headers: { ...auth(TENANT_A), accept: 'text/event-stream', ...headers }
    })

    it('stream: true answers Server-Sent Events, one per event, numbered, ending after the last', async () => {
      const res = await post({ input: 'x', tools: ['slow'], stream: true })
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8')
      const { events, ended } = await readEvents(res)
      expect(ended).toBe(true)
      expect(events.map((e) => Number(e.id))).toEqual(events.map((_, i) => i + 1))
      for (const e of events) {
        expect(e.event).toBe(e.data.type)
        expect(e.data.id).toBe(Number(e.id))
      }
      const types = events.map((e) => e.event)
      expect(types[0]).toBe('run.created')
      expect(types.at(-1)).toBe('run.completed')
      expect(types.filter((t) => t === 'tool_call.completed')).toHaveLength(2)
      // The model's text as it streamed, in message.delta events, adds up to what it said.
      const streamed = events.filter((e) => e.event === 'message.delta' && e.data.data.step === 2).map((e) => e.data.data.text).join('')
      expect(streamed).toBe('Here is the whole answer, streamed piece by piece.')
      // Exactly what the run stored, in the same order.
      const stored = await h.events(events[0]!.data.run_id)
      expect(events.map((e) => e.data)).toEqual(stored)
    })

    it('a client that drops and reconnects with Last-Event-ID gets every event exactly once, in order', async () => {
      const created = await (await post({ input: 'x', tools: ['slow'], background: true })).json() as { id: string }
      const first = await readEvents(await stream(created.id), { until: (e) => e.event === 'tool_call.started' })
      expect(first.ended).toBe(false)
      const lastSeen = first.events.at(-1)!.id!
      const second = await readEvents(await stream(created.id, { 'last-event-id': lastSeen }))
      expect(second.ended).toBe(true)
      const all = [...first.events, ...second.events].map((e) => Number(e.id))
      expect(all).toEqual(all.map((_, i) => i + 1))
      expect(second.events.at(-1)!.event).toBe('run.completed')
      expect(all.length).toBe((await h.events(created.id)).length)
    })

    it('?after=N streams from there; Last-Event-ID wins over it; a finished run streams and ends', async () => {
      const run = await (await post({ input: 'x', tools: ['slow'] })).json() as { id: string }
      const total = (await h.events(run.id)).length
      const fromThree = await readEvents(await stream(run.id, {}, '?after=3'))
      expect(fromThree.events.map((e) => Number(e.id))).toEqual(Array.from({ length: total - 3 }, (_, i) => i + 4))
      const header = await readEvents(await stream(run.id, { 'last-event-id': String(total - 1) }, '?after=0'))
      expect(header.events.map((e) => Number(e.id))).toEqual([total])
    })

    it('a client that disconnects from its stream does not stop the run', async () => {
      const abort = new AbortController()
      const res = await fetch(`${base}/runs`, {
        method: 'POST', headers: { ...auth(TENANT_A), 'content-type': 'application/json' }, body: JSON.stringify({ input: 'x', tools: ['slow'], stream: true }), signal: abort.signal
      })
      const { events } = await readEvents(res, { until: (e) => e.event === 'run.started', abort })
      const runId = events[0]!.data.run_id as string
      await expect.poll(async () => (await h.app.inject({ method: 'GET', url: `/runs/${runId}`, headers: auth(TENANT_A) })).json().status, { timeout: 10_000 }).toBe('completed')
    })

    it('keeps runs private: another tenant\'s stream is a 404 in the error shape', async () => {
      const run = await (await post({ input: 'x', tools: ['slow'] })).json() as { id: string }
      const res = await fetch(`${base}/runs/${run.id}/events`, { headers: { ...auth(TENANT_B), accept: 'text/event-stream' } })
      expect(res.status).toBe(404)
      expect((await res.json() as { code: string }).code).toBe('RUN_ERR_NOT_FOUND')
    })

    it('refuses a Last-Event-ID that is not an event number', async () => {
      const run = await (await post({ input: 'x', tools: ['slow'] })).json() as { id: string }
      expect((await stream(run.id, { 'last-event-id': 'yesterday' })).status).toBe(400)
      expect((await stream(run.id, { 'last-event-id': '9999999999' })).status).toBe(400)
    })

    it('answers 204 to a reconnect after the last event of a finished run, so EventSource stops', async () => {
      const run = await (await post({ input: 'x', tools: ['slow'] })).json() as { id: string }
      const total = (await h.events(run.id)).length
      const res = await stream(run.id, { 'last-event-id': String(total) })
      expect(res.status).toBe(204)
      expect((await stream(run.id, {}, `?after=${total + 5}`)).status).toBe(204)
    })

    it('sends its headers at once, before any event, then follows the run to its end', async () => {
      await h.registerTool('stuck', '/hang', { timeout_ms: 600_000 })
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'stuck', input: { q: 'x' } }] }
        : { content: [{ type: 'text', text: 'never' }] }
      const run = await (await post({ input: 'x', tools: ['stuck'], background: true })).json() as { id: string }
      await expect.poll(() => h.tools.callsTo('/hang').length).toBeGreaterThan(0)
      const seen = (await h.events(run.id)).length
      // Nothing new happens until the cancel below: the answer must not wait for an event.
      const res = await stream(run.id, { 'last-event-id': String(seen) })
      expect(res.status).toBe(200)
      const reading = readEvents(res)
      await h.app.inject({ method: 'POST', url: `/runs/${run.id}/cancel`, headers: auth(TENANT_A) })
      const { events, ended } = await reading
      expect(ended).toBe(true)
      expect(events.at(-1)!.event).toBe('run.cancelled')
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'text', text: 'Looking that up for you.' }, { type: 'tool_use', name: 'slow', input: { q: 'a' } }, { type: 'tool_use', name: 'slow', input: { q: 'b' } }] }
        : { content: [{ type: 'text', text: 'Here is the whole answer, streamed piece by piece.' }] }
    })

    it('keeps the idempotent-replayed header on a replayed stream', async () => {
      const body = JSON.stringify({ input: 'x', tools: ['slow'], stream: true })
      const headers = { ...auth(TENANT_A), 'content-type': 'application/json', 'idempotency-key': 'stream-replay' }
      await readEvents(await fetch(`${base}/runs`, { method: 'POST', headers, body }))
      const again = await fetch(`${base}/runs`, { method: 'POST', headers, body })
      expect(again.headers.get('idempotent-replayed')).toBe('true')
      const { events } = await readEvents(again)
      expect(events[0]!.event).toBe('run.created')
      expect(events.at(-1)!.event).toBe('run.completed')
    })
  })
}
