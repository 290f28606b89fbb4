import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Webhook } from 'standardwebhooks'
import { backends } from '../support/backends.js'
import { auth, startApp, TENANT_A, TENANT_B, type StartedApp } from '../support/app.js'
import { capturingLog } from '../support/log.js'

const weather = {
  description: 'Current weather for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  url: 'http://127.0.0.1:9/weather'
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`tool registry: ${backend.name}`, () => {
    let started: StartedApp
    const logs = capturingLog('trace')
    const put = (name: string, body: unknown, tenant = TENANT_A) =>
      started.app.inject({ method: 'PUT', url: `/tools/${name}`, headers: auth(tenant), payload: body as object })
    const get = (url: string, tenant = TENANT_A) => started.app.inject({ method: 'GET', url, headers: auth(tenant) })

    beforeAll(async () => {
      started = await startApp(backend, { logger: logs.log, env: { LOG_LEVEL: 'trace' } })
    })
    afterAll(async () => started?.close())

    describe('create and replace', () => {
      it('creates with 201, every default filled in, and the signing secret shown once', async () => {
        const res = await put('get_weather', weather)
        expect(res.statusCode).toBe(201)
        const tool = res.json()
        expect(tool).toMatchObject({
          object: 'tool',
          name: 'get_weather',
          description: weather.description,
          input_schema: weather.input_schema,
          url: weather.url,
          header_names: [],
          timeout_ms: 30000,
          effect: 'side_effecting',
          parallel: true,
          max_concurrency: null,
          max_attempts: 3,
          source: 'api',
          has_signing_secret: true,
          previous_secret_expires_at: null
        })
        expect(tool.signing_secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/)
        // A Standard Webhooks library accepts it as a secret.
        expect(() => new Webhook(tool.signing_secret)).not.toThrow()
        expect(new Date(tool.created_at).toISOString()).toBe(tool.created_at)

        const read = await get('/tools/get_weather')
        expect(read.statusCode).toBe(200)
        expect(read.json()).not.toHaveProperty('signing_secret')
        expect(read.body).not.toContain(tool.signing_secret)
      })

      it('replaces with 200, keeping the secret and the creation time', async () => {
        const created = await put('replace_me', weather)
        const secret = created.json().signing_secret
        const replaced = await put('replace_me', { ...weather, description: 'v2', timeout_ms: 5000, effect: 'read_only', parallel: false, max_concurrency: 2, max_attempts: 5 })
        expect(replaced.statusCode).toBe(200)
        expect(replaced.json()).not.toHaveProperty('signing_secret')
        expect(replaced.json()).toMatchObject({ description: 'v2', timeout_ms: 5000, effect: 'read_only', parallel: false, max_concurrency: 2, max_attempts: 5 })
        expect(replaced.json().created_at).toBe(created.json().created_at)
        const stored = await started.app.store.getTool(TENANT_A.id, 'replace_me')
        expect(stored!.signing_secrets.map((s) => s.secret)).toEqual([secret])
      })

      it('is idempotent: the same PUT twice leaves one tool', async () => {
        await put('twice', weather)
        await put('twice', weather)
        const list = await get('/tools?limit=100')
        expect(list.json().data.filter((t: { name: string }) => t.name === 'twice')).toHaveLength(1)
      })
    })

    describe('refusals, each a 4xx saying what to fix', () => {
      const cases: Array<[string, string, Record<string, unknown>, string, RegExp]> = [
        ['a bad name', 'bad name!', weather, 'REQUEST_ERR_VALIDATION', /params.name must match pattern/],
        ['a name over 64 characters', 'x'.repeat(65), weather, 'REQUEST_ERR_VALIDATION', /params.name must match pattern/],
        ['a missing description', 'no_desc', { ...weather, description: undefined }, 'REQUEST_ERR_VALIDATION', /missing the required field "description"/],
        ['a missing input_schema', 'no_schema', { ...weather, input_schema: undefined }, 'REQUEST_ERR_VALIDATION', /missing the required field "input_schema"/],
        ['a timeout of 0', 't0', { ...weather, timeout_ms: 0 }, 'REQUEST_ERR_VALIDATION', /body.timeout_ms must be >= 1/],
        ['a timeout over 600000', 't1', { ...weather, timeout_ms: 600_001 }, 'REQUEST_ERR_VALIDATION', /body.timeout_ms must be <= 600000/],
        ['11 attempts', 'a11', { ...weather, max_attempts: 11 }, 'REQUEST_ERR_VALIDATION', /body.max_attempts must be <= 10/],
        ['0 attempts', 'a0', { ...weather, max_attempts: 0 }, 'REQUEST_ERR_VALIDATION', /body.max_attempts must be >= 1/],
        ['max_concurrency 0', 'c0', { ...weather, max_concurrency: 0 }, 'REQUEST_ERR_VALIDATION', /body.max_concurrency/],
        ['max_concurrency beyond storage', 'c1', { ...weather, max_concurrency: 3e9 }, 'REQUEST_ERR_VALIDATION', /body.max_concurrency/],
        ['an unknown effect', 'e', { ...weather, effect: 'sometimes' }, 'REQUEST_ERR_VALIDATION', /body.effect/],
        ['a header value that is not a string', 'h', { ...weather, headers: { 'x-n': 5 } }, 'REQUEST_ERR_VALIDATION', /body.headers/],
        ['a schema that does not compile', 's1', { ...weather, input_schema: { type: 'object', properties: { city: { type: 'strin' } } } }, 'TOOL_ERR_INVALID_SCHEMA', /input_schema does not compile: schema is invalid: data\/properties\/city\/type must be equal to one of the allowed values/],
        ['a schema with a broken $ref', 's2', { ...weather, input_schema: { type: 'object', properties: { a: { $ref: '#/definitions/nope' } } } }, 'TOOL_ERR_INVALID_SCHEMA', /can't resolve reference #\/definitions\/nope/],
        ['a schema with a broken pattern', 's3', { ...weather, input_schema: { type: 'object', properties: { a: { type: 'string', pattern: '(' } } } }, 'TOOL_ERR_INVALID_SCHEMA', /Invalid regular expression/],
        ['a schema that is not of an object', 's4', { ...weather, input_schema: { type: 'string' } }, 'TOOL_ERR_INVALID_SCHEMA', /must have `"type": "object"` at the top/],
        ['an unsupported $schema', 's5', { ...weather, input_schema: { $schema: 'http://json-schema.org/draft-04/schema#', type: 'object' } }, 'TOOL_ERR_INVALID_SCHEMA', /unsupported \$schema/],
        ['a relative url', 'u1', { ...weather, url: '/weather' }, 'TOOL_ERR_INVALID_URL', /is not an absolute URL/],
        ['an ftp url', 'u2', { ...weather, url: 'ftp://127.0.0.1/x' }, 'TOOL_ERR_INVALID_URL', /must use http or https, not ftp/],
        ['credentials in the url', 'u3', { ...weather, url: 'https://user:pw@tools.example.com/x' }, 'TOOL_ERR_INVALID_URL', /must not hold credentials/],
        ['the metadata address', 'm1', { ...weather, url: 'http://169.254.169.254/latest/meta-data/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /address 169.254.169.254 is not allowed.*always refused/],
        ['Alibaba\'s metadata address', 'm2', { ...weather, url: 'http://100.100.100.200/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /always refused/],
        ['AWS\'s IPv6 metadata address', 'm3', { ...weather, url: 'http://[fd00:ec2::254]/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /always refused/],
        ['an IPv6 link-local address', 'm4', { ...weather, url: 'http://[fe80::1]/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /always refused/],
        ['a private address not allowed', 'p1', { ...weather, url: 'http://10.1.2.3/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /private or loopback address not listed in TOOL_EGRESS_ALLOW/],
        ['a loopback address not allowed', 'p2', { ...weather, url: 'http://127.0.0.2/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /address 127.0.0.2 is not allowed/],
        ['an IPv4-mapped IPv6 loopback', 'p3', { ...weather, url: 'http://[::ffff:127.0.0.2]/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /address 127.0.0.2 is not allowed/],
        ['the metadata address through NAT64', 'n1', { ...weather, url: 'http://[64:ff9b::169.254.169.254]/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /always refused/],
        ['a private address through local-use NAT64', 'n2', { ...weather, url: 'http://[64:ff9b:1::a00:5]/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /private or loopback/],
        ['the metadata address through 6to4', 'n3', { ...weather, url: 'http://[2002:a9fe:a9fe::1]/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /always refused/],
        ['an IPv4-translated loopback', 'n4', { ...weather, url: 'http://[::ffff:0:127.0.0.3]/' }, 'TOOL_ERR_URL_NOT_ALLOWED', /private or loopback/],
        ['a reserved header', 'r1', { ...weather, headers: { 'Webhook-Signature': 'v1,forged' } }, 'REQUEST_ERR_VALIDATION', /may not set "Webhook-Signature"/],
        ['a header name with a space', 'r2', { ...weather, headers: { 'x bad': 'v' } }, 'REQUEST_ERR_VALIDATION', /invalid header name/],
        ['a header value with a line break', 'r3', { ...weather, headers: { 'x-ok': 'a\r\nx-injected: 1' } }, 'REQUEST_ERR_VALIDATION', /control character/],
        ['an unknown field', 'f1', { ...weather, retries: 3 }, 'REQUEST_ERR_VALIDATION', /unknown field "retries"/]
      ]
      for (const [what, name, body, code, message] of cases) {
        it(`refuses ${what}`, async () => {
          const res = await put(encodeURIComponent(name), body)
          expect(res.statusCode).toBe(400)
          expect(res.json()).toMatchObject({ statusCode: 400, code })
          expect(res.json().message).toMatch(message)
          expect(res.json().requestId).toEqual(expect.any(String))
          expect((await get(`/tools/${encodeURIComponent(name)}`)).statusCode).not.toBe(200)
        })
      }

      it('refuses the metadata range even when TOOL_EGRESS_ALLOW lists it', async () => {
        const open = await startApp(backend, { env: { TOOL_EGRESS_ALLOW: '169.254.0.0/16,10.0.0.0/8' } })
        try {
          const refused = await open.app.inject({ method: 'PUT', url: '/tools/meta', headers: auth(TENANT_A), payload: { ...weather, url: 'http://169.254.169.254/' } })
          expect(refused.json().code).toBe('TOOL_ERR_URL_NOT_ALLOWED')
          const allowed = await open.app.inject({ method: 'PUT', url: '/tools/private', headers: auth(TENANT_A), payload: { ...weather, url: 'http://10.1.2.3/' } })
          expect(allowed.statusCode).toBe(201)
          // Here loopback is not allowed: a name that resolves to it is refused like the address.
          const named = await open.app.inject({ method: 'PUT', url: '/tools/named', headers: auth(TENANT_A), payload: { ...weather, url: 'http://localhost:8080/' } })
          expect(named.json()).toMatchObject({ statusCode: 400, code: 'TOOL_ERR_URL_NOT_ALLOWED' })
          expect(named.json().message).toMatch(/localhost resolves to an address that is not allowed/)
          expect(named.json().message).not.toMatch(/127\.0\.0\.1|::1/)
        } finally {
          await open.close()
        }
      })

      it('accepts JSON Schema 2020-12 and draft-07 schemas, and public hosts', async () => {
        const modern = await put('modern', { ...weather, input_schema: { $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object', properties: { ids: { type: 'array', prefixItems: [{ type: 'integer' }] } } } })
        expect(modern.statusCode).toBe(201)
        const classic = await put('classic', { ...weather, input_schema: { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', definitions: { c: { type: 'string' } }, properties: { city: { $ref: '#/definitions/c' } } } })
        expect(classic.statusCode).toBe(201)
        const publicHost = await put('public', { ...weather, url: 'https://93.184.215.14/hook' })
        expect(publicHost.statusCode).toBe(201)
      })
    })

    describe('headers and secrets', () => {
      it('never returns header values, nor logs them or the secret', async () => {
        const created = await put('with_headers', { ...weather, headers: { Authorization: 'Bearer tool-token-7f3a9', 'X-Tenant': 'blue-sky-42' } })
        expect(created.statusCode).toBe(201)
        expect(created.json().header_names).toEqual(['Authorization', 'X-Tenant'])
        expect(created.body).not.toContain('tool-token-7f3a9')
        const secret = created.json().signing_secret
        const read = await get('/tools/with_headers')
        const list = await get('/tools?limit=100')
        for (const body of [read.body, list.body]) {
          expect(body).not.toContain('tool-token-7f3a9')
          expect(body).not.toContain('blue-sky-42')
          expect(body).not.toContain(secret)
        }
        const rotated = await started.app.inject({ method: 'POST', url: '/tools/with_headers/rotate-secret', headers: auth(TENANT_A) })
        const all = logs.lines().join('\n')
        expect(all).not.toContain('tool-token-7f3a9')
        expect(all).not.toContain('blue-sky-42')
        expect(all).not.toContain(secret)
        expect(all).not.toContain(rotated.json().signing_secret)
      })

      it('rotates: a new secret, the previous one kept for the window, both signing', async () => {
        const created = await put('rotating', weather)
        const before = Date.now()
        const res = await started.app.inject({ method: 'POST', url: '/tools/rotating/rotate-secret', headers: auth(TENANT_A) })
        expect(res.statusCode).toBe(200)
        const { signing_secret: fresh, previous_secret_expires_at: until } = res.json()
        expect(fresh).toMatch(/^whsec_/)
        expect(fresh).not.toBe(created.json().signing_secret)
        const windowMs = Date.parse(until) - before
        expect(windowMs).toBeGreaterThan(86_400_000 - 60_000)
        expect(windowMs).toBeLessThanOrEqual(86_400_000 + 1000)
        const stored = await started.app.store.getTool(TENANT_A.id, 'rotating')
        expect(stored!.signing_secrets.map((s) => s.secret)).toEqual([fresh, created.json().signing_secret])
        // A second rotation drops the oldest: only the current and the one before it are kept.
        const again = await started.app.inject({ method: 'POST', url: '/tools/rotating/rotate-secret', headers: auth(TENANT_A) })
        const storedAgain = await started.app.store.getTool(TENANT_A.id, 'rotating')
        expect(storedAgain!.signing_secrets.map((s) => s.secret)).toEqual([again.json().signing_secret, fresh])
      })

      it('chains rotations that race: the previous secret kept is one a rotation handed out', async () => {
        const created = await put('racing', weather)
        const answers = await Promise.all(Array.from({ length: 5 }, async () =>
          (await started.app.inject({ method: 'POST', url: '/tools/racing/rotate-secret', headers: auth(TENANT_A) })).json().signing_secret as string))
        const stored = (await started.app.store.getTool(TENANT_A.id, 'racing'))!.signing_secrets.map((s) => s.secret)
        expect(answers).toContain(stored[0])
        // Without compare-and-set every rotation would have read the creation secret and kept it.
        expect(answers).toContain(stored[1])
        expect(stored[1]).not.toBe(created.json().signing_secret)
        expect(new Set(answers).size).toBe(5)
      })

      it('with a zero window, drops the previous secret at once', async () => {
        const noWindow = await startApp(backend, { env: { SECRET_ROTATION_WINDOW_MS: '0' } })
        try {
          await noWindow.app.inject({ method: 'PUT', url: '/tools/w', headers: auth(TENANT_A), payload: weather })
          const res = await noWindow.app.inject({ method: 'POST', url: '/tools/w/rotate-secret', headers: auth(TENANT_A) })
          expect(res.json().previous_secret_expires_at).toBeNull()
          expect((await noWindow.app.store.getTool(TENANT_A.id, 'w'))!.signing_secrets).toHaveLength(1)
        } finally {
          await noWindow.close()
        }
      })
    })

    describe('list, read, delete', () => {
      it('lists newest first in pages, as { data, has_more, next_cursor }', async () => {
        const names = ['page_a', 'page_b', 'page_c', 'page_d', 'page_e']
        for (const name of names) await put(name, weather, TENANT_B)
        const first = await get('/tools?limit=2', TENANT_B)
        expect(first.statusCode).toBe(200)
        expect(first.json()).toMatchObject({ object: 'list', has_more: true })
        expect(first.json().data.map((t: { name: string }) => t.name)).toEqual(['page_e', 'page_d'])
        const second = await get(`/tools?limit=2&after=${first.json().next_cursor}`, TENANT_B)
        expect(second.json().data.map((t: { name: string }) => t.name)).toEqual(['page_c', 'page_b'])
        const third = await get(`/tools?limit=2&after=${second.json().next_cursor}`, TENANT_B)
        expect(third.json()).toMatchObject({ has_more: false, next_cursor: null })
        expect(third.json().data.map((t: { name: string }) => t.name)).toEqual(['page_a'])
        const defaults = await get('/tools', TENANT_B)
        expect(defaults.json().data).toHaveLength(5)
      })

      it('refuses a limit over 100 and a forged cursor', async () => {
        expect((await get('/tools?limit=101')).json()).toMatchObject({ statusCode: 400, code: 'REQUEST_ERR_VALIDATION', message: 'querystring.limit must be <= 100.' })
        expect((await get('/tools?limit=0')).statusCode).toBe(400)
        expect((await get('/tools?after=eyJub3QiOiJvdXJzIn0')).json().code).toBe('REQUEST_ERR_INVALID_CURSOR')
        // Shaped like ours, but with numbers no timestamp has.
        for (const forged of [[1.5, 'a'], [1e300, 'a']]) {
          const res = await get(`/tools?after=${Buffer.from(JSON.stringify(forged)).toString('base64url')}`)
          expect(res.statusCode).toBe(400)
          expect(res.json().code).toBe('REQUEST_ERR_INVALID_CURSOR')
        }
      })

      it('deletes, after which the tool is gone', async () => {
        await put('doomed', weather)
        const res = await started.app.inject({ method: 'DELETE', url: '/tools/doomed', headers: auth(TENANT_A) })
        expect(res.statusCode).toBe(200)
        expect(res.json()).toEqual({ id: 'doomed', object: 'tool', deleted: true })
        const gone = await get('/tools/doomed')
        expect(gone.statusCode).toBe(404)
        expect(gone.json().code).toBe('TOOL_ERR_NOT_FOUND')
        expect(gone.json().message).toContain('PUT /tools/doomed')
        const again = await started.app.inject({ method: 'DELETE', url: '/tools/doomed', headers: auth(TENANT_A) })
        expect(again.statusCode).toBe(404)
      })
    })

    describe('tenants', () => {
      it('keeps each tenant\'s tools to itself: another tenant gets 404, never 403', async () => {
        await put('secret_tool', weather, TENANT_A)
        expect((await get('/tools/secret_tool', TENANT_B)).statusCode).toBe(404)
        const del = await started.app.inject({ method: 'DELETE', url: '/tools/secret_tool', headers: auth(TENANT_B) })
        expect(del.statusCode).toBe(404)
        const rotate = await started.app.inject({ method: 'POST', url: '/tools/secret_tool/rotate-secret', headers: auth(TENANT_B) })
        expect(rotate.statusCode).toBe(404)
        expect((await get('/tools/secret_tool', TENANT_A)).statusCode).toBe(200)
        const listB = await get('/tools?limit=100', TENANT_B)
        expect(listB.json().data.map((t: { name: string }) => t.name)).not.toContain('secret_tool')
      })

      it('lets two tenants use the same name independently', async () => {
        const a = await put('shared_name', { ...weather, description: 'A' }, TENANT_A)
        const b = await put('shared_name', { ...weather, description: 'B' }, TENANT_B)
        expect(a.statusCode).toBe(201)
        expect(b.statusCode).toBe(201)
        expect(a.json().signing_secret).not.toBe(b.json().signing_secret)
        expect((await get('/tools/shared_name', TENANT_A)).json().description).toBe('A')
        expect((await get('/tools/shared_name', TENANT_B)).json().description).toBe('B')
      })
    })
  })
}
