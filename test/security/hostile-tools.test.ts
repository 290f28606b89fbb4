import { createServer, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { backends } from '../support/backends.js'
import { auth, TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, turnNumber, type RecordedRequest, type Turn } from '../support/fake-messages-api.js'
import { propertyOptions } from '../support/property.js'

/**
 * Hostile tools (SPEC §6): webhook servers on 127.0.0.1 that answer with random bytes, invalid
 * UTF-8, a 64 KB header, a body that never ends, one far over TOOL_MAX_RESPONSE_BYTES, a socket
 * closed mid-body, a wrong content type, an empty 200, and any status from 100 to 599. Each call
 * ends as a tool_result the model gets (is_error where the answer is unusable, naming the tool),
 * the run goes on to the model's next turn, an endless body is cut (not buffered), and the app
 * stays healthy. The server writes raw bytes on a TCP socket: no HTTP library tidies them up.
 */

const MAX_RESPONSE_BYTES = 65_536

/** What the raw tool server answers: bytes to write, then close or keep going. */
type Answer =
  | { kind: 'bytes', data: Buffer, close?: boolean }
  | { kind: 'endless', head: string, chunked?: boolean }
  | { kind: 'trickle', data: string }

/** An HTTP answer written by hand. */
function http (status: number, headers: Record<string, string>, body: Buffer | string = ''): Buffer {
  const data = typeof body === 'string' ? Buffer.from(body) : body
  const lines = [`HTTP/1.1 ${status} Whatever`, ...Object.entries({ 'content-length': String(data.length), connection: 'close', ...headers }).map(([k, v]) => `${k}: ${v}`)]
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), data])
}

/**
 * A tool server on a bare TCP socket. Each request's JSON body names, in `input.key`, the answer
 * to give (set by the test in `answers`); fixed paths answer the same every time.
 */
class RawToolServer {
  readonly answers = new Map<string, Answer>()
  /** Bytes written to each endless answer before the client hung up. */
  readonly endlessBytes: number[] = []
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
  url = ''

  constructor () {
    this.#server = createServer((socket) => {
      this.#sockets.add(socket)
      socket.on('close', () => this.#sockets.delete(socket))
      socket.on('error', () => {})
      let received = Buffer.alloc(0)
      const onData = (chunk: Buffer): void => {
        received = Buffer.concat([received, chunk])
        const end = received.indexOf('\r\n\r\n')
        if (end === -1) return
        const head = received.subarray(0, end).toString('latin1')
        const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0)
        if (received.length < end + 4 + length) return
        socket.off('data', onData)
        let key = ''
        try {
          key = String(JSON.parse(received.subarray(end + 4, end + 4 + length).toString('utf8')).input?.key ?? '')
        } catch {}
        this.#answer(socket, this.answers.get(key) ?? { kind: 'bytes', data: http(404, {}, `no answer for ${key}`) })
      }
      socket.on('data', onData)
    })
  }

  async start (): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`
    return this
  }

  async close (): Promise<void> {
    for (const socket of this.#sockets) socket.destroy()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  #answer (socket: Socket, answer: Answer): void {
    switch (answer.kind) {
      case 'bytes':
        socket.write(answer.data)
        if (answer.close !== false) socket.end()
        return
      case 'trickle': {
        // One byte at a time, for ever: headers that never end, say.
        socket.write(answer.data)
        const timer = setInterval(() => { if (!socket.destroyed) socket.write('a') }, 50)
        socket.on('close', () => clearInterval(timer))
        return
      }
      case 'endless': {
        // As fast as the client reads, never ending; counts what it wrote until the client hangs up.
        let written = 0
        const data = Buffer.alloc(64 * 1024, 'x')
        const chunk = answer.chunked === true ? Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n')]) : data
        socket.write(answer.head)
        const pump = (): void => {
          while (!socket.destroyed) {
            written += chunk.length
            if (!socket.write(chunk)) {
              socket.once('drain', pump)
              return
            }
          }
        }
        socket.on('close', () => this.endlessBytes.push(written))
        pump()
      }
    }
  }
}

/** Fixed hostile answers, by name. */
function hostileAnswers (): Record<string, Answer> {
  const huge = 'h'.repeat(70 * 1024)
  return {
    random_bytes: { kind: 'bytes', data: Buffer.from('f3a9007e13c4ffee0d0a0d0a5c22deadbeef', 'hex') },
    invalid_utf8: { kind: 'bytes', data: http(200, { 'content-type': 'text/plain; charset=utf-8' }, Buffer.from([0x6f, 0x6b, 0x20, 0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0x21])) },
    invalid_utf8_json: { kind: 'bytes', data: http(200, { 'content-type': 'application/json' }, Buffer.concat([Buffer.from('{"content":"'), Buffer.from([0xff, 0xc3]), Buffer.from('"}')])) },
    huge_header: { kind: 'bytes', data: http(200, { 'content-type': 'text/plain', 'x-huge': huge }, 'fine') },
    endless: { kind: 'endless', head: 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n' },
    endless_json: { kind: 'endless', head: 'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n' },
    endless_chunked: { kind: 'endless', head: 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n', chunked: true },
    oversized: { kind: 'bytes', data: http(200, { 'content-type': 'text/plain' }, 'y'.repeat(MAX_RESPONSE_BYTES * 20)) },
    oversized_error: { kind: 'bytes', data: http(500, { 'content-type': 'text/plain' }, 'e'.repeat(MAX_RESPONSE_BYTES * 4)) },
    closed_mid_body: { kind: 'bytes', data: Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\nonly a part') },
    wrong_type: { kind: 'bytes', data: http(200, { 'content-type': 'application/x-msdownload' }, 'MZ\u0090\u0000') },
    no_type_binary: { kind: 'bytes', data: http(200, {}, Buffer.from([0, 1, 2, 0xff, 0x00])) },
    empty_200: { kind: 'bytes', data: http(200, { 'content-type': 'application/json' }) },
    no_length: { kind: 'bytes', data: Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nread until close') },
    bad_chunks: { kind: 'bytes', data: Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n0\r\n\r\n') },
    two_lengths: { kind: 'bytes', data: Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 30\r\n\r\nabc') },
    headers_never_end: { kind: 'trickle', data: 'HTTP/1.1 200 OK\r\nx-slow: ' },
    nul_text: { kind: 'bytes', data: http(200, { 'content-type': 'text/plain' }, 'before\u0000after') },
    lone_surrogate_json: { kind: 'bytes', data: http(200, { 'content-type': 'application/json' }, '{"content":"half \\ud83d of an emoji"}') },
    deep_json: { kind: 'bytes', data: http(200, { 'content-type': 'application/json' }, `${'['.repeat(30_000)}${']'.repeat(30_000)}`) },
    blocks_bad: { kind: 'bytes', data: http(200, { 'content-type': 'application/json' }, '{"content":[{"type":"text"},{"type":"document","x":1}],"is_error":"yes"}') },
    // What the Messages API refuses in a tool result: an is_error one that says nothing; more than
    // four cache breakpoints, a cache_control of another shape, citations, fields it does not know.
    silent_error: { kind: 'bytes', data: http(200, { 'content-type': 'application/json' }, '{"content":"","is_error":true}') },
    silent_error_list: { kind: 'bytes', data: http(200, { 'content-type': 'application/json' }, '{"content":[],"is_error":true}') },
    blocks_cached: { kind: 'bytes', data: http(200, { 'content-type': 'application/json' }, JSON.stringify({ content: ['a', 'b', 'c', 'd', 'e'].map((text) => ({ type: 'text', text, cache_control: { type: 'ephemeral' } })) })) },
    blocks_odd_fields: { kind: 'bytes', data: http(200, { 'content-type': 'application/json' }, '{"content":[{"type":"text","text":"f","cache_control":{"type":"forever"}},{"type":"text","text":"g","citations":[{"type":"char_location"}]},{"type":"text","text":"h","__proto__":{"x":1},"constructor":"x","trace":1},{"type":"text","text":" "}]}') },
    early_hints_only: { kind: 'bytes', data: Buffer.from('HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n') },
    switching: { kind: 'bytes', data: Buffer.from('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n\u0081\u0005hello') },
    http09: { kind: 'bytes', data: Buffer.from('just a body, no status line') },
    redirect_loop: { kind: 'bytes', data: http(308, { location: '/again' }) },
    retry_after_forever: { kind: 'bytes', data: http(503, { 'retry-after': '999999999', 'content-type': 'text/plain' }, 'come back much later') }
  }
}

/** What each fixed answer must become: an error result, or a usable one. */
const EXPECTED: Record<string, { isError: boolean, text?: RegExp }> = {
  random_bytes: { isError: true },
  invalid_utf8: { isError: false, text: /^ok \uFFFD/ },
  invalid_utf8_json: { isError: false },
  huge_header: { isError: true },
  endless: { isError: false, text: /was cut there/ },
  endless_json: { isError: true, text: /TOOL_MAX_RESPONSE_BYTES/ },
  endless_chunked: { isError: false, text: /was cut there/ },
  oversized: { isError: false, text: /was cut there/ },
  oversized_error: { isError: true, text: /^HTTP 500 from / },
  closed_mid_body: { isError: true },
  wrong_type: { isError: true, text: /content-type application\/x-msdownload/ },
  no_type_binary: { isError: false },
  empty_200: { isError: false, text: /^$/ },
  no_length: { isError: false, text: /^read until close$/ },
  bad_chunks: { isError: true },
  two_lengths: { isError: true },
  headers_never_end: { isError: true, text: /timed out/ },
  nul_text: { isError: false, text: /^before\p{Cc}after$/u },
  lone_surrogate_json: { isError: false, text: /^half \uFFFD of an emoji$/ },
  deep_json: { isError: true, text: /^hostile answered JSON nested more than 100 levels deep/ },
  blocks_bad: { isError: false },
  silent_error: { isError: true, text: /^Tool hostile failed without a message\.$/ },
  silent_error_list: { isError: true, text: /^Tool hostile failed without a message\.$/ },
  blocks_cached: { isError: false, text: /^abcde$/ },
  blocks_odd_fields: { isError: false, text: /^fgh$/ },
  early_hints_only: { isError: true },
  switching: { isError: true },
  http09: { isError: true },
  redirect_loop: { isError: true, text: /^HTTP 308 from .*redirects are not followed/ },
  retry_after_forever: { isError: true, text: /^HTTP 503 from / }
}

/** Turn 1: call `tool` once per key, all at once; later turns: done. */
function callEach (keys: () => string[]): (request: RecordedRequest) => Turn {
  return (request) => {
    if (turnNumber(request) > 1) return { content: [{ type: 'text', text: 'next turn reached' }] }
    const tool = (request.body.tools as Array<{ name: string }>)[0]!.name
    return { content: keys().map((key, i) => ({ type: 'tool_use' as const, id: `toolu_${i}_${key.replace(/\W/g, '')}`.slice(0, 60), name: tool, input: { key } })) }
  }
}

/** Whether a string holds half of a UTF-16 surrogate pair, which the model API refuses. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

for (const backend of backends) {
  describe.skipIf(backend.skip)(`hostile tools: ${backend.name}`, () => {
    let h: Harness
    let raw: RawToolServer

    beforeAll(async () => {
      raw = await new RawToolServer().start()
      h = await startHarness(backend, { env: { TOOL_MAX_RESPONSE_BYTES: String(MAX_RESPONSE_BYTES), RATE_LIMIT_PER_MINUTE: '0', TENANT_MAX_ACTIVE_RUNS: '100000', CALLBACK_MAX_ATTEMPTS: '1' } })
      const tool = (name: string, fields: Record<string, unknown>) => h.app.inject({
        method: 'PUT',
        url: `/tools/${name}`,
        headers: auth(TENANT_A),
        payload: { description: 'A tool that answers badly', input_schema: { type: 'object', properties: { key: { type: 'string' } } }, url: `${raw.url}/call`, ...fields }
      })
      // read_only so that every retryable failure is retried: the retries must end too. Without a
      // circuit breaker: these properties ask what each answer becomes, and five failures in a row
      // would open it (test/tools/health/ tests that).
      expect((await tool('hostile', { timeout_ms: 1500, max_attempts: 2, effect: 'read_only', circuit_breaker: false })).statusCode).toBe(201)
      expect((await tool('scripted', { timeout_ms: 1500, max_attempts: 1, circuit_breaker: false })).statusCode).toBe(201)
      for (const [key, answer] of Object.entries(hostileAnswers())) raw.answers.set(key, answer)
    })
    afterAll(async () => {
      await h?.close()
      await raw?.close()
    })

    /**
     * Runs one step calling `tool` once per key; checks every call got its result; answers them by
     * key. `own`: keys whose answer is the tool's own is_error result, used as is (not ours to word).
     */
    async function step (tool: string, keys: string[], own: ReadonlySet<string> = new Set()): Promise<Map<string, { isError: boolean, text: string }>> {
      h.model.respond = callEach(() => keys)
      const firstRequest = h.model.requests.length
      const refusals = h.model.refusals.length
      const res = await h.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'call them', tools: [tool], timeout_ms: 60_000 } })
      expect(res.statusCode, res.body).toBe(200)
      const run = res.json()
      // The run went on to the model's next turn, and ended there.
      expect(run, JSON.stringify(run).slice(0, 2000)).toMatchObject({ status: 'completed', output_text: 'next turn reached', steps: 2, tool_calls: { total: keys.length } })
      expect(h.model.refusals.slice(refusals).map((r) => r.message)).toEqual([])
      const second = h.model.requests.slice(firstRequest).find((r) => turnNumber(r) === 2)!
      const results = toolResults(second)
      expect(results).toHaveLength(keys.length)
      const byKey = new Map<string, { isError: boolean, text: string }>()
      const events = await h.events(run.id)
      for (const [i, key] of keys.entries()) {
        const result = results[i]!
        const text = resultText(result)
        expect(LONE_SURROGATE.test(text), `${key}: a lone surrogate reached the model`).toBe(false)
        // An error result says which tool it is about.
        if (result.is_error === true && !own.has(key)) expect(text, key).toContain(tool)
        const completed = events.find((e) => e.type === 'tool_call.completed' && e.data.tool_use_id === result.tool_use_id)
        expect(completed?.data, key).toMatchObject({ name: tool, is_error: result.is_error === true })
        byKey.set(key, { isError: result.is_error === true, text })
      }
      return byKey
    }

    it('every hostile answer, all at once in one step, becomes the right result', async () => {
      const keys = Object.keys(EXPECTED)
      const results = await step('hostile', keys)
      const wrong: string[] = []
      for (const [key, expected] of Object.entries(EXPECTED)) {
        const got = results.get(key)!
        if (got.isError !== expected.isError || (expected.text !== undefined && !expected.text.test(got.text))) {
          wrong.push(`${key}: is_error ${String(got.isError)}, ${JSON.stringify(got.text.slice(0, 200))}`)
        }
      }
      expect(wrong).toEqual([])
      // Cut results stay within what the model may be sent.
      for (const key of ['endless', 'oversized', 'endless_chunked']) expect(results.get(key)!.text.length).toBeLessThan(h.config.TOOL_MAX_RESULT_CHARS + 200)
    })

    it('reads no more of an endless body than the cap (and what the sockets held)', async () => {
      raw.endlessBytes.length = 0
      await step('scripted', ['endless', 'endless_json', 'endless_chunked'])
      await expect.poll(() => raw.endlessBytes.length).toBe(3)
      // The cap is 64 KB; loopback socket buffers hold a few MB. Buffering the body would be unbounded.
      for (const written of raw.endlessBytes) expect(written).toBeLessThan(32 * 1024 * 1024)
    })

    it('any status from 100 to 599 but 202, with any body and content type, becomes a result naming the tool', async () => {
      const answer = fc.record({
        // A 202 is not an answer but a promise of one, posted later to result_url (SPEC §13): the call
        // then waits, which test/runs/pending-calls.test.ts covers.
        status: fc.integer({ min: 100, max: 599 }).filter((status) => status !== 202),
        type: fc.oneof(fc.constantFrom('application/json', 'text/plain', 'text/html; charset=latin1', 'image/png', 'application/problem+json', ''), fc.stringMatching(/^[a-z]{1,8}\/[a-z+.-]{1,12}$/)),
        body: fc.oneof(
          fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
          fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify(v) ?? '')),
          fc.record({ content: fc.oneof(fc.string(), fc.array(fc.record({ type: fc.constantFrom('text', 'image', 'x'), text: fc.string() }), { maxLength: 3 })), is_error: fc.oneof(fc.boolean(), fc.constant('no')) }, { requiredKeys: [] }).map((v) => Buffer.from(JSON.stringify(v))),
          fc.string({ unit: 'binary', maxLength: 100 }).map((s) => Buffer.from(s))
        ),
        extra: fc.dictionary(fc.stringMatching(/^x-[a-z]{1,10}$/), fc.stringMatching(/^[\x20-\x7e]{0,40}$/), { maxKeys: 3 })
      })
      let round = 0
      await fc.assert(fc.asyncProperty(fc.array(answer, { minLength: 1, maxLength: 4 }), async (answers) => {
        round++
        const keys = answers.map((a, i) => `p${round}_${i}`)
        for (const [i, a] of answers.entries()) {
          raw.answers.set(keys[i]!, { kind: 'bytes', data: http(a.status, { ...(a.type === '' ? {} : { 'content-type': a.type }), ...a.extra }, a.body) })
        }
        // A 2xx JSON `{ content, is_error: true }` is the tool's own error result, passed on as it is.
        const own = new Set(keys.filter((_key, i) => {
          const a = answers[i]!
          if (a.status < 200 || a.status >= 300) return false
          try {
            return JSON.parse(a.body.toString('utf8'))?.is_error === true
          } catch {
            return false
          }
        }))
        const results = await step('scripted', keys, own)
        for (const [i, a] of answers.entries()) {
          const got = results.get(keys[i]!)!
          // Only a 2xx can be a usable answer.
          if (a.status < 200 || a.status >= 300) expect(got.isError, `status ${a.status}`).toBe(true)
          // It says the status, unless the answer broke HTTP itself (a 304 with a body, say).
          if (got.isError && a.status >= 300 && !/^Tool scripted (failed|closed)/.test(got.text)) expect(got.text).toContain(String(a.status))
        }
      }), propertyOptions(25))
    })

    it('a callback receiver that answers garbage is recorded as a failed delivery, and the run still reads', async () => {
      await h.app.inject({ method: 'POST', url: '/callbacks/rotate-secret', headers: auth(TENANT_A) })
      raw.answers.set('', { kind: 'bytes', data: http(500, { 'content-type': 'text/plain' }, Buffer.from('bad\u0000news')) })
      h.model.respond = () => ({ content: [{ type: 'text', text: 'done' }] })
      const res = await h.app.inject({ method: 'POST', url: '/runs', headers: auth(TENANT_A), payload: { input: 'call back', callback_url: `${raw.url}/callback` } })
      expect(res.statusCode, res.body).toBe(200)
      const id = res.json().id as string
      await expect.poll(async () => (await h.app.inject({ method: 'GET', url: `/runs/${id}`, headers: auth(TENANT_A) })).json().callback?.status, { timeout: 10_000 }).toBe('failed')
      const run = (await h.app.inject({ method: 'GET', url: `/runs/${id}`, headers: auth(TENANT_A) })).json()
      expect(run.callback.last_error).toMatch(/^HTTP 500/)
      raw.answers.delete('')
    })

    it('stays healthy afterwards', async () => {
      expect((await h.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200)
      expect((await h.app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200)
      const results = await step('scripted', ['no_length'])
      expect(results.get('no_length')).toEqual({ isError: false, text: 'read until close' })
    })
  })
}
