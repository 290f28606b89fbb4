import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Webhook } from 'standardwebhooks'
import type { LightMyRequestResponse } from 'fastify'
import { backends } from '../support/backends.js'
import { auth, TENANT_A, TENANT_B, type TestTenant } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { turnNumber, type RecordedRequest, type Turn } from '../support/fake-messages-api.js'
import { appRoutes, fillRoute } from '../support/routes.js'
import { McpTestServer } from '../support/mcp-server.js'

/**
 * Tenant isolation (SPEC §2): tenant B's key on tenant A's tools, runs, events, cancel and tool
 * outputs answers 404, exactly as for an id that never existed, and leaves A's things as they
 * were; lists show only the caller's rows, whatever the filters and cursors. Every route the app
 * has must have a case below or be on the short list of routes that belong to no tenant: a route
 * added later without an isolation case fails this suite.
 */

// Routes that hold nothing of any tenant. /docs* is Swagger UI's, /metrics the service's own figures.
const TENANT_FREE = [/^GET \/healthz$/, /^GET \/readyz$/, /^GET \/openapi\.json$/, /^GET \/docs/, /^GET \/metrics$/]
// Routes that take a tool's signature in place of a key: a result posted later (SPEC §13).
const TOOL_SIGNED = [/^POST \/runs\/:id\/tool_calls\/:tool_use_id\/result$/]
const MISSING_RUN = 'run_00000000000000000000000000'
const MISSING_TOOL = 'no_such_tool'
const ASK_HUMAN = { name: 'ask_human', description: 'Ask the person at the keyboard', input_schema: { type: 'object', properties: { q: { type: 'string' } } } }

function script (request: RecordedRequest): Turn {
  const names = ((request.body.tools ?? []) as Array<{ name: string }>).map((t) => t.name)
  if (turnNumber(request) === 1 && names.includes('ask_human')) return { content: [{ type: 'tool_use', name: 'ask_human', input: { q: 'ok?' } }] }
  if (turnNumber(request) === 1 && names.length > 0) return { content: [{ type: 'tool_use', name: names[0]!, input: { q: 'x' } }] }
  return { content: [{ type: 'text', text: 'done' }] }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`tenant isolation: ${backend.name}`, () => {
    let h: Harness
    let mcp: McpTestServer
    // What tenant A owns; filled in beforeAll.
    const a = { toolSecret: '', callbackSecret: '', done: '', waiting: '', waitingCall: '', keyed: '', others: [] as string[], parked: '', parkedCall: '', bLaterSecret: '' }
    const bRuns: string[] = []

    const call = (tenant: TestTenant | null, method: string, url: string, options: { payload?: unknown, headers?: Record<string, string> } = {}) =>
      h.app.inject({
        method: method as 'GET',
        url,
        headers: { ...(tenant === null ? {} : auth(tenant)), ...options.headers },
        ...(options.payload === undefined ? {} : { payload: options.payload as object })
      })

    /** Everything A can see of its own: must be the same before and after each of B's attempts. */
    async function snapshotOfA (): Promise<unknown> {
      const tools = (await call(TENANT_A, 'GET', '/tools?limit=100')).json()
      const runs = (await call(TENANT_A, 'GET', '/runs?limit=100')).json()
      const details: Record<string, unknown> = {}
      for (const id of [a.done, a.waiting]) {
        details[id] = {
          run: (await call(TENANT_A, 'GET', `/runs/${id}?include=messages`)).json(),
          events: (await call(TENANT_A, 'GET', `/runs/${id}/events?limit=100`)).json()
        }
      }
      const callbacks = (await call(TENANT_A, 'GET', '/callbacks')).json()
      // A signed timeline link is made afresh on every read; it is no state of the run.
      return JSON.parse(JSON.stringify({ tools, runs, details, callbacks }, (key, value: unknown) => key === 'timeline_url' ? undefined : value))
    }

    /** B's answer on A's object is the answer for an object that never existed, id aside. */
    function expectSameAsMissing (res: LightMyRequestResponse, missing: LightMyRequestResponse, id: string, missingId: string): void {
      expect(res.statusCode, res.body).toBe(404)
      expect(missing.statusCode, missing.body).toBe(404)
      if (res.body === '' && missing.body === '') return // HEAD
      const body = res.json()
      const other = missing.json()
      expect(body).toMatchObject({ statusCode: 404, code: other.code })
      expect(body.message.replaceAll(id, '<id>')).toBe(other.message.replaceAll(missingId, '<id>'))
    }

    beforeAll(async () => {
      h = await startHarness(backend)
      h.model.respond = script
      mcp = await new McpTestServer().start()
      expect((await call(TENANT_A, 'PUT', '/mcp-servers/docs', { payload: { url: mcp.url, headers: { authorization: 'tenant-a-mcp-credential' } } })).statusCode).toBe(201)
      const toolA = await h.registerTool('lookup', '/ok', { headers: { 'x-api-key': 'tenant-a-tool-credential' }, effect: 'read_only' })
      a.toolSecret = toolA.signing_secret
      await h.registerTool('shared_name', '/ok?owner=a')
      await h.registerTool('shared_name', '/ok?owner=b', {}, TENANT_B)
      await h.registerTool('b_only', '/ok', {}, TENANT_B)
      a.callbackSecret = (await call(TENANT_A, 'POST', '/callbacks/rotate-secret')).json().signing_secret

      const done = await h.startRun({ input: 'look it up', tools: ['lookup'], metadata: { team: 'red', owner: 'a' } })
      expect(done.body.status).toBe('completed')
      a.done = done.body.id
      const waiting = await h.startRun({ input: 'ask first', client_tools: [ASK_HUMAN], metadata: { team: 'red' } })
      expect(waiting.body.status).toBe('requires_action')
      a.waiting = waiting.body.id
      a.waitingCall = waiting.body.required_action.tool_calls[0].id
      const keyed = await call(TENANT_A, 'POST', '/runs', { payload: { input: 'once' }, headers: { 'idempotency-key': 'order-42' } })
      a.keyed = keyed.json().id
      await call(TENANT_A, 'POST', '/runs', { payload: { input: 'twice' }, headers: { 'idempotency-key': 'order-43' } })
      h.tools.on('/cb', (_req, res) => { res.writeHead(204).end() })
      // A run of A's waiting on a call its tool answered 202 (SPEC §13); B has a tool of the same name.
      h.tools.on('/later', (_req, res) => { res.writeHead(202).end() })
      await h.registerTool('later', '/later')
      a.bLaterSecret = (await h.registerTool('later', '/later', {}, TENANT_B)).signing_secret
      const parked = await h.startRun({ input: 'build', tools: ['later'] })
      expect(parked.body.pending_tool_calls).toHaveLength(1)
      a.parked = parked.body.id
      a.parkedCall = parked.body.pending_tool_calls[0].tool_use_id
      for (let i = 0; i < 3; i++) a.others.push((await h.startRun({ input: `more ${i}`, metadata: { team: 'red' } })).body.id)
      for (let i = 0; i < 2; i++) bRuns.push((await h.startRun({ input: `b ${i}`, metadata: { team: 'red', owner: 'b' } }, TENANT_B)).body.id)
    })
    afterAll(async () => {
      await h?.close()
      await mcp?.close()
    })

    /** B's attempts, one per tenant-scoped route, each asserting 404 (or B's own namespace) and A unchanged. */
    const cases: Record<string, { run: () => Promise<void> }> = {
      'GET /tools/:name': {
        run: async () => {
          for (const method of ['GET', 'HEAD']) {
            expectSameAsMissing(await call(TENANT_B, method, '/tools/lookup'), await call(TENANT_B, method, `/tools/${MISSING_TOOL}`), 'lookup', MISSING_TOOL)
          }
          // A name both tenants use: each sees its own.
          expect((await call(TENANT_B, 'GET', '/tools/shared_name')).json().url).toMatch(/owner=b$/)
          expect((await call(TENANT_A, 'GET', '/tools/shared_name')).json().url).toMatch(/owner=a$/)
        }
      },
      'PUT /tools/:name': {
        run: async () => {
          // Names are per tenant: B's PUT makes a tool of B's own (201, a new secret), A's stays.
          const res = await call(TENANT_B, 'PUT', '/tools/lookup', {
            payload: { description: 'B hijack attempt', input_schema: { type: 'object' }, url: `${h.tools.url}/status/500`, headers: { 'x-api-key': 'b-value' } }
          })
          expect(res.statusCode, res.body).toBe(201)
          expect(res.json().signing_secret).not.toBe(a.toolSecret)
          expect((await call(TENANT_A, 'GET', '/tools/lookup')).json()).toMatchObject({ description: 'The lookup tool', url: `${h.tools.url}/ok` })
          expect((await call(TENANT_B, 'DELETE', '/tools/lookup')).statusCode).toBe(200)
        }
      },
      'DELETE /tools/:name': {
        run: async () => {
          expectSameAsMissing(await call(TENANT_B, 'DELETE', '/tools/lookup'), await call(TENANT_B, 'DELETE', `/tools/${MISSING_TOOL}`), 'lookup', MISSING_TOOL)
        }
      },
      'GET /tools/:name/stats': {
        run: async () => {
          for (const method of ['GET', 'HEAD']) {
            expectSameAsMissing(await call(TENANT_B, method, '/tools/lookup/stats'), await call(TENANT_B, method, `/tools/${MISSING_TOOL}/stats`), 'lookup', MISSING_TOOL)
          }
          // A name both tenants use: each counts only its own calls.
          expect((await call(TENANT_B, 'GET', '/tools/shared_name/stats')).json()).toMatchObject({ name: 'shared_name' })
        }
      },
      'POST /tools/:name/rotate-secret': {
        run: async () => {
          const res = await call(TENANT_B, 'POST', '/tools/lookup/rotate-secret')
          expectSameAsMissing(res, await call(TENANT_B, 'POST', `/tools/${MISSING_TOOL}/rotate-secret`), 'lookup', MISSING_TOOL)
          expect(res.body).not.toContain('whsec_')
        }
      },
      'GET /mcp-servers/:name': {
        run: async () => {
          for (const method of ['GET', 'HEAD']) {
            expectSameAsMissing(await call(TENANT_B, method, '/mcp-servers/docs'), await call(TENANT_B, method, `/mcp-servers/${MISSING_TOOL}`), 'docs', MISSING_TOOL)
          }
        }
      },
      'PUT /mcp-servers/:name': {
        run: async () => {
          // Names are per tenant: B's PUT registers a server of B's own, A's stays as it was.
          const res = await call(TENANT_B, 'PUT', '/mcp-servers/docs', { payload: { url: mcp.url, tools: ['echo'] } })
          expect(res.statusCode, res.body).toBe(201)
          expect((await call(TENANT_A, 'GET', '/mcp-servers/docs')).json()).toMatchObject({ allowed_tools: null, header_names: ['authorization'] })
          expect((await call(TENANT_B, 'DELETE', '/mcp-servers/docs')).statusCode).toBe(200)
        }
      },
      'DELETE /mcp-servers/:name': {
        run: async () => {
          expectSameAsMissing(await call(TENANT_B, 'DELETE', '/mcp-servers/docs'), await call(TENANT_B, 'DELETE', `/mcp-servers/${MISSING_TOOL}`), 'docs', MISSING_TOOL)
        }
      },
      'POST /mcp-servers/:name/refresh': {
        run: async () => {
          expectSameAsMissing(await call(TENANT_B, 'POST', '/mcp-servers/docs/refresh'), await call(TENANT_B, 'POST', `/mcp-servers/${MISSING_TOOL}/refresh`), 'docs', MISSING_TOOL)
        }
      },
      'GET /mcp-servers': {
        run: async () => {
          expect((await call(TENANT_B, 'GET', '/mcp-servers')).json().data).toEqual([])
          expect((await call(TENANT_A, 'GET', '/mcp-servers')).json().data.map((s: { name: string }) => s.name)).toEqual(['docs'])
        }
      },
      'GET /tools': {
        run: async () => {
          const names: string[] = []
          let after: string | null = null
          do {
            const page: Record<string, any> = (await call(TENANT_B, 'GET', `/tools?limit=1${after === null ? '' : `&after=${after}`}`)).json()
            names.push(...page.data.map((t: { name: string }) => t.name))
            after = page.next_cursor
          } while (after !== null)
          expect(names.sort()).toEqual(['b_only', 'later', 'shared_name'])
          // A's cursor, handed to B, pages through B's tools only.
          const cursorOfA = (await call(TENANT_A, 'GET', '/tools?limit=1')).json().next_cursor
          expect(cursorOfA).not.toBeNull()
          const res = await call(TENANT_B, 'GET', `/tools?limit=100&after=${cursorOfA as string}`)
          expect(res.statusCode).toBe(200)
          for (const tool of res.json().data) expect(['b_only', 'shared_name']).toContain(tool.name)
          expect(res.body).not.toContain('owner=a')
        }
      },
      'GET /runs/:id': {
        run: async () => {
          for (const method of ['GET', 'HEAD']) {
            for (const id of [a.done, a.waiting]) {
              expectSameAsMissing(await call(TENANT_B, method, `/runs/${id}`), await call(TENANT_B, method, `/runs/${MISSING_RUN}`), id, MISSING_RUN)
              expectSameAsMissing(await call(TENANT_B, method, `/runs/${id}?include=messages`), await call(TENANT_B, method, `/runs/${MISSING_RUN}?include=messages`), id, MISSING_RUN)
            }
          }
        }
      },
      'GET /runs/:id/events': {
        run: async () => {
          const variants: Array<{ query: string, headers: Record<string, string> }> = [
            { query: '', headers: {} },
            { query: '?after=1&limit=100', headers: {} },
            { query: '', headers: { accept: 'text/event-stream' } },
            { query: '?after=2', headers: { accept: 'text/event-stream' } },
            { query: '', headers: { accept: 'text/event-stream', 'last-event-id': '1' } }
          ]
          for (const method of ['GET', 'HEAD']) {
            for (const { query, headers } of variants) {
              for (const id of [a.done, a.waiting]) {
                const res = await call(TENANT_B, method, `/runs/${id}/events${query}`, { headers })
                expect(res.headers['content-type']).not.toMatch(/event-stream/)
                expectSameAsMissing(res, await call(TENANT_B, method, `/runs/${MISSING_RUN}/events${query}`, { headers }), id, MISSING_RUN)
              }
            }
          }
        }
      },
      'POST /runs/:id/cancel': {
        run: async () => {
          for (const id of [a.waiting, a.done]) {
            expectSameAsMissing(await call(TENANT_B, 'POST', `/runs/${id}/cancel`), await call(TENANT_B, 'POST', `/runs/${MISSING_RUN}/cancel`), id, MISSING_RUN)
          }
          expect((await call(TENANT_A, 'GET', `/runs/${a.waiting}`)).json().status).toBe('requires_action')
        }
      },
      'POST /runs/:id/tool_outputs': {
        run: async () => {
          const payload = { tool_outputs: [{ tool_use_id: a.waitingCall, content: 'B answers for A' }] }
          expectSameAsMissing(
            await call(TENANT_B, 'POST', `/runs/${a.waiting}/tool_outputs`, { payload }),
            await call(TENANT_B, 'POST', `/runs/${MISSING_RUN}/tool_outputs`, { payload }),
            a.waiting, MISSING_RUN
          )
          expect((await call(TENANT_A, 'GET', `/runs/${a.waiting}`)).json().status).toBe('requires_action')
        }
      },
      'POST /runs/:id/approvals': {
        run: async () => {
          const payload = { decisions: [{ tool_use_id: a.waitingCall, approve: true }] }
          for (const id of [a.waiting, a.done]) {
            expectSameAsMissing(await call(TENANT_B, 'POST', `/runs/${id}/approvals`, { payload }), await call(TENANT_B, 'POST', `/runs/${MISSING_RUN}/approvals`, { payload }), id, MISSING_RUN)
          }
          expect((await call(TENANT_A, 'GET', `/runs/${a.waiting}`)).json().status).toBe('requires_action')
        }
      },
      'GET /runs': {
        run: async () => {
          const queries = ['', '?status=completed', '?status=requires_action', '?metadata[team]=red', '?metadata[owner]=a', '?metadata[team]=red&status=completed']
          for (const query of queries) {
            const res = await call(TENANT_B, 'GET', `/runs${query}${query === '' ? '?' : '&'}limit=100`)
            expect(res.statusCode, res.body).toBe(200)
            for (const run of res.json().data) expect(bRuns).toContain(run.id)
          }
          expect((await call(TENANT_B, 'GET', '/runs?metadata[team]=red&limit=100')).json().data).toHaveLength(bRuns.length)
          // Paging one by one finds exactly B's runs.
          const seen: string[] = []
          let after: string | null = null
          do {
            const page: Record<string, any> = (await call(TENANT_B, 'GET', `/runs?limit=1${after === null ? '' : `&after=${after}`}`)).json()
            seen.push(...page.data.map((r: { id: string }) => r.id))
            after = page.next_cursor
          } while (after !== null)
          expect(seen.sort()).toEqual([...bRuns].sort())
          // A's cursors, handed to B, never reveal A's runs.
          for (const query of ['?limit=1', '?limit=1&metadata[team]=red', '?limit=1&status=completed']) {
            const cursorOfA = (await call(TENANT_A, 'GET', `/runs${query}`)).json().next_cursor
            expect(cursorOfA).not.toBeNull()
            const res = await call(TENANT_B, 'GET', `/runs?limit=100&after=${cursorOfA as string}`)
            expect(res.statusCode).toBe(200)
            for (const run of res.json().data) expect(bRuns).toContain(run.id)
          }
        }
      },
      'POST /runs': {
        run: async () => {
          // The same Idempotency-Key and body as A's: a run of B's own, not A's run replayed.
          const mine = await call(TENANT_B, 'POST', '/runs', { payload: { input: 'once' }, headers: { 'idempotency-key': 'order-42' } })
          expect(mine.statusCode, mine.body).toBe(200)
          expect(mine.json().id).not.toBe(a.keyed)
          expect(mine.headers['idempotent-replayed']).toBeUndefined()
          bRuns.push(mine.json().id)
          // Another body under a key A used is no conflict for B: a run of B's own again.
          const other = await call(TENANT_B, 'POST', '/runs', { payload: { input: 'something else' }, headers: { 'idempotency-key': 'order-43' } })
          expect(other.statusCode, other.body).toBe(200)
          expect(other.headers['idempotent-replayed']).toBeUndefined()
          bRuns.push(other.json().id)
          // A's tools do not exist for B: the same refusal as for a name nobody registered.
          const unknown = await call(TENANT_B, 'POST', '/runs', { payload: { input: 'x', tools: ['lookup'] } })
          const missing = await call(TENANT_B, 'POST', '/runs', { payload: { input: 'x', tools: [MISSING_TOOL] } })
          expect(unknown.statusCode).toBe(400)
          expect(unknown.json().code).toBe('RUN_ERR_UNKNOWN_TOOL')
          expect(unknown.json().message.replaceAll('lookup', '<name>')).toBe(missing.json().message.replaceAll(MISSING_TOOL, '<name>'))
          // A's callback secret does not sign B's callbacks: B has none yet.
          const callback = await call(TENANT_B, 'POST', '/runs', { payload: { input: 'x', callback_url: `${h.tools.url}/cb` } })
          expect(callback.statusCode).toBe(400)
          expect(callback.json().code).toBe('RUN_ERR_NO_CALLBACK_SECRET')
          // A still gets its own run back.
          const replay = await call(TENANT_A, 'POST', '/runs', { payload: { input: 'once' }, headers: { 'idempotency-key': 'order-42' } })
          expect(replay.json().id).toBe(a.keyed)
        }
      },
      'GET /callbacks': {
        run: async () => {
          const res = await call(TENANT_B, 'GET', '/callbacks')
          expect(res.statusCode).toBe(200)
          expect(res.json()).toMatchObject({ has_signing_secret: false })
        }
      },
      'GET /usage': {
        run: async () => {
          // B's usage counts B's runs only, and none of A's tool calls (lookup is A's alone).
          const res = await call(TENANT_B, 'GET', '/usage?group_by=model')
          expect(res.statusCode).toBe(200)
          const bRunCount = (await call(TENANT_B, 'GET', '/runs?limit=100')).json().data.length
          expect(res.json().total.runs).toBeGreaterThan(0)
          expect(res.json().total.runs).toBeLessThanOrEqual(bRunCount)
          const tools = await call(TENANT_B, 'GET', '/usage?group_by=tool')
          expect(tools.json().data.map((d: { key: string }) => d.key)).not.toContain('lookup')
          const own = await call(TENANT_A, 'GET', '/usage?group_by=tool')
          expect(own.json().data.map((d: { key: string }) => d.key)).toContain('lookup')
        }
      },
      'POST /callbacks/rotate-secret': {
        run: async () => {
          // Acts on the caller's own tenant: B gets a secret of its own; A's is untouched (snapshot).
          const res = await call(TENANT_B, 'POST', '/callbacks/rotate-secret')
          expect(res.statusCode).toBe(200)
          expect(res.json().signing_secret).not.toBe(a.callbackSecret)
        }
      },
      'POST /runs/:id/tool_calls/:tool_use_id/result': {
        run: async () => {
          // No key opens it, B's no more than any: a result must be signed by the call's own tool,
          // and B's tool of the same name is not it.
          const body = JSON.stringify({ content: 'from B' })
          const at = new Date()
          const id = `${a.parked}:${a.parkedCall}:result`
          const headers = { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': new Webhook(a.bLaterSecret).sign(id, at, body) }
          const res = await call(TENANT_B, 'POST', `/runs/${a.parked}/tool_calls/${a.parkedCall}/result`, { payload: body, headers })
          expect(res.statusCode).toBe(401)
          expect(res.json().code).toBe('TOOL_RESULT_ERR_BAD_SIGNATURE')
          expect((await call(TENANT_A, 'GET', `/runs/${a.parked}`)).json().pending_tool_calls).toHaveLength(1)
        }
      },
      'GET /runs/:id/timeline': {
        run: async () => {
          for (const id of [a.done, a.waiting]) {
            expectSameAsMissing(await call(TENANT_B, 'GET', `/runs/${id}/timeline`), await call(TENANT_B, 'GET', `/runs/${MISSING_RUN}/timeline`), id, MISSING_RUN)
          }
          // A signed link of B's own run does not open A's run when its id is swapped.
          const link = (await call(TENANT_B, 'GET', `/runs/${bRuns[0]!}`)).json().timeline_url as string
          expect(link).toMatch(/sig=/)
          const swapped = await call(null, 'GET', new URL(link, 'http://x').pathname.replace(bRuns[0]!, a.done) + new URL(link, 'http://x').search)
          expect(swapped.statusCode).toBe(401)
          expect(swapped.body).not.toContain('look it up')
        }
      }
    }

    it('has an isolation case for every route that is not tenant-free', () => {
      const scoped = appRoutes(h.app).filter((r) => !TENANT_FREE.some((re) => re.test(r.key)))
      const uncovered = scoped.filter((r) => cases[r.key] === undefined).map((r) => r.key)
      expect(uncovered, 'routes without a tenant isolation case: add one to `cases`').toEqual([])
      // And no case is stale: each names a route the app has.
      const keys = new Set(scoped.map((r) => r.key))
      for (const key of Object.keys(cases)) expect(keys, `case for ${key}, which is not a route`).toContain(key)
    })

    it('asks for a key on every tenant-scoped route, and none on the tenant-free ones', async () => {
      const params = { name: 'lookup', id: a.done, tool_use_id: a.parkedCall }
      for (const route of appRoutes(h.app)) {
        // Not a key but the tool's signature: refused without it (on a call that waits for a result).
        if (TOOL_SIGNED.some((re) => re.test(route.key))) {
          const unsigned = await call(null, route.method, fillRoute(route.url, { ...params, id: a.parked }), { payload: { content: 'x' } })
          expect(unsigned.json().code, route.key).toBe('TOOL_RESULT_ERR_BAD_SIGNATURE')
          continue
        }
        const url = fillRoute(route.url.replace(/\*$/, 'x'), params)
        const open = await call(null, route.method, url)
        if (TENANT_FREE.some((re) => re.test(route.key))) {
          if (route.key !== 'GET /metrics') expect(open.statusCode, route.key).not.toBe(401)
          continue
        }
        expect(open.statusCode, route.key).toBe(401)
        expect(open.json().code, route.key).toBe('AUTH_ERR_MISSING_KEY')
        const wrong = await call(null, route.method, url, { headers: { authorization: 'Bearer sk_test_nobody_0123456789abcdef' } })
        expect(wrong.statusCode, route.key).toBe(401)
        expect(wrong.json().code, route.key).toBe('AUTH_ERR_INVALID_KEY')
      }
    })

    describe('tenant B on tenant A\'s things', () => {
      let before: unknown
      beforeAll(async () => { before = await snapshotOfA() })

      for (const [key, c] of Object.entries(cases)) {
        it(`${key}: 404 on A's objects (or B's own namespace), and A unchanged`, async () => {
          await c.run()
          expect(await snapshotOfA()).toEqual(before)
        })
      }
    })

    it('leaves A\'s tool, secrets and waiting run working as before', async () => {
      // The tool still calls A's URL with A's header, signed with A's original secret.
      const callsBefore = h.tools.callsTo('/ok').length
      const res = await h.startRun({ input: 'again', tools: ['lookup'] })
      expect(res.body.status).toBe('completed')
      const sent = h.tools.callsTo('/ok').slice(callsBefore).find((c) => c.body.tool === 'lookup')!
      expect(sent.headers['x-api-key']).toBe('tenant-a-tool-credential')
      expect(() => new Webhook(a.toolSecret).verify(sent.raw, sent.headers as Record<string, string>)).not.toThrow()
      // A's callbacks are signed with A's callback secret.
      const cb = await h.startRun({ input: 'call me back', callback_url: `${h.tools.url}/cb` })
      expect(cb.status).toBe(200)
      await expect.poll(() => h.tools.callsTo('/cb').length, { timeout: 10_000 }).toBeGreaterThan(0)
      const delivered = h.tools.callsTo('/cb')[0]!
      expect(delivered.body.id).toBe(cb.body.id)
      expect(() => new Webhook(a.callbackSecret).verify(delivered.raw, delivered.headers as Record<string, string>)).not.toThrow()
      // A's waiting run still takes A's answer.
      const resumed = await call(TENANT_A, 'POST', `/runs/${a.waiting}/tool_outputs`, { payload: { tool_outputs: [{ tool_use_id: a.waitingCall, content: 'yes' }] } })
      expect(resumed.statusCode, resumed.body).toBe(200)
      expect(resumed.json().status).toBe('completed')
    })
  })
}
