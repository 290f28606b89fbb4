import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { LightMyRequestResponse } from 'fastify'
import { backends } from '../support/backends.js'
import { auth, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { capturingLog } from '../support/log.js'
import { resultText, toolResults, turnNumber, type RecordedRequest, type Turn } from '../support/fake-messages-api.js'

/**
 * Secrets (SPEC §8): a whole run with known secret values (tenant API keys, tool headers, tool and
 * callback signing secrets, ANTHROPIC_API_KEY, METRICS_TOKEN), at LOG_LEVEL=trace, with failures
 * mixed in (a tool that fails, one that drops the connection, a model call refused then overloaded,
 * a wrong key, validation errors), then a search for every secret, and its obvious encodings, in every log
 * line, event, run object and transcript, error body, tool read, callback setting, request the
 * model received, and /metrics. The only places a secret may show is the answer that issues it.
 * The tool servers receive their own headers and are not searched.
 *
 * Among them, endpoints that echo what they were sent, as a gateway or a careless tool may: a model
 * endpoint whose errors (400, 401, 529, a 502 page, error events mid-stream) quote the key it got,
 * tools whose failures quote their request's headers and body, and a callback receiver whose error
 * answer quotes the callback secret it verifies with. What they echo must be redacted before it is
 * stored, answered or logged.
 */

const ANTHROPIC_KEY = 'sk-ant-api03-SECRET-anthropic-3f9c1e77b2'
const TOOL_KEY = 'tool-header-SECRET-4c2d9a81e5'
const TOOL_BEARER = 'tool-bearer-SECRET-9e1b77c0d3'
const BROKEN_KEY = 'broken-tool-SECRET-a61f02b9c8'
const METRICS_TOKEN = 'metrics-token-SECRET-5d0c3e9a7f'

/** What a secret may look like once encoded by mistake: as is, base64, hex, URL-encoded, and for a
 * Standard Webhooks secret, its key alone and the key's bytes. */
function encodings (secret: string): string[] {
  const utf8 = Buffer.from(secret, 'utf8')
  const forms = [secret, utf8.toString('base64'), utf8.toString('base64url'), utf8.toString('hex'), encodeURIComponent(secret)]
  if (secret.startsWith('whsec_')) {
    const key = secret.slice('whsec_'.length)
    const bytes = Buffer.from(key, 'base64')
    forms.push(key, bytes.toString('hex'), bytes.toString('base64url'), encodeURIComponent(key))
  }
  return [...new Set(forms)]
}

/**
 * An API key's SHA-256 digest is searched for too: it is what the service stores, and what an
 * operator may put in API_KEYS as `tenant:sha256:<hex>`; nothing needs it in a log or an answer,
 * and anyone holding it could check a guessed key offline.
 */
function apiKeyForms (key: string): string[] {
  const digest = createHash('sha256').update(key, 'utf8').digest()
  return [...encodings(key), digest.toString('hex'), digest.toString('base64'), digest.toString('base64url')]
}

let overloadedOnce = false

/** What the model endpoint received, quoted back as a gateway that echoes its request would. */
function echoed (request: RecordedRequest): string {
  return `x-api-key: ${String(request.headers['x-api-key'])}, authorization: ${String(request.headers.authorization)}, headers: ${JSON.stringify(request.headers)}`
}

const streamStart = `event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { id: 'msg_echo', type: 'message', role: 'assistant', model: 'claude-test', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 1, output_tokens: 1 } } })}\n\n`

/** The model endpoint's echoing answers, by the run's input; each fails its run, some after retries. */
const ECHOES: Record<string, (request: RecordedRequest) => Turn> = {
  'echo 400': (r) => ({ kind: 'error', status: 400, type: 'invalid_request_error', message: `bad request; you sent ${echoed(r)}` }),
  'echo 401': (r) => ({ kind: 'error', status: 401, type: 'authentication_error', message: `invalid x-api-key ${echoed(r)}` }),
  'echo 529': (r) => ({ kind: 'error', status: 529, type: 'overloaded_error', message: `overloaded; ${echoed(r)}`, headers: { 'retry-after-ms': '10' } }),
  // The key where the error's quote is cut (500 characters): it must not be left half in.
  'echo at the cut': (r) => ({ kind: 'error', status: 401, type: 'authentication_error', message: `${'x'.repeat(480)}${String(r.headers['x-api-key'] ?? r.headers.authorization?.replace(/^Bearer /, ''))}` }),
  'echo gateway': (r) => ({ kind: 'raw', status: 502, headers: { 'content-type': 'text/plain', 'retry-after-ms': '10' }, chunks: [`Bad gateway. ${echoed(r)}`] }),
  'echo stream': (r) => ({
    kind: 'raw',
    headers: { 'retry-after-ms': '10' },
    chunks: [streamStart, `event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: `overloaded; ${echoed(r)}` } })}\n\n`]
  }),
  'echo stream, not JSON': (r) => ({ kind: 'raw', headers: { 'retry-after-ms': '10' }, chunks: [streamStart, `event: error\ndata: broken; ${echoed(r)}\n\n`] })
}

function script (request: RecordedRequest): Turn {
  const first = request.body.messages[0].content as string
  const turn = turnNumber(request)
  const echo = ECHOES[first]
  if (echo !== undefined) return echo(request)
  if (first === 'use the echoing tools' && turn === 1) {
    return {
      content: [
        { type: 'tool_use', name: 'echo', input: { q: 'a' } },
        { type: 'tool_use', name: 'echo-error', input: { q: 'b' } },
        { type: 'tool_use', name: 'echo-cut', input: { q: 'c' } }
      ]
    }
  }
  if (first === 'refused') return { kind: 'error', status: 401, type: 'authentication_error', message: 'invalid x-api-key' }
  if (first === 'overloaded' && !overloadedOnce) {
    overloadedOnce = true
    return { kind: 'error', status: 529, type: 'overloaded_error', headers: { 'retry-after-ms': '10' } }
  }
  if (first === 'ask' && turn === 1) return { content: [{ type: 'tool_use', name: 'confirm', input: { q: 'go?' } }] }
  if (first === 'hang' && turn === 1) return { content: [{ type: 'tool_use', name: 'stuck', input: { q: 'x' } }] }
  if (first === 'use every tool' && turn === 1) {
    return {
      content: [
        { type: 'text', text: 'Calling everything.' },
        { type: 'tool_use', name: 'vault', input: { q: 'balance' } },
        { type: 'tool_use', name: 'broken', input: { q: 'x' } },
        { type: 'tool_use', name: 'dropper', input: { q: 'y' } }
      ]
    }
  }
  return { content: [{ type: 'text', text: 'all done' }] }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`secrets stay secret: ${backend.name}`, () => {
    let h: Harness
    const logs = capturingLog('trace')
    /** Every answer the test got, but the ones that issue a secret. */
    const answers: Array<{ where: string, res: LightMyRequestResponse }> = []
    /** The answers that issue a secret: the only places it may appear. */
    const issued: string[] = []
    const signingSecrets: string[] = []
    const runIds: string[] = []
    /** The runs of the echoing model endpoint, as answered, by input. */
    const echoRuns = new Map<string, Record<string, any>>()
    let echoToolsRun: Record<string, any> = {}
    let callbackEchoRun = ''

    async function call (where: string, method: string, url: string, options: { payload?: unknown, headers?: Record<string, string>, issues?: boolean } = {}): Promise<LightMyRequestResponse> {
      const res = await h.app.inject({
        method: method as 'GET',
        url,
        headers: options.headers ?? auth(TENANT_A),
        ...(options.payload === undefined ? {} : { payload: options.payload as object })
      })
      if (options.issues === true) issued.push(res.body)
      else answers.push({ where: `${where} (${method} ${url} → ${res.statusCode})`, res })
      return res
    }

    beforeAll(async () => {
      h = await startHarness(backend, { logger: logs.log, env: { LOG_LEVEL: 'trace', ANTHROPIC_API_KEY: ANTHROPIC_KEY, METRICS_TOKEN, MODEL_MAX_RETRIES: '2' } })
      overloadedOnce = false
      h.model.respond = script
      h.tools.on('/cb', (_req, res) => { res.writeHead(204).end() })
      // Tools that echo their request: a 503 (retried) and a 200 `is_error` quoting the headers and
      // body, and a 500 whose preview is cut in the middle of the key.
      h.tools.on('/echo', (req, res, call) => {
        res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'unavailable', headers: req.headers, body: call.raw }))
      })
      h.tools.on('/echo-error', (req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ content: `refused: ${JSON.stringify(req.headers)}`, is_error: true }))
      })
      h.tools.on('/echo-cut', (req, res) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${'x'.repeat(480)}${String(req.headers['x-api-key'])}`)
      })
    })
    afterAll(async () => h?.close())

    it('runs whole runs with secrets in play, failures included', async () => {
      const tool = (name: string, path: string, fields: Record<string, unknown>) => call('create tool', 'PUT', `/tools/${name}`, {
        payload: { description: `The ${name} tool`, input_schema: { type: 'object', properties: { q: { type: 'string' } } }, url: `${h.tools.url}${path}`, ...fields },
        issues: true
      })
      for (const [name, path, fields] of [
        ['vault', '/ok', { headers: { 'x-api-key': TOOL_KEY, authorization: `Bearer ${TOOL_BEARER}` }, effect: 'read_only' }],
        ['broken', '/status/500', { headers: { 'x-api-key': BROKEN_KEY }, max_attempts: 1 }],
        ['dropper', '/reset', { headers: { 'x-api-key': TOOL_KEY }, effect: 'idempotent', max_attempts: 2 }],
        ['stuck', '/hang', { headers: { authorization: `Bearer ${TOOL_BEARER}` } }],
        ['echo', '/echo', { headers: { 'x-api-key': TOOL_KEY, authorization: `Bearer ${TOOL_BEARER}` }, effect: 'idempotent', max_attempts: 2 }],
        ['echo-error', '/echo-error', { headers: { 'x-api-key': BROKEN_KEY } }],
        ['echo-cut', '/echo-cut', { headers: { 'x-api-key': TOOL_KEY }, max_attempts: 1 }]
      ] as const) {
        const res = await tool(name, path, fields)
        expect(res.statusCode, res.body).toBe(201)
        signingSecrets.push(res.json().signing_secret)
      }
      // A rotation: the old and the new secret both sign calls for a while.
      const rotated = await call('rotate', 'POST', '/tools/vault/rotate-secret', { issues: true })
      signingSecrets.push(rotated.json().signing_secret)
      const callbacks = await call('callback secret', 'POST', '/callbacks/rotate-secret', { issues: true })
      signingSecrets.push(callbacks.json().signing_secret)
      // A callback receiver that fails, quoting the secret it verifies signatures with, and its request.
      const callbackSecret = callbacks.json().signing_secret as string
      h.tools.on('/cb-echo', (req, res) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`signature check with ${callbackSecret} failed; ${JSON.stringify(req.headers)}`)
      })

      // The whole run: three tools at once (one answers, one fails, one drops the connection), a
      // completion callback, streamed.
      const main = await call('run', 'POST', '/runs', {
        payload: { input: 'use every tool', tools: ['vault', 'broken', 'dropper'], callback_url: `${h.tools.url}/cb`, metadata: { purpose: 'secrets test' } }
      })
      expect(main.json().status, main.body).toBe('completed')
      runIds.push(main.json().id)
      const streamed = await call('streamed run', 'POST', '/runs', { payload: { input: 'use every tool', tools: ['vault', 'broken', 'dropper'], stream: true } })
      expect(streamed.body).toContain('event: run.completed')
      runIds.push(/"run_id":"(run_[0-9A-Z]+)"/.exec(streamed.body)![1]!)
      // Model failures: refused (401), and overloaded once then retried.
      for (const input of ['refused', 'overloaded']) runIds.push((await call('run', 'POST', '/runs', { payload: { input } })).json().id)
      // A model endpoint that echoes the key it was sent in its errors, retried or not.
      for (const input of Object.keys(ECHOES)) {
        const run = (await call('echo run', 'POST', '/runs', { payload: { input } })).json()
        echoRuns.set(input, run)
        runIds.push(run.id)
      }
      // Tools that echo their request headers in their failures.
      echoToolsRun = (await call('echo tools run', 'POST', '/runs', { payload: { input: 'use the echoing tools', tools: ['echo', 'echo-error', 'echo-cut'] } })).json()
      runIds.push(echoToolsRun.id)
      // A callback receiver that echoes.
      callbackEchoRun = (await call('callback echo run', 'POST', '/runs', { payload: { input: 'plain', callback_url: `${h.tools.url}/cb-echo` } })).json().id
      runIds.push(callbackEchoRun)
      // A client tool, answered wrongly then rightly; a run cancelled while its tool hangs.
      const asked = await call('run', 'POST', '/runs', { payload: { input: 'ask', client_tools: [{ name: 'confirm', description: 'Ask', input_schema: { type: 'object' } }] } })
      runIds.push(asked.json().id)
      await call('bad tool output', 'POST', `/runs/${asked.json().id as string}/tool_outputs`, { payload: { tool_outputs: [{ tool_use_id: 'toolu_nope', content: 'x' }] } })
      await call('tool output', 'POST', `/runs/${asked.json().id as string}/tool_outputs`, { payload: { tool_outputs: [{ tool_use_id: asked.json().required_action.tool_calls[0].id, content: 'yes' }] } })
      const hanging = await call('run', 'POST', '/runs', { payload: { input: 'hang', tools: ['stuck'], background: true } })
      runIds.push(hanging.json().id)
      await expect.poll(() => h.tools.callsTo('/hang').length).toBeGreaterThan(0)
      await call('cancel', 'POST', `/runs/${hanging.json().id as string}/cancel`)

      // Refusals that carry a secret in the request: none may echo it.
      await call('wrong key', 'GET', '/tools', { headers: { authorization: `Bearer ${TENANT_A.key}-but-wrong` } })
      await call('malformed auth', 'GET', '/tools', { headers: { authorization: `Token ${TENANT_A.key}` } })
      await call('key in another header', 'GET', '/runs', { headers: { 'x-api-key': TENANT_B.key } })
      await call('invalid tool', 'PUT', '/tools/leaky', { payload: { description: 'x', input_schema: { type: 'object' }, url: `${h.tools.url}/ok`, headers: { 'x-api-key': TOOL_KEY }, timeout_ms: 'soon' } })
      await call('invalid header', 'PUT', '/tools/leaky', { payload: { description: 'x', input_schema: { type: 'object' }, url: `${h.tools.url}/ok`, headers: { 'x-api-key': `${TOOL_KEY}\n` } } })
      await call('reserved header', 'PUT', '/tools/leaky', { payload: { description: 'x', input_schema: { type: 'object' }, url: `${h.tools.url}/ok`, headers: { 'webhook-signature': TOOL_KEY } } })
      await call('credentials in url', 'PUT', '/tools/leaky', { payload: { description: 'x', input_schema: { type: 'object' }, url: `http://user:${TOOL_KEY}@127.0.0.1/ok` } })
      await call('credentials in callback url', 'POST', '/runs', { payload: { input: 'x', callback_url: `http://user:${TOOL_BEARER}@127.0.0.1/cb` } })
      await call('invalid json', 'POST', '/runs', { payload: `{"input": "${TENANT_A.key}`, headers: { ...auth(TENANT_A), 'content-type': 'application/json' } })

      // Wait for everything to settle: the callback delivered, every run final.
      await expect.poll(() => h.tools.callsTo('/cb').length, { timeout: 10_000 }).toBeGreaterThan(0)
      await expect.poll(async () => (await h.app.inject({ method: 'GET', url: `/runs/${callbackEchoRun}`, headers: auth(TENANT_A) })).json().callback.last_error, { timeout: 10_000 })
        .toMatch(/^HTTP 500/)
      for (const id of runIds) {
        await expect.poll(async () => (await h.app.inject({ method: 'GET', url: `/runs/${id}`, headers: auth(TENANT_A) })).json().status, { timeout: 10_000 })
          .toMatch(/^(completed|failed|cancelled)$/)
      }

      // What every reader of the service can see afterwards.
      for (const id of runIds) {
        await call('run object', 'GET', `/runs/${id}?include=messages`)
        let after = 0
        for (;;) {
          const page = (await call('events', 'GET', `/runs/${id}/events?after=${after}&limit=100`)).json()
          if (page.data.length === 0) break
          after = page.data[page.data.length - 1].id
          if (!page.has_more) break
        }
        await call('event stream', 'GET', `/runs/${id}/events`, { headers: { ...auth(TENANT_A), accept: 'text/event-stream' } })
      }
      await call('run list', 'GET', '/runs?limit=100')
      await call('tool list', 'GET', '/tools?limit=100')
      for (const name of ['vault', 'broken', 'dropper', 'stuck', 'echo', 'echo-error', 'echo-cut']) await call('tool', 'GET', `/tools/${name}`)
      await call('callback settings', 'GET', '/callbacks')
      const metrics = await call('metrics', 'GET', '/metrics', { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
      expect(metrics.statusCode, metrics.body).toBe(200)
      await call('metrics with an API key', 'GET', '/metrics', { headers: auth(TENANT_A) })
      await call('readiness', 'GET', '/readyz', { headers: {} })
    })

    it('the secrets were really in play', () => {
      // Without these the search below would prove nothing.
      expect(h.tools.callsTo('/ok').some((c) => c.headers['x-api-key'] === TOOL_KEY && c.headers.authorization === `Bearer ${TOOL_BEARER}`)).toBe(true)
      expect(h.tools.callsTo('/status/500').some((c) => c.headers['x-api-key'] === BROKEN_KEY)).toBe(true)
      expect(h.model.requests.every((r) => `${String(r.headers['x-api-key'])} ${String(r.headers.authorization)}`.includes(ANTHROPIC_KEY))).toBe(true)
      expect(signingSecrets).toHaveLength(9)
      // /metrics has counted what happened (and is searched below).
      const metrics = answers.find((a) => a.where.startsWith('metrics'))!.res.body
      expect(metrics).toMatch(/tool/)
      for (const secret of signingSecrets) expect(issued.some((body) => body.includes(secret))).toBe(true)
      // The log is at trace and has the error paths in it.
      const text = logs.lines().join('\n')
      for (const message of ['incoming request', 'request completed', 'model call failed; retrying', 'model call failed; the run fails', 'run finished', 'callback failed; retrying']) {
        expect(text).toContain(message)
      }
    })

    it('the echoing endpoints echoed the secrets, and what they said reached errors, events and results, redacted', async () => {
      for (const input of Object.keys(ECHOES)) {
        const echoRequests = h.model.requests.filter((r) => r.body.messages[0].content === input)
        expect(echoRequests.length, input).toBeGreaterThan(0)
        for (const r of echoRequests) expect(echoed(r), input).toContain(ANTHROPIC_KEY)
        const run = echoRuns.get(input)!
        expect(run, input).toMatchObject({ status: 'failed', error: { code: expect.stringMatching(/^MODEL_ERR_/) } })
        // The error quotes what the endpoint said, with the key taken out, not cut half-way in.
        expect(run.error.message, input).toContain('[redacted]')
        expect(run.error.message, input).not.toContain(ANTHROPIC_KEY.slice(0, 16))
      }
      const retried = await h.events(echoRuns.get('echo 529')!.id)
      expect(retried.filter((e) => e.type === 'step.retrying').map((e) => e.data.error).join('\n')).toMatch(/overloaded; x-api-key: .*\[redacted\]/)

      expect(h.tools.callsTo('/echo').every((c) => c.headers['x-api-key'] === TOOL_KEY)).toBe(true)
      expect(h.tools.callsTo('/echo')).toHaveLength(2)
      expect(echoToolsRun.status).toBe('completed')
      const results = toolResults(h.model.requests.find((r) => r.body.messages[0].content === 'use the echoing tools' && turnNumber(r) === 2)!)
      expect(results).toHaveLength(3)
      for (const result of results) {
        expect(result.is_error).toBe(true)
        expect(resultText(result)).toContain('[redacted]')
        expect(resultText(result)).not.toContain(TOOL_KEY.slice(0, 12))
      }
      const toolRetry = (await h.events(echoToolsRun.id)).find((e) => e.type === 'tool_call.retrying')
      expect(toolRetry?.data.error).toMatch(/^HTTP 503 from echo: .*\[redacted\]/)

      const callbackRun = (await h.app.inject({ method: 'GET', url: `/runs/${callbackEchoRun}`, headers: auth(TENANT_A) })).json()
      expect(callbackRun.callback.last_error).toMatch(/^HTTP 500: signature check with \[redacted\] failed/)
    })

    it('the log redacts the objects that hold secrets, were one logged whole by mistake', async () => {
      // The code never logs these; redaction is the safety net. A stored tool, the run's config, a
      // request's headers, each logged the way a careless line would.
      const net = capturingLog('trace')
      const tool = await h.app.store.getTool(TENANT_A.id, 'vault')
      net.log.error({ tool }, 'careless')
      net.log.error({ config: h.config }, 'careless')
      net.log.error({ req: { headers: { authorization: `Bearer ${TENANT_A.key}`, 'x-api-key': TENANT_B.key } } }, 'careless')
      net.log.error({ headers: tool!.headers, signingSecrets: tool!.signing_secrets }, 'careless')
      const text = net.lines().join('\n')
      expect(net.lines()).toHaveLength(4)
      for (const secret of [TOOL_KEY, TOOL_BEARER, ANTHROPIC_KEY, METRICS_TOKEN, TENANT_A.key, TENANT_B.key, ...signingSecrets.slice(0, 5)]) {
        expect(text, secret).not.toContain(secret)
      }
      expect(text).toContain('[redacted]')
    })

    it('no secret, in any of its encodings, appears anywhere else', () => {
      const needles: Array<{ what: string, forms: string[] }> = [
        { what: 'tenant A API key', forms: apiKeyForms(TENANT_A.key) },
        { what: 'tenant B API key', forms: apiKeyForms(TENANT_B.key) },
        { what: 'ANTHROPIC_API_KEY', forms: encodings(ANTHROPIC_KEY) },
        { what: 'tool header x-api-key', forms: encodings(TOOL_KEY) },
        { what: 'tool header authorization', forms: encodings(TOOL_BEARER) },
        { what: 'failing tool header', forms: encodings(BROKEN_KEY) },
        { what: 'METRICS_TOKEN', forms: encodings(METRICS_TOKEN) },
        ...signingSecrets.map((secret, i) => ({ what: `signing secret ${i + 1}`, forms: encodings(secret) }))
      ]
      const haystacks: Array<{ where: string, text: string }> = [
        ...logs.lines().map((line, i) => ({ where: `log line ${i + 1}`, text: line })),
        ...answers.map(({ where, res }) => ({ where, text: `${JSON.stringify(res.headers)}\n${res.body}` })),
        ...h.model.requests.map((r) => ({ where: `model request ${r.index}`, text: JSON.stringify(r.body) })),
        // What the callback receiver got is the run object: it is no tool's own header.
        ...h.tools.callsTo('/cb').map((c, i) => ({ where: `callback ${i + 1}`, text: c.raw }))
      ]
      expect(haystacks.length).toBeGreaterThan(100)
      const found: string[] = []
      for (const { what, forms } of needles) {
        for (const form of forms) {
          for (const { where, text } of haystacks) {
            if (text.includes(form)) found.push(`${what} (as ${form === forms[0] ? 'is' : form}) in ${where}: ${text.slice(Math.max(0, text.indexOf(form) - 120), text.indexOf(form) + form.length + 40)}`)
          }
        }
      }
      expect(found).toEqual([])
    })
  })
}
