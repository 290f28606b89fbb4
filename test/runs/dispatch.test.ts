import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { startHarness, type Harness } from '../support/harness.js'
import { toolResults, turnNumber, type RecordedRequest } from '../support/fake-messages-api.js'
import { WebhookServer, type RecordedCall } from '../support/webhook-server.js'

/** On the first turn ask for these calls; then end with a text. */
function ask (calls: Array<{ name: string, q: string }>, options: { blockDelayMs?: number } = {}) {
  return (request: RecordedRequest) => turnNumber(request) === 1
    ? { content: calls.map((c) => ({ type: 'tool_use' as const, name: c.name, input: { q: c.q } })), ...options }
    : { content: [{ type: 'text' as const, text: 'all done' }] }
}

function byQuery (calls: readonly RecordedCall[], q: string): RecordedCall {
  const call = calls.find((c) => c.body.input?.q === q)
  if (call === undefined) throw new Error(`no call with q=${q}`)
  return call
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`dispatching a step's tool calls: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => { h = await startHarness(backend) })
    afterAll(async () => h?.close())
    beforeEach(() => { h.tools.calls.length = 0 })

    it('runs all of a turn\'s calls at once: eight calls of 200 ms are in flight together', async () => {
      await h.registerTool('slow', '/delay/200')
      h.model.respond = ask(Array.from({ length: 8 }, (_, i) => ({ name: 'slow', q: `c${i}` })))
      const { status, body } = await h.startRun({ input: 'go', tools: ['slow'] })
      expect(status).toBe(200)
      expect(body).toMatchObject({ status: 'completed', stop_reason: 'end_turn', steps: 2, tool_calls: { total: 8, errors: 0 } })
      expect(h.tools.calls).toHaveLength(8)
      expect(WebhookServer.maxOverlap(h.tools.calls)).toBe(8)
      expect(h.model.refusals).toEqual([])
    })

    it('hands every result back in one user message, in the model\'s order, before anything else', async () => {
      // Answer in the reverse of the order asked: results must still follow the model's order.
      await h.registerTool('quick', '/delay/10')
      await h.registerTool('slower', '/delay/120')
      h.model.respond = ask([{ name: 'slower', q: 'first' }, { name: 'quick', q: 'second' }, { name: 'slower', q: 'third' }])
      const { body } = await h.startRun({ input: 'go', tools: ['quick', 'slower'] })
      expect(body.status).toBe('completed')
      const second = h.model.requests[h.model.requests.length - 1]!
      const assistant = second.body.messages[1]
      const user = second.body.messages[2]
      const asked = assistant.content.filter((b: { type: string }) => b.type === 'tool_use').map((b: { id: string }) => b.id)
      expect(user.role).toBe('user')
      expect(user.content.map((b: { type: string }) => b.type)).toEqual(['tool_result', 'tool_result', 'tool_result'])
      expect(user.content.map((b: { tool_use_id: string }) => b.tool_use_id)).toEqual(asked)
      expect(toolResults(second).map((r) => r.content)).toEqual([
        'ok slower {"q":"first"}', 'ok quick {"q":"second"}', 'ok slower {"q":"third"}'
      ])
      expect(h.model.refusals).toEqual([])
    })

    it('dispatches each read_only or idempotent tool_use the moment it is complete in the stream, not at the end of the message', async () => {
      await h.registerTool('eager', '/delay/50', { effect: 'read_only' })
      // Blocks arrive 150 ms apart: the first call must start (and finish) while the rest stream.
      h.model.respond = ask([{ name: 'eager', q: 'e0' }, { name: 'eager', q: 'e1' }, { name: 'eager', q: 'e2' }], { blockDelayMs: 150 })
      const { body } = await h.startRun({ input: 'go', tools: ['eager'] })
      const events = await h.events(body.id)
      const completedStep = events.find((e) => e.type === 'step.completed' && e.data.step === 1)!
      const firstCallStarted = events.find((e) => e.type === 'tool_call.started' && e.data.input.q === 'e0')!
      const firstCallDone = events.find((e) => e.type === 'tool_call.completed' && e.data.tool_use_id === firstCallStarted.data.tool_use_id)!
      expect(firstCallStarted.id).toBeLessThan(completedStep.id)
      expect(firstCallDone.id).toBeLessThan(completedStep.id)
      // The tool server saw the first call end before the last one began.
      expect(byQuery(h.tools.calls, 'e0').end!).toBeLessThan(byQuery(h.tools.calls, 'e2').start)
    })

    it('dispatches eagerly even when a whole message arrives in one read: the first call is answered before the last block is parsed', async () => {
      await h.registerTool('instant', '/ok', { effect: 'read_only' })
      // No delay between blocks: the fake writes all 200 in one go, and they arrive together.
      h.model.respond = ask(Array.from({ length: 200 }, (_, i) => ({ name: 'instant', q: `b${i}` })))
      const { body } = await h.startRun({ input: 'go', tools: ['instant'] })
      expect(body).toMatchObject({ status: 'completed', tool_calls: { total: 200, errors: 0 } })
      const events = await h.events(body.id)
      const completedStep = events.find((e) => e.type === 'step.completed' && e.data.step === 1)!
      const first = events.find((e) => e.type === 'tool_call.started' && e.data.input.q === 'b0')!
      const firstDone = events.find((e) => e.type === 'tool_call.completed' && e.data.tool_use_id === first.data.tool_use_id)!
      // Sent while the rest of the message was still being read, and answered meanwhile.
      expect(firstDone.id).toBeLessThan(completedStep.id)
    })

    it('holds a side_effecting call until the message is complete, so a broken stream cannot repeat it', async () => {
      await h.registerTool('charge', '/delay/10', { effect: 'side_effecting' })
      await h.registerTool('look', '/delay/10', { effect: 'idempotent' })
      h.model.respond = ask([{ name: 'charge', q: 'pay' }, { name: 'look', q: 'peek' }], { blockDelayMs: 150 })
      const { body } = await h.startRun({ input: 'go', tools: ['charge', 'look'] })
      const events = await h.events(body.id)
      const completedStep = events.find((e) => e.type === 'step.completed' && e.data.step === 1)!
      const started = (q: string) => events.find((e) => e.type === 'tool_call.started' && e.data.input.q === q)!
      expect(started('pay').id).toBeGreaterThan(completedStep.id)
      expect(started('peek').id).toBeLessThan(completedStep.id)
    })

    it('never calls a side_effecting tool twice when the model stream breaks and is retried', async () => {
      await h.registerTool('charge_once', '/ok', { effect: 'side_effecting' })
      await h.registerTool('peek', '/delay/5', { effect: 'read_only' })
      let attempt = 0
      h.model.respond = (request) => {
        if (turnNumber(request) > 1) return { content: [{ type: 'text', text: 'paid' }] }
        attempt++
        const content = [{ type: 'tool_use' as const, name: 'peek', input: { q: 'balance' } }, { type: 'tool_use' as const, name: 'charge_once', input: { q: '42 EUR' } }, { type: 'text' as const, text: 'charging' }]
        // The first answer breaks after both tool_use blocks; the second arrives whole.
        return attempt === 1 ? { content, blockDelayMs: 20, streamErrorAfterBlocks: 2 } : { content }
      }
      const { body } = await h.startRun({ input: 'pay 42', tools: ['charge_once', 'peek'] })
      expect(body).toMatchObject({ status: 'completed', output_text: 'paid' })
      expect(h.tools.callsTo('/ok').filter((c) => c.body.tool === 'charge_once')).toHaveLength(1)
      expect(h.model.refusals).toEqual([])
    })

    it('keeps at most `parallelism` of a run\'s calls in flight', async () => {
      await h.registerTool('bounded', '/delay/100')
      h.model.respond = ask(Array.from({ length: 6 }, (_, i) => ({ name: 'bounded', q: `b${i}` })))
      const { body } = await h.startRun({ input: 'go', tools: ['bounded'], parallelism: 2 })
      expect(body.tool_calls.total).toBe(6)
      expect(WebhookServer.maxOverlap(h.tools.calls)).toBe(2)
    })

    it('keeps at most `max_concurrency` calls of a tool in flight, while other tools go ahead', async () => {
      await h.registerTool('single', '/delay/100', { max_concurrency: 1 })
      await h.registerTool('free', '/delay/100')
      h.model.respond = ask([
        { name: 'single', q: 's1' }, { name: 'single', q: 's2' }, { name: 'single', q: 's3' },
        { name: 'free', q: 'f1' }, { name: 'free', q: 'f2' }
      ])
      await h.startRun({ input: 'go', tools: ['single', 'free'] })
      const single = h.tools.callsTo('/delay/100').filter((c) => c.body.tool === 'single')
      const free = h.tools.callsTo('/delay/100').filter((c) => c.body.tool === 'free')
      expect(WebhookServer.maxOverlap(single)).toBe(1)
      expect(WebhookServer.maxOverlap(free)).toBe(2)
      // The free calls did not wait for the single-file ones.
      expect(Math.max(...free.map((c) => c.start))).toBeLessThan(byQuery(single, 's2').start)
    })

    it('runs a parallel: false call alone, after the calls before it and before the calls after it', async () => {
      await h.registerTool('par', '/delay/100')
      await h.registerTool('serial', '/delay/100', { parallel: false })
      h.model.respond = ask([
        { name: 'par', q: 'a' }, { name: 'par', q: 'b' }, { name: 'serial', q: 'S' }, { name: 'par', q: 'c' }, { name: 'par', q: 'd' }
      ])
      await h.startRun({ input: 'go', tools: ['par', 'serial'] })
      const calls = h.tools.calls
      const S = byQuery(calls, 'S')
      for (const q of ['a', 'b']) expect(byQuery(calls, q).end!).toBeLessThanOrEqual(S.start)
      for (const q of ['c', 'd']) expect(byQuery(calls, q).start).toBeGreaterThanOrEqual(S.end!)
      expect(WebhookServer.maxOverlap([byQuery(calls, 'a'), byQuery(calls, 'b')])).toBe(2)
      expect(WebhookServer.maxOverlap([byQuery(calls, 'c'), byQuery(calls, 'd')])).toBe(2)
    })
  })
}
