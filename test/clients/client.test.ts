import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  APIConnectionError, APIError, APIUserAbortError, AuthenticationError, BadRequestError, ConflictError, NotFoundError, RateLimitError, ServiceUnavailableError, Switchboard, type RunEvent
} from '../../clients/typescript/src/index.js'
import { backends } from '../support/backends.js'
import { TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, toolsThenAnswer, turnNumber } from '../support/fake-messages-api.js'
import { TestProxy } from './proxy.js'

const ERROR_JSON = (status: number, code: string) => JSON.stringify({ statusCode: status, code, error: 'x', message: `edge says ${code}`, requestId: 'req_edge' })

for (const backend of backends) {
  describe.skipIf(backend.skip)(`the TypeScript client against the service: ${backend.name}`, () => {
    let h: Harness
    let base: string
    let proxy: TestProxy
    let client: Switchboard
    /** A client that goes through the proxy. */
    let proxied: Switchboard
    beforeAll(async () => {
      h = await startHarness(backend)
      base = await h.app.listen({ port: 0, host: '127.0.0.1' })
      proxy = await new TestProxy(base).start()
      client = new Switchboard({ baseURL: base, apiKey: TENANT_A.key })
      proxied = new Switchboard({ baseURL: proxy.url, apiKey: TENANT_A.key, maxRetries: 3 })
      await client.tools.put('lookup', { description: 'Looks a thing up', input_schema: { type: 'object', properties: { q: { type: 'string' } } }, url: `${h.tools.url}/delay/150`, effect: 'read_only' })
      h.model.respond = toolsThenAnswer([{ name: 'lookup', input: { q: 'a' } }, { name: 'lookup', input: { q: 'b' } }])
    })
    afterAll(async () => {
      await proxy?.close()
      await h?.close()
    })

    it('registers, reads, lists page by page, rotates and deletes tools', async () => {
      const created = await client.tools.put('t_one', { description: 'one', input_schema: { type: 'object' }, url: `${h.tools.url}/ok` })
      expect('signing_secret' in created && created.signing_secret).toMatch(/^whsec_/)
      const replaced = await client.tools.put('t_one', { description: 'one, again', input_schema: { type: 'object' }, url: `${h.tools.url}/ok` })
      expect('signing_secret' in replaced).toBe(false)
      await client.tools.put('t_two', { description: 'two', input_schema: { type: 'object' }, url: `${h.tools.url}/ok` })
      expect((await client.tools.get('t_one')).description).toBe('one, again')
      const page = await client.tools.list({ limit: 1 })
      expect(page.data).toHaveLength(1)
      expect(page.has_more).toBe(true)
      const names: string[] = []
      for await (const tool of client.tools.list({ limit: 1 })) names.push(tool.name)
      expect(names).toEqual(expect.arrayContaining(['t_one', 't_two', 'lookup']))
      expect(new Set(names).size).toBe(names.length)
      const rotated = await client.tools.rotateSecret('t_one')
      expect(rotated.signing_secret).not.toBe('signing_secret' in created ? created.signing_secret : '')
      expect(await client.tools.delete('t_two')).toEqual({ id: 't_two', object: 'tool', deleted: true })
    })

    it('starts a run and answers it when it ends; or at once, in the background', async () => {
      const run = await client.runs.create({ input: 'look a and b up', tools: ['lookup'], metadata: { case: 'sync' } })
      expect(run.status).toBe('completed')
      expect(run.tool_calls).toEqual({ total: 2, errors: 0 })
      expect(run.output_text).toContain('done: ok lookup')
      const queued = await client.runs.create({ input: 'again', tools: ['lookup'], background: true })
      expect(queued.status).toBe('queued')
      const events: RunEvent[] = []
      for await (const event of client.runs.stream(queued.id)) events.push(event)
      expect(events.at(-1)!.type).toBe('run.completed')
      expect((await client.runs.get(queued.id)).status).toBe('completed')
      const withMessages = await client.runs.get(queued.id, { include: 'messages' })
      expect(withMessages.messages).toHaveLength(4)
    })

    it('lists runs and a run\'s events as async iterators over pages', async () => {
      const tag = `list-${backend.name}`
      const ids: string[] = []
      for (let i = 0; i < 3; i++) ids.push((await client.runs.create({ input: `n${i}`, tools: ['lookup'], background: true, metadata: { tag } })).id)
      const seen: string[] = []
      for await (const run of client.runs.list({ limit: 2, metadata: { tag } })) seen.push(run.id)
      expect(seen).toEqual([...ids].reverse())
      const run = await client.runs.stream(ids[0]!).finalRun()
      expect(run.status).toBe('completed')
      const numbers: number[] = []
      for await (const event of client.runs.events(ids[0]!, { limit: 3 })) numbers.push(event.id)
      expect(numbers).toEqual(numbers.map((_, i) => i + 1))
      expect(numbers.length).toBeGreaterThan(6)
    })

    it('streams a run it starts, event by event, to its end', async () => {
      const stream = client.runs.stream({ input: 'stream it', tools: ['lookup'] })
      const events: RunEvent[] = []
      for await (const event of stream) events.push(event)
      expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1))
      expect(events[0]!.type).toBe('run.created')
      expect(events.at(-1)!.type).toBe('run.completed')
      expect(stream.run?.status).toBe('completed')
      expect(events).toEqual(await h.events(stream.runId!))
    })

    it('resumes a stream that a proxy cuts mid-run, again and again, losing and repeating no event', async () => {
      // The first connection is cut inside the first event; each later one after 1,500 bytes of
      // events more than the one before (so that even the largest event gets through one day):
      // mid-event, several times in one run.
      proxy.mode = (index) => ({ kind: 'cut', afterBytes: index === 0 ? 100 : 1500 * index })
      try {
        const stream = proxied.runs.stream({ input: 'stream through a bad proxy', tools: ['lookup'] })
        const events: RunEvent[] = []
        for await (const event of stream) events.push(event)
        expect(stream.connections).toBeGreaterThanOrEqual(3)
        expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1))
        expect(events.at(-1)!.type).toBe('run.completed')
        expect(events).toEqual(await h.events(stream.runId!))
        // Its first connection was cut inside the first event: the create was sent again with the
        // same Idempotency-Key (one run), and the rest followed the run with Last-Event-ID.
        const creates = proxy.seen.filter((r) => r.method === 'POST' && r.url === '/runs')
        expect(creates.length).toBeGreaterThanOrEqual(2)
        expect(new Set(creates.map((r) => r.headers['idempotency-key'])).size).toBe(1)
        const resumes = proxy.seen.filter((r) => r.url === `/runs/${stream.runId}/events`)
        expect(resumes.length).toBe(stream.connections - creates.length)
        expect(resumes.every((r) => Number(r.headers['last-event-id']) > 0)).toBe(true)
      } finally {
        proxy.mode = () => ({ kind: 'forward' })
        proxy.seen.length = 0
      }
    })

    it('follows a run by id through cuts, from a given event on', async () => {
      const { id } = await client.runs.create({ input: 'follow me', tools: ['lookup'], background: true })
      proxy.mode = (index) => ({ kind: 'cut', afterBytes: 1500 * (index + 1) })
      try {
        const events: RunEvent[] = []
        const stream = proxied.runs.stream(id, { after: 2 })
        for await (const event of stream) events.push(event)
        expect(stream.connections).toBeGreaterThan(1)
        expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 3))
        expect(events).toEqual((await h.events(id)).slice(2))
        expect(events.at(-1)!.type).toBe('run.completed')
      } finally {
        proxy.mode = () => ({ kind: 'forward' })
        proxy.seen.length = 0
      }
    })

    it('sends an Idempotency-Key with every create and keeps it across its own retries: one run', async () => {
      const tag = `retried-${backend.name}`
      // The service starts the run, but its answer is lost on the way back: the client sends the
      // create again, with the same key, and gets the same run instead of a second one.
      proxy.mode = (index) => index === 0 ? { kind: 'drop-answer' } : { kind: 'forward' }
      try {
        const run = await proxied.runs.create({ input: 'once only', tools: ['lookup'], background: true, metadata: { tag } })
        expect(proxy.seen).toHaveLength(2)
        const keys = proxy.seen.map((r) => r.headers['idempotency-key'])
        expect(keys[0]).toMatch(/^[0-9a-f-]{36}$/)
        expect(keys[1]).toBe(keys[0])
        const runs = []
        for await (const r of client.runs.list({ metadata: { tag } })) runs.push(r.id)
        expect(runs).toEqual([run.id])
        // Two creates of their own get two keys.
        proxy.seen.length = 0
        proxy.mode = () => ({ kind: 'forward' })
        await proxied.runs.create({ input: 'a', background: true })
        await proxied.runs.create({ input: 'b', background: true })
        expect(new Set(proxy.seen.map((r) => r.headers['idempotency-key'])).size).toBe(2)
      } finally {
        proxy.mode = () => ({ kind: 'forward' })
        proxy.seen.length = 0
      }
    })

    it('retries 429 and 503 after their retry-after, then gives up with the error', async () => {
      proxy.mode = (index) => index === 0
        ? { kind: 'answer', status: 429, headers: { 'content-type': 'application/json', 'retry-after': '0' }, body: ERROR_JSON(429, 'REQUEST_ERR_RATE_LIMITED') }
        : index === 1
          ? { kind: 'answer', status: 503, headers: { 'content-type': 'application/json', 'retry-after': '0' }, body: ERROR_JSON(503, 'SERVICE_ERR_DRAINING') }
          : { kind: 'forward' }
      try {
        const tool = await proxied.tools.get('lookup')
        expect(tool.name).toBe('lookup')
        expect(proxy.seen).toHaveLength(3)
        proxy.seen.length = 0
        proxy.mode = () => ({ kind: 'answer', status: 503, headers: { 'content-type': 'application/json', 'retry-after': '0' }, body: ERROR_JSON(503, 'SERVICE_ERR_DRAINING') })
        const err = await proxied.tools.get('lookup').catch((e: unknown) => e)
        expect(err).toBeInstanceOf(ServiceUnavailableError)
        expect(err).toMatchObject({ statusCode: 503, code: 'SERVICE_ERR_DRAINING', requestId: 'req_edge' })
        expect(proxy.seen).toHaveLength(4) // the first try and maxRetries (3) more
        // A retry-after longer than maxRetryDelay is not waited for.
        proxy.seen.length = 0
        proxy.mode = () => ({ kind: 'answer', status: 429, headers: { 'content-type': 'application/json', 'retry-after': '3600' }, body: ERROR_JSON(429, 'RUN_ERR_TOO_MANY_ACTIVE') })
        await expect(proxied.runs.create({ input: 'x' })).rejects.toBeInstanceOf(RateLimitError)
        expect(proxy.seen).toHaveLength(1)
      } finally {
        proxy.mode = () => ({ kind: 'forward' })
        proxy.seen.length = 0
      }
    })

    it('throws the service\'s errors as classes with code, statusCode and requestId', async () => {
      const missing = await client.runs.get('run_00000000000000000000000000').catch((e: unknown) => e)
      expect(missing).toBeInstanceOf(NotFoundError)
      expect(missing).toMatchObject({ statusCode: 404, code: 'RUN_ERR_NOT_FOUND' })
      expect((missing as NotFoundError).requestId).toMatch(/^req_/)
      const bad = await client.runs.create({ input: 'x', max_steps: 5000 }).catch((e: unknown) => e)
      expect(bad).toBeInstanceOf(BadRequestError)
      expect(bad).toMatchObject({ statusCode: 400, code: 'REQUEST_ERR_VALIDATION' })
      expect((bad as Error).message).toContain('max_steps')
      const unknownTool = await client.runs.create({ input: 'x', tools: ['nope'] }).catch((e: unknown) => e)
      expect(unknownTool).toMatchObject({ code: 'RUN_ERR_UNKNOWN_TOOL' })
      const stranger = new Switchboard({ baseURL: base, apiKey: 'sk_wrong' })
      await expect(stranger.tools.list()).rejects.toBeInstanceOf(AuthenticationError)
      const done = await client.runs.create({ input: 'quick' })
      const conflict = await client.runs.cancel(done.id).catch((e: unknown) => e)
      expect(conflict).toBeInstanceOf(ConflictError)
      expect(conflict).toMatchObject({ statusCode: 409, code: 'RUN_ERR_NOT_ACTIVE' })
    })

    it('says when no answer came at all, and stops when the caller aborts', async () => {
      const nowhere = new Switchboard({ baseURL: 'http://127.0.0.1:9', apiKey: TENANT_A.key, maxRetries: 1 })
      const unreachable = await nowhere.tools.list().catch((e: unknown) => e)
      expect(unreachable).toBeInstanceOf(APIConnectionError)
      expect(unreachable).toMatchObject({ code: 'CONNECTION_ERROR' })
      const aborted = new AbortController()
      aborted.abort()
      await expect(client.runs.get('run_x', {}, { signal: aborted.signal })).rejects.toBeInstanceOf(APIUserAbortError)
      // A stream stopped by its reader leaves the run going.
      const stream = client.runs.stream({ input: 'keep going', tools: ['lookup'] })
      const seen: string[] = []
      await expect((async () => {
        for await (const event of stream) {
          seen.push(event.type)
          if (event.type === 'run.started') stream.abort()
        }
      })()).rejects.toBeInstanceOf(APIUserAbortError)
      expect(seen.at(-1)).toBe('run.started')
      expect((await client.runs.stream(stream.runId!, { after: stream.lastEventId }).finalRun()).status).toBe('completed')
    })

    it('cancels a run', async () => {
      await client.tools.put('slow', { description: 'slow', input_schema: { type: 'object' }, url: `${h.tools.url}/delay/20000` })
      h.model.respond = toolsThenAnswer([{ name: 'slow', input: {} }])
      try {
        const stream = client.runs.stream({ input: 'wait', tools: ['slow'] })
        for await (const event of stream) {
          if (event.type === 'tool_call.started') await client.runs.cancel(stream.runId!)
        }
        expect(stream.run?.status).toBe('cancelled')
        expect((await client.runs.get(stream.runId!)).stop_reason).toBe('cancelled')
      } finally {
        h.model.respond = toolsThenAnswer([{ name: 'lookup', input: { q: 'a' } }, { name: 'lookup', input: { q: 'b' } }])
      }
    })

    it('answers client tools with submitToolOutputs, and the run goes on', async () => {
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'ask_user', input: { question: 'Refund?' } }] }
        : { content: [{ type: 'text', text: `the user said ${resultText(toolResults(request)[0]!)}` }] }
      try {
        const waiting = await client.runs.create({ input: 'refund?', client_tools: [{ name: 'ask_user', description: 'Asks the user', input_schema: { type: 'object' } }] })
        expect(waiting.status).toBe('requires_action')
        // The run schema types required_action loosely (its kinds grow): read it as submit_tool_outputs.
        const action = waiting.required_action as { type: string, tool_calls: Array<{ id: string, name: string, input: unknown }> }
        expect(action.type).toBe('submit_tool_outputs')
        const call = action.tool_calls[0]!
        expect(call).toMatchObject({ name: 'ask_user', input: { question: 'Refund?' } })
        const done = await client.runs.submitToolOutputs(waiting.id, { tool_outputs: [{ tool_use_id: call.id, content: 'yes' }] })
        expect(done.status).toBe('completed')
        expect(done.output_text).toBe('the user said yes')
      } finally {
        h.model.respond = toolsThenAnswer([{ name: 'lookup', input: { q: 'a' } }, { name: 'lookup', input: { q: 'b' } }])
      }
    })

    it('approves and denies the tool calls a run waits on', async () => {
      await client.tools.put('refund', { description: 'Refunds an order', input_schema: { type: 'object' }, url: `${h.tools.url}/ok`, approval: 'always' })
      h.model.respond = (request) => turnNumber(request) === 1
        ? { content: [{ type: 'tool_use', name: 'refund', input: { q: '7' } }, { type: 'tool_use', name: 'refund', input: { q: '8' } }] }
        : { content: [{ type: 'text', text: `final: ${toolResults(request).map(resultText).join(' | ')}` }] }
      try {
        const waiting = await client.runs.create({ input: 'refund both?', tools: ['refund'] })
        expect(waiting.status).toBe('requires_action')
        const action = waiting.required_action as { type: string, tool_calls: Array<{ tool_use_id: string, name: string }> }
        expect(action.type).toBe('approve_tool_calls')
        const [first, second] = action.tool_calls
        const done = await client.runs.approve(waiting.id, {
          decisions: [{ tool_use_id: first!.tool_use_id, approve: true }, { tool_use_id: second!.tool_use_id, approve: false, reason: 'over the limit' }]
        })
        expect(done.status).toBe('completed')
        expect(done.output_text).toContain('ok refund')
        expect(done.output_text).toContain('Not run: denied by the reviewer: over the limit')
        const again = await client.runs.approve(waiting.id, { decisions: [] }).catch((e: unknown) => e)
        expect(again).toBeInstanceOf(APIError)
      } finally {
        h.model.respond = toolsThenAnswer([{ name: 'lookup', input: { q: 'a' } }, { name: 'lookup', input: { q: 'b' } }])
      }
    })

    it('reads a tool\'s statistics, the tenant\'s usage and its MCP servers', async () => {
      await client.runs.create({ input: 'count me', tools: ['lookup'] })
      const stats = await client.tools.stats('lookup', { window: '1h' })
      expect(stats.calls).toBeGreaterThanOrEqual(2)
      const usage = await client.usage.get({ group_by: 'tool' })
      expect(usage.object).toBe('usage')
      expect(usage.data.find((row) => row.key === 'lookup')?.tool_calls).toBeGreaterThanOrEqual(2)
      expect((await client.mcpServers.list()).data).toEqual([])
      await expect(client.mcpServers.get('nowhere')).rejects.toBeInstanceOf(NotFoundError)
    })

    it('reads the rest of the API: timeline, callbacks, probes', async () => {
      const run = await client.runs.create({ input: 'draw me' })
      const page = await client.runs.timeline(run.id)
      expect(page).toContain('<html')
      expect((await client.callbacks.get()).object).toBe('callback_settings')
      expect((await client.callbacks.rotateSecret()).signing_secret).toMatch(/^whsec_/)
      expect(await client.health.alive()).toEqual({ status: 'ok' })
      expect(await client.health.ready()).toEqual({ status: 'ready' })
    })
  })
}
