import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { buildTimeline, MAX_TIMELINE_ROWS, unionLength, type Timeline } from '../../src/runs/timeline.js'
import { axisTicks, duration, escapeHtml, renderTimelinePage, TIMELINE_CSP } from '../../src/runs/timeline-page.js'
import type { EventRecord, RunRecord } from '../../src/store/index.js'

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0)

/** Events of a run, written as `[ms after creation, type, data]`. */
function events (...list: Array<[number, string, Record<string, unknown>?]>): EventRecord[] {
  return list.map(([at, type, data], index) => ({ run_id: 'run_T', seq: index + 1, type, at: T0 + at, data: data ?? {} }))
}

function run (status: RunRecord['status'] = 'completed', fields: Partial<RunRecord> = {}): Pick<RunRecord, 'id' | 'status' | 'stop_reason' | 'created_at' | 'error'> {
  return { id: 'run_T', status, stop_reason: status === 'completed' ? 'end_turn' : null, created_at: T0, error: null, ...fields }
}

const started = (step: number, id: string, name: string, attempt = 1): Record<string, unknown> => ({ step, tool_use_id: id, name, input: {}, attempt })
const completed = (step: number, id: string, name: string, fields: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ step, tool_use_id: id, name, is_error: false, duration_ms: 0, attempts: 1, status: 200, outcome: 'ok', content: 'ok', ...fields })

/** A finished run whose one step asked for eight calls at once, lasting 100, 200, … 800 ms. */
function eightCalls (): EventRecord[] {
  const list: Array<[number, string, Record<string, unknown>?]> = [[0, 'run.created'], [2, 'run.started'], [2, 'step.started', { step: 1 }]]
  for (let i = 1; i <= 8; i++) list.push([40 + i, 'tool_call.started', started(1, `tu_${i}`, `tool_${i}`)])
  list.push([60, 'step.completed', { step: 1, stop_reason: 'tool_use' }])
  for (let i = 1; i <= 8; i++) list.push([40 + i + i * 100, 'tool_call.completed', completed(1, `tu_${i}`, `tool_${i}`)])
  list.push([850, 'step.started', { step: 2 }], [900, 'step.completed', { step: 2, stop_reason: 'end_turn' }], [905, 'run.completed', { stop_reason: 'end_turn' }])
  return events(...list)
}

function page (timeline: Timeline): string {
  return renderTimelinePage(timeline, T0 + 10_000)
}

describe('the timeline of a run', () => {
  it('puts calls made together side by side on one axis, and says what that saved', () => {
    const timeline = buildTimeline(run(), eightCalls())
    const tools = timeline.rows.filter((r) => r.kind === 'tool')
    expect(tools).toHaveLength(8)
    // Every bar covers the moment the last one started: they overlapped.
    const latestStart = Math.max(...tools.map((r) => r.start))
    for (const row of tools) expect(row.end).toBeGreaterThan(latestStart)
    expect(tools.map((r) => r.end - r.start)).toEqual([100, 200, 300, 400, 500, 600, 700, 800])
    expect(timeline.rows.map((r) => `${r.step}:${r.kind}`)).toEqual(['1:model', ...Array(8).fill('1:tool'), '2:model'])
    expect(timeline.summary).toMatchObject({ wallMs: 905, queuedMs: 2, steps: 2, modelCalls: 2, modelMs: 58 + 50, toolCalls: 8, toolErrors: 0, toolSumMs: 3600, toolBusyMs: 800 - 1 + 8, savedMs: 3600 - 807 })
    expect(timeline.live).toBe(false)
  })

  it('marks the call that held its step up: the one that finished last', () => {
    const timeline = buildTimeline(run(), eightCalls())
    expect(timeline.rows.filter((r) => r.heldUp).map((r) => r.name)).toEqual(['tool_8'])
    const html = page(timeline)
    expect(html).toMatch(/<rect class="bar tool ok held" data-tool="tool_8"/)
    expect(html).toContain('800 ms · ◆ held step up')
    expect(html).toContain('waited for tool_8 (800 ms)')
    // A step of one call has nothing to compare: no mark.
    const single = buildTimeline(run(), events([0, 'run.created'], [1, 'step.started', { step: 1 }], [5, 'tool_call.started', started(1, 'a', 'solo')], [50, 'tool_call.completed', completed(1, 'a', 'solo')], [60, 'run.completed']))
    expect(single.rows.some((r) => r.heldUp)).toBe(false)
  })

  it('draws every attempt of a retried call, and marks timeouts and errors in words as well as colour', () => {
    const timeline = buildTimeline(run(), events(
      [0, 'run.created'], [1, 'step.started', { step: 1 }], [10, 'step.completed', { step: 1 }],
      [10, 'tool_call.started', started(1, 'a', 'flaky')],
      [310, 'tool_call.retrying', { step: 1, tool_use_id: 'a', name: 'flaky', attempt: 1, duration_ms: 300, status: null, outcome: 'timeout', error: 'Tool flaky timed out after 300 ms', retry_in_ms: 90 }],
      [400, 'tool_call.started', started(1, 'a', 'flaky', 2)],
      [450, 'tool_call.completed', completed(1, 'a', 'flaky', { attempts: 2 })],
      [10, 'tool_call.started', started(1, 'b', 'broken')],
      [60, 'tool_call.completed', completed(1, 'b', 'broken', { is_error: true, status: 502, outcome: 'error', content: 'HTTP 502 from broken: upstream said no' })],
      [10, 'tool_call.started', started(1, 'c', 'sleepy')],
      [200, 'tool_call.completed', completed(1, 'c', 'sleepy', { is_error: true, status: null, outcome: 'timeout', content: 'Tool sleepy timed out after 190 ms' })],
      [460, 'run.completed']
    ))
    const flaky = timeline.rows.find((r) => r.name === 'flaky')!
    expect(flaky.bars.map((b) => [b.start, b.end, b.attempt, b.outcome, b.retried])).toEqual([[10, 310, 1, 'timeout', true], [400, 450, 2, 'ok', false]])
    expect(timeline.summary.toolErrors).toBe(2)
    const html = page(timeline)
    expect(html).toMatch(/<rect class="bar tool timeout" data-tool="flaky" data-outcome="timeout"/)
    expect(html).toMatch(/<line class="gap"[^>]*><title>waited 90 ms before attempt 2<\/title>/)
    expect(html).toContain('440 ms · ↻ 2 attempts')
    expect(html).toMatch(/<text class="info bad"[^>]*>50 ms · ✕ error 502<\/text>/)
    expect(html).toMatch(/<text class="info bad"[^>]*>190 ms · ✕ timed out<\/text>/)
    expect(html).toContain('HTTP 502 from broken: upstream said no')
  })

  it('reads the failure of an attempt from its message in events stored before they named it', () => {
    const timeline = buildTimeline(run(), events(
      [0, 'run.created'], [1, 'tool_call.started', started(1, 'a', 'old')],
      [5, 'tool_call.retrying', { step: 1, tool_use_id: 'a', name: 'old', attempt: 1, duration_ms: 4, status: null, error: 'Tool old timed out after 4 ms', retry_in_ms: 1 }],
      [6, 'tool_call.started', started(1, 'a', 'old', 2)],
      [7, 'tool_call.retrying', { step: 1, tool_use_id: 'a', name: 'old', attempt: 2, duration_ms: 1, status: 503, error: 'HTTP 503', retry_in_ms: 1 }],
      [8, 'tool_call.started', started(1, 'a', 'old', 3)],
      [9, 'tool_call.completed', completed(1, 'a', 'old', { is_error: true, outcome: undefined, content: 'connection refused' })],
      [10, 'run.completed']
    ))
    expect(timeline.rows[0]!.bars.map((b) => b.outcome)).toEqual(['timeout', 'error', 'error'])
  })

  it('draws a model call that was retried as two attempts, the second after its backoff', () => {
    const timeline = buildTimeline(run(), events(
      [0, 'run.created'], [1, 'step.started', { step: 1 }],
      [101, 'step.retrying', { step: 1, attempt: 1, error: 'overloaded', status: 529, retry_in_ms: 500 }],
      [900, 'step.completed', { step: 1 }], [901, 'run.completed']
    ))
    expect(timeline.rows[0]!.bars.map((b) => [b.start, b.end, b.outcome, b.status])).toEqual([[1, 101, 'error', 529], [601, 900, 'ok', null]])
    expect(timeline.summary.modelCalls).toBe(2)
  })

  it('draws a live run up to now, with what is in flight still running, and refreshes it', () => {
    const list = events([0, 'run.created'], [1, 'run.started'], [1, 'step.started', { step: 1 }], [30, 'step.completed', { step: 1 }], [31, 'tool_call.started', started(1, 'a', 'slow')])
    const timeline = buildTimeline(run('running'), list, T0 + 1500)
    expect(timeline.live).toBe(true)
    expect(timeline.span).toBe(1500)
    expect(timeline.rows[1]).toMatchObject({ name: 'slow', outcome: 'running', start: 31, end: 1500 })
    const html = page(timeline)
    expect(html).toContain('<meta http-equiv="refresh" content="2">')
    expect(html).toContain('… running')
    expect(html).toMatch(/<line class="now"/)
    // Once its last event is stored it is drawn as it ended, even if the run was read just before.
    const ended = buildTimeline(run('running'), [...list, ...events([2000, 'tool_call.completed', completed(1, 'a', 'slow')], [2100, 'run.completed', { status: 'completed', stop_reason: 'end_turn' }]).map((e) => ({ ...e, seq: e.seq + 5 }))], T0 + 9000)
    expect(ended).toMatchObject({ live: false, span: 2100, status: 'completed', stopReason: 'end_turn' })
    expect(page(ended)).not.toContain('http-equiv="refresh"')
  })

  it('shows a takeover: what was in flight is interrupted, and the run goes on', () => {
    const timeline = buildTimeline(run(), events(
      [0, 'run.created'], [1, 'step.started', { step: 1 }], [20, 'step.completed', { step: 1 }],
      [21, 'tool_call.started', started(1, 'a', 'idem')],
      [15_000, 'run.resumed', { step: 1, replica: 'replica-2', after_model_call: true }],
      [15_001, 'tool_call.started', started(1, 'a', 'idem')],
      [15_100, 'tool_call.completed', completed(1, 'a', 'idem')],
      [15_200, 'run.completed']
    ))
    expect(timeline.rows[1]!.bars.map((b) => [b.start, b.end, b.outcome])).toEqual([[21, 15_000, 'interrupted'], [15_001, 15_100, 'ok']])
    expect(timeline.markers).toEqual([{ at: 15_000, label: 'taken over by replica-2' }])
    expect(page(timeline)).toContain('at 15.0 s: taken over by replica-2')
  })

  it('shows a call that was never sent as a mark, and a cancelled run\'s calls as cancelled', () => {
    const timeline = buildTimeline(run('cancelled'), events(
      [0, 'run.created'], [1, 'step.started', { step: 1 }], [20, 'step.completed', { step: 1 }],
      [21, 'tool_call.completed', completed(1, 'x', 'nope', { is_error: true, attempts: 0, status: null, outcome: 'refused', content: 'Tool nope is not available' })],
      [22, 'tool_call.started', started(1, 'a', 'slow')],
      [500, 'run.cancelled', { status: 'cancelled', stop_reason: 'cancelled' }]
    ))
    expect(timeline.rows.map((r) => [r.name, r.outcome])).toEqual([['model', 'ok'], ['nope', 'refused'], ['slow', 'cancelled']])
    const html = page(timeline)
    expect(html).toContain('not sent · ✕ not called')
    expect(html).toContain('478 ms · ⊘ cancelled')
  })

  it('escapes everything that comes from the run: a tool named with HTML cannot inject', () => {
    const evil = '<img src=x onerror=alert(1)>'
    const timeline = buildTimeline(run('failed', { id: 'run_"><script>alert(2)</script>', stop_reason: '<b>x</b>' }), events(
      [0, 'run.created'], [1, 'step.started', { step: 1 }], [20, 'step.completed', { step: 1 }],
      [21, 'tool_call.started', started(1, '"><svg onload=alert(3)>', evil)],
      [40, 'tool_call.completed', completed(1, '"><svg onload=alert(3)>', evil, { is_error: true, outcome: 'error', content: '</title><script>alert(4)</script>' })],
      [50, 'run.failed', { stop_reason: '<b>x</b>' }]
    ))
    const html = page(timeline)
    expect(html).not.toMatch(/<img|<script|<svg onload|<b>x/)
    expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;')
    expect(html).toContain('&lt;/title&gt;&lt;script&gt;alert(4)&lt;/script&gt;')
    expect(html).toContain('data-tool-use-id="&quot;&gt;&lt;svg onload=alert(3)&gt;"')
    expect(escapeHtml('a&b"c\'d')).toBe('a&amp;b&quot;c&#39;d')
  })

  it('allows its one style sheet by hash, and nothing else', () => {
    const html = page(buildTimeline(run(), eightCalls()))
    const css = /<style>([\s\S]*?)<\/style>/.exec(html)![1]!
    expect(TIMELINE_CSP).toContain(`style-src 'sha256-${createHash('sha256').update(css).digest('base64')}'`)
    expect(TIMELINE_CSP).toContain("default-src 'none'")
    expect(html).not.toMatch(/<script|style="|https?:\/\/(?!www\.w3\.org\/2000\/svg)/)
  })

  it('draws at most 2000 calls, and says how many it left out', () => {
    const list: Array<[number, string, Record<string, unknown>?]> = [[0, 'run.created'], [1, 'step.started', { step: 1 }], [2, 'step.completed', { step: 1 }]]
    for (let i = 0; i < 2100; i++) list.push([3, 'tool_call.started', started(1, `t${i}`, 'many')], [4, 'tool_call.completed', completed(1, `t${i}`, 'many')])
    list.push([5, 'run.completed'])
    const timeline = buildTimeline(run(), events(...list))
    expect(timeline.rows).toHaveLength(MAX_TIMELINE_ROWS)
    expect(timeline.rowsLeftOut).toBe(2101 - MAX_TIMELINE_ROWS)
    expect(timeline.summary.toolCalls).toBe(2100)
    expect(page(timeline)).toContain(`The first ${MAX_TIMELINE_ROWS} calls are drawn; 101 more are left out.`)
  })

  it('draws a run with nothing to draw yet', () => {
    const timeline = buildTimeline(run('queued'), events([0, 'run.created']), T0 + 300)
    expect(timeline).toMatchObject({ live: true, span: 300, rows: [] })
    expect(page(timeline)).toContain('Nothing to draw yet')
  })
})

describe('timeline helpers', () => {
  it('measures how long at least one interval was going on', () => {
    expect(unionLength([])).toBe(0)
    expect(unionLength([[0, 10], [5, 20], [30, 40], [35, 36]])).toBe(30)
    expect(unionLength([[10, 10], [10, 12]])).toBe(2)
  })

  it('writes durations as people read them', () => {
    expect([0, 412, 999.6, 1240, 12_345, 59_999, 60_000, 125_000].map(duration)).toEqual(['0 ms', '412 ms', '1.00 s', '1.24 s', '12.3 s', '1 min 00 s', '1 min 00 s', '2 min 05 s'])
  })

  it('puts about ten round ticks on the axis', () => {
    expect(axisTicks(905)).toEqual([0, 200, 400, 600, 800])
    expect(axisTicks(1)).toEqual([0, 1])
    expect(axisTicks(3_600_000).length).toBeLessThanOrEqual(11)
  })
})
