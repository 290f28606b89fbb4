import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, turnNumber } from '../support/fake-messages-api.js'
import { readEvents } from '../support/sse.js'

const confirm = { name: 'confirm_with_user', description: 'Ask the user to confirm', input_schema: { type: 'object', properties: { question: { type: 'string' } }, required: ['question'] } }

for (const backend of backends) {
  describe.skipIf(backend.skip)(`client tools: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend, { env: { RUN_MAX_TIMEOUT_MS: '3600000' } })
      await h.registerTool('lookup', '/delay/50', { effect: 'read_only' })
    })
    afterAll(async () => h?.close())
    beforeEach(() => {
      h.model.refusals.length = 0
      // Turn 1: a webhook call and a client call together; then, with every result, an answer.
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'lookup', input: { q: 'order 7' } }, { type: 'tool_use', name: 'confirm_with_user', input: { question: 'Refund order 7?' } }] }
        : { content: [{ type: 'text', text: `final: ${toolResults(request).map(resultText).join(' | ')}` }] }
    })

    const outputs = (id: string, body: Record<string, unknown>, tenant = TENANT_A) =>
      h.app.inject({ method: 'POST', url: `/runs/${id}/tool_outputs`, headers: auth(tenant), payload: body })

    async function waiting (extra: Record<string, unknown> = {}) {
      const { status, body } = await h.startRun({ input: 'refund?', tools: ['lookup'], client_tools: [confirm], ...extra })
      expect(status).toBe(200)
      return body
    }

    it('runs the step\'s webhook calls, then waits in requires_action with the client calls listed', async () => {
      h.tools.calls.length = 0
      const run = await waiting()
      expect(run).toMatchObject({ status: 'requires_action', stop_reason: null, steps: 1, tool_calls: { total: 1, errors: 0 } })
      expect(run.required_action).toEqual({ type: 'submit_tool_outputs', tool_calls: [{ id: expect.stringMatching(/^toolu_/), name: 'confirm_with_user', input: { question: 'Refund order 7?' } }] })
      expect(h.tools.calls).toHaveLength(1)
      // The model was told about the client tool like any other.
      expect(h.model.requests.at(-1)!.body.tools.map((t: { name: string }) => t.name)).toEqual(['lookup', 'confirm_with_user'])
      const events = await h.events(run.id)
      expect(events.at(-1)).toMatchObject({ type: 'run.requires_action', data: { status: 'requires_action' } })
    })

    it('resumes with the outputs, every result back in the model\'s order, and ends', async () => {
      const run = await waiting()
      const callId = run.required_action.tool_calls[0].id
      const res = await outputs(run.id, { tool_outputs: [{ tool_use_id: callId, content: 'yes, refund it' }] })
      expect(res.statusCode).toBe(200)
      expect(res.json()).toMatchObject({ status: 'completed', required_action: null, steps: 2, tool_calls: { total: 2, errors: 0 } })
      expect(res.json().output_text).toBe('final: ok lookup {"q":"order 7"} | yes, refund it')
      const sent = h.model.requests.at(-1)!.body.messages
      const asked = sent[1].content.filter((b: { type: string }) => b.type === 'tool_use').map((b: { id: string }) => b.id)
      expect(sent[2].content.map((b: { tool_use_id: string }) => b.tool_use_id)).toEqual(asked)
      expect(h.model.refusals).toEqual([])
      const done = (await h.events(run.id)).find((e) => e.type === 'tool_call.completed' && e.data.tool_use_id === callId)!
      expect(done.data).toMatchObject({ outcome: 'client', is_error: false, content: 'yes, refund it' })
    })

    it('refuses outputs that do not answer exactly the listed calls, and changes nothing', async () => {
      const run = await waiting()
      const callId = run.required_action.tool_calls[0].id
      const cases: Array<[Record<string, unknown>, RegExp]> = [
        [{ tool_outputs: [{ tool_use_id: 'toolu_unknown', content: 'x' }] }, /names toolu_unknown, which the run did not ask for/],
        [{ tool_outputs: [{ tool_use_id: callId, content: 'a' }, { tool_use_id: callId, content: 'b' }] }, new RegExp(`answers ${callId} more than once`)],
        [{ tool_outputs: [{ tool_use_id: callId, content: 'half \ud83d' }] }, /half of a UTF-16 surrogate pair/]
      ]
      for (const [body, message] of cases) {
        const res = await outputs(run.id, body)
        expect(res.statusCode).toBe(400)
        expect(res.json().code).toBe('RUN_ERR_INVALID_TOOL_OUTPUTS')
        expect(res.json().message).toMatch(message)
      }
      const missing = await outputs(run.id, { tool_outputs: [] })
      expect(missing.statusCode).toBe(400)
      expect((await h.app.inject({ method: 'GET', url: `/runs/${run.id}`, headers: auth(TENANT_A) })).json().status).toBe('requires_action')
    })

    it('refuses content the model would refuse, before taking the run, which still waits', async () => {
      const run = await waiting()
      const id = run.required_action.tool_calls[0].id
      for (const content of [[{ type: 'text', text: 5 }], [{ type: 'text' }], [{ type: 'text', text: '' }], [{ type: 'image' }], [{ type: 'image', source: { type: 'base64', media_type: 'image/bmp', data: 'x' } }], [{ type: 'video' }]]) {
        const res = await outputs(run.id, { tool_outputs: [{ tool_use_id: id, content }] })
        expect(res.statusCode, JSON.stringify(content)).toBe(400)
        expect(res.json().code).toBe('REQUEST_ERR_VALIDATION')
      }
      expect((await h.app.inject({ method: 'GET', url: `/runs/${run.id}`, headers: auth(TENANT_A) })).json().status).toBe('requires_action')
      const ok = await outputs(run.id, { tool_outputs: [{ tool_use_id: id, content: [{ type: 'text', text: 'yes' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }] }] })
      expect(ok.json().status).toBe('completed')
      expect(h.model.refusals).toEqual([])
    })

    it('refuses, naming the output and the block, a blank text or a cache_control the model would refuse; the run still waits', async () => {
      const run = await waiting()
      const id = run.required_action.tool_calls[0].id
      const cases: Array<[unknown[], string]> = [
        [[{ type: 'text', text: 'yes' }, { type: 'text', text: '  ' }], `tool_outputs[0].content[1] (for ${id as string}) is a blank text block: `],
        [[{ type: 'text', text: 'yes' }, { type: 'text', text: 'no', cache_control: { type: 'persistent' } }], `tool_outputs[0].content[1].cache_control (for ${id as string}) has type "persistent": the Messages API takes only "ephemeral"; `],
        [[{ type: 'text', text: 'yes', cache_control: { type: 'ephemeral', ttl: '10m' } }], 'tool_outputs[0].content[0].cache_control'],
        [[{ type: 'text', text: 'yes', cache_control: { type: 'ephemeral', note: 'x' } }], 'tool_outputs[0].content[0].cache_control'],
        [['a', 'b', 'c', 'd', 'e'].map((text) => ({ type: 'text', text, cache_control: { type: 'ephemeral' } })), 'With these outputs the run\'s next model request would hold 5 cache breakpoints (cache_control on tool_outputs[0].content[0], tool_outputs[0].content[1], ']
      ]
      for (const [content, start] of cases) {
        const res = await outputs(run.id, { tool_outputs: [{ tool_use_id: id, content }] })
        expect(res.statusCode, JSON.stringify(content)).toBe(400)
        expect(res.json().code).toBe('RUN_ERR_INVALID_TOOL_OUTPUTS')
        expect(res.json().message.slice(0, start.length)).toBe(start)
      }
      expect((await h.app.inject({ method: 'GET', url: `/runs/${run.id}`, headers: auth(TENANT_A) })).json().status).toBe('requires_action')
      const ok = await outputs(run.id, { tool_outputs: [{ tool_use_id: id, content: [{ type: 'text', text: 'yes', cache_control: { type: 'ephemeral', ttl: '1h' } }] }] })
      expect(ok.json().status).toBe('completed')
      expect(h.model.refusals).toEqual([])
    })

    it('counts the breakpoints the run already has: outputs that would make more than four are refused, and the run still waits', async () => {
      const cached = (text: string) => ({ type: 'text', text, cache_control: { type: 'ephemeral' } })
      const { body: run } = await h.startRun({ system: [cached('You refund orders.')], messages: [{ role: 'user', content: [cached('Order 7 arrived broken.'), cached('refund?')] }], tools: ['lookup'], client_tools: [confirm] })
      expect(run.status).toBe('requires_action')
      const id = run.required_action.tool_calls[0].id
      const res = await outputs(run.id, { tool_outputs: [{ tool_use_id: id, content: [cached('yes'), cached('refund it')] }] })
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ code: 'RUN_ERR_INVALID_TOOL_OUTPUTS' })
      expect(res.json().message).toBe('With these outputs the run\'s next model request would hold 5 cache breakpoints (cache_control on system[0], messages[0].content[0], messages[0].content[1], tool_outputs[0].content[0], tool_outputs[0].content[1]), but the Messages API takes at most 4: leave cache_control out of some of the outputs\' blocks.')
      expect((await h.app.inject({ method: 'GET', url: `/runs/${run.id}`, headers: auth(TENANT_A) })).json().status).toBe('requires_action')
      const ok = await outputs(run.id, { tool_outputs: [{ tool_use_id: id, content: [cached('yes'), { type: 'text', text: 'refund it' }] }] })
      expect(ok.json()).toMatchObject({ status: 'completed', output_text: 'final: ok lookup {"q":"order 7"} | yesrefund it' })
      expect(h.model.refusals).toEqual([])
    })

    it('gives an is_error output without content a text saying the tool failed, which the model accepts', async () => {
      for (const content of [undefined, '', []]) {
        const run = await waiting()
        const id = run.required_action.tool_calls[0].id
        const res = await outputs(run.id, { tool_outputs: [{ tool_use_id: id, is_error: true, ...(content === undefined ? {} : { content }) }] })
        expect(res.json(), JSON.stringify(content)).toMatchObject({ status: 'completed', tool_calls: { total: 2, errors: 1 }, output_text: 'final: ok lookup {"q":"order 7"} | Tool confirm_with_user failed without a message.' })
        const done = (await h.events(run.id)).find((e) => e.type === 'tool_call.completed' && e.data.tool_use_id === id)!
        expect(done.data).toMatchObject({ outcome: 'client', is_error: true, content: 'Tool confirm_with_user failed without a message.' })
      }
      expect(h.model.refusals).toEqual([])
    })

    it('never loses a cancel that races the caller\'s outputs: the run ends, and the cancel says how', async () => {
      for (let i = 0; i < 3; i++) {
        const run = await waiting()
        const body = { tool_outputs: [{ tool_use_id: run.required_action.tool_calls[0].id, content: 'yes' }] }
        const [cancelled] = await Promise.all([
          h.app.inject({ method: 'POST', url: `/runs/${run.id}/cancel`, headers: auth(TENANT_A) }),
          outputs(run.id, body)
        ])
        expect(cancelled.statusCode).toBe(200)
        expect(['cancelled', 'completed']).toContain(cancelled.json().status)
        const final = (await h.app.inject({ method: 'GET', url: `/runs/${run.id}`, headers: auth(TENANT_A) })).json()
        expect(final.status).toBe(cancelled.json().status)
      }
    })

    it('names the calls an answer leaves out', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'confirm_with_user', input: { question: 'one' } }, { type: 'tool_use', name: 'confirm_with_user', input: { question: 'two' } }] }
        : { content: [{ type: 'text', text: 'ok' }] }
      const run = await waiting()
      const [first, second] = run.required_action.tool_calls
      const res = await outputs(run.id, { tool_outputs: [{ tool_use_id: first.id, content: 'yes' }] })
      expect(res.statusCode).toBe(400)
      expect(res.json().message).toBe(`tool_outputs lacks ${second.id as string}: give one output for each call in required_action.`)
    })

    it('takes the outputs once: a second submission, or one for a run not waiting, is a 409', async () => {
      const run = await waiting()
      const body = { tool_outputs: [{ tool_use_id: run.required_action.tool_calls[0].id, content: 'yes' }], background: true }
      const [a, b] = await Promise.all([outputs(run.id, body), outputs(run.id, body)])
      expect([a.statusCode, b.statusCode].sort()).toEqual([202, 409])
      expect([a, b].find((r) => r.statusCode === 409)!.json().code).toBe('RUN_ERR_NOT_WAITING')
      await expect.poll(async () => (await h.app.inject({ method: 'GET', url: `/runs/${run.id}`, headers: auth(TENANT_A) })).json().status).toBe('completed')
      const late = await outputs(run.id, body)
      expect(late.statusCode).toBe(409)
      expect((await outputs(run.id, body, TENANT_B)).statusCode).toBe(404)
    })

    it('gives an invalid client call an error result instead of listing it', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'confirm_with_user', input: { question: 42 } }] }
        : { content: [{ type: 'text', text: resultText(toolResults(request)[0]!) }] }
      const run = await waiting()
      expect(run.status).toBe('completed')
      expect(run.output_text).toBe('Tool confirm_with_user was not called: invalid input: input.question: must be string')
    })

    it('streams what follows the outputs when asked to', async () => {
      const run = await waiting()
      const base = await h.app.listen({ port: 0, host: '127.0.0.1' })
      try {
        const res = await fetch(`${base}/runs/${run.id}/tool_outputs`, {
          method: 'POST',
          headers: { ...auth(TENANT_A), 'content-type': 'application/json' },
          body: JSON.stringify({ tool_outputs: [{ tool_use_id: run.required_action.tool_calls[0].id, content: 'yes' }], stream: true })
        })
        const { events, ended } = await readEvents(res)
        expect(ended).toBe(true)
        const stored = await h.events(run.id)
        const waitingAt = stored.findIndex((e) => e.type === 'run.requires_action')
        expect(events.map((e) => Number(e.id))).toEqual(stored.slice(waitingAt + 1).map((e) => e.id))
        expect(events[0]!.event).toBe('tool_call.completed')
        expect(events.at(-1)!.event).toBe('run.completed')
      } finally {
        await h.app.server.close()
      }
    })

    it('fails a run whose caller does not answer by its deadline, answering its calls so', async () => {
      const run = await waiting({ timeout_ms: 1500 })
      await expect.poll(async () => (await h.app.inject({ method: 'GET', url: `/runs/${run.id}`, headers: auth(TENANT_A) })).json().status, { timeout: 10_000 }).toBe('failed')
      const full = (await h.app.inject({ method: 'GET', url: `/runs/${run.id}?include=messages`, headers: auth(TENANT_A) })).json()
      expect(full).toMatchObject({ stop_reason: 'timeout', error: { code: 'RUN_ERR_TIMEOUT' } })
      const results = full.messages.at(-1).content
      expect(results.map((r: { is_error?: boolean }) => r.is_error === true)).toEqual([false, true])
      expect(resultText(results[1])).toBe('Not answered: the run reached its timeout before the caller answered.')
    })

    it('cancels a waiting run, answering its calls "cancelled"', async () => {
      const run = await waiting()
      const res = await h.app.inject({ method: 'POST', url: `/runs/${run.id}/cancel`, headers: auth(TENANT_A) })
      expect(res.json()).toMatchObject({ status: 'cancelled', stop_reason: 'cancelled', required_action: null })
      const full = (await h.app.inject({ method: 'GET', url: `/runs/${run.id}?include=messages`, headers: auth(TENANT_A) })).json()
      expect(resultText(full.messages.at(-1).content[1])).toBe('Not answered: the run was cancelled before the caller answered.')
    })

    it('refuses client tools that clash, repeat or do not compile', async () => {
      const cases: Array<[unknown[], RegExp]> = [
        [[{ ...confirm, name: 'lookup' }], /has the name of one of the run's `tools` \(registered tools\)/],
        [[confirm, confirm], /repeats a name/],
        [[{ ...confirm, input_schema: { type: 'object', properties: { a: { type: 'nope' } } } }], /input_schema does not compile/]
      ]
      for (const [clientTools, message] of cases) {
        const res = await h.startRun({ input: 'x', tools: ['lookup'], client_tools: clientTools })
        expect(res.status).toBe(400)
        expect(res.body.message).toMatch(message)
      }
    })
  })
}
