import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from './support/backends.js'
import { auth, startApp, TENANT_A, type StartedApp } from './support/app.js'
import { capturingLog } from './support/log.js'

const sqlite = backends.find((b) => b.name === 'sqlite')!

function expectErrorShape (body: Record<string, unknown>, statusCode: number, code: string): void {
  expect(body).toEqual({ statusCode, code, error: expect.any(String), message: expect.any(String), requestId: expect.any(String) })
}

describe('the HTTP foundation', () => {
  let started: StartedApp
  const logs = capturingLog('info')

  beforeAll(async () => {
    started = await startApp(sqlite, {
      logger: logs.log,
      // A route that fails the way a bug would, to see what a 500 shows.
      beforeReady: (app) => app.get('/boom', async () => { throw new Error('connection to db-internal-7:5432 refused: password hunter2') })
    })
  })
  afterAll(async () => started?.close())

  describe('authentication', () => {
    it('answers 401 without a key, in the error shape, saying how to send one', async () => {
      const res = await started.app.inject({ method: 'GET', url: '/tools' })
      expect(res.statusCode).toBe(401)
      expectErrorShape(res.json(), 401, 'AUTH_ERR_MISSING_KEY')
      expect(res.json().message).toContain('Authorization: Bearer')
    })

    it('answers 401 for a wrong key or a malformed header', async () => {
      const wrong = await started.app.inject({ method: 'GET', url: '/tools', headers: { authorization: 'Bearer sk_not_a_real_key_at_all' } })
      expect(wrong.statusCode).toBe(401)
      expect(wrong.json().code).toBe('AUTH_ERR_INVALID_KEY')
      const basic = await started.app.inject({ method: 'GET', url: '/tools', headers: { authorization: `Basic ${TENANT_A.key}` } })
      expect(basic.statusCode).toBe(401)
      expect(basic.json().code).toBe('AUTH_ERR_INVALID_KEY')
    })

    it('lets a valid key through', async () => {
      const res = await started.app.inject({ method: 'GET', url: '/tools', headers: auth(TENANT_A) })
      expect(res.statusCode).toBe(200)
    })

    it('leaves probes and docs open', async () => {
      for (const url of ['/healthz', '/readyz', '/openapi.json', '/docs']) {
        const res = await started.app.inject({ method: 'GET', url })
        expect(res.statusCode, url).toBeLessThan(400)
      }
    })
  })

  describe('errors', () => {
    it('names the offending field of an invalid request', async () => {
      const res = await started.app.inject({
        method: 'PUT',
        url: '/tools/weather',
        headers: auth(TENANT_A),
        payload: { description: 'x', input_schema: { type: 'object' }, url: 'http://127.0.0.1:1/', timeout_ms: 0 }
      })
      expect(res.statusCode).toBe(400)
      expectErrorShape(res.json(), 400, 'REQUEST_ERR_VALIDATION')
      expect(res.json().message).toBe('body.timeout_ms must be >= 1.')
    })

    it('refuses unknown fields instead of dropping them', async () => {
      const res = await started.app.inject({
        method: 'PUT',
        url: '/tools/weather',
        headers: auth(TENANT_A),
        payload: { description: 'x', input_schema: { type: 'object' }, url: 'http://127.0.0.1:1/', timeoutMs: 5 }
      })
      expect(res.statusCode).toBe(400)
      expect(res.json().message).toContain('body has an unknown field "timeoutMs"')
    })

    it('does not coerce JSON types in a body', async () => {
      const res = await started.app.inject({
        method: 'PUT',
        url: '/tools/weather',
        headers: auth(TENANT_A),
        payload: { description: 'x', input_schema: { type: 'object' }, url: 'http://127.0.0.1:1/', timeout_ms: '5000' }
      })
      expect(res.statusCode).toBe(400)
      expect(res.json().message).toBe('body.timeout_ms must be integer.')
    })

    it('answers 400 for a body that is not JSON', async () => {
      const res = await started.app.inject({ method: 'PUT', url: '/tools/weather', headers: { ...auth(TENANT_A), 'content-type': 'application/json' }, payload: '{"description":' })
      expect(res.statusCode).toBe(400)
      expectErrorShape(res.json(), 400, 'REQUEST_ERR_INVALID_JSON')
    })

    describe('a body with a key that could rewrite objects\' prototypes', () => {
      // Raw JSON text: a JavaScript object literal would take `__proto__` as its prototype instead.
      const TOOL = '"description":"x","input_schema":{"type":"object"},"url":"http://127.0.0.1:1/"'
      const cases: Array<[string, string, string, string]> = [
        ['POST', '/runs', '{"__proto__":{"admin":true},"input":"x"}', 'body.__proto__: a key named __proto__'],
        ['POST', '/runs', '{"input":"x","metadata":{"team":{"__proto__":{"admin":true}}}}', 'body.metadata.team.__proto__: a key named __proto__'],
        ['POST', '/runs', '{"messages":[{"role":"user","content":[{"type":"text","text":"x","\\u005f_proto__":{}}]}]}', 'body.messages[0].content[0].__proto__: a key named __proto__'],
        ['POST', '/runs', `{"input":"x","metadata":${'{"a":'.repeat(14)}{"__proto__":{}}${'}'.repeat(14)}}`, 'body.metadata.a.a.a….a.a.a.a.a.a.__proto__: a key named __proto__'],
        ['POST', '/runs', '{"input":"x","constructor":{"prototype":{"admin":true}}}', 'body.constructor: a key named constructor that holds a prototype'],
        ['POST', '/runs', '{"input":"x","client_tools":[{"name":"a","description":"a","input_schema":{"constructor":{"prototype":{}}}}]}', 'body.client_tools[0].input_schema.constructor: a key named constructor that holds a prototype'],
        ['PUT', '/tools/weather', `{${TOOL},"headers":{"__proto__":"x"}}`, 'body.headers.__proto__: a key named __proto__'],
        ['PUT', '/tools/weather', `{"__proto__":null,${TOOL}}`, 'body.__proto__: a key named __proto__'],
        ['PUT', '/tools/weather', `{"constructor":{"prototype":null},${TOOL}}`, 'body.constructor: a key named constructor that holds a prototype'],
        ['PUT', '/tools/weather', '{"description":"x","url":"http://127.0.0.1:1/","input_schema":{"type":"object","properties":{"q":{"constructor":{"prototype":{}}}}}}', 'body.input_schema.properties.q.constructor: a key named constructor that holds a prototype']
      ]
      it.each(cases)('%s %s %s is refused with REQUEST_ERR_FORBIDDEN_KEY, saying which key, where and why', async (method, url, payload, says) => {
        const res = await started.app.inject({ method: method as 'POST' | 'PUT', url, headers: { ...auth(TENANT_A), 'content-type': 'application/json' }, payload })
        expect(res.statusCode).toBe(400)
        expectErrorShape(res.json(), 400, 'REQUEST_ERR_FORBIDDEN_KEY')
        expect(res.json().message).toBe(`${says} could rewrite the prototype of the objects the body is read into, so bodies that hold one are refused. Rename the key.`)
        expect(res.json().requestId).toBe(res.headers['x-request-id'])
      })

      it('lets through a constructor key that holds no prototype, such as a property of that name in a schema', async () => {
        const res = await started.app.inject({
          method: 'PUT',
          url: '/tools/constructor_ok',
          headers: { ...auth(TENANT_A), 'content-type': 'application/json' },
          payload: '{"description":"x","url":"http://127.0.0.1:1/","input_schema":{"type":"object","properties":{"constructor":{"type":"string"}}}}'
        })
        expect(res.statusCode, res.body).toBe(201)
        expect(res.json().input_schema.properties.constructor).toEqual({ type: 'string' })
      })

      it('still answers a body that is both broken and holds such a key as not valid JSON', async () => {
        const res = await started.app.inject({ method: 'POST', url: '/runs', headers: { ...auth(TENANT_A), 'content-type': 'application/json' }, payload: '{"__proto__":{},"input":' })
        expectErrorShape(res.json(), 400, 'REQUEST_ERR_INVALID_JSON')
      })
    })

    it('answers 415 for a body that is not JSON at all', async () => {
      const res = await started.app.inject({ method: 'PUT', url: '/tools/weather', headers: { ...auth(TENANT_A), 'content-type': 'text/xml' }, payload: '<tool/>' })
      expect(res.statusCode).toBe(415)
      expectErrorShape(res.json(), 415, 'REQUEST_ERR_UNSUPPORTED_MEDIA_TYPE')
    })

    it('answers 413 for a body over BODY_LIMIT_BYTES', async () => {
      const res = await started.app.inject({
        method: 'PUT',
        url: '/tools/weather',
        headers: { ...auth(TENANT_A), 'content-type': 'application/json' },
        payload: JSON.stringify({ description: 'x'.repeat(started.config.BODY_LIMIT_BYTES) })
      })
      expect(res.statusCode).toBe(413)
      expectErrorShape(res.json(), 413, 'REQUEST_ERR_BODY_TOO_LARGE')
    })

    it('answers 404 for an unknown route in the error shape', async () => {
      const res = await started.app.inject({ method: 'GET', url: '/nowhere?x=1', headers: auth(TENANT_A) })
      expect(res.statusCode).toBe(404)
      expectErrorShape(res.json(), 404, 'ROUTE_ERR_NOT_FOUND')
      expect(res.json().message).toBe('No route GET /nowhere: see /docs for the API.')
    })

    it('answers a bug with a bare 500 that leaks nothing, and logs it in full', async () => {
      const res = await started.app.inject({ method: 'GET', url: '/boom' })
      expect(res.statusCode).toBe(500)
      expectErrorShape(res.json(), 500, 'INTERNAL_ERR')
      expect(res.body).not.toContain('hunter2')
      expect(res.body).not.toContain('db-internal')
      const logged = logs.lines().find((l) => l.includes('request failed'))
      expect(logged).toContain(res.json().requestId)
      expect(logged).toContain('db-internal-7')
    })
  })

  describe('request ids', () => {
    it('honours a caller\'s x-request-id and echoes it', async () => {
      const res = await started.app.inject({ method: 'GET', url: '/nowhere', headers: { 'x-request-id': 'trace-abc.123' } })
      expect(res.headers['x-request-id']).toBe('trace-abc.123')
      expect(res.json().requestId).toBe('trace-abc.123')
    })

    it('replaces one that could forge log lines', async () => {
      const res = await started.app.inject({ method: 'GET', url: '/nowhere', headers: { 'x-request-id': 'x"}\n{"level":"fatal' } })
      expect(res.headers['x-request-id']).toMatch(/^req_[0-9A-Z]{26}$/)
    })
  })

  describe('logs', () => {
    it('are JSON lines that carry the request id and never the API key', async () => {
      await started.app.inject({ method: 'GET', url: '/tools', headers: { ...auth(TENANT_A), 'x-request-id': 'log-check-1' } })
      const lines = logs.lines()
      for (const line of lines) expect(() => JSON.parse(line)).not.toThrow()
      expect(lines.some((l) => JSON.parse(l).reqId === 'log-check-1')).toBe(true)
      expect(lines.join('\n')).not.toContain(TENANT_A.key)
    })
  })

  describe('OpenAPI', () => {
    it('serves an OpenAPI 3.1 document generated from the route schemas', async () => {
      const res = await started.app.inject({ method: 'GET', url: '/openapi.json' })
      expect(res.statusCode).toBe(200)
      const doc = res.json()
      expect(doc.openapi).toBe('3.1.0')
      expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/tools/{name}', '/tools', '/healthz', '/readyz']))
      const put = doc.paths['/tools/{name}'].put
      const body = put.requestBody.content['application/json'].schema
      expect(body.properties.timeout_ms).toMatchObject({ type: 'integer', minimum: 1, maximum: 600000, default: 30000 })
      expect(doc.paths['/healthz'].get.security).toEqual([])
      expect(doc.components.securitySchemes.apiKey).toMatchObject({ type: 'http', scheme: 'bearer' })
    })

    it('renders human-readable docs at /docs without external assets', async () => {
      const res = await started.app.inject({ method: 'GET', url: '/docs/' })
      expect(res.statusCode).toBe(200)
      expect(res.headers['content-type']).toContain('text/html')
      expect(res.body).not.toMatch(/src="https?:\/\//)
    })
  })
})

for (const backend of backends) {
  describe.skipIf(backend.skip)(`probes: ${backend.name}`, () => {
    let started: StartedApp
    beforeAll(async () => { started = await startApp(backend) })
    afterAll(async () => started?.close())

    it('/readyz answers ready while storage answers, and 503 once draining', async () => {
      expect((await started.app.inject({ method: 'GET', url: '/readyz' })).json()).toEqual({ status: 'ready' })
      started.app.lifecycle.startDraining()
      const res = await started.app.inject({ method: 'GET', url: '/readyz' })
      expect(res.statusCode).toBe(503)
      expect(res.json().code).toBe('SERVICE_ERR_DRAINING')
      expect((await started.app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' })
      // Every other route refuses, in the error shape, before the key is even looked at.
      for (const url of ['/tools', '/openapi.json', '/nowhere']) {
        const refused = await started.app.inject({ method: 'GET', url, headers: { authorization: 'Bearer wrong' } })
        expect(refused.statusCode, url).toBe(503)
        expectErrorShape(refused.json(), 503, 'SERVICE_ERR_DRAINING')
        expect(refused.headers['retry-after'], url).toBe('1')
      }
    })
  })
}

describe('open mode', () => {
  it('accepts requests without a key, as tenant "default"', async () => {
    const started = await startApp(sqlite, { env: { API_KEYS: null } })
    try {
      const res = await started.app.inject({ method: 'GET', url: '/tools' })
      expect(res.statusCode).toBe(200)
      expect(started.config.listenHost).toBe('127.0.0.1')
    } finally {
      await started.close()
    }
  })
})
