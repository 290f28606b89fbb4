import { gzipSync } from 'node:zlib'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ModelCallError, ModelClient, requestBody, streamContentLimit } from '../../src/model/model-client.js'
import { MAX_ERROR_BODY_BYTES } from '../../src/model/undici-fetch.js'
import { Redactor } from '../../src/lib/redact.js'
import { startFakeMessagesApi, type FakeMessagesApi, type Turn } from '../support/fake-messages-api.js'

// The model client reads answers through its own fetch over undici (src/model/undici-fetch.ts):
// these are the parts of a fetch the SDK relies on that the scripted turns elsewhere never reach.

const request = { model: 'claude-test', max_tokens: 64, messages: [{ role: 'user' as const, content: 'hi' }] }

/** The SSE of a message saying `text`, as the API streams it. */
function sse (text: string): string {
  const events: Array<[string, unknown]> = [
    ['message_start', { type: 'message_start', message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-test', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 3, output_tokens: 0 } } }],
    ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
    ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }],
    ['content_block_stop', { type: 'content_block_stop', index: 0 }],
    ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 2 } }],
    ['message_stop', { type: 'message_stop' }]
  ]
  return events.map(([event, data]) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`).join('')
}

describe('model client', () => {
  let api: FakeMessagesApi
  let client: ModelClient

  beforeAll(async () => {
    api = await startFakeMessagesApi()
    client = new ModelClient({ apiKey: 'test-key', baseURL: api.url, idleTimeoutMs: 2000 })
  })
  afterAll(async () => {
    await client.close()
    await api.close()
  })

  it('sends the request as the API wants it, and streams the answer', async () => {
    api.respond = () => ({ content: [{ type: 'text', text: 'hello there' }] })
    const texts: string[] = []
    const message = await client.stream(request, { onText: (t) => texts.push(t), onToolUse: () => {} }, new AbortController().signal)
    expect(message.content).toMatchObject([{ type: 'text', text: 'hello there' }])
    expect(texts.join('')).toBe('hello there')
    const sent = api.requests.at(-1)!
    // The key, in whichever header this SDK version sends it.
    expect([sent.headers['x-api-key'], sent.headers.authorization]).toContainEqual(expect.stringContaining('test-key'))
    expect(sent.headers['anthropic-version']).toBeDefined()
    expect(sent.body).toMatchObject({ ...request, stream: true })
    expect(api.refusals).toEqual([])
  })

  it('sends the messages as JSON, exactly as they would be serialized', async () => {
    api.respond = () => ({ content: [{ type: 'text', text: 'ok' }] })
    const messages = [
      { role: 'user' as const, content: 'a "quoted" \\ line\nand 🎉' },
      { role: 'assistant' as const, content: [{ type: 'tool_use' as const, id: 'toolu_1', name: 'lookup', input: { q: 'x', n: [1, null] } }] },
      { role: 'user' as const, content: [{ type: 'tool_result' as const, tool_use_id: 'toolu_1', content: '{}', is_error: true }] }
    ]
    const full = { ...request, system: 'be brief', tools: [{ name: 'lookup', description: 'Looks up', input_schema: { type: 'object' as const } }], messages }
    await client.stream(full, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal)
    expect(api.requests.at(-1)!.body).toEqual({ ...full, stream: true })
    expect(api.refusals).toEqual([])
    // The body is the request's JSON, the second time (each message's text kept) as the first.
    expect(JSON.parse(requestBody(full))).toEqual({ ...full, stream: true })
    expect(JSON.parse(requestBody(full))).toEqual({ ...full, stream: true })
    expect(JSON.parse(requestBody({ ...full, messages: [] }))).toEqual({ ...full, messages: [], stream: true })
  })

  it('reads an answer compressed although nothing asked for it', async () => {
    api.respond = () => ({ kind: 'raw', headers: { 'content-encoding': 'gzip' }, chunks: [gzipSync(sse('from a gzip stream'))] })
    const message = await client.stream(request, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal)
    expect(message.content).toMatchObject([{ type: 'text', text: 'from a gzip stream' }])
  })

  it('reads a compressed error answer, with its status, message and retry-after', async () => {
    const body = JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded right now' } })
    api.respond = () => ({ kind: 'raw', status: 529, headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', 'retry-after': '3' }, chunks: [gzipSync(body)] })
    const err = await client.stream(request, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ModelCallError)
    expect(err).toMatchObject({ status: 529, retryable: true, retryAfterMs: 3000, code: 'MODEL_ERR_UNAVAILABLE' })
    expect((err as Error).message).toBe('the Messages API answered 529 overloaded_error: Overloaded right now')
  })

  it('reads an error answer only up to its cap: one whose body never ends fails at once, with a short message', async () => {
    // A gateway (ANTHROPIC_BASE_URL) that answers 529 and then sends without end. Read whole, the
    // call would only end at the idle timeout, holding everything sent until then.
    const patient = new ModelClient({ apiKey: 'test-key', baseURL: api.url, idleTimeoutMs: 60_000 })
    try {
      api.respond = () => ({
        kind: 'raw',
        status: 529,
        headers: { 'content-type': 'application/json' },
        chunks: ['{"type":"error","error":{"type":"overloaded_error","message":"'],
        forever: 'x'.repeat(64 * 1024),
        chunkDelayMs: 1
      })
      const started = performance.now()
      const err = await patient.stream(request, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal).catch((e: unknown) => e)
      const elapsed = performance.now() - started
      expect(err).toBeInstanceOf(ModelCallError)
      expect(err).toMatchObject({ status: 529, retryable: true, code: 'MODEL_ERR_UNAVAILABLE' })
      const message = (err as Error).message
      expect(message).toMatch(/^the Messages API answered 529: 529 \{"type":"error","error":\{"type":"overloaded_error","message":"x+… \[\d+ more characters\]$/)
      expect(message.length).toBeLessThan(1000)
      // The cut body, not the idle timeout (60 s), ended the call.
      expect(elapsed).toBeLessThan(10_000)
      // And it was dropped with its connection: the server saw its client go.
      const index = api.requests.at(-1)!.index
      await expect.poll(() => api.aborted.includes(index)).toBe(true)
    } finally {
      await patient.close()
    }
  })

  it('cuts a huge error page, and a compressed one, at the cap: the message quotes its start', async () => {
    const page = `<html><body><h1>502 Bad Gateway</h1>${'<p>upstream said nothing</p>'.repeat(300_000)}</body></html>`
    expect(page.length).toBeGreaterThan(8 * 1024 * 1024)
    api.respond = () => ({ kind: 'raw', status: 502, headers: { 'content-type': 'text/html' }, chunks: [page] })
    const err = await client.stream(request, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal).catch((e: unknown) => e)
    expect(err).toMatchObject({ status: 502, retryable: true, code: 'MODEL_ERR_UNAVAILABLE' })
    const message = (err as Error).message
    expect(message.startsWith('the Messages API answered 502: 502 <html><body><h1>502 Bad Gateway</h1><p>upstream said nothing</p>')).toBe(true)
    expect(message.length).toBeLessThan(1000)
    // What the message says is left out is what was read past its 500 characters: the cap's worth,
    // not the page's 8 MiB.
    const leftOut = Number(/\[(\d+) more characters\]$/.exec(message)![1])
    expect(leftOut).toBeLessThanOrEqual(MAX_ERROR_BODY_BYTES)
    expect(leftOut).toBeGreaterThan(MAX_ERROR_BODY_BYTES - 1000)

    // 64 MiB that compress to a few dozen KiB: the cap counts what decompression gives.
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024, 'a'))
    expect(bomb.length).toBeLessThan(MAX_ERROR_BODY_BYTES)
    api.respond = () => ({ kind: 'raw', status: 500, headers: { 'content-type': 'text/plain', 'content-encoding': 'gzip' }, chunks: [bomb] })
    const bombed = await client.stream(request, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal).catch((e: unknown) => e)
    expect(bombed).toMatchObject({ status: 500, retryable: true })
    expect(Number(/\[(\d+) more characters\]$/.exec((bombed as Error).message)![1])).toBeLessThanOrEqual(MAX_ERROR_BODY_BYTES)
  })

  it('quotes at most 500 characters of a long error event in a stream', async () => {
    const detail = 'overloaded '.repeat(10_000)
    api.respond = () => ({ kind: 'raw', chunks: [`event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: detail } })}\n\n`] })
    const err = await client.stream(request, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal).catch((e: unknown) => e)
    expect(err).toMatchObject({ retryable: true, code: 'MODEL_ERR_UNAVAILABLE' })
    expect((err as Error).message).toBe(`the Messages API stream failed (overloaded_error): ${detail.slice(0, 500)}… [${detail.length - 500} more characters]`)
  })

  it('an endpoint that echoes the key it was sent: the error quotes it redacted, even where the quote is cut', async () => {
    const key = 'sk-ant-echoed-key-5e0a91c7d3'
    const redacting = new ModelClient({ apiKey: key, baseURL: api.url, idleTimeoutMs: 2000, redactor: new Redactor([key]) })
    try {
      const sent = (request: { headers: Record<string, unknown> }): string => `${String(request.headers['x-api-key'] ?? request.headers.authorization)}`
      const answers: Array<(r: { headers: Record<string, unknown> }) => Turn> = [
        (r) => ({ kind: 'error', status: 401, type: 'authentication_error', message: `invalid key ${sent(r)}` }),
        (r) => ({ kind: 'error', status: 400, type: 'invalid_request_error', message: `${'x'.repeat(480)}${sent(r)}` }),
        (r) => ({ kind: 'raw', status: 502, headers: { 'content-type': 'text/plain' }, chunks: [`gateway: you sent ${sent(r)}`] }),
        (r) => ({ kind: 'raw', chunks: [`event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: `busy ${sent(r)}` } })}\n\n`] })
      ]
      for (const answer of answers) {
        api.respond = answer
        const err = await redacting.stream(request, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal).catch((e: unknown) => e)
        expect(err).toBeInstanceOf(ModelCallError)
        expect(sent(api.requests.at(-1)!)).toContain(key)
        const { message, stack } = err as Error
        expect(message).toContain('[redacted]')
        // Not even its start, where the quote is cut at 500 characters.
        expect(`${message}\n${stack}`).not.toContain(key.slice(0, 12))
      }
    } finally {
      await redacting.close()
    }
  })

  it('a stream that sends more than max_tokens can produce is abandoned as broken, not read until the deadline', async () => {
    // A server of the test's own, streaming text without end as fast as it is read, counting what
    // it sent: 16 Ki characters a delta, up to 256 MiB.
    const start = sse('').split('event: content_block_delta')[0]!
    const chunk = `event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'x'.repeat(16 * 1024) } })}\n\n`
    let sent = 0
    let closed = false
    const server = createServer((req, res) => {
      req.resume()
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write(start)
      res.on('close', () => { closed = true })
      const pump = (): void => {
        while (!res.destroyed && sent < 256 * 1024 * 1024) {
          sent += chunk.length
          if (!res.write(chunk)) {
            res.once('drain', pump)
            return
          }
        }
        res.end()
      }
      pump()
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const endless = new ModelClient({ apiKey: 'test-key', baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, idleTimeoutMs: 60_000 })
    try {
      const small = { ...request, max_tokens: 100 }
      let streamed = 0
      const err = await endless.stream(small, { onText: (t) => { streamed += t.length }, onToolUse: () => {} }, new AbortController().signal).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ModelCallError)
      expect(err).toMatchObject({ retryable: true, code: 'MODEL_ERR_UNAVAILABLE' })
      const limit = streamContentLimit(small)
      expect((err as Error).message).toBe(`the Messages API stream sent more than ${limit} characters of content, more than max_tokens 100 can produce: the stream is broken`)
      // Abandoned at the limit: what was taken in is the limit and a delta; what was sent, what
      // the sockets' buffers held besides (about 4 MiB here), far from the 256 MiB the server had
      // to send; and the connection was closed.
      expect(streamed).toBeLessThanOrEqual(limit + 16 * 1024)
      expect(sent).toBeLessThan(32 * 1024 * 1024)
      await expect.poll(() => closed).toBe(true)
    } finally {
      await endless.close()
      await new Promise((resolve) => server.close(resolve))
    }
  })

  it('the limit leaves room for any real answer: max_tokens at 64 characters a token, and thinking\'s budget on top', async () => {
    expect(streamContentLimit({ max_tokens: 100 })).toBe(100 * 64 + 256 * 1024)
    expect(streamContentLimit({ max_tokens: 1000, thinking: { type: 'enabled', budget_tokens: 2000 } })).toBe(3000 * 64 + 256 * 1024)
    // An answer of max_tokens 1 far longer than a token is still taken, up to the allowance.
    const text = 'y'.repeat(200_000)
    api.respond = () => ({ kind: 'raw', chunks: [sse(text)] })
    const message = await client.stream({ ...request, max_tokens: 1 }, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal)
    expect(message.content).toMatchObject([{ type: 'text', text }])
  })

  it('refuses an encoding it cannot read as a failed call worth retrying, not a crash', async () => {
    api.respond = () => ({ kind: 'raw', headers: { 'content-encoding': 'zstd' }, chunks: ['not really zstd'] })
    const err = await client.stream(request, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ModelCallError)
    expect(err).toMatchObject({ retryable: true })
    expect((err as Error).message).toContain('zstd')
  })

  it('a stop mid-stream rejects with its reason and closes the connection', async () => {
    api.respond = () => ({ content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }], stallAfterBlocks: 1 })
    const controller = new AbortController()
    const reason = new Error('the run was cancelled')
    const streaming = client.stream(request, { onText: () => controller.abort(reason), onToolUse: () => {} }, controller.signal)
    await expect(streaming).rejects.toBe(reason)
    const index = api.requests.at(-1)!.index
    await expect.poll(() => api.aborted.includes(index)).toBe(true)
  })

  it('a stream that goes silent is abandoned after the idle timeout, as retryable', async () => {
    const quick = new ModelClient({ apiKey: 'test-key', baseURL: api.url, idleTimeoutMs: 200 })
    try {
      api.respond = () => ({ content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }], stallAfterBlocks: 1 })
      const err = await quick.stream(request, { onText: () => {}, onToolUse: () => {} }, new AbortController().signal).catch((e: unknown) => e)
      expect(err).toMatchObject({ retryable: true, code: 'MODEL_ERR_UNAVAILABLE' })
      expect((err as Error).message).toContain('sent nothing for 200 ms')
      const index = api.requests.at(-1)!.index
      await expect.poll(() => api.aborted.includes(index)).toBe(true)
    } finally {
      await quick.close()
    }
  })
})
