import { Stream } from '@anthropic-ai/sdk/core/streaming'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ServerSentEventParser, type ServerSentEvent } from '../../src/model/sse-reader.js'
import { propertyOptions } from '../support/property.js'

/** The events of `bytes` read in pieces cut at `cuts` (byte offsets), as the model client reads them. */
function parse (bytes: Uint8Array, cuts: number[] = [], maxEventChars = 1 << 20): ServerSentEvent[] {
  const decoder = new TextDecoder()
  const parser = new ServerSentEventParser(maxEventChars)
  const events: ServerSentEvent[] = []
  let from = 0
  for (const to of [...[...cuts].sort((a, b) => a - b), bytes.length]) {
    events.push(...parser.push(decoder.decode(bytes.subarray(from, to), { stream: true })))
    from = to
  }
  return events
}

/** The same bytes through the Anthropic SDK's own reader of server-sent events, whole. */
async function sdkParse (bytes: Uint8Array): Promise<ServerSentEvent[]> {
  const events: ServerSentEvent[] = []
  for await (const sse of Stream.rawEvents(new Response(bytes))) events.push({ event: sse.event, data: sse.data })
  return events
}

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text)

describe('server-sent events', () => {
  it('reads a Messages API stream: event names, data, and nothing after the last blank line', () => {
    const text = 'event: message_start\ndata: {"type":"message_start"}\n\nevent: ping\ndata: {"type": "ping"}\n\nevent: message_stop\ndata: {"type":"message_stop"}'
    expect(parse(utf8(text))).toEqual([
      { event: 'message_start', data: '{"type":"message_start"}' },
      { event: 'ping', data: '{"type": "ping"}' }
    ])
  })

  it('ends lines at CRLF, LF or a lone CR, and joins data lines with LF', () => {
    expect(parse(utf8('event: a\r\ndata: 1\r\ndata: 2\r\n\r\nevent: b\rdata: 3\r\rdata: 4\n\n'))).toEqual([
      { event: 'a', data: '1\n2' },
      { event: 'b', data: '3' },
      { event: null, data: '4' }
    ])
  })

  it('skips comments and other fields, reads a field without a colon as empty, and drops one space only', () => {
    // The last event has an empty name and no data: no event, as the SDK reads it.
    expect(parse(utf8(': a comment\nid: 7\nretry: 10\n\ndata\n\nevent:x\ndata:  two spaces\n\nevent\n\n'))).toEqual([
      { event: null, data: '' },
      { event: 'x', data: ' two spaces' }
    ])
  })

  it('a CR at the end of one read and a LF at the start of the next are one line end', () => {
    const bytes = utf8('data: 1\r\n\r\ndata: 2\r\n\r\n')
    const whole = parse(bytes)
    expect(whole).toEqual([{ event: null, data: '1' }, { event: null, data: '2' }])
    // Cut after every CR, with an empty read (half a character, say) between the CR and its LF.
    expect(parse(bytes, [8, 8, 10, 10, 18, 18, 20])).toEqual(whole)
  })

  it('an event longer than the limit throws, whether its data comes in many lines or one line that never ends', () => {
    const limit = 100
    expect(parse(utf8(`data: ${'x'.repeat(limit)}\n\n`), [], limit)).toEqual([{ event: null, data: 'x'.repeat(limit) }])
    // Many events of 60 characters each are fine: the limit is per event.
    const many = Array.from({ length: 10 }, () => `data: ${'y'.repeat(60)}\n\n`).join('')
    expect(parse(utf8(many), [7, 100, 300], limit)).toHaveLength(10)
    expect(() => parse(utf8(`data: ${'x'.repeat(60)}\ndata: ${'x'.repeat(41)}\n\n`), [], limit)).toThrow(/longer than 100 characters/)
    // A line without end, arriving in pieces, is stopped once it is too long, not held for ever.
    const parser = new ServerSentEventParser(limit)
    expect(parser.push(`data: ${'z'.repeat(50)}`)).toEqual([])
    expect(() => parser.push('z'.repeat(60))).toThrow(/longer than 100 characters/)
  })

  it('any stream, cut anywhere (inside a character too), gives the events the SDK reads from it whole', async () => {
    const piece = fc.constantFrom('event: ', 'data: ', 'data:', 'event:', ': ', 'id: 1', 'retry', ' ', ':', 'x', 'message_start', '{"type":"ping"}', 'é', '🎉', '\n', '\n', '\r', '\r\n', '\n\n')
    const stream = fc.array(piece, { maxLength: 40 }).map((pieces) => utf8(pieces.join('')))
    const streamAndCuts = stream.chain((bytes) => fc.tuple(fc.constant(bytes), fc.array(fc.integer({ min: 0, max: bytes.length }), { maxLength: 8 })))
    await fc.assert(fc.asyncProperty(streamAndCuts, async ([bytes, cuts]) => {
      expect(parse(bytes, cuts)).toEqual(await sdkParse(bytes))
    }), propertyOptions(300))
  })
})
