import { afterEach, describe, expect, it, vi } from 'vitest'
import { outcomeFromResponse } from '../../../src/tools/webhook/webhook-response.js'

const limits = { maxResultChars: 10_000 }
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff])

function respond (status: number, headers: Record<string, string | string[] | undefined>, body: string | Buffer, maxResultChars = limits.maxResultChars) {
  return outcomeFromResponse('weather', status, headers, typeof body === 'string' ? Buffer.from(body, 'utf8') : body, { maxResultChars })
}

function json (value: unknown, status = 200, maxResultChars?: number) {
  return respond(status, { 'content-type': 'application/json' }, JSON.stringify(value), maxResultChars)
}

const image = { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } } as const
const urlImage = { type: 'image', source: { type: 'url', url: 'https://example.com/a.png' } } as const

describe('outcomeFromResponse: 2xx JSON', () => {
  it('takes a JSON object with a string content as the result', () => {
    expect(json({ content: 'sunny, 21°C' })).toEqual({ kind: 'ok', isError: false, content: 'sunny, 21°C', status: 200, retry: 'no' })
  })

  it('takes a content array of text and image blocks as is', () => {
    const content = [{ type: 'text', text: 'here is the map' }, image, urlImage, { type: 'text', text: 'and the legend' }]
    const outcome = json({ content }, 201)
    expect(outcome).toEqual({ kind: 'ok', isError: false, content, status: 201, retry: 'no' })
  })

  it('marks the result as an error when the tool says is_error: true', () => {
    expect(json({ content: 'city not found', is_error: true })).toEqual({ kind: 'error', isError: true, content: 'city not found', status: 200, retry: 'no' })
    expect(json({ content: [{ type: 'text', text: 'bad' }], is_error: true })).toMatchObject({ kind: 'error', isError: true, content: [{ type: 'text', text: 'bad' }] })
  })

  it('is_error: false is an ordinary result', () => {
    expect(json({ content: 'fine', is_error: false })).toMatchObject({ kind: 'ok', isError: false, content: 'fine' })
  })

  it('gives any other JSON as its JSON text', () => {
    expect(json([1, 2, { a: 'b' }])).toEqual({ kind: 'ok', isError: false, content: '[1,2,{"a":"b"}]', status: 200, retry: 'no' })
    expect(json({ temperature: 21, unit: 'C' }).content).toBe('{"temperature":21,"unit":"C"}')
    expect(json('just a string').content).toBe('"just a string"')
    expect(json(42).content).toBe('42')
    expect(json(null).content).toBe('null')
    // Re-serialized: whitespace in the tool's body is not kept.
    expect(respond(200, { 'content-type': 'application/json' }, '{ "a" :  1 }').content).toBe('{"a":1}')
  })

  it('gives an object whose content is not a valid result as its JSON text', () => {
    const badBlock = { content: [{ type: 'text', text: 'ok' }, { type: 'video', url: 'x' }] }
    expect(json(badBlock)).toEqual({ kind: 'ok', isError: false, content: JSON.stringify(badBlock), status: 200, retry: 'no' })
    const textNotString = { content: [{ type: 'text', text: 3 }] }
    expect(json(textNotString).content).toBe(JSON.stringify(textNotString))
    const badMediaType = { content: [{ type: 'image', source: { type: 'base64', media_type: 'image/bmp', data: 'AA==' } }] }
    expect(json(badMediaType).content).toBe(JSON.stringify(badMediaType))
    const notHttp = { content: [{ type: 'image', source: { type: 'url', url: 'file:///etc/passwd' } }] }
    expect(json(notHttp).content).toBe(JSON.stringify(notHttp))
    const noData = { content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: '' } }] }
    expect(json(noData).content).toBe(JSON.stringify(noData))
    const numberContent = { content: 5 }
    expect(json(numberContent).content).toBe('{"content":5}')
    // is_error that is not a boolean: not the tool's own result shape either.
    const stringIsError = { content: 'x', is_error: 'yes' }
    expect(json(stringIsError)).toMatchObject({ kind: 'ok', isError: false, content: JSON.stringify(stringIsError) })
  })

  it('drops empty text blocks from a tool\'s own content, and an all-empty list is an empty result', () => {
    expect(json({ content: [{ type: 'text', text: '' }, { type: 'text', text: 'x' }, image, { type: 'text', text: '' }] }).content)
      .toEqual([{ type: 'text', text: 'x' }, image])
    expect(json({ content: [{ type: 'text', text: '' }, { type: 'text', text: '' }] })).toEqual({ kind: 'ok', isError: false, content: '', status: 200, retry: 'no' })
    expect(json({ content: [] }).content).toBe('')
    expect(json({ content: [{ type: 'text', text: ' \n' }, image] }).content).toEqual([image])
  })

  it('gives a tool\'s is_error result that says nothing a text naming the tool (the API refuses an empty one)', () => {
    for (const content of ['', ' ', [], [{ type: 'text', text: '' }]]) {
      expect(json({ content, is_error: true }), JSON.stringify(content)).toEqual({ kind: 'error', isError: true, content: 'Tool weather failed without a message.', status: 200, retry: 'no' })
    }
  })

  it('keeps only the fields the Messages API takes in a tool result\'s blocks: cache_control, citations and the unknown are dropped', () => {
    const content = [
      { type: 'text', text: 'a', cache_control: { type: 'ephemeral' } },
      { type: 'text', text: 'b', cache_control: { type: 'forever', ttl: 7 } },
      { type: 'text', text: 'c', citations: [{ type: 'char_location', cited_text: 'x' }], x_trace: 'abc' },
      { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=', note: 'mine' }, cache_control: { type: 'ephemeral' }, alt: 'a map' },
      { type: 'image', source: { type: 'url', url: 'https://example.com/a.png', width: 3 } }
    ]
    expect(json({ content }).content).toEqual([{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }, { type: 'text', text: 'c' }, image, urlImage])
  })

  it('answers invalid JSON with an error naming the tool', () => {
    const outcome = respond(200, { 'content-type': 'application/json' }, '{"content": "cut')
    expect(outcome).toMatchObject({ kind: 'error', isError: true, status: 200, retry: 'no' })
    expect(outcome.content).toMatch(/^weather answered invalid JSON \(content-type application\/json\): \S/)
  })

  it('reads any +json type and content-type parameters, case-insensitively', () => {
    expect(respond(200, { 'content-type': 'application/problem+json' }, '{"title":"nope"}')).toMatchObject({ kind: 'ok', content: '{"title":"nope"}' })
    expect(respond(200, { 'content-type': 'Application/JSON; charset=utf-8' }, '{"content":"hi"}').content).toBe('hi')
    expect(respond(200, { 'content-type': ['application/json', 'text/plain'] }, '{"content":"first"}').content).toBe('first')
    expect(respond(200, { 'content-type': 'application/vnd.api+json' }, 'not json').content)
      .toMatch(/^weather answered invalid JSON \(content-type application\/vnd\.api\+json\)/)
  })

  it('cuts long JSON text and a tool\'s own content at maxResultChars', () => {
    const outcome = json({ content: 'x'.repeat(30) }, 200, 10)
    expect(outcome.content).toBe(`${'x'.repeat(10)}\n[20 more characters left out: a tool result is cut at 10 characters]`)
    // '{"big":"' + 50 y + '"}' is 60 characters.
    expect(json({ big: 'y'.repeat(50) }, 200, 10).content).toBe('{"big":"yy\n[50 more characters left out: a tool result is cut at 10 characters]')
  })
})

describe('outcomeFromResponse: other 2xx bodies', () => {
  it('gives text/* as text', () => {
    expect(respond(200, { 'content-type': 'text/plain; charset=utf-8' }, 'It is sunny.\n')).toEqual({ kind: 'ok', isError: false, content: 'It is sunny.\n', status: 200, retry: 'no' })
    expect(respond(200, { 'content-type': 'text/html' }, '<p>hi</p>').content).toBe('<p>hi</p>')
    expect(respond(200, { 'content-type': 'text/plain' }, 'z'.repeat(25), 20).content)
      .toBe(`${'z'.repeat(20)}\n[5 more characters left out: a tool result is cut at 20 characters]`)
  })

  it('gives a body without content-type as text', () => {
    expect(respond(200, {}, '{"content":"not parsed"}')).toEqual({ kind: 'ok', isError: false, content: '{"content":"not parsed"}', status: 200, retry: 'no' })
  })

  it('gives an empty 2xx body as an empty result, not an error, whatever its type', () => {
    expect(respond(200, { 'content-type': 'text/plain' }, '')).toEqual({ kind: 'ok', isError: false, content: '', status: 200, retry: 'no' })
    expect(respond(204, {}, '')).toEqual({ kind: 'ok', isError: false, content: '', status: 204, retry: 'no' })
    expect(respond(200, { 'content-type': 'application/json' }, '')).toMatchObject({ kind: 'ok', isError: false, content: '' })
    expect(respond(200, { 'content-type': 'application/pdf' }, '')).toMatchObject({ kind: 'ok', isError: false, content: '' })
  })

  it('gives an image as a base64 image block', () => {
    expect(respond(200, { 'content-type': 'image/png' }, PNG)).toEqual({
      kind: 'ok',
      isError: false,
      content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG.toString('base64') } }],
      status: 200,
      retry: 'no'
    })
    expect(respond(200, { 'content-type': 'IMAGE/JPEG' }, PNG).content).toEqual([{ type: 'image', source: { type: 'base64', media_type: 'image/jpeg', data: PNG.toString('base64') } }])
  })

  it('refuses a content-type the model cannot take', () => {
    expect(respond(200, { 'content-type': 'application/pdf' }, '%PDF-1.7')).toEqual({
      kind: 'error',
      isError: true,
      content: 'weather answered content-type application/pdf, which cannot be given to the model: answer JSON, text or an image',
      status: 200,
      retry: 'no',
      retryAfterMs: undefined
    })
    expect(respond(200, { 'content-type': 'image/bmp' }, PNG)).toMatchObject({ isError: true, content: expect.stringContaining('content-type image/bmp') })
  })
})

describe('outcomeFromResponse: non-2xx', () => {
  it('does not follow redirects, and says where it would have gone', () => {
    expect(respond(302, { location: 'https://tools.example.com/v2/weather' }, 'moved')).toEqual({
      kind: 'error',
      isError: true,
      content: 'HTTP 302 from weather: redirects are not followed (Location: https://tools.example.com/v2/weather); register the final URL instead',
      status: 302,
      retry: 'no',
      retryAfterMs: undefined
    })
    expect(respond(301, {}, '').content).toBe('HTTP 301 from weather: redirects are not followed; register the final URL instead')
    const long = `https://example.com/${'p'.repeat(300)}`
    expect(respond(307, { location: long }, '').content).toBe(`HTTP 307 from weather: redirects are not followed (Location: ${long.slice(0, 200)}); register the final URL instead`)
  })

  it('is an error with the status, the tool and the start of the body, whitespace collapsed', () => {
    expect(respond(502, { 'content-type': 'text/html' }, '  <h1>Bad\n\n  Gateway</h1>\t\r\n upstream  down \n')).toEqual({
      kind: 'error',
      isError: true,
      content: 'HTTP 502 from weather: <h1>Bad Gateway</h1> upstream down',
      status: 502,
      retry: 'idempotent-only',
      retryAfterMs: undefined
    })
    expect(respond(404, {}, '').content).toBe('HTTP 404 from weather')
    expect(respond(404, {}, ' \n\t ').content).toBe('HTTP 404 from weather')
  })

  it('cuts the body preview at 500 characters, after collapsing whitespace', () => {
    expect(respond(500, {}, 'e'.repeat(800)).content).toBe(`HTTP 500 from weather: ${'e'.repeat(500)}`)
    // 'ab' and a run of blank lines, 300 times: 'ab ab ab …' once collapsed.
    const outcome = respond(500, {}, 'ab\n\n\n   '.repeat(300))
    expect(outcome.content).toBe(`HTTP 500 from weather: ${'ab '.repeat(167).slice(0, 500)}`)
    expect((outcome.content as string).length).toBe('HTTP 500 from weather: '.length + 500)
  })

  it('does not take a non-2xx JSON body as the tool\'s own result', () => {
    const outcome = respond(400, { 'content-type': 'application/json' }, '{"content":"looks fine","is_error":false}')
    expect(outcome).toMatchObject({ kind: 'error', isError: true, status: 400, content: 'HTTP 400 from weather: {"content":"looks fine","is_error":false}' })
  })

  it('allows retries of idempotent tools only for 408, 429, 502, 503 and 504', () => {
    for (const status of [408, 429, 502, 503, 504]) expect(respond(status, {}, 'x').retry, String(status)).toBe('idempotent-only')
    for (const status of [400, 401, 403, 404, 409, 422, 500, 501, 505]) expect(respond(status, {}, 'x').retry, String(status)).toBe('no')
    for (const status of [200, 302]) expect(respond(status, {}, 'x').retry, String(status)).toBe('no')
  })

  describe('Retry-After', () => {
    afterEach(() => {
      vi.useRealTimers()
    })

    it('reads seconds into retryAfterMs', () => {
      expect(respond(429, { 'retry-after': '7' }, '').retryAfterMs).toBe(7000)
      expect(respond(503, { 'retry-after': '0' }, '').retryAfterMs).toBe(0)
      expect(respond(503, { 'retry-after': ['3', '9'] }, '').retryAfterMs).toBe(3000)
      expect(respond(503, {}, '').retryAfterMs).toBeUndefined()
      expect(respond(503, { 'retry-after': 'later' }, '').retryAfterMs).toBeUndefined()
    })

    it('reads an HTTP date into the time left until then', () => {
      vi.useFakeTimers({ toFake: ['Date'] })
      vi.setSystemTime(new Date('2030-01-01T00:00:00.000Z'))
      expect(respond(503, { 'retry-after': 'Tue, 01 Jan 2030 00:00:30 GMT' }, '').retryAfterMs).toBe(30_000)
      expect(respond(429, { 'retry-after': 'Tue, 01 Jan 2030 00:02:00 GMT' }, '').retryAfterMs).toBe(120_000)
      // A date already past: retry now, never a negative wait.
      expect(respond(503, { 'retry-after': 'Mon, 31 Dec 2029 23:59:00 GMT' }, '').retryAfterMs).toBe(0)
    })
  })
})

describe('outcomeFromResponse: well-formed text', () => {
  it('cuts an error body\'s preview before an emoji, not through it', () => {
    const preview = outcomeFromResponse('t', 500, { 'content-type': 'text/plain' }, Buffer.from('a'.repeat(499) + '😀'), { maxResultChars: 1000 })
    expect(preview.content).toBe(`HTTP 500 from t: ${'a'.repeat(499)}`)
  })
})

describe('outcomeFromResponse: secrets in an error answer', () => {
  it('takes them out before the preview is cut, so that none is left half in', () => {
    const secret = 'tool-header-secret-0123456789'
    const redact = (text: string) => text.split(secret).join('[redacted]')
    // The secret straddles the preview's cut (500 characters).
    const body = Buffer.from(`${'a'.repeat(490)}${secret} more`)
    const outcome = outcomeFromResponse('t', 500, { 'content-type': 'text/plain' }, body, { maxResultChars: 1000, redact })
    expect(outcome.content).toBe(`HTTP 500 from t: ${'a'.repeat(490)}[redacted]`)
    // A successful answer is the tool's answer to the model: never scanned.
    expect(outcomeFromResponse('t', 200, { 'content-type': 'text/plain' }, Buffer.from(secret), { maxResultChars: 1000, redact }).content).toBe(secret)
  })
})
