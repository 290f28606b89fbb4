import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends, openTestStore } from '../support/backends.js'
import { auth, startApp, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { startFakeMessagesApi, toolsThenAnswer } from '../support/fake-messages-api.js'
import { capturingLog } from '../support/log.js'

const LINK = /^\/runs\/(run_\w+)\/timeline\?expires=(\d+)&sig=([\w-]{43})$/

for (const backend of backends) {
  describe.skipIf(backend.skip)(`run timeline: ${backend.name}`, () => {
    let h: Harness
    let finished: Record<string, any>
    beforeAll(async () => {
      h = await startHarness(backend)
      await h.registerTool('get_weather', '/delay/60')
      await h.registerTool('lookup_order', '/status/502', { max_attempts: 1 })
      await h.registerTool('wait_forever', '/hang')
      await h.registerTool('get_weather', '/ok', {}, TENANT_B)
      h.model.respond = toolsThenAnswer([
        { name: 'get_weather', input: { q: 'Paris' } },
        { name: 'get_weather', input: { q: 'Oslo' } },
        { name: 'lookup_order', input: { q: 'o_1' } }
      ])
      const res = await h.startRun({ input: 'weather and my order', tools: ['get_weather', 'lookup_order'] })
      expect(res.status).toBe(200)
      finished = res.body
    })
    afterAll(async () => h?.close())

    const get = async (url: string, headers: Record<string, string> = {}) => await h.app.inject({ method: 'GET', url, headers })

    it('gives every run object a signed link to its timeline, valid for an hour', async () => {
      const before = Math.floor(Date.now() / 1000)
      for (const res of [
        await get(`/runs/${finished.id}`, auth(TENANT_A)),
        await get('/runs?limit=1', auth(TENANT_A))
      ]) {
        const run = res.json().data?.[0] ?? res.json()
        const [, id, expires] = LINK.exec(run.timeline_url)!
        expect(id).toBe(finished.id)
        expect(Number(expires) - before).toBeGreaterThanOrEqual(3599)
        expect(Number(expires) - before).toBeLessThanOrEqual(3601)
      }
      expect(finished.timeline_url).toMatch(LINK)
      // Stored copies of the run object carry none: they would outlive it.
      const created = (await h.events(finished.id)).find((e) => e.type === 'run.completed')!
      expect(created.data.timeline_url).toBeNull()
    })

    it('never writes a link\'s signature to the log', async () => {
      const { log, lines } = capturingLog('info')
      const logged = await startApp(backend, { logger: log, env: { ANTHROPIC_API_KEY: 'k', ANTHROPIC_BASE_URL: 'http://127.0.0.1:9', MODEL_MAX_RETRIES: '0' } })
      try {
        const run = await logged.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'x', background: true } })
        const link = run.json().timeline_url as string
        const sig = LINK.exec(link)![3]!
        expect((await logged.app.inject({ method: 'GET', url: link })).statusCode).toBe(200)
        const requests = lines().filter((l) => l.includes('/timeline'))
        expect(requests.length).toBeGreaterThan(0)
        expect(requests.join('\n')).toContain('sig=[redacted]')
        expect(lines().join('\n')).not.toContain(sig)
      } finally {
        await logged.close()
      }
    })

    it('opens a finished run\'s page with the link alone, with a strict policy and nothing cached', async () => {
      const res = await get(finished.timeline_url)
      expect(res.statusCode).toBe(200)
      expect(res.headers['content-type']).toBe('text/html; charset=utf-8')
      expect(res.headers['content-security-policy']).toMatch(/^default-src 'none'; style-src 'sha256-[\w+/=]+'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'$/)
      expect(res.headers['cache-control']).toBe('no-store')
      expect(res.headers['referrer-policy']).toBe('no-referrer')
      expect(res.headers['x-content-type-options']).toBe('nosniff')
      const html = res.body
      expect(html.match(/<rect class="bar tool [^"]*" data-tool="get_weather"/g)).toHaveLength(2)
      expect(html).toMatch(/<rect class="bar tool error[^"]*" data-tool="lookup_order"/)
      expect(html).toContain('✕ error 502')
      expect(html).toMatch(/3<\/b> tool calls \(1 failed\)/)
      expect(html).not.toContain('http-equiv="refresh"')
      // The API key works too, without a link.
      const withKey = await get(`/runs/${finished.id}/timeline`, auth(TENANT_A))
      expect(withKey.statusCode).toBe(200)
      expect(withKey.body).toContain(finished.id)
    })

    it('wants the key without a valid link: no link, a forged one, an expired one, another run\'s', async () => {
      const [, , expires, sig] = LINK.exec(finished.timeline_url)!
      const flipped = `${sig![0] === 'A' ? 'B' : 'A'}${sig!.slice(1)}`
      const other = await h.startRun({ input: 'just talk', tools: [] })
      const expired = h.app.timelineLinks.url({ id: finished.id, tenant_id: TENANT_A.id }, Date.now() - 3_600_001)
      const cases: Array<[string, string, string]> = [
        ['no link', `/runs/${finished.id}/timeline`, 'AUTH_ERR_MISSING_KEY'],
        ['a forged signature', `/runs/${finished.id}/timeline?expires=${expires}&sig=${flipped}`, 'AUTH_ERR_INVALID_LINK'],
        ['a later expiry', `/runs/${finished.id}/timeline?expires=${Number(expires) + 3600}&sig=${sig}`, 'AUTH_ERR_INVALID_LINK'],
        ['a signature that is not one', `/runs/${finished.id}/timeline?expires=soon&sig=<script>`, 'AUTH_ERR_INVALID_LINK'],
        ['an expired link', expired, 'AUTH_ERR_LINK_EXPIRED'],
        ['another run\'s signature', `/runs/${other.body.id}/timeline?expires=${expires}&sig=${sig}`, 'AUTH_ERR_INVALID_LINK']
      ]
      for (const [what, url, code] of cases) {
        const res = await get(url)
        expect(res.statusCode, what).toBe(401)
        expect(res.json(), what).toMatchObject({ statusCode: 401, code })
      }
      expect((await get(expired)).json().message).toMatch(/expired .*GET \/runs\/\{id\}\) for a fresh timeline_url/)
      // With the key as well, a stale link does not matter.
      expect((await get(expired, auth(TENANT_A))).statusCode).toBe(200)
    })

    it('opens nothing but that run\'s timeline page', async () => {
      const query = finished.timeline_url.split('?')[1]
      for (const url of [`/runs/${finished.id}?${query}`, `/runs/${finished.id}/events?${query}`, `/runs?${query}`]) {
        const res = await get(url)
        expect(res.statusCode, url).toBe(401)
      }
      expect((await h.app.inject({ method: 'POST', url: `/runs/${finished.id}/cancel?${query}` })).statusCode).toBe(401)
    })

    it('keeps tenants apart: another tenant\'s key finds no such run', async () => {
      const res = await get(`/runs/${finished.id}/timeline`, auth(TENANT_B))
      expect(res.statusCode).toBe(404)
      expect(res.json().code).toBe('RUN_ERR_NOT_FOUND')
      // Tenant B's own link names its own run, and opens only that.
      h.model.respond = toolsThenAnswer([{ name: 'get_weather', input: { q: 'Rome' } }])
      const theirs = await h.startRun({ input: 'weather', tools: ['get_weather'] }, TENANT_B)
      expect((await get(theirs.body.timeline_url)).statusCode).toBe(200)
      const [, , expires, sig] = LINK.exec(theirs.body.timeline_url)!
      expect((await get(`/runs/${finished.id}/timeline?expires=${expires}&sig=${sig}`)).statusCode).toBe(401)
    })

    it('draws a run whose events fill several pages of storage', async () => {
      h.model.respond = toolsThenAnswer(Array.from({ length: 120 }, (_, i) => ({ name: 'get_weather', input: { q: `city ${i}` } })))
      const res = await h.startRun({ input: 'everywhere', tools: ['get_weather'] })
      expect(res.body.tool_calls.total).toBe(120)
      const html = (await get(res.body.timeline_url)).body
      expect(html.match(/<rect class="bar tool /g)).toHaveLength(120)
      // The last events (the second step, the end) come from the last page.
      expect(html).toMatch(/<b>120<\/b> tool calls: /)
      expect(html).toMatch(/class="step-title"[^>]*>Step 2</)
      expect(html).toContain('completed (end_turn)')
    })

    it('refreshes the page of a live run, and stops once it has ended', async () => {
      h.model.respond = toolsThenAnswer([{ name: 'wait_forever', input: { q: 'x' } }, { name: 'get_weather', input: { q: 'Lima' } }])
      const started = await h.startRun({ input: 'go', tools: ['wait_forever', 'get_weather'], background: true })
      expect(started.status).toBe(202)
      await expect.poll(async () => (await h.events(started.body.id)).filter((e) => e.type === 'tool_call.completed').length, { timeout: 10_000 }).toBe(1)
      const live = await get(started.body.timeline_url)
      expect(live.statusCode).toBe(200)
      expect(live.body).toContain('<meta http-equiv="refresh" content="2">')
      // Still going, it is what the step waits for.
      expect(live.body).toMatch(/<rect class="bar tool running held" data-tool="wait_forever"/)
      expect(live.body).toContain('… running')

      const cancelled = await h.app.inject({ method: 'POST', url: `/runs/${started.body.id}/cancel`, headers: auth(TENANT_A) })
      expect(cancelled.json().status).toBe('cancelled')
      const over = await get(started.body.timeline_url)
      expect(over.body).not.toContain('http-equiv="refresh"')
      expect(over.body).toMatch(/<rect class="bar tool cancelled held" data-tool="wait_forever"/)
      expect(over.body).toContain('⊘ cancelled')
    })
  })

  describe.skipIf(backend.skip)(`timeline links across replicas and restarts: ${backend.name}`, () => {
    it('opens a link made before a restart (or by another replica) with the key every replica shares', async () => {
      const model = await startFakeMessagesApi(() => ({ content: [{ type: 'text', text: 'hello' }] }))
      const location = await backend.location()
      const env = { ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-ant-test-key-000' }
      try {
        const first = await startApp(backend, { location, env })
        const res = await first.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'hi' } })
        const url = res.json().timeline_url as string
        // PostgreSQL: a second replica alongside; SQLite: the same file after a restart.
        if (backend.name === 'sqlite') await first.close()
        const second = await startApp(backend, { location, env })
        try {
          const page = await second.app.inject({ method: 'GET', url })
          expect(page.statusCode).toBe(200)
          expect(page.body).toContain('completed')
        } finally {
          await second.close()
          if (backend.name === 'postgres') await first.close()
        }
      } finally {
        await location.destroy()
        await model.close()
      }
    })

    it('agrees on one key when replicas make it at the same time', async () => {
      const { store, close } = await openTestStore(backend)
      try {
        const keys = await Promise.all(['first', 'second', 'third', 'fourth'].map(async (candidate) => await store.serviceSecret('race', candidate)))
        expect(new Set(keys).size).toBe(1)
        expect(['first', 'second', 'third', 'fourth']).toContain(keys[0])
        expect(await store.serviceSecret('race', 'later')).toBe(keys[0])
      } finally {
        await close()
      }
    })

    it('makes links with the public address when PUBLIC_URL is set', async () => {
      const started = await startApp(backend, { env: { PUBLIC_URL: 'https://switchboard.example.com/' } })
      try {
        const link = started.app.timelineLinks.url({ id: 'run_01ABCDEFGHJKMNPQRSTVWXYZ01', tenant_id: TENANT_A.id })
        expect(link).toMatch(/^https:\/\/switchboard\.example\.com\/runs\/run_01ABCDEFGHJKMNPQRSTVWXYZ01\/timeline\?expires=\d+&sig=[\w-]{43}$/)
      } finally {
        await started.close()
      }
    })
  })
}
