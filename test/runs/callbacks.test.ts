import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { LookupAddress } from 'node:dns'
import { Webhook } from 'standardwebhooks'
import { backends } from '../support/backends.js'
import { auth, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { capturingLog } from '../support/log.js'

const dns = new Map<string, string>()
const resolver = (hostname: string, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void): void => {
  const address = dns.get(hostname)
  if (address === undefined) callback(Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' }), [])
  else callback(null, [{ address, family: 4 }])
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`completion callbacks: ${backend.name}`, () => {
    let h: Harness
    let secret: string
    const logs = capturingLog('info')
    beforeAll(async () => {
      h = await startHarness(backend, { env: { CALLBACK_RETRY_BASE_MS: '50', CALLBACK_MAX_ATTEMPTS: '3', LOG_LEVEL: 'info' }, resolver, logger: logs.log })
      h.model.respond = () => ({ content: [{ type: 'text', text: 'all done' }] })
      const created = await h.app.inject({ method: 'POST', url: '/callbacks/rotate-secret', headers: auth(TENANT_A) })
      expect(created.statusCode).toBe(200)
      secret = created.json().signing_secret
    })
    afterAll(async () => h?.close())

    const run = async (callbackPath: string, tenant = TENANT_A) => (await h.startRun({ input: 'x', callback_url: `${h.tools.url}${callbackPath}` }, tenant))
    const read = async (id: string) => (await h.app.inject({ method: 'GET', url: `/runs/${id}`, headers: auth(TENANT_A) })).json()

    it('has a signing secret that reads show only as existing', async () => {
      expect(secret).toMatch(/^whsec_/)
      const settings = await h.app.inject({ method: 'GET', url: '/callbacks', headers: auth(TENANT_A) })
      expect(settings.json()).toEqual({ object: 'callback_settings', has_signing_secret: true, previous_secret_expires_at: null })
      expect(settings.body).not.toContain(secret)
      expect((await h.app.inject({ method: 'GET', url: '/callbacks', headers: auth(TENANT_B) })).json().has_signing_secret).toBe(false)
    })

    it('POSTs the final run object, signed like a tool call, once the run ends', async () => {
      const { body } = await run('/hook-ok')
      h.tools.on('/hook-ok', (_req, res) => { res.writeHead(204).end() })
      await expect.poll(async () => (await read(body.id)).callback?.status, { timeout: 10_000 }).toBe('delivered')
      const [call] = h.tools.callsTo('/hook-ok')
      expect(call!.body).toMatchObject({ id: body.id, object: 'run', status: 'completed', output_text: 'all done' })
      expect(call!.headers['webhook-id']).toBe(`${body.id as string}:callback`)
      expect(new Webhook(secret).verify(call!.raw, call!.headers as Record<string, string>)).toMatchObject({ id: body.id })
      expect(await read(body.id)).toMatchObject({ callback: { url: `${h.tools.url}/hook-ok`, status: 'delivered', attempts: 1, last_error: null } })
    })

    it('retries with backoff until the receiver takes it', async () => {
      let seen = 0
      h.tools.on('/hook-flaky', (_req, res) => {
        if (++seen < 3) res.writeHead(503).end('busy')
        else res.writeHead(200).end()
      })
      const { body } = await run('/hook-flaky')
      await expect.poll(async () => (await read(body.id)).callback?.status, { timeout: 10_000 }).toBe('delivered')
      expect((await read(body.id)).callback.attempts).toBe(3)
      expect(new Set(h.tools.callsTo('/hook-flaky').map((c) => c.headers['webhook-id'])).size).toBe(1)
    })

    it('gives up after CALLBACK_MAX_ATTEMPTS, saying why', async () => {
      h.tools.on('/hook-down', (_req, res) => { res.writeHead(500).end('receiver broken') })
      const { body } = await run('/hook-down')
      await expect.poll(async () => (await read(body.id)).callback?.status, { timeout: 10_000 }).toBe('failed')
      expect((await read(body.id)).callback).toMatchObject({ attempts: 3, last_error: 'HTTP 500: receiver broken' })
      expect(h.tools.callsTo('/hook-down')).toHaveLength(3)
    })

    it('checks the egress policy when the run is created and again at delivery', async () => {
      const refused = await h.startRun({ input: 'x', callback_url: 'http://169.254.169.254/latest' })
      expect(refused.status).toBe(400)
      expect(refused.body).toMatchObject({ code: 'RUN_ERR_CALLBACK_URL' })
      const badScheme = await h.startRun({ input: 'x', callback_url: 'ftp://example.com/x' })
      expect(badScheme.body.code).toBe('RUN_ERR_CALLBACK_URL')
      // A name that resolved to an allowed address when the run began, and to the metadata service since.
      dns.set('hooks.rebinding.test', '127.0.0.1')
      const port = new URL(h.tools.url).port
      h.model.respond = async () => {
        dns.set('hooks.rebinding.test', '169.254.169.254')
        return { content: [{ type: 'text', text: 'done' }] }
      }
      const { body } = await h.startRun({ input: 'x', callback_url: `http://hooks.rebinding.test:${port}/hook-ok` })
      await expect.poll(async () => (await read(body.id)).callback?.status, { timeout: 10_000 }).toBe('failed')
      expect((await read(body.id)).callback.last_error).toMatch(/not allowed by the egress policy/)
      h.model.respond = () => ({ content: [{ type: 'text', text: 'all done' }] })
    })

    it('needs the tenant\'s callback secret first', async () => {
      const res = await run('/hook-ok', TENANT_B)
      expect(res.status).toBe(400)
      expect(res.body).toMatchObject({ code: 'RUN_ERR_NO_CALLBACK_SECRET' })
      expect(res.body.message).toContain('POST /callbacks/rotate-secret')
    })

    it('never holds up other work behind a slow receiver', async () => {
      // A receiver that never answers, and a callback timeout far longer than the run below.
      const slow = await startHarness(backend, { env: { CALLBACK_TIMEOUT_MS: '60000' } })
      try {
        slow.model.respond = (request) => request.body.messages.length === 1 && request.body.messages[0].content === 'wait for me'
          ? { content: [{ type: 'tool_use', name: 'ask', input: {} }] }
          : { content: [{ type: 'text', text: 'done' }] }
        await slow.app.inject({ method: 'POST', url: '/callbacks/rotate-secret', headers: auth(TENANT_A) })
        await slow.startRun({ input: 'x', callback_url: `${slow.tools.url}/hang` })
        await expect.poll(() => slow.tools.callsTo('/hang').length).toBeGreaterThan(0)
        // While that delivery hangs, a waiting run's deadline is still enforced.
        const { body } = await slow.startRun({ input: 'wait for me', client_tools: [{ name: 'ask', description: 'ask', input_schema: { type: 'object' } }], timeout_ms: 1500 })
        expect(body.status).toBe('requires_action')
        await expect.poll(async () => (await slow.app.inject({ method: 'GET', url: `/runs/${body.id as string}`, headers: auth(TENANT_A) })).json().status, { timeout: 20_000 }).toBe('failed')
        expect(slow.tools.callsTo('/hang')[0]!.end).toBeNull()
      } finally {
        await slow.close()
      }
    })

    it('never logs the secret', () => {
      expect(logs.lines().join('\n')).not.toContain(secret)
    })
  })
}
