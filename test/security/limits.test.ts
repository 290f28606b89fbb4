import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { auth, BASE_ENV, startApp, TENANT_A, TENANT_B, type TestTenant } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import type { RecordedRequest, Turn } from '../support/fake-messages-api.js'

// SPEC §8 "Limits", under load from one tenant: each limit answers in the error shape, says which
// setting it is and what to do, and leaves other tenants alone.

const TENANT_C: TestTenant = { id: 'initech', key: 'sk_test_initech_0123456789abcdef' }
// A second key of tenant A: the rate limit counts the tenant, whichever of its keys is used.
const TENANT_A_OTHER_KEY: TestTenant = { id: TENANT_A.id, key: 'sk_test_acme_second_key_0123456789' }
const KEYS = `${BASE_ENV.API_KEYS!},${TENANT_C.id}:${TENANT_C.key},${TENANT_A_OTHER_KEY.id}:${TENANT_A_OTHER_KEY.key}`

function expectErrorShape (res: { statusCode: number, headers: Record<string, unknown>, json: () => any }, statusCode: number, code: string): Record<string, any> {
  expect(res.statusCode).toBe(statusCode)
  const body = res.json()
  expect(body).toEqual({ statusCode, code, error: expect.any(String), message: expect.any(String), requestId: res.headers['x-request-id'] })
  return body
}

const CLIENT_TOOL = { name: 'ask_user', description: 'Asks the user', input_schema: { type: 'object' } }

/** 'ask': the run waits for a client tool (requires_action); 'hang': the model never answers; else it ends. */
function script (request: RecordedRequest): Turn {
  const first = request.body.messages[0].content
  if (first === 'hang') return { kind: 'hang' }
  if (first === 'ask' && request.body.messages.length === 1) return { content: [{ type: 'tool_use', name: 'ask_user', input: {} }] }
  return { content: [{ type: 'text', text: 'done' }] }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`limits: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend, {
        respond: script,
        env: {
          API_KEYS: KEYS,
          BODY_LIMIT_BYTES: '2048',
          RUN_MAX_STEPS: '10',
          RUN_MAX_TIMEOUT_MS: '60000',
          TENANT_MAX_ACTIVE_RUNS: '3',
          MAX_RUNNING_RUNS: '1',
          SHUTDOWN_GRACE_MS: '0'
        }
      })
    })
    afterAll(async () => h?.close())

    const post = async (body: Record<string, unknown>, tenant: TestTenant = TENANT_A, headers: Record<string, string> = {}) =>
      await h.app.inject({ method: 'POST', url: '/runs', headers: { ...auth(tenant), ...headers }, payload: body })
    const runsOf = async (tenant: TestTenant) => (await h.app.inject({ method: 'GET', url: '/runs?limit=100', headers: auth(tenant) })).json().data as Array<{ id: string, status: string }>
    const cancelAll = async (tenant: TestTenant) => {
      for (const run of await runsOf(tenant)) {
        if (!['completed', 'failed', 'cancelled'].includes(run.status)) {
          await h.app.inject({ method: 'POST', url: `/runs/${run.id}/cancel`, headers: auth(tenant) })
        }
      }
    }

    describe('request bodies', () => {
      it('a body over BODY_LIMIT_BYTES is a 413 naming the limit, on POST /runs and PUT /tools, and starts nothing', async () => {
        const bigRun = await post({ input: 'x'.repeat(4000) })
        const body = expectErrorShape(bigRun, 413, 'REQUEST_ERR_BODY_TOO_LARGE')
        expect(body.message).toBe('The body is larger than 2048 bytes (BODY_LIMIT_BYTES): send less, or raise the limit.')
        expect(await runsOf(TENANT_A)).toHaveLength(0)

        const bigTool = await h.app.inject({
          method: 'PUT',
          url: '/tools/huge',
          headers: auth(TENANT_A),
          payload: { description: 'd'.repeat(4000), input_schema: { type: 'object' }, url: `${h.tools.url}/ok` }
        })
        expect(expectErrorShape(bigTool, 413, 'REQUEST_ERR_BODY_TOO_LARGE').message).toContain('BODY_LIMIT_BYTES')
        expect((await h.app.inject({ method: 'GET', url: '/tools/huge', headers: auth(TENANT_A) })).statusCode).toBe(404)
      })

      it('a body that is not JSON is a 415, and broken JSON a 400', async () => {
        const xml = await h.app.inject({ method: 'POST', url: '/runs', headers: { ...auth(TENANT_A), 'content-type': 'application/xml' }, payload: '<run/>' })
        expect(expectErrorShape(xml, 415, 'REQUEST_ERR_UNSUPPORTED_MEDIA_TYPE').message).toContain('application/json')
        const form = await h.app.inject({ method: 'PUT', url: '/tools/t', headers: { ...auth(TENANT_A), 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=b' })
        expectErrorShape(form, 415, 'REQUEST_ERR_UNSUPPORTED_MEDIA_TYPE')
        const broken = await h.app.inject({ method: 'POST', url: '/runs', headers: { ...auth(TENANT_A), 'content-type': 'application/json' }, payload: '{"input": "x",' })
        expect(expectErrorShape(broken, 400, 'REQUEST_ERR_INVALID_JSON').message).toContain('not valid JSON')
      })
    })

    describe('ceilings of a run', () => {
      it('max_steps and timeout_ms above RUN_MAX_STEPS and RUN_MAX_TIMEOUT_MS are a 400 naming the field and the ceiling', async () => {
        const steps = expectErrorShape(await post({ input: 'x', max_steps: 11 }), 400, 'RUN_ERR_INVALID_REQUEST')
        expect(steps.message).toBe('max_steps is 11 but this service allows at most 10 (RUN_MAX_STEPS).')
        const timeout = expectErrorShape(await post({ input: 'x', timeout_ms: 60_001 }), 400, 'RUN_ERR_INVALID_REQUEST')
        expect(timeout.message).toBe('timeout_ms is 60001 but this service allows at most 60000 (RUN_MAX_TIMEOUT_MS).')
        // Beyond what the API allows at all, whatever the settings.
        expect(expectErrorShape(await post({ input: 'x', max_steps: 1001 }), 400, 'REQUEST_ERR_VALIDATION').message).toContain('body.max_steps must be <= 1000')
        expect(await runsOf(TENANT_A)).toHaveLength(0)
        // At the ceilings themselves, the run starts.
        const ok = await post({ input: 'x', max_steps: 10, timeout_ms: 60_000 })
        expect(ok.statusCode).toBe(200)
        expect(ok.json()).toMatchObject({ status: 'completed' })
      })
    })

    describe('runs not yet finished, per tenant (TENANT_MAX_ACTIVE_RUNS)', () => {
      it('counts queued, running and waiting runs; past the limit POST /runs is a 429 with retry-after that starts nothing', async () => {
        // One waits for its caller, one holds this replica's only slot (MAX_RUNNING_RUNS=1), one queues.
        const waiting = await post({ input: 'ask', client_tools: [CLIENT_TOOL] }, TENANT_A, { 'idempotency-key': 'limits-waiting' })
        expect(waiting.json().status).toBe('requires_action')
        const running = (await post({ input: 'hang', background: true })).json()
        await expect.poll(async () => (await h.app.inject({ method: 'GET', url: `/runs/${running.id as string}`, headers: auth(TENANT_A) })).json().status).toBe('running')
        const queued = (await post({ input: 'x', background: true })).json()
        expect(queued.status).toBe('queued')
        expect(new Set((await runsOf(TENANT_A)).filter((r) => r.status !== 'completed').map((r) => r.status))).toEqual(new Set(['requires_action', 'running', 'queued']))

        const before = (await runsOf(TENANT_A)).length
        for (const extra of [{ input: 'x' }, { input: 'x', background: true }, { input: 'x', stream: true }]) {
          const refused = await post(extra)
          const body = expectErrorShape(refused, 429, 'RUN_ERR_TOO_MANY_ACTIVE')
          expect(body.message).toBe('This tenant already has 3 runs that have not finished (queued, running or waiting in requires_action), the most TENANT_MAX_ACTIVE_RUNS allows: wait for some to end, answer those waiting for tool outputs, or cancel those you no longer need (POST /runs/{id}/cancel), then retry.')
          expect(refused.headers['retry-after']).toBe('5')
        }
        expect(await runsOf(TENANT_A)).toHaveLength(before)

        // A replay of a run already made is not a new run: it is answered, not refused.
        const replay = await post({ input: 'ask', client_tools: [CLIENT_TOOL] }, TENANT_A, { 'idempotency-key': 'limits-waiting' })
        expect(replay.statusCode).toBe(200)
        expect(replay.headers['idempotent-replayed']).toBe('true')
        expect(replay.json().id).toBe(waiting.json().id)

        // Another tenant has its own count.
        const other = await post({ input: 'x', background: true }, TENANT_B)
        expect(other.statusCode).toBe(202)

        // A run that ends makes room again.
        expect((await h.app.inject({ method: 'POST', url: `/runs/${queued.id as string}/cancel`, headers: auth(TENANT_A) })).statusCode).toBe(200)
        const again = await post({ input: 'x', background: true })
        expect(again.statusCode).toBe(202)
        await cancelAll(TENANT_A)
      })

      it('many creates at once on one replica do not overshoot the limit', async () => {
        const answers = await Promise.all(Array.from({ length: 12 }, async () => await post({ input: 'ask', client_tools: [CLIENT_TOOL] }, TENANT_C)))
        const statuses = answers.map((a) => a.statusCode).sort()
        expect(statuses.filter((s) => s === 200)).toHaveLength(3)
        expect(statuses.filter((s) => s === 429)).toHaveLength(9)
        expect((await runsOf(TENANT_C)).filter((r) => r.status === 'requires_action')).toHaveLength(3)
        await cancelAll(TENANT_C)
      })
    })
  })
}

describe('requests per tenant per minute (RATE_LIMIT_PER_MINUTE)', () => {
  const sqlite = backends[0]!
  let started: Awaited<ReturnType<typeof startApp>>
  beforeAll(async () => {
    started = await startApp(sqlite, { env: { API_KEYS: KEYS, RATE_LIMIT_PER_MINUTE: '5' } })
  })
  afterAll(async () => started?.close())
  const get = async (url: string, headers: Record<string, string> = {}) => await started.app.inject({ method: 'GET', url, headers })

  it('requests without a valid key, and routes that need none, spend no tenant\'s budget', async () => {
    for (let i = 0; i < 20; i++) {
      expect((await get('/tools')).statusCode).toBe(401)
      expect((await get('/tools', { authorization: 'Bearer sk_wrong_key_0123456789abcdef' })).statusCode).toBe(401)
      expect((await get('/tools', { authorization: `Basic ${TENANT_A.key}` })).statusCode).toBe(401)
      expect((await get('/healthz')).statusCode).toBe(200)
      expect((await get('/readyz')).statusCode).toBe(200)
      expect((await get('/openapi.json')).statusCode).toBe(200)
      expect((await get('/metrics')).statusCode).not.toBe(429)
    }
    const first = await get('/tools', auth(TENANT_A))
    expect(first.statusCode).toBe(200)
    expect(first.headers['x-ratelimit-limit']).toBe('5')
    expect(first.headers['x-ratelimit-remaining']).toBe('4')
  })

  it('past the limit a tenant gets 429 in the error shape with retry-after and x-ratelimit-*, whichever key it uses; others do not', async () => {
    for (let i = 0; i < 3; i++) expect((await get('/tools', auth(TENANT_A))).statusCode).toBe(200)
    // The fifth request, with the tenant's other key: one budget per tenant.
    const fifth = await get('/tools', auth(TENANT_A_OTHER_KEY))
    expect(fifth.statusCode).toBe(200)
    expect(fifth.headers['x-ratelimit-remaining']).toBe('0')

    const limited = await get('/tools', auth(TENANT_A))
    const body = expectErrorShape(limited, 429, 'REQUEST_ERR_RATE_LIMITED')
    expect(body.message).toMatch(/^Too many requests: this tenant may make 5 per minute on each replica \(RATE_LIMIT_PER_MINUTE\)\. Retry after \d+ s/)
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0)
    expect(Number(limited.headers['retry-after'])).toBeLessThanOrEqual(60)
    expect(limited.headers['x-ratelimit-limit']).toBe('5')
    expect(limited.headers['x-ratelimit-remaining']).toBe('0')
    expect(limited.headers['x-ratelimit-reset']).toBeDefined()
    // Refused before the body is read or checked: a bad body is still a 429, not a 400.
    const badBody = await started.app.inject({ method: 'POST', url: '/runs', headers: { ...auth(TENANT_A_OTHER_KEY), 'content-type': 'application/json' }, payload: '{oops' })
    expectErrorShape(badBody, 429, 'REQUEST_ERR_RATE_LIMITED')

    expect((await get('/tools', auth(TENANT_B))).statusCode).toBe(200)
    expect((await get('/healthz')).statusCode).toBe(200)
  })

  it('a signed timeline link spends a budget of its own run, never the tenant\'s', async () => {
    const linked = await startApp(sqlite, { env: { API_KEYS: KEYS, RATE_LIMIT_PER_MINUTE: '3', ANTHROPIC_API_KEY: 'k', ANTHROPIC_BASE_URL: 'http://127.0.0.1:9', MODEL_MAX_RETRIES: '0' } })
    try {
      const run = await linked.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', background: true } })
      expect(run.statusCode).toBe(202)
      const link = run.json().timeline_url as string
      expect(link).toMatch(/sig=/)
      for (let i = 0; i < 3; i++) expect((await linked.app.inject({ method: 'GET', url: link })).statusCode).toBe(200)
      expectErrorShape(await linked.app.inject({ method: 'GET', url: link }), 429, 'REQUEST_ERR_RATE_LIMITED')
      // The tenant has spent one request (the POST): a link opened over and over takes none of it.
      for (let i = 0; i < 2; i++) expect((await linked.app.inject({ method: 'GET', url: '/tools', headers: auth(TENANT_A) })).statusCode).toBe(200)
    } finally {
      await linked.close()
    }
  })

  it('a flood through one run\'s timeline link is refused past 60 a minute, leaving the tenant\'s budget and other runs\' links alone', async () => {
    const linked = await startApp(sqlite, { env: { API_KEYS: KEYS, RATE_LIMIT_PER_MINUTE: '1000', ANTHROPIC_API_KEY: 'k', ANTHROPIC_BASE_URL: 'http://127.0.0.1:9', MODEL_MAX_RETRIES: '0' } })
    try {
      const start = async () => await linked.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', background: true } })
      const first = await start()
      const second = await start()
      const link = first.json().timeline_url as string
      const open = async (url: string) => await linked.app.inject({ method: 'GET', url })
      for (let i = 0; i < 60; i++) {
        const page = await open(link)
        expect(page.statusCode).toBe(200)
        expect(page.headers['x-ratelimit-limit']).toBe('60')
      }
      const flooded = await open(link)
      const body = expectErrorShape(flooded, 429, 'REQUEST_ERR_RATE_LIMITED')
      expect(body.message).toMatch(/^Too many requests through this run's timeline links: they may open its page 60 times per minute on each replica, apart from the tenant's own budget\. Retry after \d+ s/)
      expect(Number(flooded.headers['retry-after'])).toBeGreaterThan(0)
      expect(Number(flooded.headers['retry-after'])).toBeLessThanOrEqual(60)
      // A fresh link to the same run shares its budget: reading the run again does not reset it.
      const fresh = (await linked.app.inject({ method: 'GET', url: `/runs/${first.json().id as string}`, headers: auth(TENANT_A) })).json().timeline_url as string
      expect((await open(fresh)).statusCode).toBe(429)
      // Another run's link has its own budget.
      expect((await open(second.json().timeline_url as string)).statusCode).toBe(200)
      // The tenant has spent its own requests only (two creates, one read, this one): 996 are left.
      const own = await linked.app.inject({ method: 'GET', url: '/tools', headers: auth(TENANT_A) })
      expect(own.statusCode).toBe(200)
      expect(own.headers['x-ratelimit-limit']).toBe('1000')
      expect(own.headers['x-ratelimit-remaining']).toBe('996')
      // The page opened with the key is the tenant's request, counted in its budget, not the link's.
      const withKey = await linked.app.inject({ method: 'GET', url: `/runs/${first.json().id as string}/timeline`, headers: auth(TENANT_A) })
      expect(withKey.statusCode).toBe(200)
      expect(withKey.headers['x-ratelimit-remaining']).toBe('995')
    } finally {
      await linked.close()
    }
  })

  it('0 turns it off', async () => {
    const open = await startApp(sqlite, { env: { RATE_LIMIT_PER_MINUTE: '0' } })
    try {
      for (let i = 0; i < 10; i++) {
        const res = await open.app.inject({ method: 'GET', url: '/tools', headers: auth(TENANT_A) })
        expect(res.statusCode).toBe(200)
        expect(res.headers['x-ratelimit-limit']).toBeUndefined()
      }
    } finally {
      await open.close()
    }
  })
})

for (const backend of backends) {
  describe.skipIf(backend.skip)(`event streams per tenant (TENANT_MAX_SSE_STREAMS): ${backend.name}`, () => {
    let h: Harness
    let base: string
    const open: AbortController[] = []
    beforeAll(async () => {
      h = await startHarness(backend, { respond: script, env: { TENANT_MAX_SSE_STREAMS: '2', SHUTDOWN_GRACE_MS: '0' } })
      base = await h.app.listen({ port: 0, host: '127.0.0.1' })
    })
    afterAll(async () => {
      for (const controller of open) controller.abort()
      await h?.close()
    })

    /** Opens a stream of a run's events and keeps it open (until its controller aborts). */
    const stream = async (runId: string, tenant: TestTenant = TENANT_A, query = '') => {
      const controller = new AbortController()
      open.push(controller)
      const res = await fetch(`${base}/runs/${runId}/events${query}`, { headers: { ...auth(tenant), accept: 'text/event-stream' }, signal: controller.signal })
      return { res, controller }
    }
    const background = async (input: string, tenant: TestTenant = TENANT_A) => {
      const res = await h.app.inject({ method: 'POST', url: '/runs', headers: auth(tenant), payload: { input, background: true } })
      expect(res.statusCode).toBe(202)
      return res.json().id as string
    }
    const expectRefused = async (res: Response) => {
      expect(res.status).toBe(429)
      expect(res.headers.get('content-type')).toMatch(/^application\/json/)
      expect(res.headers.get('retry-after')).toBe('1')
      const body = await res.json() as Record<string, unknown>
      expect(body).toEqual({ statusCode: 429, code: 'RUN_ERR_TOO_MANY_STREAMS', error: 'Too Many Requests', message: expect.any(String), requestId: res.headers.get('x-request-id') })
      expect(body.message).toBe('This tenant already has 2 event streams open on this replica, the most TENANT_MAX_SSE_STREAMS allows: close one you no longer read, or follow runs with GET /runs/{id} or a callback_url, then retry.')
    }

    it('past the limit a stream is refused with 429 before it starts, on every route that streams; other tenants and plain reads go on', async () => {
      const runId = await background('hang')
      const first = await stream(runId)
      const second = await stream(runId)
      expect([first.res.status, second.res.status]).toEqual([200, 200])
      expect(first.res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8')

      await expectRefused((await stream(runId)).res)
      const runsBefore = (await h.app.inject({ method: 'GET', url: '/runs?limit=100', headers: auth(TENANT_A) })).json().data.length
      await expectRefused(await fetch(`${base}/runs`, { method: 'POST', headers: { ...auth(TENANT_A), 'content-type': 'application/json' }, body: JSON.stringify({ input: 'x', stream: true }) }))
      // The refused stream started no run.
      expect((await h.app.inject({ method: 'GET', url: '/runs?limit=100', headers: auth(TENANT_A) })).json().data).toHaveLength(runsBefore)

      // Reading events as JSON is not a stream; another tenant has its own streams.
      expect((await h.app.inject({ method: 'GET', url: `/runs/${runId}/events`, headers: auth(TENANT_A) })).statusCode).toBe(200)
      const theirs = await stream(await background('hang', TENANT_B), TENANT_B)
      expect(theirs.res.status).toBe(200)
      theirs.controller.abort()

      first.controller.abort()
      second.controller.abort()
      await h.app.inject({ method: 'POST', url: `/runs/${runId}/cancel`, headers: auth(TENANT_A) })
    })

    it('a slot is given back when the client goes away, and when a stream ends', async () => {
      const runId = await background('hang')
      const first = await stream(runId)
      const second = await stream(runId)
      expect([first.res.status, second.res.status]).toEqual([200, 200])
      await expectRefused((await stream(runId)).res)

      // The client of the first goes away: its slot comes back (once the server has seen it go).
      first.controller.abort()
      let third: Awaited<ReturnType<typeof stream>> | undefined
      await expect.poll(async () => {
        const attempt = await stream(runId)
        if (attempt.res.status === 200) third = attempt
        else await attempt.res.body?.cancel()
        return attempt.res.status
      }, { timeout: 10_000 }).toBe(200)
      await expectRefused((await stream(runId)).res)

      // Streams that end with their run give their slots back too.
      await h.app.inject({ method: 'POST', url: `/runs/${runId}/cancel`, headers: auth(TENANT_A) })
      for (const open of [second, third!]) {
        const text = await open.res.text()
        expect(text).toContain('event: run.cancelled')
      }
      const streamed = await fetch(`${base}/runs`, { method: 'POST', headers: { ...auth(TENANT_A), 'content-type': 'application/json' }, body: JSON.stringify({ input: 'x', stream: true }) })
      expect(streamed.status).toBe(200)
      expect(await streamed.text()).toContain('event: run.completed')
      const replays = await Promise.all([stream(runId), stream(runId)])
      expect(replays.map((r) => r.res.status)).toEqual([200, 200])
      for (const replay of replays) expect(await replay.res.text()).toContain('event: run.cancelled')
    })

    it('clients that go away as soon as their stream starts, many times over, leave no slot taken', async () => {
      const runId = await background('hang')
      for (let i = 0; i < 30; i++) {
        // Until the server has noticed the last clients go, a new stream may still be refused; it
        // must not stay so. (The probes that were refused hold no slot.)
        let opened: AbortController | undefined
        await expect.poll(async () => {
          const attempt = await stream(runId)
          if (attempt.res.status === 200) opened = attempt.controller
          else attempt.controller.abort()
          return attempt.res.status
        }, { timeout: 10_000 }).toBe(200)
        opened!.abort()
      }
      await expect.poll(async () => {
        const both = await Promise.all([stream(runId), stream(runId)])
        for (const { controller } of both) controller.abort()
        return both.map((b) => b.res.status)
      }, { timeout: 10_000 }).toEqual([200, 200])
      await h.app.inject({ method: 'POST', url: `/runs/${runId}/cancel`, headers: auth(TENANT_A) })
    })
  })
}
