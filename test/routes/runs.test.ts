import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, startApp, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { toolsThenAnswer, turnNumber } from '../support/fake-messages-api.js'

for (const backend of backends) {
  describe.skipIf(backend.skip)(`runs API: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend, { env: { RUN_MAX_STEPS: '50', RUN_MAX_TIMEOUT_MS: '60000' } })
      await h.registerTool('weather', '/delay/20')
      await h.registerTool('weather', '/delay/20', {}, TENANT_B)
    })
    afterAll(async () => h?.close())
    beforeEach(() => {
      h.model.respond = toolsThenAnswer([{ name: 'weather', input: { q: 'Paris' } }])
    })

    describe('refusals', () => {
      const cases: Array<[string, Record<string, unknown>, number, string, RegExp]> = [
        ['neither input nor messages', { tools: ['weather'] }, 400, 'RUN_ERR_INVALID_REQUEST', /exactly one of `input`/],
        ['both input and messages', { input: 'a', messages: [{ role: 'user', content: 'b' }] }, 400, 'RUN_ERR_INVALID_REQUEST', /exactly one of `input`/],
        ['an unknown tool', { input: 'a', tools: ['weather', 'nope', 'nada'] }, 400, 'RUN_ERR_UNKNOWN_TOOL', /^Unknown tools: nope, nada\. Register them with PUT \/tools\/\{name\} first/],
        ['max_steps over RUN_MAX_STEPS', { input: 'a', max_steps: 51 }, 400, 'RUN_ERR_INVALID_REQUEST', /max_steps is 51 but this service allows at most 50 \(RUN_MAX_STEPS\)/],
        ['max_steps over 1000', { input: 'a', max_steps: 1001 }, 400, 'REQUEST_ERR_VALIDATION', /body.max_steps must be <= 1000/],
        ['timeout_ms over RUN_MAX_TIMEOUT_MS', { input: 'a', timeout_ms: 60_001 }, 400, 'RUN_ERR_INVALID_REQUEST', /RUN_MAX_TIMEOUT_MS/],
        ['a history ending with the assistant', { messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }] }, 400, 'RUN_ERR_INVALID_MESSAGES', /messages\[1\] must have role "user"/],
        ['a history with an unanswered tool_use', {
          messages: [
            { role: 'user', content: 'a' },
            { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'weather', input: {} }] },
            { role: 'user', content: [{ type: 'text', text: 'never mind' }] }
          ]
        }, 400, 'RUN_ERR_INVALID_MESSAGES', /messages\[2\] must answer tool_use toolu_1 of messages\[1\] with exactly one tool_result/],
        ['a message with a bad role', { messages: [{ role: 'system', content: 'a' }] }, 400, 'REQUEST_ERR_VALIDATION', /body.messages\[0\].role/],
        ['tool_choice naming a tool not in the run', { input: 'a', tools: ['weather'], tool_choice: { type: 'tool', name: 'other' } }, 400, 'RUN_ERR_INVALID_REQUEST', /tool_choice names other/],
        ['metadata with too many keys', { input: 'a', metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) }, 400, 'REQUEST_ERR_VALIDATION', /body.metadata must NOT have more than 16 properties/],
        ['metadata that is not strings', { input: 'a', metadata: { n: 1 } }, 400, 'REQUEST_ERR_VALIDATION', /body.metadata.n must be string/],
        ['an unknown field', { input: 'a', max_turns: 3 }, 400, 'REQUEST_ERR_VALIDATION', /unknown field "max_turns"/],
        ['parallelism 0', { input: 'a', parallelism: 0 }, 400, 'REQUEST_ERR_VALIDATION', /body.parallelism must be >= 1/],
        ['half an emoji', { input: 'smile \ud83d' }, 400, 'RUN_ERR_INVALID_MESSAGES', /half of a UTF-16 surrogate pair/],
        ['a blank input', { input: ' \n' }, 400, 'RUN_ERR_INVALID_MESSAGES', /^`input` has no text \(spaces alone count as none\)/],
        ['a history with an empty text block', { messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: '' }] }] }, 400, 'RUN_ERR_INVALID_MESSAGES', /^messages\[0\]\.content\[1\] is an empty text block/],
        ['a thinking budget the default max_tokens does not leave room for', { input: 'a', thinking: { type: 'enabled', budget_tokens: 5000 } }, 400, 'RUN_ERR_INVALID_REQUEST', /^thinking\.budget_tokens is 5000 but max_tokens is 4096 \(the default\)/],
        ['thinking with a forced tool_choice', { input: 'a', tools: ['weather'], tool_choice: { type: 'any' }, thinking: { type: 'enabled', budget_tokens: 1024 } }, 400, 'RUN_ERR_INVALID_REQUEST', /^thinking cannot be used with tool_choice "any"/]
      ]
      for (const [what, body, status, code, message] of cases) {
        it(`refuses ${what}`, async () => {
          const before = h.model.requests.length
          const res = await h.startRun(body)
          expect(res.status).toBe(status)
          expect(res.body).toMatchObject({ statusCode: status, code })
          expect(res.body.message).toMatch(message)
          expect(h.model.requests.length).toBe(before)
        })
      }

      it('does not let one tenant use another\'s tools', async () => {
        await h.registerTool('only_a', '/ok')
        const res = await h.startRun({ input: 'a', tools: ['only_a'] }, TENANT_B)
        expect(res.body.code).toBe('RUN_ERR_UNKNOWN_TOOL')
      })

      it('answers 503 when no model API is configured', async () => {
        const bare = await startApp(backend, { env: { ANTHROPIC_API_KEY: null, ANTHROPIC_BASE_URL: null } })
        try {
          const res = await bare.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'hi' } })
          expect(res.statusCode).toBe(503)
          expect(res.json()).toMatchObject({ code: 'SERVICE_ERR_MODEL_NOT_CONFIGURED' })
          expect(res.json().message).toContain('ANTHROPIC_API_KEY')
        } finally {
          await bare.close()
        }
      })
    })

    describe('three ways to wait', () => {
      it('sync: answers 200 with the finished run', async () => {
        const { status, body } = await h.startRun({ input: 'weather in Paris?', tools: ['weather'] })
        expect(status).toBe(200)
        expect(body).toMatchObject({ object: 'run', status: 'completed', stop_reason: 'end_turn', output_text: 'done: ok weather {"q":"Paris"}' })
        expect(body.id).toMatch(/^run_[0-9A-Z]{26}$/)
        for (const field of ['created_at', 'started_at', 'completed_at']) expect(new Date(body[field]).toISOString()).toBe(body[field])
      })

      it('background: answers 202 at once with a Location, and the run proceeds alone', async () => {
        h.model.respond = (request) => turnNumber(request) === 1
          ? { content: [{ type: 'tool_use', name: 'weather', input: { q: 'x' } }], delayMs: 200 }
          : { content: [{ type: 'text', text: 'later' }] }
        const { status, body, headers } = await h.startRun({ input: 'x', tools: ['weather'], background: true })
        expect(status).toBe(202)
        expect(body.status).toBe('queued')
        expect(headers.location).toBe(`/runs/${body.id}`)
        await expect.poll(async () => (await h.app.inject({ method: 'GET', url: headers.location as string, headers: auth(TENANT_A) })).json().status, { timeout: 10_000 }).toBe('completed')
      })

      it('sync: a client that disconnects does not stop the run', async () => {
        const address = await h.app.listen({ port: 0, host: '127.0.0.1' })
        try {
          h.model.respond = (request) => turnNumber(request) === 1
            ? { content: [{ type: 'tool_use', name: 'weather', input: { q: 'x' } }], delayMs: 300 }
            : { content: [{ type: 'text', text: 'finished without you' }] }
          const abort = new AbortController()
          const pending = fetch(`${address}/runs`, {
            method: 'POST',
            headers: { ...auth(TENANT_A), 'content-type': 'application/json', 'x-request-id': 'disconnecting-client' },
            body: JSON.stringify({ input: 'x', tools: ['weather'], metadata: { case: 'disconnect' } }),
            signal: abort.signal
          })
          setTimeout(() => abort.abort(), 100)
          await expect(pending).rejects.toThrow()
          await expect.poll(async () => {
            const list = (await h.app.inject({ method: 'GET', url: '/runs?metadata[case]=disconnect', headers: auth(TENANT_A) })).json()
            return list.data[0]?.status
          }, { timeout: 10_000 }).toBe('completed')
          const list = (await h.app.inject({ method: 'GET', url: '/runs?metadata[case]=disconnect', headers: auth(TENANT_A) })).json()
          expect(list.data[0].output_text).toBe('finished without you')
        } finally {
          await h.app.server.close()
        }
      })
    })

    describe('reading runs', () => {
      it('GET /runs/{id} answers the run; ?include=messages adds the transcript as sent to the model', async () => {
        const { body } = await h.startRun({ input: 'weather?', tools: ['weather'] })
        const plain = (await h.app.inject({ method: 'GET', url: `/runs/${body.id}`, headers: auth(TENANT_A) })).json()
        // The timeline link is signed afresh for each answer, with an expiry in whole seconds: two
        // answers a second boundary apart differ in it, and only in it.
        const withoutLink = ({ timeline_url: link, ...rest }: Record<string, any>) => ({ ...rest, timeline_page: String(link).split('?')[0] })
        expect(withoutLink(plain)).toEqual(withoutLink(body))
        expect(plain).not.toHaveProperty('messages')
        const full = (await h.app.inject({ method: 'GET', url: `/runs/${body.id}?include=messages`, headers: auth(TENANT_A) })).json()
        const lastRequest = h.model.requests[h.model.requests.length - 1]!.body.messages
        // As sent, but for the cache breakpoint Switchboard puts on the last block of each request (SPEC §15).
        const { cache_control: breakpoint, ...lastBlock } = lastRequest.at(-1).content.at(-1)
        expect(breakpoint).toEqual({ type: 'ephemeral' })
        expect(full.messages.slice(0, lastRequest.length)).toEqual([...lastRequest.slice(0, -1), { ...lastRequest.at(-1), content: [...lastRequest.at(-1).content.slice(0, -1), lastBlock] }])
        expect(full.messages[full.messages.length - 1]).toEqual({ role: 'assistant', content: body.output })
      })

      it('continues a conversation given as messages, with the earlier tool calls kept valid', async () => {
        h.model.respond = () => ({ content: [{ type: 'text', text: 'continued' }] })
        const messages = [
          { role: 'user', content: 'earlier question' },
          { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_old', name: 'retired_tool', input: {} }] },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_old', content: 'old answer' }, { type: 'text', text: 'and now?' }] }
        ]
        const { body } = await h.startRun({ messages, tools: ['weather'] })
        expect(body).toMatchObject({ status: 'completed', output_text: 'continued' })
        expect(h.model.refusals).toEqual([])
      })

      it('lists runs newest first, in pages, filtered by status and metadata', async () => {
        const ids: string[] = []
        for (let i = 0; i < 5; i++) {
          const { body } = await h.startRun({ input: 'x', tools: ['weather'], metadata: { batch: 'listing', parity: i % 2 === 0 ? 'even' : 'odd' } }, TENANT_B)
          ids.push(body.id)
        }
        const first = (await h.app.inject({ method: 'GET', url: '/runs?limit=2&metadata[batch]=listing', headers: auth(TENANT_B) })).json()
        expect(first).toMatchObject({ object: 'list', has_more: true })
        expect(first.data.map((r: { id: string }) => r.id)).toEqual([ids[4], ids[3]])
        const second = (await h.app.inject({ method: 'GET', url: `/runs?limit=2&metadata[batch]=listing&after=${first.next_cursor}`, headers: auth(TENANT_B) })).json()
        expect(second.data.map((r: { id: string }) => r.id)).toEqual([ids[2], ids[1]])
        const even = (await h.app.inject({ method: 'GET', url: '/runs?metadata[batch]=listing&metadata[parity]=even&status=completed', headers: auth(TENANT_B) })).json()
        expect(even.data.map((r: { id: string }) => r.id)).toEqual([ids[4], ids[2], ids[0]])
        const none = (await h.app.inject({ method: 'GET', url: '/runs?metadata[batch]=listing&status=failed', headers: auth(TENANT_B) })).json()
        expect(none).toEqual({ object: 'list', data: [], has_more: false, next_cursor: null })
        const bad = await h.app.inject({ method: 'GET', url: '/runs?colour=red', headers: auth(TENANT_B) })
        expect(bad.statusCode).toBe(400)
        expect(bad.json().message).toContain('unknown field "colour"')
        const badStatus = await h.app.inject({ method: 'GET', url: '/runs?status=finished', headers: auth(TENANT_B) })
        expect(badStatus.statusCode).toBe(400)
      })

      it('pages a run\'s events by number', async () => {
        const { body } = await h.startRun({ input: 'x', tools: ['weather'] })
        const all = await h.events(body.id)
        expect(all.map((e) => e.id)).toEqual(all.map((_, i) => i + 1))
        expect(all[0]).toMatchObject({ type: 'run.created', run_id: body.id })
        expect(all[all.length - 1]).toMatchObject({ type: 'run.completed', data: { id: body.id, status: 'completed' } })
        const page = (await h.app.inject({ method: 'GET', url: `/runs/${body.id}/events?after=2&limit=3`, headers: auth(TENANT_A) })).json()
        expect(page.data.map((e: { id: number }) => e.id)).toEqual([3, 4, 5])
        expect(page).toMatchObject({ has_more: true, next_cursor: '5' })
        // Lists follow the general rules: 20 by default, at most 100.
        expect((await h.app.inject({ method: 'GET', url: `/runs/${body.id}/events`, headers: auth(TENANT_A) })).json().data.length).toBeLessThanOrEqual(20)
        expect((await h.app.inject({ method: 'GET', url: `/runs/${body.id}/events?limit=101`, headers: auth(TENANT_A) })).statusCode).toBe(400)
        // Numbers beyond what storage holds are refused up front, on every backend.
        expect((await h.app.inject({ method: 'GET', url: `/runs/${body.id}/events?after=3000000000`, headers: auth(TENANT_A) })).statusCode).toBe(400)
      })
    })

    describe('tenants', () => {
      it('answers 404, never 403, for another tenant\'s run, its events and its list', async () => {
        const { body } = await h.startRun({ input: 'private', tools: ['weather'], metadata: { owner: 'a-only' } })
        for (const url of [`/runs/${body.id}`, `/runs/${body.id}?include=messages`, `/runs/${body.id}/events`]) {
          const res = await h.app.inject({ method: 'GET', url, headers: auth(TENANT_B) })
          expect(res.statusCode, url).toBe(404)
          expect(res.json().code).toBe('RUN_ERR_NOT_FOUND')
        }
        const list = (await h.app.inject({ method: 'GET', url: '/runs?metadata[owner]=a-only', headers: auth(TENANT_B) })).json()
        expect(list.data).toEqual([])
        expect((await h.app.inject({ method: 'GET', url: `/runs/${body.id}`, headers: auth(TENANT_A) })).statusCode).toBe(200)
      })

      it('answers 404 for a run id that does not exist, and 400 for one that cannot', async () => {
        const missing = await h.app.inject({ method: 'GET', url: '/runs/run_01ABCDEFGHJKMNPQRSTVWXYZ01', headers: auth(TENANT_A) })
        expect(missing.statusCode).toBe(404)
        const malformed = await h.app.inject({ method: 'GET', url: '/runs/not-a-run', headers: auth(TENANT_A) })
        expect(malformed.statusCode).toBe(400)
        expect(malformed.json().code).toBe('REQUEST_ERR_VALIDATION')
      })
    })
  })
}
