import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import { backends } from '../support/backends.js'
import { auth, TENANT_A, TENANT_B } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { turnNumber, type RecordedRequest, type Turn } from '../support/fake-messages-api.js'
import { appRoutes, type AppRoute } from '../support/routes.js'
import { propertyOptions } from '../support/property.js'
import { capturingLog } from '../support/log.js'
import type { Resolver } from '../../src/tools/egress-guard.js'

/**
 * Hostile requests (SPEC §2): random and malformed bodies, headers, path parameters and query
 * strings, sent to every route the app has (read from the app, so a new route is covered at once),
 * against the real app with a fake Messages API and a tool server. Every answer must be 2xx or 4xx,
 * never 5xx, and every 4xx the error shape `{ statusCode, code, error, message, requestId }`.
 * fast-check prints the seed and the shrunk counterexample of a failure; FC_SEED replays one.
 */

const NUM_RUNS = 120

// Tool and callback URLs never leave this machine: host names resolve to nothing but localhost.
const resolver: Resolver = (hostname, callback) => {
  if (hostname === 'localhost') callback(null, [{ address: '127.0.0.1', family: 4 }])
  else callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), [])
}

// ---- arbitraries ----

const nasty = fc.constantFrom(
  '', ' ', '\u0000', 'a\u0000b', '\ud800', 'x\udfff', '\ud83d\ude00', '\ud83d', '\uffff', '\u202e', '%', '%00', '%zz', '../..', '..%2F',
  '$' + '{x}', '<script>', "' OR 1=1 --", 'null', 'true', '-1', '1e309', 'NaN', '__proto__', 'constructor', 'prototype', 'run_', 'whsec_x',
  'text/event-stream', '\r\n', 'é', 'a'.repeat(300)
)
const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c))
const text = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 3, arbitrary: nasty },
  { weight: 1, arbitrary: fc.tuple(fc.string({ maxLength: 5 }), loneSurrogate, fc.string({ maxLength: 5 })).map((p) => p.join('')) },
  { weight: 1, arbitrary: fc.integer().map(String) },
  { weight: 1, arbitrary: fc.nat(70_000).map((n) => 'x'.repeat(n)) }
)
const number = fc.oneof(
  fc.integer(), fc.double(), fc.constantFrom(0, -0, 1, -1, 2 ** 31, 2 ** 31 - 1, -(2 ** 31), 2 ** 53, 2 ** 63, 1e308, 0.5, 1000, 600_001)
)
const leaf = fc.oneof(text, number, fc.boolean(), fc.constant(null))
const { value: json } = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, leaf, tie('array'), tie('object')),
  array: fc.array(tie('value'), { maxLength: 4 }),
  object: fc.dictionary(fc.oneof(text, fc.constantFrom('type', 'role', 'content', 'input', '__proto__')), tie('value'), { maxKeys: 4 })
}))
/** Sometimes right, mostly wrong: what a careless or hostile client sends in a field. */
const maybe = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 3, arbitrary: valid }, { weight: 1, arbitrary: json })

const schema = fc.oneof(
  fc.constant({ type: 'object', properties: { q: { type: 'string' } } }),
  fc.constant({ type: 'object', properties: { q: { type: 'string', pattern: '(' } } }),
  fc.constant({ type: 'object', properties: { q: { $ref: '#/nowhere' } } }),
  fc.constant({ type: 'object', properties: { q: { $ref: 'http://example.com/schema.json' } } }),
  fc.constant({ type: 'object', $schema: 'http://example.com/unknown-draft' }),
  fc.constant({ type: 'object', properties: { q: { format: 'no-such-format' } } }),
  fc.constant({ type: 'array' }),
  json
)
const urls = (tools: string) => fc.oneof(
  fc.constantFrom(`${tools}/ok`, `${tools}/status/500`, 'http://127.0.0.1:1/x', 'http://localhost:1/x', 'ftp://127.0.0.1/x', 'http://169.254.169.254/latest/meta-data',
    'http://[fd00:ec2::254]/', 'http://100.100.100.200/', 'http://10.0.0.1/', 'http://nowhere.invalid/x', 'http://user:pw@127.0.0.1/', 'http://127.0.0.1:99999/', 'http:///x', '//x', 'not a url'),
  text
)
const message = fc.record({
  role: maybe(fc.constantFrom('user', 'assistant')),
  content: maybe(fc.oneof(text, fc.array(fc.record({ type: maybe(fc.constantFrom('text', 'image', 'tool_use', 'tool_result', 'thinking')), text: maybe(text), id: text, input: json, tool_use_id: text }, { requiredKeys: ['type'] }), { maxLength: 3 })))
}, { requiredKeys: [] })
const metadata = fc.dictionary(fc.oneof(fc.stringMatching(/^[a-z_.:-]{1,10}$/), text), maybe(text), { maxKeys: 18 })

function runBody (tools: string) {
  return fc.record({
    input: maybe(text),
    messages: maybe(fc.array(message, { maxLength: 3 })),
    tools: maybe(fc.oneof(fc.constant(['probe']), fc.constant([]), fc.array(text, { maxLength: 3 }))),
    client_tools: maybe(fc.array(fc.record({ name: maybe(fc.constantFrom('ask', 'probe', 'a b')), description: maybe(text), input_schema: schema }, { requiredKeys: [] }), { maxLength: 2 })),
    model: maybe(text),
    system: maybe(fc.oneof(text, fc.array(fc.record({ type: fc.constant('text'), text }), { maxLength: 2 }))),
    max_tokens: maybe(fc.integer({ min: -2, max: 2_000_000 })),
    max_steps: maybe(fc.integer({ min: -1, max: 1001 })),
    timeout_ms: maybe(fc.integer({ min: 0, max: 5000 })),
    tool_choice: maybe(fc.record({ type: maybe(fc.constantFrom('auto', 'any', 'tool', 'none')), name: maybe(fc.constantFrom('probe', 'ask')) }, { requiredKeys: [] })),
    thinking: maybe(fc.record({ type: maybe(fc.constantFrom('enabled', 'disabled')), budget_tokens: number }, { requiredKeys: [] })),
    temperature: maybe(number),
    top_k: maybe(number),
    stop_sequences: maybe(fc.array(text, { maxLength: 17 })),
    parallelism: maybe(number),
    disable_parallel_tool_use: maybe(fc.boolean()),
    metadata: maybe(metadata),
    callback_url: maybe(urls(tools)),
    background: maybe(fc.boolean()),
    stream: maybe(fc.boolean())
  }, { requiredKeys: [] })
}

/**
 * A run whose every field is nearly right, but whose history, system prompt, thinking settings and
 * cache breakpoints go to the edges of what the Messages API takes: blank text, odd ids and inputs,
 * tool results without content, thinking without its signature (SIGN stands for the fake's own),
 * unknown blocks and fields, good and bad cache_control, budgets around max_tokens.
 */
/** Mostly right, now and then at an edge: how careful callers' mistakes are spread. */
const mostly = <T>(right: readonly T[], edges: readonly T[]) => fc.oneof({ weight: 15, arbitrary: fc.constantFrom(...right) }, { weight: 1, arbitrary: fc.constantFrom(...edges) })
const cacheControl = mostly<unknown>([undefined, undefined, undefined, null, { type: 'ephemeral' }, { type: 'ephemeral', ttl: '1h' }], [{ type: 'ephemeral', ttl: '1d' }, { type: 'persistent' }, { type: 'ephemeral', scope: 'x' }, 'ephemeral'])
function cached<T extends object> (block: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return fc.tuple(block, cacheControl).map(([b, c]) => c === undefined ? b : { ...b, cache_control: c })
}
const edgeText = mostly(['hi', 'Weather in Paris?'], ['', ' ', '\n\t'])
const textBlock = cached(fc.record({ type: fc.constant('text'), text: edgeText, citations: fc.constantFrom(undefined, null), id: mostly([undefined], ['x']) }, { requiredKeys: ['type', 'text'] }))
const otherBlock = mostly<object>([
  { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
  { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'Notes.' } }
], [{ type: 'video', url: 'https://example.com/v.mp4' }])
const resultContent = fc.oneof(edgeText, fc.array(fc.oneof(textBlock, fc.constant({ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } })), { maxLength: 3 }), fc.constant(undefined))
const exchange = fc.array(fc.record({
  id: mostly(['toolu_01', 'toolu_02'], ['call.1', '']),
  name: mostly(['probe', 'gone_tool'], ['bad name']),
  input: mostly<unknown>([{}, { q: 'x' }], [[], 'x', null]),
  content: resultContent,
  isError: fc.constantFrom(undefined, false, true)
}), { minLength: 1, maxLength: 2 }).chain((calls) => fc.record({
  before: fc.array(fc.oneof(textBlock, mostly<object>([{ type: 'thinking', thinking: 'Let me see.', signature: 'SIGN' }], [{ type: 'thinking', thinking: 'Hm.' }, { type: 'thinking', thinking: 'Hm.', signature: '' }])), { maxLength: 2 }),
  after: fc.array(textBlock, { maxLength: 1 })
}).map(({ before, after }) => [
  { role: 'assistant', content: [...before, ...calls.map((c) => ({ type: 'tool_use', id: c.id, name: c.name, input: c.input }))] },
  { role: 'user', content: [...calls.map((c) => ({ type: 'tool_result', tool_use_id: c.id, ...(c.content === undefined ? {} : { content: c.content }), ...(c.isError === undefined ? {} : { is_error: c.isError }) })), ...after] }
]))
const firstMessage = fc.oneof(edgeText.map((content) => ({ role: 'user', content })), fc.array(fc.oneof(textBlock, otherBlock), { minLength: 1, maxLength: 3 }).map((content) => ({ role: 'user', content })))
const history = fc.tuple(firstMessage, fc.array(exchange, { maxLength: 2 })).map(([first, exchanges]) => [first, ...exchanges.flat()])

function edgeRunBody () {
  return fc.record({
    messages: history,
    tools: mostly([['probe']], [[]]),
    system: fc.oneof(fc.constant(undefined), edgeText, fc.array(textBlock, { minLength: 1, maxLength: 3 })),
    max_tokens: fc.constantFrom(undefined, 1024, 4096, 8000),
    thinking: fc.constantFrom(undefined, { type: 'disabled' }, { type: 'adaptive' }, ...[undefined, 0, 1023, 1024, 2048, 4095, 4096, 8000].map((budget) => ({ type: 'enabled', ...(budget === undefined ? {} : { budget_tokens: budget }) }))),
    tool_choice: fc.constantFrom(undefined, { type: 'auto' }, { type: 'none' }, { type: 'any' }, { type: 'tool', name: 'probe' })
  }, { requiredKeys: ['messages'] })
}

/** Gives each thinking block whose signature is SIGN the one the fake made, as the model would have. */
function signed (body: Record<string, any>, sign: (thinking: string) => string): Record<string, any> {
  const messages = (body.messages as Array<{ role: string, content: unknown }>).map((m) => Array.isArray(m.content)
    ? { ...m, content: m.content.map((b: Record<string, any>) => b.signature === 'SIGN' ? { ...b, signature: sign(b.thinking) } : b) }
    : m)
  return { ...body, messages }
}

function toolBody (tools: string) {
  return fc.record({
    description: maybe(text),
    input_schema: schema,
    url: urls(tools),
    headers: maybe(fc.dictionary(fc.oneof(fc.constantFrom('x-api-key', 'authorization', 'host', 'Content-Length', 'webhook-signature', 'bad name', 'x\u00e9'), text), maybe(text), { maxKeys: 3 })),
    timeout_ms: maybe(fc.integer({ min: -1, max: 600_001 })),
    effect: maybe(fc.constantFrom('read_only', 'idempotent', 'side_effecting', 'dangerous')),
    parallel: maybe(fc.boolean()),
    max_concurrency: maybe(fc.oneof(fc.constant(null), fc.integer({ min: -1, max: 2_000_000 }))),
    max_attempts: maybe(fc.integer({ min: 0, max: 11 }))
  }, { requiredKeys: [] })
}

function toolOutputsBody (toolUseIds: () => string[]) {
  return fc.record({
    tool_outputs: maybe(fc.array(fc.record({
      tool_use_id: maybe(fc.oneof(fc.constant(null).map(() => toolUseIds()[0] ?? 'toolu_none'), text)),
      content: maybe(fc.oneof(text, fc.array(fc.record({ type: maybe(fc.constantFrom('text', 'image', 'document')), text: maybe(text), source: json }, { requiredKeys: [] }), { maxLength: 3 }))),
      is_error: maybe(fc.boolean())
    }, { requiredKeys: [] }), { maxLength: 3 })),
    background: maybe(fc.boolean()),
    stream: maybe(fc.boolean())
  }, { requiredKeys: [] })
}

/** Percent-encodes text for a URL; lone surrogates become the (invalid) bytes a careless client sends. */
function urlPart (value: string): string {
  let out = ''
  for (const char of value) {
    const code = char.charCodeAt(0)
    if (char.length === 1 && code >= 0xd800 && code <= 0xdfff) out += `%${(0xe0 | (code >> 12)).toString(16)}%${(0x80 | ((code >> 6) & 0x3f)).toString(16)}%${(0x80 | (code & 0x3f)).toString(16)}`
    else out += encodeURIComponent(char)
  }
  return out
}

/** Header values a client can put on the wire: no line breaks, latin1 only. */
const headerValue = text.map((v) => v.replace(/[\r\n]/g, ' ').replace(/[^\t\x20-\x7e\x80-\xff]/g, '?'))

/** JSON that parsers disagree on, or that is only nearly JSON. */
const ODD_JSON = ['{"input":"\\ud800"}', '{"input":"a\\u0000b"}', '{"input":"x","input":"y"}', '{"__proto__":{"x":1},"input":"x"}',
  '{"constructor":{"prototype":{"x":1}}}', '{"input":1e400}', '{"max_steps":1.0,"input":"x"}', '\ufeff{"input":"x"}', '{"input":"x"} trailing']

const CONTENT_TYPES = ['application/json', 'application/json; charset=utf-8', 'application/json; charset=latin1', 'text/plain', 'text/event-stream',
  'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream', 'application/vnd.api+json', 'application/jsonx', '', ';', 'application/json;;;']

interface Known {
  runIds: string[]
  toolUseIds: string[]
}

function requests (h: Harness, routes: AppRoute[], known: Known): fc.Arbitrary<InjectOptions & { method: string, url: string }> {
  const tools = h.tools.url
  const runId = fc.oneof(
    fc.constant(null).map(() => known.runIds[0] ?? 'run_00000000000000000000000000'),
    fc.constant(null).map(() => known.runIds[known.runIds.length - 1] ?? 'run_00000000000000000000000000'),
    fc.stringMatching(/^run_[0-9A-Z]{26}$/),
    text
  )
  const name = fc.oneof(fc.constantFrom('probe', 'made_here', 'missing', 'a'.repeat(65)), text)
  const body = (route: AppRoute): fc.Arbitrary<unknown> => {
    if (route.key === 'POST /runs') return runBody(tools)
    if (route.key === 'PUT /tools/:name') return toolBody(tools)
    if (route.key === 'POST /runs/:id/tool_outputs') return toolOutputsBody(() => known.toolUseIds)
    return json
  }
  const query = fc.array(fc.tuple(
    fc.oneof(fc.constantFrom('limit', 'after', 'status', 'include', 'metadata[team]', 'metadata[a"b]', 'metadata[]', 'metadata', 'metadata[x][y]', '__proto__', 'after[]', 'expires', 'sig'), text),
    fc.oneof(fc.constantFrom('0', '1', '100', '101', '-1', '1e3', '9999999999999999999', '4102444800', 'completed', 'messages', 'eyJ4IjoxfQ', 'WyJhIl0', 'WzFd', '', 'null'), text)
  ), { maxLength: 4 }).map((pairs) => pairs.length === 0 ? '' : `?${pairs.map(([k, v]) => `${urlPart(k)}=${urlPart(v)}`).join('&')}`)
  const headers = fc.record({
    authorization: fc.oneof(
      { weight: 6, arbitrary: fc.constant(auth(TENANT_A).authorization) },
      { weight: 1, arbitrary: fc.constant(auth(TENANT_B).authorization) },
      { weight: 1, arbitrary: headerValue.map((v) => `Bearer ${v}`) },
      { weight: 1, arbitrary: headerValue }
    ),
    accept: fc.oneof(fc.constantFrom('text/event-stream', 'application/json', '*/*', 'text/event-stream;q=0'), headerValue),
    'idempotency-key': headerValue,
    'last-event-id': fc.oneof(fc.constantFrom('0', '1', '3', '-1', '99999999999', '1.5', ''), headerValue),
    'x-request-id': headerValue,
    'content-type': fc.oneof(fc.constantFrom(...CONTENT_TYPES), headerValue),
    'accept-encoding': fc.constantFrom('gzip', 'br', 'identity;q=0', '*'),
    'x-forwarded-for': headerValue,
    'x-random': headerValue
  }, { requiredKeys: [] })
  const payload = (route: AppRoute) => fc.oneof(
    { weight: 6, arbitrary: body(route).map((b) => JSON.stringify(b)) },
    { weight: 2, arbitrary: json.map((b) => JSON.stringify(b) ?? 'null') },
    { weight: 1, arbitrary: text },
    { weight: 1, arbitrary: fc.nat(20_000).map((n) => `${'['.repeat(n)}${']'.repeat(n)}`) },
    { weight: 1, arbitrary: fc.nat(5_000).map((n) => `{"input":"x","metadata":${'{"a":'.repeat(n)}1${'}'.repeat(n)}}`) },
    { weight: 1, arbitrary: fc.constantFrom(...ODD_JSON) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)) },
    { weight: 1, arbitrary: fc.constant(undefined) }
  )
  const routed = fc.constantFrom(...routes).chain((route) => fc.record({
    method: fc.oneof({ weight: 8, arbitrary: fc.constant(route.method) }, { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD') }),
    path: fc.tuple(runId, name).map(([id, n]) => route.url.replace(':id', urlPart(id)).replace(':name', urlPart(n)).replace(/\*$/, 'x')),
    query,
    headers,
    payload: payload(route)
  }))
  const stray = fc.record({
    method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH'),
    path: fc.oneof(fc.array(text, { minLength: 1, maxLength: 4 }).map((parts) => `/${parts.map(urlPart).join('/')}`), fc.constantFrom('/runs/', '//runs', '/runs/%', '/tools/%E0%A4%A', '/runs/run_x/events/extra', '/%2e%2e/etc/passwd')),
    query,
    headers,
    payload: payload(routes[0]!)
  })
  return fc.oneof({ weight: 9, arbitrary: routed }, { weight: 1, arbitrary: stray })
    .map(({ method, path, query: q, headers: hs, payload: p }) => ({
      method: method as 'GET',
      // The run script's tool stays as it is: only read it.
      url: `${method === 'GET' ? path : path.replace(/^\/tools\/probe(?=\/|$)/, '/tools/made_here')}${q}`,
      headers: hs,
      ...(p === undefined ? {} : { payload: p })
    }))
}

// What the app logged as errors: a 5xx is reported with its log line, to say where it came from.
const logs = capturingLog('error')

/** A 2xx or a 4xx in the error shape, whose statusCode is the answer's; never a 5xx. */
function checkAnswer (res: LightMyRequestResponse): void {
  if (res.statusCode >= 500) {
    const requestId = String(res.headers['x-request-id'])
    const logged = logs.lines().filter((line) => line.includes(requestId)).join('\n')
    throw new Error(`answered ${res.statusCode}: ${res.body.slice(0, 500)}\nlogged: ${logged.slice(0, 1500)}`)
  }
  if (res.statusCode < 400) return
  if (res.body === '') return // HEAD
  let body: Record<string, unknown>
  try {
    body = res.json()
  } catch {
    throw new Error(`answered ${res.statusCode} with a body that is not JSON: ${res.body.slice(0, 200)}`)
  }
  expect(res.headers['content-type']).toMatch(/^application\/json/)
  expect(Object.keys(body).sort()).toEqual(['code', 'error', 'message', 'requestId', 'statusCode'])
  expect(body.statusCode).toBe(res.statusCode)
  expect(body.code).toMatch(/^[A-Z]+_ERR_[A-Z_]+$/)
  expect(typeof body.error).toBe('string')
  expect(typeof body.message).toBe('string')
  expect((body.message as string).length).toBeGreaterThan(0)
  expect(body.requestId).toBe(res.headers['x-request-id'])
}

function script (request: RecordedRequest): Turn {
  const names = ((request.body.tools ?? []) as Array<{ name: string }>).map((t) => t.name)
  if (turnNumber(request) === 1 && names.length > 0) return { content: [{ type: 'tool_use', name: names[0]!, input: { q: 'x' } }] }
  return { content: [{ type: 'text', text: 'ok' }] }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`hostile requests: ${backend.name}`, () => {
    let h: Harness
    let routes: AppRoute[]
    const known: Known = { runIds: [], toolUseIds: [] }

    beforeAll(async () => {
      // Limits off: hundreds of requests and waiting runs are the point here (limits.test.ts tests them).
      h = await startHarness(backend, { resolver, logger: logs.log, env: { RUN_MAX_TIMEOUT_MS: '10000', MODEL_MAX_RETRIES: '0', RATE_LIMIT_PER_MINUTE: '0', TENANT_MAX_ACTIVE_RUNS: '100000', TENANT_MAX_SSE_STREAMS: '100000' } })
      h.model.respond = script
      routes = appRoutes(h.app)
      await h.registerTool('probe', '/ok', { effect: 'read_only', max_attempts: 1 })
      await h.app.inject({ method: 'POST', url: '/callbacks/rotate-secret', headers: auth(TENANT_A) })
      known.runIds.push((await h.startRun({ input: 'done', tools: ['probe'] })).body.id)
    })
    afterAll(async () => h?.close())

    /** A run waiting for its caller, so that random tool outputs and cancels meet one now and then. */
    async function addWaitingRun (): Promise<void> {
      const res = await h.startRun({ input: 'ask', client_tools: [{ name: 'ask', description: 'Ask', input_schema: { type: 'object' } }] })
      if (res.body.status !== 'requires_action') return
      known.runIds.push(res.body.id)
      known.toolUseIds.unshift(res.body.required_action.tool_calls[0].id)
    }

    it('answers every route\'s random and malformed requests with a 2xx or a 4xx in the error shape', async () => {
      await addWaitingRun()
      let count = 0
      await fc.assert(fc.asyncProperty(requests(h, routes, known), async (request) => {
        if (++count % 25 === 0) await addWaitingRun()
        checkAnswer(await h.app.inject(request))
      }), propertyOptions(NUM_RUNS * 3))
    })

    for (const key of ['POST /runs', 'PUT /tools/:name', 'POST /runs/:id/tool_outputs']) {
      it(`answers ${key} with a 2xx or a 4xx for bodies that are nearly right`, async () => {
        const route = routes.find((r) => r.key === key)!
        const arbitrary = key === 'POST /runs'
          ? runBody(h.tools.url)
          : key === 'PUT /tools/:name' ? toolBody(h.tools.url) : toolOutputsBody(() => known.toolUseIds)
        await addWaitingRun()
        await fc.assert(fc.asyncProperty(arbitrary, async (body) => {
          if (key === 'POST /runs/:id/tool_outputs' && known.toolUseIds.length === 0) await addWaitingRun()
          const url = route.url.replace(':id', known.runIds[known.runIds.length - 1]!).replace(':name', 'made_here')
          const res = await h.app.inject({ method: route.method as 'POST', url, headers: auth(TENANT_A), payload: body as object })
          checkAnswer(res)
          if (key === 'POST /runs/:id/tool_outputs' && res.statusCode < 300) known.toolUseIds.shift()
        }), propertyOptions(NUM_RUNS))
      })
    }

    it('creates no run the model would refuse: every model request of a run POST /runs took is one the Messages API takes', async () => {
      const refusals: string[] = []
      let created = 0
      await fc.assert(fc.asyncProperty(edgeRunBody(), async (body) => {
        const before = h.model.refusals.length
        // Sync: the run's model calls are over when it answers.
        const res = await h.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: signed(body, (t) => h.model.signThinking(t)) })
        checkAnswer(res)
        if (res.statusCode < 300) created++
        for (const refusal of h.model.refusals.slice(before)) refusals.push(`${refusal.message}\n  for ${JSON.stringify(body).slice(0, 1000)}`)
      }), propertyOptions(NUM_RUNS))
      expect(refusals).toEqual([])
      // Some of them are taken, or the property says nothing.
      expect(created).toBeGreaterThan(Number(process.env.FC_RUNS ?? NUM_RUNS) / 20)
    })

    it('answers the known hard cases with a 4xx: deep nesting, the body limit, odd encodings', async () => {
      const deep = 200_000
      const cases: Array<InjectOptions & { url: string }> = [
        { method: 'POST', url: '/runs', payload: `${'['.repeat(deep)}${']'.repeat(deep)}` },
        { method: 'POST', url: '/runs', payload: `{"input":"x","metadata":${'{"a":'.repeat(deep)}1${'}'.repeat(deep)}}` },
        { method: 'POST', url: '/runs', payload: `{"messages":[{"role":"user","content":[{"type":"text","text":"x","extra":${'['.repeat(deep)}${']'.repeat(deep)}}]}]}` },
        { method: 'POST', url: '/runs', payload: `{"input":"x","thinking":{"type":"enabled","x":${'['.repeat(deep)}${']'.repeat(deep)}}}` },
        { method: 'PUT', url: '/tools/deep', payload: `{"description":"d","url":"${h.tools.url}/ok","input_schema":{"type":"object","x":${'['.repeat(deep)}${']'.repeat(deep)}}}` },
        { method: 'POST', url: '/runs', payload: JSON.stringify({ input: 'x'.repeat(h.config.BODY_LIMIT_BYTES) }) },
        { method: 'POST', url: '/runs', payload: Buffer.from([0x7b, 0x22, 0x69, 0x6e, 0x70, 0x75, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]) },
        { method: 'POST', url: '/runs', payload: Buffer.from('{"input":"x"}', 'utf16le'), headers: { 'content-type': 'application/json; charset=utf-16' } },
        { method: 'POST', url: '/runs', payload: '{"input":"x"}', headers: { 'content-encoding': 'gzip' } },
        { method: 'POST', url: '/runs', payload: '{"input":"x"}', headers: { 'content-length': '5' } },
        { method: 'POST', url: '/runs', payload: '', headers: { 'content-type': 'application/json' } },
        { method: 'GET', url: `/runs?${Array.from({ length: 2000 }, (_, i) => `metadata[k${i}]=v`).join('&')}` },
        { method: 'GET', url: `/runs/${known.runIds[0]!}/events?after=1&after=2` },
        { method: 'GET', url: '/runs?limit=1&limit=2' },
        { method: 'GET', url: `/runs?after=${Buffer.from(JSON.stringify(['run_\u0000'])).toString('base64url')}` },
        { method: 'GET', url: `/runs?after=${Buffer.from(JSON.stringify([{}])).toString('base64url')}` },
        { method: 'GET', url: `/tools?after=${Buffer.from(JSON.stringify([2 ** 62, 'x'])).toString('base64url')}` },
        { method: 'GET', url: `/tools?after=${Buffer.from(JSON.stringify([1, 'x\u0000'])).toString('base64url')}` },
        { method: 'GET', url: '/runs?metadata[team]=%00' },
        { method: 'GET', url: '/runs?metadata[team]=%ED%A0%80' },
        { method: 'GET', url: `/runs/${known.runIds[0]!}/events`, headers: { accept: 'text/event-stream', 'last-event-id': '2147483648' } },
        { method: 'POST', url: '/runs', payload: { input: 'x', metadata: { team: 'a\u0000b' } } },
        { method: 'POST', url: '/runs', payload: { input: 'x', model: 'claude\u0000' } },
        { method: 'POST', url: '/runs', payload: { input: 'x\u0000y' } },
        { method: 'POST', url: '/runs', payload: { input: 'x', callback_url: 'http://127.0.0.1:1/\u0000' } },
        { method: 'POST', url: '/runs', payload: { input: 'x', system: '\u0000', stop_sequences: ['\u0000'] } },
        { method: 'PUT', url: '/tools/nul', payload: { description: 'a\u0000b', input_schema: { type: 'object', description: '\u0000' }, url: `${h.tools.url}/ok`, headers: { 'x-a': '\u0000' } } },
        { method: 'PUT', url: '/tools/nul2', payload: { description: 'a', input_schema: { type: 'object' }, url: `${h.tools.url}/ok\u0000` } },
        { method: 'POST', url: '/runs', headers: { 'idempotency-key': 'k\u0000' }, payload: { input: 'x' } }
      ]
      for (const request of cases) {
        const res = await h.app.inject({ ...request, headers: { ...auth(TENANT_A), 'content-type': 'application/json', ...request.headers } })
        try {
          checkAnswer(res)
        } catch (err) {
          throw new Error(`${request.method} ${request.url.slice(0, 80)} with ${String(request.payload).slice(0, 80)}: ${(err as Error).message}`)
        }
      }
    })

    it('stays healthy: a plain run still completes and the app still answers', async () => {
      const res = await h.startRun({ input: 'still there?', tools: ['probe'] })
      expect(res.status).toBe(200)
      expect(res.body.status).toBe('completed')
      expect((await h.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200)
    })
  })
}
