import { createHash } from 'node:crypto'
import { cutText } from '../lib/text.js'
import { isFailure, sentSpan, unionLength, type AttemptOutcome, type Timeline, type TimelineBar, type TimelineRow } from './timeline.js'

/** While a run goes on, its page reloads this often. */
export const TIMELINE_REFRESH_SECONDS = 2

// Geometry of the drawing, in SVG units (CSS pixels when the page is 1200 px wide or more).
const WIDTH = 1200
const LABEL_WIDTH = 230
const PLOT_LEFT = LABEL_WIDTH + 12
const PLOT_RIGHT = WIDTH - 200
const AXIS_HEIGHT = 30
const STEP_HEIGHT = 28
const ROW_HEIGHT = 24
const BAR_HEIGHT = 15
const NAME_CHARS = 30
// Width of a character of 12 px text, about: enough to tell whether a label fits.
const CHAR_WIDTH = 6.8

const CSS = `
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, "DejaVu Sans", sans-serif; color: #1f2933; background: #fff; margin: 24px; }
h1 { font-size: 20px; margin: 0 0 4px; font-weight: 600; }
h1 code { font-size: 18px; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 13px; vertical-align: 2px; margin-left: 6px; background: #e5e7eb; }
.status.completed { background: #dcfce7; color: #14532d; }
.status.failed { background: #fee2e2; color: #7f1d1d; }
.status.running, .status.queued, .status.requires_action { background: #dbeafe; color: #1e3a8a; }
.summary { margin: 8px 0; max-width: 1150px; }
.summary b { font-variant-numeric: tabular-nums; }
.note { color: #52606d; margin: 4px 0; }
.live { color: #1e3a8a; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 10px 0 6px; font-size: 13px; color: #3e4c59; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.legend i { display: inline-block; width: 22px; height: 11px; border-radius: 2px; }
.legend i.held { background: #fff; border: 2px solid #111827; width: 18px; height: 7px; }
svg { display: block; width: 100%; max-width: ${WIDTH}px; height: auto; margin-top: 6px; }
svg text { font-family: system-ui, "DejaVu Sans", sans-serif; font-size: 12px; fill: #1f2933; }
svg .axis text { fill: #616e7c; font-size: 11px; }
svg .grid { stroke: #e4e7eb; stroke-width: 1; }
svg .band { fill: #f5f7fa; }
svg .step-title { font-weight: 600; font-size: 12.5px; }
svg .step-note { fill: #52606d; }
svg .name.model { fill: #52606d; font-style: italic; }
svg .name.held { font-weight: 700; }
svg .info { font-variant-numeric: tabular-nums; }
svg .info.bad { fill: #b42318; font-weight: 600; }
svg .info.held { font-weight: 700; }
svg .inside { fill: #fff; font-size: 10.5px; }
svg .gap { stroke: #9aa5b1; stroke-width: 1.5; stroke-dasharray: 3 3; }
svg .marker { stroke: #7b8794; stroke-width: 1; stroke-dasharray: 4 3; }
svg .now { stroke: #1e3a8a; stroke-width: 1.5; stroke-dasharray: 5 3; }
.bar, .legend i { fill: #4a90d9; background: #4a90d9; }
.bar.model, .legend i.model { fill: #8b7fd8; background: #8b7fd8; }
.bar.client, .legend i.client { fill: #3f9f8a; background: #3f9f8a; }
.bar.error, .bar.unreachable, .bar.refused, .bar.circuit_open, .legend i.error { fill: #d64545; background: #d64545; }
.bar.timeout, .legend i.timeout { fill: #e8891c; background: #e8891c; }
.bar.cancelled, .bar.unknown, .bar.interrupted, .legend i.cancelled { fill: #9aa5b1; background: #9aa5b1; }
.bar.running, .legend i.running { fill: #a9c9ee; background: #a9c9ee; }
.bar.held { stroke: #111827; stroke-width: 2; }
.bar.wait, .legend i.wait { fill: #eef2f7; background: #eef2f7; stroke: #7b8794; stroke-width: 1; stroke-dasharray: 3 2; }
ul.markers { margin: 6px 0; padding-left: 20px; color: #3e4c59; }
footer { margin-top: 14px; color: #7b8794; font-size: 12px; }
`

/**
 * The Content-Security-Policy of the page: nothing loads from anywhere, no script runs, and the
 * one style sheet is allowed by its hash.
 */
export const TIMELINE_CSP = [
  "default-src 'none'",
  `style-src 'sha256-${createHash('sha256').update(CSS).digest('base64')}'`,
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join('; ')

const MARKS: Record<AttemptOutcome, string> = {
  ok: '',
  error: '✕ error',
  timeout: '✕ timed out',
  unreachable: '✕ unreachable',
  refused: '✕ not called',
  cancelled: '⊘ cancelled',
  unknown: '? outcome unknown',
  client: 'answered by the caller',
  circuit_open: '⊘ not called: circuit open',
  cached: '↺ cached result',
  interrupted: '⚠ interrupted (replica stopped)',
  running: '… running',
  accepted: '⧗ 202: answers later'
}

/**
 * The timeline page of a run: one self-contained HTML document, the waterfall drawn as inline SVG,
 * no script and nothing loaded from elsewhere. Every text that comes from the run (tool names,
 * error messages, ids) is escaped. While the run goes on, the page reloads itself every
 * {@link TIMELINE_REFRESH_SECONDS} seconds.
 */
export function renderTimelinePage (timeline: Timeline, now = Date.now()): string {
  const { summary: s } = timeline
  const refresh = timeline.live ? `<meta http-equiv="refresh" content="${TIMELINE_REFRESH_SECONDS}">\n` : ''
  const ending = timeline.stopReason === null ? '' : ` (${escapeHtml(timeline.stopReason)})`
  const parts: string[] = []
  parts.push(`Took <b>${duration(s.wallMs)}</b>${timeline.live ? ' so far' : ''} from creation to ${timeline.live ? 'now' : 'end'}` +
    `${s.queuedMs > 0 ? ` (queued ${duration(s.queuedMs)})` : ''}, in ${s.steps} step${s.steps === 1 ? '' : 's'}.`)
  if (s.toolCalls > 0) {
    parts.push(`<b>${s.toolCalls}</b> tool call${s.toolCalls === 1 ? '' : 's'}${s.toolErrors > 0 ? ` (${s.toolErrors} failed)` : ''}: ` +
      `<b>${duration(s.toolSumMs)}</b> added up, in flight for <b>${duration(s.toolBusyMs)}</b>; ` +
      `running them side by side saved <b>${duration(s.savedMs)}</b>.`)
  }
  if (s.modelCalls > 0) parts.push(`Model: ${s.modelCalls} call${s.modelCalls === 1 ? '' : 's'}, ${duration(s.modelMs)}.`)
  const markers = timeline.markers.length === 0
    ? ''
    : `<ul class="markers">${timeline.markers.map((m) => `<li>at ${duration(m.at)}: ${escapeHtml(m.label)}</li>`).join('')}</ul>\n`
  const leftOut = timeline.rowsLeftOut > 0 ? `<p class="note">The first ${timeline.rows.length} calls are drawn; ${timeline.rowsLeftOut} more are left out.</p>\n` : ''
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
${refresh}<title>Timeline of ${escapeHtml(timeline.runId)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>Run <code>${escapeHtml(timeline.runId)}</code><span class="status ${escapeHtml(timeline.status)}">${escapeHtml(timeline.status)}${ending}</span></h1>
<p class="summary">${parts.join(' ')}</p>
${timeline.live
  ? `<p class="note live">Live: this page reloads every ${TIMELINE_REFRESH_SECONDS} s until the run ends.</p>`
  : '<p class="note">The run is over; this page no longer changes.</p>'}
${legend()}
${markers}${drawing(timeline)}
${leftOut}<footer>Drawn from the run's stored events at ${new Date(now).toISOString()}. Times count from the run's creation at ${new Date(timeline.origin).toISOString()}. Hover a bar for its details.</footer>
</body>
</html>
`
}

function legend (): string {
  const items: Array<[string, string]> = [
    ['model', 'model call'], ['tool', 'tool call'], ['error', '✕ error'], ['timeout', '✕ timed out'],
    ['cancelled', 'cancelled or interrupted'], ['running', 'running'], ['client', 'caller\'s tool'], ['wait', 'waiting for a result posted later'], ['held', 'held its step up']
  ]
  return `<div class="legend">${items.map(([cls, label]) => `<span><i class="${cls}"></i>${escapeHtml(label)}</span>`).join('')}</div>`
}

function drawing (timeline: Timeline): string {
  const scale = (PLOT_RIGHT - PLOT_LEFT) / timeline.span
  const x = (ms: number): number => round(PLOT_LEFT + ms * scale)
  const body: string[] = []
  let y = AXIS_HEIGHT
  let step = -1
  for (const row of timeline.rows) {
    if (row.step !== step) {
      step = row.step
      body.push(stepHeader(timeline, step, y))
      y += STEP_HEIGHT
    }
    body.push(drawRow(row, y, x))
    y += ROW_HEIGHT
  }
  const height = y + 10
  const ticks = axisTicks(timeline.span)
  const axis = ticks.map((t) => `<line class="grid" x1="${x(t)}" y1="${AXIS_HEIGHT - 6}" x2="${x(t)}" y2="${height - 6}"/>` +
    `<text x="${x(t)}" y="${AXIS_HEIGHT - 11}" text-anchor="middle">${duration(t)}</text>`).join('')
  const markers = timeline.markers.map((m) => `<line class="marker" x1="${x(m.at)}" y1="${AXIS_HEIGHT - 4}" x2="${x(m.at)}" y2="${height - 6}"><title>${escapeHtml(`${duration(m.at)}: ${m.label}`)}</title></line>`).join('')
  const now = timeline.live ? `<line class="now" x1="${x(timeline.span)}" y1="${AXIS_HEIGHT - 4}" x2="${x(timeline.span)}" y2="${height - 6}"><title>now</title></line>` : ''
  const empty = timeline.rows.length === 0 ? `<text x="${PLOT_LEFT}" y="${AXIS_HEIGHT + 18}" class="step-note">Nothing to draw yet: the run has not called the model.</text>` : ''
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" role="img" aria-label="Waterfall of the run's model and tool calls">
<g class="axis">${axis}</g>
${body.join('\n')}
${markers}${now}${empty}
</svg>`
}

function stepHeader (timeline: Timeline, step: number, y: number): string {
  const rows = timeline.rows.filter((r) => r.step === step)
  const calls = rows.filter((r) => r.kind !== 'model')
  const held = rows.find((r) => r.heldUp)
  const notes: string[] = []
  const model = rows.find((r) => r.kind === 'model')
  if (model !== undefined) notes.push(`model ${duration(model.end - model.start)}`)
  const sent = calls.filter((r) => r.kind === 'tool' && r.bars.some((b) => b.attempt > 0))
  if (sent.length > 1) {
    const spans = sent.map(sentSpan)
    const added = spans.reduce((sum, [start, end]) => sum + end - start, 0)
    notes.push(`${calls.length} tool calls, in flight for ${duration(unionLength(spans))} (${duration(added)} added up)`)
  } else if (calls.length > 0) {
    notes.push(`${calls.length} tool call${calls.length === 1 ? '' : 's'}`)
  }
  if (held !== undefined && calls.length > 1) notes.push(`waited for ${cut(held.name)} (${duration(held.end - held.start)})`)
  const title = step === 0 ? 'Outside a step' : `Step ${step}`
  return `<g class="step" data-step="${step}"><rect class="band" x="0" y="${y + 3}" width="${WIDTH}" height="${STEP_HEIGHT - 5}" rx="3"/>` +
    `<text class="step-title" x="8" y="${y + 19}">${title}</text>` +
    `<text class="step-note" x="${PLOT_LEFT}" y="${y + 19}">${escapeHtml(notes.join(' · '))}</text></g>`
}

function drawRow (row: TimelineRow, y: number, x: (ms: number) => number): string {
  const top = y + (ROW_HEIGHT - BAR_HEIGHT) / 2
  const middle = round(top + BAR_HEIGHT / 2)
  const held = row.heldUp ? ' held' : ''
  const name = row.kind === 'model' ? 'model call' : row.kind === 'client' ? `${row.name} (caller)` : row.codeCaller !== undefined ? `${row.name} (code)` : row.name
  const out: string[] = [`<g class="row ${row.kind}" data-step="${row.step}"${row.toolUseId === null ? '' : ` data-tool-use-id="${escapeHtml(row.toolUseId)}"`}>`]
  out.push(`<text class="name ${row.kind}${held}" x="20" y="${middle + 4}">${escapeHtml(cut(name))}<title>${escapeHtml(name)}</title></text>`)
  row.bars.forEach((bar, index) => {
    const previous = row.bars[index - 1]
    if (previous !== undefined && bar.start > previous.end) {
      out.push(`<line class="gap" x1="${x(previous.end)}" y1="${middle}" x2="${x(bar.start)}" y2="${middle}"><title>${escapeHtml(`waited ${duration(bar.start - previous.end)} before attempt ${bar.attempt}`)}</title></line>`)
    }
    const left = x(bar.start)
    const width = Math.max(2, round(x(bar.end) - left))
    const last = index === row.bars.length - 1
    out.push(`<rect class="bar ${row.kind} ${bar.outcome}${bar.wait === true ? ' wait' : ''}${last ? held : ''}" data-tool="${escapeHtml(row.name)}" data-outcome="${bar.outcome}" ` +
      `x="${left}" y="${round(top)}" width="${width}" height="${BAR_HEIGHT}" rx="2"><title>${escapeHtml(barTitle(row, bar))}</title></rect>`)
    // An earlier attempt says how long it took, inside its bar when there is room.
    if (!last && width >= 48) {
      out.push(`<text class="inside" x="${left + 4}" y="${middle + 4}">${duration(bar.end - bar.start)}</text>`)
    }
  })
  // After the last bar; before the first one if it would run off the drawing there.
  const info = rowInfo(row)
  const after = x(row.end) + 6
  const placement = after + info.length * CHAR_WIDTH > WIDTH && x(row.start) - 6 - info.length * CHAR_WIDTH > PLOT_LEFT
    ? `x="${round(x(row.start) - 6)}" text-anchor="end"`
    : `x="${after}"`
  out.push(`<text class="info${isFailure(row.outcome) ? ' bad' : ''}${held}" ${placement} y="${middle + 4}">${escapeHtml(info)}</text>`)
  out.push('</g>')
  return out.join('')
}

/** The text after a row's last bar: how long, how it ended, retries, whether it held its step up. */
function rowInfo (row: TimelineRow): string {
  const last = row.bars[row.bars.length - 1]!
  const [sentStart, sentEnd] = sentSpan(row)
  const parts = [last.attempt === 0 ? 'not sent' : duration(sentEnd - sentStart)]
  // A result posted later (SPEC §13): the wait apart from the request.
  const waited = row.bars.filter((b) => b.wait === true).reduce((sum, b) => sum + b.end - b.start, 0)
  if (waited > 0) parts.push(`⧗ waited ${duration(waited)} for its result`)
  const retries = row.bars.filter((b) => b.retried).length
  if (retries > 0) parts.push(`↻ ${row.bars.length} attempts`)
  const mark = MARKS[row.outcome]
  if (mark !== '') parts.push(last.status === null ? mark : `${mark} ${last.status}`)
  if (row.heldUp) parts.push('◆ held step up')
  return parts.join(' · ')
}

function barTitle (row: TimelineRow, bar: TimelineBar): string {
  const what = row.kind === 'model' ? `model call of step ${row.step}` : `${row.name} (step ${row.step}${row.toolUseId === null ? '' : `, ${row.toolUseId}`})`
  const lines = [`${what}${bar.wait === true ? ', waiting for its result (posted later)' : bar.attempt > 0 ? `, attempt ${bar.attempt}` : ''}`, `${duration(bar.start)} → ${duration(bar.end)}: ${duration(bar.end - bar.start)}`]
  if (row.codeCaller !== undefined) lines.push(`called by the model's code (${row.codeCaller === '' ? 'code execution' : row.codeCaller})`)
  const outcome = bar.outcome === 'ok' ? 'ok' : MARKS[bar.outcome]
  lines.push(`${outcome}${bar.status === null ? '' : ` (HTTP ${bar.status})`}${bar.retried ? ', retried' : ''}`)
  if (bar.error !== null) lines.push(bar.error)
  return lines.join('\n')
}

/** Tick positions: 1, 2 or 5 times a power of ten, at most about ten of them. */
export function axisTicks (span: number): number[] {
  const raw = span / 8
  const power = 10 ** Math.floor(Math.log10(Math.max(raw, 1)))
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power
  const ticks: number[] = []
  for (let t = 0; t <= span + 1e-9; t += step) ticks.push(t)
  return ticks
}

/** A duration the way a person reads it: `412 ms`, `1.24 s`, `2 min 05 s`. */
export function duration (ms: number): string {
  if (ms < 999.5) return `${Math.round(ms)} ms`
  if (ms < 9995) return `${(ms / 1000).toFixed(2)} s`
  if (ms < 59_950) return `${(ms / 1000).toFixed(1)} s`
  const seconds = Math.round(ms / 1000)
  return `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, '0')} s`
}

/** Text for HTML and SVG, in content and in attribute values alike. */
export function escapeHtml (value: string): string {
  return value.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)
}

function cut (name: string): string {
  return name.length > NAME_CHARS ? `${cutText(name, NAME_CHARS - 1)}…` : name
}

function round (n: number): number {
  return Math.round(n * 10) / 10
}
