import { describe, expect, it } from 'vitest'
import { capContent, errorOutcome, toolResult, type ToolResultContent } from '../../src/tools/tool-result.js'
import { cutText, wellFormed } from '../../src/lib/text.js'

const image = { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } } as const
const urlImage = { type: 'image', source: { type: 'url', url: 'https://example.com/a.png' } } as const

describe('errorOutcome', () => {
  it('is an error with the message as content, no status and no retry by default', () => {
    expect(errorOutcome('timeout', 'weather did not answer within 5s')).toEqual({
      kind: 'timeout', isError: true, content: 'weather did not answer within 5s', status: null, retry: 'no', retryAfterMs: undefined
    })
  })

  it('takes status, retry and retryAfterMs when given', () => {
    expect(errorOutcome('unreachable', 'connection refused', { retry: 'any-tool' })).toEqual({
      kind: 'unreachable', isError: true, content: 'connection refused', status: null, retry: 'any-tool', retryAfterMs: undefined
    })
    expect(errorOutcome('error', 'HTTP 503', { status: 503, retry: 'idempotent-only', retryAfterMs: 1500 })).toEqual({
      kind: 'error', isError: true, content: 'HTTP 503', status: 503, retry: 'idempotent-only', retryAfterMs: 1500
    })
  })
})

describe('toolResult', () => {
  it('writes is_error only when true, and keeps an ordinary result\'s content, empty or not', () => {
    expect(toolResult('toolu_1', 'sunny', false)).toEqual({ type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny' })
    expect(toolResult('toolu_1', '', false)).toEqual({ type: 'tool_result', tool_use_id: 'toolu_1', content: '' })
    expect(toolResult('toolu_1', 'city not found', true, 'weather')).toEqual({ type: 'tool_result', tool_use_id: 'toolu_1', content: 'city not found', is_error: true })
  })

  it('gives an error that says nothing a text saying so, since the Messages API refuses an empty is_error result', () => {
    for (const content of ['', '  \n', []] as ToolResultContent[]) {
      expect(toolResult('toolu_1', content, true, 'weather')).toEqual({ type: 'tool_result', tool_use_id: 'toolu_1', content: 'Tool weather failed without a message.', is_error: true })
      expect(toolResult('toolu_1', content, true).content).toBe('The tool failed without a message.')
    }
    expect(toolResult('toolu_1', [image], true).content).toEqual([image])
  })
})

describe('capContent', () => {
  it('keeps a string at or under the limit as is', () => {
    expect(capContent('', 5)).toBe('')
    expect(capContent('abc', 5)).toBe('abc')
    expect(capContent('abcde', 5)).toBe('abcde')
  })

  it('cuts a longer string and says how much was left out, with thousands separators', () => {
    expect(capContent('abcdefg', 5)).toBe('abcde\n[2 more characters left out: a tool result is cut at 5 characters]')
    expect(capContent('a'.repeat(1_234_567), 10_000))
      .toBe(`${'a'.repeat(10_000)}\n[1,224,567 more characters left out: a tool result is cut at 10,000 characters]`)
  })

  it('keeps an array of text blocks under the limit as is, without a note', () => {
    const content: ToolResultContent = [{ type: 'text', text: 'abc' }, { type: 'text', text: 'de' }]
    expect(capContent(content, 5)).toEqual([{ type: 'text', text: 'abc' }, { type: 'text', text: 'de' }])
  })

  it('cuts across text blocks and ends with a note block', () => {
    const content: ToolResultContent = [
      { type: 'text', text: 'aaaa' },
      { type: 'text', text: 'bbbbbb' },
      { type: 'text', text: 'cc' }
    ]
    expect(capContent(content, 7)).toEqual([
      { type: 'text', text: 'aaaa' },
      { type: 'text', text: 'bbb' },
      { type: 'text', text: '[5 more characters left out: a tool result is cut at 7 characters]' }
    ])
    expect(capContent([{ type: 'text', text: 'x'.repeat(2500) }], 1000)).toEqual([
      { type: 'text', text: 'x'.repeat(1000) },
      { type: 'text', text: '[1,500 more characters left out: a tool result is cut at 1,000 characters]' }
    ])
  })

  it('keeps no block of spaces alone when the cut falls there (the API refuses blank text blocks)', () => {
    expect(capContent([{ type: 'text', text: 'abc' }, { type: 'text', text: '   xyz' }], 5)).toEqual([
      { type: 'text', text: 'abc' },
      { type: 'text', text: '[6 more characters left out: a tool result is cut at 5 characters]' }
    ])
  })

  it('cuts exactly at a block boundary, dropping the blocks after it', () => {
    const content: ToolResultContent = [{ type: 'text', text: 'aaaa' }, { type: 'text', text: 'bbb' }]
    expect(capContent(content, 4)).toEqual([
      { type: 'text', text: 'aaaa' },
      { type: 'text', text: '[3 more characters left out: a tool result is cut at 4 characters]' }
    ])
  })

  it('keeps images, even past the cut, and does not count them', () => {
    const content: ToolResultContent = [image, { type: 'text', text: 'aaaa' }, urlImage, { type: 'text', text: 'bb' }, image, { type: 'text', text: 'ccc' }]
    expect(capContent(content, 5)).toEqual([
      image,
      { type: 'text', text: 'aaaa' },
      urlImage,
      { type: 'text', text: 'b' },
      image,
      { type: 'text', text: '[4 more characters left out: a tool result is cut at 5 characters]' }
    ])
    expect(capContent([image, image], 0)).toEqual([image, image])
  })
})

describe('well-formed text', () => {
  it('never cuts a surrogate pair in two', () => {
    expect(cutText('ab😀cd', 3)).toBe('ab')
    expect(cutText('ab😀cd', 4)).toBe('ab😀')
    expect(cutText('abc', 5)).toBe('abc')
  })

  it('replaces lone surrogates and keeps pairs', () => {
    expect(wellFormed('x\ud83dy')).toBe('x\uFFFDy')
    expect(wellFormed('x\ude00y')).toBe('x\uFFFDy')
    expect(wellFormed('x😀y')).toBe('x😀y')
  })

  it('cuts a long result before an emoji, not through it, and cleans a tool\'s own lone surrogates', () => {
    const cut = capContent('a'.repeat(9) + '😀😀', 10)
    expect(typeof cut === 'string' && cut.startsWith('a'.repeat(9) + '\n[')).toBe(true)
    expect(capContent([{ type: 'text', text: 'ok \ud83d' }], 100)).toEqual([{ type: 'text', text: 'ok \uFFFD' }])
  })
})
