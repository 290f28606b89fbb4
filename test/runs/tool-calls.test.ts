import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { LookupAddress } from 'node:dns'
import { Webhook } from 'standardwebhooks'
import { backends } from '../support/backends.js'
import { auth, TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, turnNumber, type RecordedRequest } from '../support/fake-messages-api.js'
import { freePort } from '../support/process.js'
import { VERSION } from '../../src/version.js'

/** Asks once for `name` with `input`, then ends: the run's single tool result is what we look at. */
function callOnce (name: string, input: unknown = { q: 'x' }) {
  return (request: RecordedRequest) => turnNumber(request) === 1
    ? { content: [{ type: 'tool_use' as const, name, input }] }
    : { content: [{ type: 'text' as const, text: 'ok' }] }
}

/** Runs one call of `name` and answers its tool_result and its tool_call.completed event. */
async function resultOf (h: Harness, name: string, input: unknown = { q: 'x' }) {
  h.model.respond = callOnce(name, input)
  const { body } = await h.startRun({ input: 'go', tools: [name] })
  expect(body.status, JSON.stringify(body.error)).toBe('completed')
  const last = h.model.requests[h.model.requests.length - 1]!
  const [result] = toolResults(last)
  const events = await h.events(body.id)
  const completed = events.find((e) => e.type === 'tool_call.completed')!
  return { result: result!, text: resultText(result!), completed, events, run: body }
}

// A resolver the tests control: names resolve to what the test says, and nothing leaves 127.0.0.1.
const dns = new Map<string, string>()
// Names set to 'held' are looked up only when the test lets them go: a connection still being made.
const held: Array<() => void> = []
const resolver = (hostname: string, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void): void => {
  const address = dns.get(hostname)
  if (address === 'held') {
    held.push(() => callback(null, [{ address: '127.0.0.1', family: 4 }]))
    return
  }
  if (address === undefined) {
    callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), [])
    return
  }
  callback(null, [{ address, family: address.includes(':') ? 6 : 4 }])
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`tool calls: ${backend.name}`, () => {
    let h: Harness
    beforeAll(async () => {
      h = await startHarness(backend, { env: { TOOL_MAX_RESPONSE_BYTES: '4096', TOOL_MAX_RESULT_CHARS: '200' }, resolver })
    })
    afterAll(async () => h?.close())
    beforeEach(() => {
      h.tools.calls.length = 0
      h.model.refusals.length = 0
    })

    describe('every failure becomes an is_error result naming the tool and the failure; the run goes on', () => {
      it('a non-2xx answer: the status and the start of the body', async () => {
        await h.registerTool('broken', '/status/502')
        const { result, text, completed } = await resultOf(h, 'broken')
        expect(result.is_error).toBe(true)
        expect(text).toBe('HTTP 502 from broken: upstream said no (status 502)')
        expect(completed.data).toMatchObject({ is_error: true, status: 502, attempts: 1, outcome: 'error' })
      })

      it('no answer within timeout_ms', async () => {
        await h.registerTool('sleepy', '/hang', { timeout_ms: 300, max_attempts: 1 })
        const { text, completed } = await resultOf(h, 'sleepy')
        expect(text).toBe('Tool sleepy timed out after 300 ms')
        expect(completed.data).toMatchObject({ outcome: 'timeout', status: null })
        // The connection was closed, not left open.
        await expect.poll(() => h.tools.callsTo('/hang').every((c) => c.aborted)).toBe(true)
      })

      it('no connection within timeout_ms: a timeout then, not when the connection is made', async () => {
        dns.set('held.test', '127.0.0.1')
        const port = new URL(h.tools.url).port
        await h.registerTool('unconnected', '/ok', { url: `http://held.test:${port}/ok`, timeout_ms: 300, max_attempts: 1 })
        dns.set('held.test', 'held')
        const { text, completed } = await resultOf(h, 'unconnected')
        expect(text).toBe('Tool unconnected timed out after 300 ms')
        expect(completed.data).toMatchObject({ outcome: 'timeout', status: null })
        // The run went on while the connection was still waiting for its address.
        expect(held).toHaveLength(1)
        held.splice(0).forEach((release) => release())
        // Connected at last, the abandoned request is dropped before it is sent.
        await new Promise((resolve) => setTimeout(resolve, 200))
        expect(h.tools.callsTo('/ok')).toHaveLength(0)
      })

      it('a body that drips slower than timeout_ms', async () => {
        await h.registerTool('dripping', '/drip/50', { timeout_ms: 300, max_attempts: 1 })
        const { text } = await resultOf(h, 'dripping')
        expect(text).toBe('Tool dripping timed out after 300 ms')
      })

      it('connection refused, retried for every tool because nothing was sent', async () => {
        const port = await freePort()
        await h.registerTool('nobody_home', '/ok', { url: `http://127.0.0.1:${port}/hook`, max_attempts: 2 })
        const { text, completed } = await resultOf(h, 'nobody_home')
        expect(text).toBe('Tool nobody_home could not be reached: connection refused')
        expect(completed.data).toMatchObject({ attempts: 2, outcome: 'unreachable' })
      })

      it('a connection reset without an answer', async () => {
        await h.registerTool('resetting', '/reset', { max_attempts: 1 })
        const { text } = await resultOf(h, 'resetting')
        expect(text).toBe('Tool resetting closed the connection before answering (connection reset)')
      })

      it('a DNS failure', async () => {
        await h.registerTool('nowhere', '/ok', { url: 'http://no-such-host.test:8080/hook', max_attempts: 1 })
        const { text } = await resultOf(h, 'nowhere')
        expect(text).toBe('Tool nowhere could not be reached: DNS lookup of no-such-host.test:8080 failed (ENOTFOUND)')
      })

      it('a text body over TOOL_MAX_RESPONSE_BYTES: cut there, and given to the model with a note', async () => {
        await h.registerTool('huge', '/oversized/10000000')
        const { result, text } = await resultOf(h, 'huge')
        expect(result.is_error).toBeUndefined()
        expect(text).toBe(`${'x'.repeat(200)}\n[3,896 more characters left out: a tool result is cut at 200 characters]\n[the response was longer than 4096 bytes (TOOL_MAX_RESPONSE_BYTES) and was cut there]`)
        // It stopped reading: ten megabytes were not downloaded.
        await expect.poll(() => h.tools.callsTo('/oversized/10000000')[0]?.end).not.toBeNull()
      })

      it('a JSON body over TOOL_MAX_RESPONSE_BYTES: cut, it does not parse, so it is an error', async () => {
        await h.registerTool('huge_json', '/huge-json')
        h.tools.on('/huge-json', (_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ content: 'z'.repeat(20_000) })) })
        const { result, text } = await resultOf(h, 'huge_json')
        expect(result.is_error).toBe(true)
        expect(text).toMatch(/^huge_json answered more than 4096 bytes \(TOOL_MAX_RESPONSE_BYTES\); the response was cut there and, being application\/json, could not be used\. It began: \{"content":"zzz/)
      })

      it('invalid JSON from a tool that said it was JSON', async () => {
        await h.registerTool('garbled', '/malformed')
        const { text } = await resultOf(h, 'garbled')
        expect(text).toMatch(/^garbled answered invalid JSON \(content-type application\/json\): /)
      })

      it('a redirect, which is not followed', async () => {
        await h.registerTool('moved', '/redirect')
        const { text } = await resultOf(h, 'moved')
        expect(text).toBe('HTTP 302 from moved: redirects are not followed (Location: /ok); register the final URL instead')
        expect(h.tools.callsTo('/ok')).toHaveLength(0)
      })

      it('an input that fails the tool\'s schema: not dispatched, the path and the rule named', async () => {
        await h.registerTool('strict', '/ok', { input_schema: { type: 'object', properties: { location: { type: 'string' }, days: { type: 'integer', maximum: 7 } }, required: ['location'] } })
        const { text, completed } = await resultOf(h, 'strict', { location: 42, days: 9 })
        expect(text).toBe('Tool strict was not called: invalid input: input.location: must be string; input.days: must be <= 7')
        expect(completed.data).toMatchObject({ attempts: 0, outcome: 'refused' })
        expect(h.tools.calls).toHaveLength(0)
      })

      it('a text/plain answer, an empty one, a JSON array, blocks, an image, and a tool\'s own error', async () => {
        await h.registerTool('texty', '/text')
        expect((await resultOf(h, 'texty')).text).toBe('plain text for texty')
        await h.registerTool('silent', '/empty')
        const empty = await resultOf(h, 'silent')
        // With the cache breakpoint Switchboard puts on the last block of each request (SPEC §15).
        expect(empty.result).toEqual({ type: 'tool_result', tool_use_id: empty.result.tool_use_id, content: '', cache_control: { type: 'ephemeral' } })
        await h.registerTool('listy', '/json-array')
        expect((await resultOf(h, 'listy')).text).toBe('[1,2,3]')
        await h.registerTool('blocky', '/blocks')
        expect((await resultOf(h, 'blocky')).result.content).toEqual([{ type: 'text', text: 'first' }, { type: 'text', text: 'second' }])
        await h.registerTool('pictures', '/image')
        expect((await resultOf(h, 'pictures')).result.content).toEqual([{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: expect.any(String) } }])
        await h.registerTool('unsure', '/error-result')
        const own = await resultOf(h, 'unsure')
        expect(own.result).toMatchObject({ is_error: true, content: 'the city is unknown' })
        expect(h.model.refusals).toEqual([])
      })

      it('a long result, cut at TOOL_MAX_RESULT_CHARS with a note', async () => {
        await h.registerTool('wordy', '/long')
        h.tools.on('/long', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }).end('y'.repeat(1000)) })
        const { text } = await resultOf(h, 'wordy')
        expect(text).toBe(`${'y'.repeat(200)}\n[800 more characters left out: a tool result is cut at 200 characters]`)
      })

      it('never hands the model half an emoji: cut results and a tool\'s own broken escapes are made well-formed', async () => {
        await h.registerTool('emoji', '/emoji')
        // 199 letters then an emoji: the cut at 200 characters falls in the middle of its pair.
        h.tools.on('/emoji', (_req, res) => { res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('a'.repeat(199) + '😀'.repeat(10)) })
        const cut = await resultOf(h, 'emoji')
        expect(cut.text.startsWith('a'.repeat(199) + '\n[')).toBe(true)
        await h.registerTool('broken_escape', '/broken-escape')
        h.tools.on('/broken-escape', (_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }).end('{"content": "half \\ud83d of a smile"}') })
        const escaped = await resultOf(h, 'broken_escape')
        expect(escaped.text).toBe('half \uFFFD of a smile')
        // The strict fake refuses any request holding half a pair, as the real API does.
        expect(h.model.refusals).toEqual([])
      })

      it('one bad tool never sinks the step: the others\' results arrive beside its error', async () => {
        await h.registerTool('good', '/ok')
        await h.registerTool('bad', '/status/500')
        h.model.respond = (request) => turnNumber(request) === 1
          ? { content: [{ type: 'tool_use', name: 'good', input: { q: '1' } }, { type: 'tool_use', name: 'bad', input: { q: '2' } }, { type: 'tool_use', name: 'good', input: { q: '3' } }] }
          : { content: [{ type: 'text', text: 'coped' }] }
        const { body } = await h.startRun({ input: 'go', tools: ['good', 'bad'] })
        expect(body).toMatchObject({ status: 'completed', output_text: 'coped', tool_calls: { total: 3, errors: 1 } })
        const results = toolResults(h.model.requests[h.model.requests.length - 1]!)
        expect(results.map((r) => r.is_error === true)).toEqual([false, true, false])
      })
    })

    describe('retries (SPEC §6)', () => {
      it('retries a read_only tool on 503 with the same idempotency key, and only the last outcome reaches the model', async () => {
        await h.registerTool('reader', '/flaky/2/503', { effect: 'read_only', max_attempts: 3 })
        const { text, completed, events } = await resultOf(h, 'reader')
        expect(text).toBe('ok reader {"q":"x"}')
        expect(completed.data).toMatchObject({ is_error: false, attempts: 3, status: 200 })
        const calls = h.tools.callsTo('/flaky/2/503')
        expect(calls.map((c) => c.body.attempt)).toEqual([1, 2, 3])
        expect(new Set(calls.map((c) => c.headers['idempotency-key'])).size).toBe(1)
        expect(events.filter((e) => e.type === 'tool_call.started').map((e) => e.data.attempt)).toEqual([1, 2, 3])
        const retrying = events.filter((e) => e.type === 'tool_call.retrying')
        expect(retrying.map((e) => e.data.status)).toEqual([503, 503])
        expect(retrying[0]!.data.error).toBe('HTTP 503 from reader: failure 1')
      })

      it('does not retry a side_effecting tool after the request was sent', async () => {
        await h.registerTool('writer', '/flaky/1/503', { effect: 'side_effecting', max_attempts: 3 })
        const { text, completed } = await resultOf(h, 'writer')
        expect(text).toBe('HTTP 503 from writer: failure 1')
        expect(completed.data.attempts).toBe(1)
      })

      it('retries a timeout for an idempotent tool', async () => {
        let seen = 0
        h.tools.on('/slow-once', (_req, res) => {
          if (++seen === 1) return // first attempt never answers
          res.writeHead(200, { 'content-type': 'text/plain' }).end('second time lucky')
        })
        await h.registerTool('idem', '/slow-once', { effect: 'idempotent', timeout_ms: 200 })
        const { text, completed } = await resultOf(h, 'idem')
        expect(text).toBe('second time lucky')
        expect(completed.data.attempts).toBe(2)
      })

      it('honours Retry-After', async () => {
        await h.registerTool('patient', '/retry-after/1', { effect: 'read_only' })
        const { text, events } = await resultOf(h, 'patient')
        expect(text).toBe('ok patient {"q":"x"}')
        expect(events.find((e) => e.type === 'tool_call.retrying')!.data.retry_in_ms).toBe(1000)
      })

      it('does not retry a client error', async () => {
        await h.registerTool('picky', '/status/422', { effect: 'read_only' })
        const { completed } = await resultOf(h, 'picky')
        expect(completed.data.attempts).toBe(1)
      })
    })

    describe('what a tool sees (SPEC §6)', () => {
      it('a signed POST with the run, the call, the input, the attempt, its deadline and the metadata', async () => {
        const created = await h.registerTool('inspect', '/ok', { headers: { Authorization: 'Bearer tool-own-token' }, timeout_ms: 5000 })
        h.model.respond = callOnce('inspect', { q: 'hello' })
        const { body: run } = await h.startRun({ input: 'go', tools: ['inspect'], metadata: { customer: 'c-9' } })
        const [call] = h.tools.callsTo('/ok')
        const toolUseId = call!.body.tool_use_id
        expect(call!.body).toEqual({
          run_id: run.id, tool_use_id: toolUseId, tool: 'inspect', input: { q: 'hello' }, attempt: 1, deadline: expect.any(String), metadata: { customer: 'c-9' }, result_url: `http://localhost:80/runs/${String(run.id)}/tool_calls/${String(toolUseId)}/result`
        })
        const deadline = Date.parse(call!.body.deadline)
        expect(deadline - Date.parse(run.created_at)).toBeGreaterThan(0)
        expect(deadline - Date.parse(run.created_at)).toBeLessThanOrEqual(5000 + 2000)
        const headers = call!.headers
        expect(headers['content-type']).toBe('application/json')
        expect(headers.authorization).toBe('Bearer tool-own-token')
        expect(headers['idempotency-key']).toBe(`${run.id}:${toolUseId}`)
        expect(headers['webhook-id']).toBe(`${run.id}:${toolUseId}`)
        expect(headers['user-agent']).toBe(`switchboard/${VERSION}`)
        expect(headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
        // Any Standard Webhooks library verifies it with the tool's secret.
        expect(new Webhook(created.signing_secret).verify(call!.raw, headers as Record<string, string>)).toEqual(call!.body)
        expect(() => new Webhook('whsec_' + Buffer.alloc(32, 1).toString('base64')).verify(call!.raw, headers as Record<string, string>)).toThrow()
      })

      it('signs with both secrets during a rotation, so a tool holding either verifies', async () => {
        const created = await h.registerTool('rotated', '/ok')
        const rotated = (await h.app.inject({ method: 'POST', url: '/tools/rotated/rotate-secret', headers: auth(TENANT_A) })).json()
        h.model.respond = callOnce('rotated')
        await h.startRun({ input: 'go', tools: ['rotated'] })
        const [call] = h.tools.callsTo('/ok')
        expect(String(call!.headers['webhook-signature']).split(' ')).toHaveLength(2)
        for (const secret of [created.signing_secret, rotated.signing_secret]) {
          expect(() => new Webhook(secret).verify(call!.raw, call!.headers as Record<string, string>)).not.toThrow()
        }
      })

      it('one trace per run: every call carries the run\'s trace id in its own span', async () => {
        await h.registerTool('traced', '/ok')
        h.model.respond = (request) => turnNumber(request) === 1
          ? { content: [{ type: 'tool_use', name: 'traced', input: { q: '1' } }, { type: 'tool_use', name: 'traced', input: { q: '2' } }] }
          : { content: [{ type: 'text', text: 'ok' }] }
        await h.startRun({ input: 'go', tools: ['traced'] })
        const parents = h.tools.callsTo('/ok').map((c) => String(c.headers.traceparent).split('-'))
        expect(parents[0]![1]).toBe(parents[1]![1])
        expect(parents[0]![2]).not.toBe(parents[1]![2])
      })
    })

    describe('the egress policy, on the address actually connected to', () => {
      it('refuses a call to a name that resolved to a public address when registered and to a refused one now', async () => {
        dns.set('rebinding.test', '93.184.215.14')
        await h.registerTool('rebinder', '/ok', { url: `http://rebinding.test:${new URL(h.tools.url).port}/ok`, max_attempts: 1 })
        dns.set('rebinding.test', '169.254.169.254')
        const { text, completed } = await resultOf(h, 'rebinder')
        expect(text).toBe('Tool rebinder was not called: rebinding.test resolves to an address that is not allowed by the egress policy: it is a cloud metadata or link-local address, which is always refused')
        expect(text).not.toContain('169.254')
        expect(completed.data).toMatchObject({ outcome: 'refused', attempts: 1 })
        expect(h.tools.calls).toHaveLength(0)
      })

      it('connects to a name that resolves to an allowed address', async () => {
        dns.set('tools.internal.test', '127.0.0.1')
        await h.registerTool('named', '/ok', { url: `http://tools.internal.test:${new URL(h.tools.url).port}/ok` })
        const { text } = await resultOf(h, 'named')
        expect(text).toBe('ok named {"q":"x"}')
      })
    })
  })
}

describe('the egress policy changed after registration', () => {
  it('refuses, at call time, a stored URL the policy no longer allows, without connecting', async () => {
    const backend = backends[0]!
    const location = await backend.location()
    const first = await startHarness(backend, { env: { DATA_DIR: location.dataDir } })
    try {
      await first.registerTool('was_fine', '/ok', { max_attempts: 1 })
    } finally {
      await first.close()
    }
    // Same data, but loopback is no longer allowed.
    const second = await startHarness(backend, { env: { DATA_DIR: location.dataDir, TOOL_EGRESS_ALLOW: '' } })
    try {
      second.model.respond = callOnce('was_fine')
      const { body } = await second.startRun({ input: 'go', tools: ['was_fine'] })
      expect(body.status).toBe('completed')
      const [result] = toolResults(second.model.requests[second.model.requests.length - 1]!)
      expect(resultText(result!)).toMatch(/^Tool was_fine was not called: address 127\.0\.0\.1 is not allowed by the egress policy/)
      expect(second.tools.calls).toHaveLength(0)
    } finally {
      await second.close()
      await location.destroy()
    }
  })
})
