import { FINAL_STATUSES } from '../schemas/runs.js'
import type { EventRecord, RunRecord, Store } from '../store/index.js'
import { cutText } from '../lib/text.js'

/**
 * How an attempt ended. The tool outcomes of the events (`ok`, `error`, `timeout`, `unreachable`,
 * `refused`, `cancelled`, `unknown`, `client`, `circuit_open`, `cached`), plus `interrupted` (in flight when its replica
 * stopped; the run was taken over), `running` (still going) and `accepted` (the tool answered 202: its
 * result comes later, SPEC §13).
 */
export type AttemptOutcome = 'ok' | 'error' | 'timeout' | 'unreachable' | 'refused' | 'cancelled' | 'unknown' | 'client' | 'circuit_open' | 'cached' | 'interrupted' | 'running' | 'accepted'

/** One bar of the timeline: a model call attempt or a tool call attempt. Times are ms since the run was created. */
export interface TimelineBar {
  readonly start: number
  readonly end: number
  readonly attempt: number
  readonly outcome: AttemptOutcome
  /** The HTTP status the tool (or the model API) answered with, if any. */
  readonly status: number | null
  /** What went wrong, as the event said it (cut short). */
  readonly error: string | null
  /** Another attempt followed this one. */
  readonly retried: boolean
  /**
   * Not a request but the wait for a result the tool posts later (SPEC §13), from its 202 to the
   * result (or its timeout): drawn apart, and never counted as the tool running.
   */
  readonly wait?: boolean
}

/** One line of the waterfall: a step's model call, or one tool call, with its attempts. */
export interface TimelineRow {
  readonly kind: 'model' | 'tool' | 'client'
  readonly step: number
  /** The tool's name, or `model`. */
  readonly name: string
  readonly toolUseId: string | null
  readonly bars: readonly TimelineBar[]
  /** From the first attempt's start to the last one's end. */
  readonly start: number
  readonly end: number
  /** Of a step's several tool calls, the one that finished last: the one the step waited for. */
  readonly heldUp: boolean
  /** How the call ended (its last attempt's outcome). */
  readonly outcome: AttemptOutcome
  /** A call made by the model's code (SPEC §16): the code execution call (`srvtoolu_…`) that made it. */
  readonly codeCaller?: string
}

/** Something that happened to the run as a whole: a takeover, a wait for the caller. */
export interface TimelineMarker {
  readonly at: number
  readonly label: string
}

export interface TimelineSummary {
  /** From the run's creation to its end (or to now, while it goes on). */
  readonly wallMs: number
  /** From creation to the start of its first step's work. */
  readonly queuedMs: number
  readonly steps: number
  readonly modelCalls: number
  readonly modelMs: number
  readonly toolCalls: number
  readonly toolErrors: number
  /** The durations of the webhook calls, added up: what they would take one after another. */
  readonly toolSumMs: number
  /** How long at least one webhook call was in flight. */
  readonly toolBusyMs: number
  /** What running them side by side saved: `toolSumMs - toolBusyMs`. */
  readonly savedMs: number
}

/** A run drawn from its events: what the timeline page shows. */
export interface Timeline {
  readonly runId: string
  readonly status: RunRecord['status']
  readonly stopReason: string | null
  /** Not final yet: the page refreshes. */
  readonly live: boolean
  /** Epoch ms of time 0. */
  readonly origin: number
  /** Length of the time axis, ms. */
  readonly span: number
  readonly rows: readonly TimelineRow[]
  readonly markers: readonly TimelineMarker[]
  readonly summary: TimelineSummary
  /** Rows left out past {@link MAX_TIMELINE_ROWS}. */
  readonly rowsLeftOut: number
}

/** Rows drawn at most; a run with more shows its first ones and says how many were left out. */
export const MAX_TIMELINE_ROWS = 2000
const ERROR_CHARS = 300

interface OpenAttempt {
  start: number
  attempt: number
  /** The wait for a result posted later (see TimelineBar.wait). */
  wait?: boolean
}

interface RowBuilder {
  kind: TimelineRow['kind']
  step: number
  name: string
  toolUseId: string | null
  bars: TimelineBar[]
  open: OpenAttempt | null
  order: number
  codeCaller?: string
}

type RunFacts = Pick<RunRecord, 'id' | 'status' | 'stop_reason' | 'created_at' | 'error'>

/**
 * Lays a run out from its stored events (oldest first): a row per model call of each step and per
 * tool call, a bar per attempt. Attempt starts and ends are the times of the events that record
 * them (`step.started`, `step.retrying` plus its `retry_in_ms`, `step.completed`;
 * `tool_call.started`, `tool_call.retrying`, `tool_call.completed`). While the run goes on, what
 * is in flight reaches `now`.
 */
export function buildTimeline (run: RunFacts, events: readonly EventRecord[], now = Date.now()): Timeline {
  const builder = createTimelineBuilder(run)
  for (const event of events) builder.add(event)
  return builder.finish(now)
}

/** {@link buildTimeline} one event at a time. */
export interface TimelineBuilder {
  add: (event: EventRecord) => void
  finish: (now?: number) => Timeline
}

/**
 * A {@link TimelineBuilder}: it keeps only what it draws, so a long run's events (and the tool
 * results they carry) need not all be held at once.
 */
export function createTimelineBuilder (run: RunFacts): TimelineBuilder {
  // The run.created event is stored at the run's creation time.
  const origin = run.created_at
  const models = new Map<number, RowBuilder>()
  const tools = new Map<string, RowBuilder>()
  const markers: TimelineMarker[] = []
  let order = 0
  let startedAt: number | null = null
  let waitingSince: number | null = null
  let end: number | null = null
  let finalEvent: { status: RunRecord['status'], stopReason: string | null } | null = null
  let last = origin

  const rel = (at: number): number => Math.max(0, at - origin)
  const allRows = (): RowBuilder[] => [...models.values(), ...tools.values()]
  const close = (row: RowBuilder, at: number, bar: Omit<TimelineBar, 'start' | 'end' | 'attempt'>): void => {
    const open = row.open
    if (open === null) return
    row.open = null
    // A retry scheduled after the run ended never started.
    if (at < open.start) return
    row.bars.push({ start: open.start, end: at, attempt: open.attempt, ...bar, ...(open.wait === true ? { wait: true } : {}) })
  }
  const closeAll = (at: number, bar: Omit<TimelineBar, 'start' | 'end' | 'attempt'>): void => {
    for (const row of allRows()) close(row, at, bar)
  }

  const add = (event: EventRecord): void => {
    const at = rel(event.at)
    last = Math.max(last, event.at)
    const data = event.data
    const step = typeof data.step === 'number' ? data.step : 0
    switch (event.type) {
      case 'run.started':
        startedAt ??= at
        break
      case 'step.started': {
        startedAt ??= at
        let row = models.get(step)
        if (row === undefined) {
          row = { kind: 'model', step, name: 'model', toolUseId: null, bars: [], open: null, order: order++ }
          models.set(step, row)
        }
        // Asked again after a takeover: the earlier attempt was closed by run.resumed.
        close(row, at, { outcome: 'interrupted', status: null, error: 'in flight when its replica stopped', retried: true })
        row.open = { start: at, attempt: row.bars.length + 1 }
        break
      }
      case 'step.retrying': {
        const row = models.get(step)
        if (row?.open == null) break
        const attempt = row.open.attempt
        close(row, at, { outcome: 'error', status: numberOrNull(data.status), error: text(data.error), retried: true })
        row.open = { start: at + numberOr(data.retry_in_ms, 0), attempt: attempt + 1 }
        break
      }
      case 'step.completed': {
        const row = models.get(step)
        if (row !== undefined) close(row, at, { outcome: 'ok', status: null, error: null, retried: false })
        break
      }
      case 'tool_call.started': {
        const row = toolRow(tools, data, step, () => order++)
        close(row, at, { outcome: 'interrupted', status: null, error: 'in flight when its replica stopped', retried: true })
        row.open = { start: at, attempt: numberOr(data.attempt, row.bars.length + 1) }
        break
      }
      case 'tool_call.retrying': {
        const row = tools.get(String(data.tool_use_id))
        if (row === undefined) break
        close(row, at, { outcome: retriedOutcome(data), status: numberOrNull(data.status), error: text(data.error), retried: true })
        break
      }
      case 'tool_call.accepted': {
        // The request ends with its 202; the wait for the result is a bar of its own (see TimelineBar.wait).
        const row = toolRow(tools, data, step, () => order++)
        const attempt = row.open?.attempt ?? numberOr(data.attempts, 1)
        close(row, at, { outcome: 'accepted', status: 202, error: null, retried: false })
        row.open = { start: at, attempt, wait: true }
        break
      }
      case 'tool_call.completed': {
        const row = toolRow(tools, data, step, () => order++)
        const outcome = completedOutcome(data)
        const error = data.is_error === true ? text(contentText(data.content)) : null
        if (outcome === 'client') {
          row.kind = 'client'
          row.open = { start: waitingSince ?? at, attempt: 1 }
        } else if (row.open === null) {
          // Never sent (refused, circuit open, cached, outcome unknown after a takeover): a mark at the moment it was decided.
          row.open = { start: at, attempt: 0 }
        }
        close(row, at, { outcome, status: numberOrNull(data.status), error, retried: false })
        // This call opened or closed its tool's circuit breaker (on its replica).
        if (data.circuit === 'open' || data.circuit === 'closed') markers.push({ at, label: `circuit breaker of ${row.name} ${data.circuit === 'open' ? 'opened' : 'closed'}` })
        break
      }
      case 'run.requires_action': {
        waitingSince = at
        // Waiting is a mark, not a bar: a call that waits for approval is drawn once it is made.
        const approvals = (data.required_action as { type?: unknown } | null)?.type === 'approve_tool_calls'
        markers.push({ at, label: approvals ? 'waits for approvals' : 'waits for the caller\'s tool outputs' })
        break
      }
      case 'tool_call.approved':
      case 'tool_call.denied':
        markers.push({ at, label: `${typeof data.name === 'string' ? data.name : 'a call'} ${event.type === 'tool_call.approved' ? 'approved' : 'denied'}` })
        break
      case 'run.resumed':
        closeAll(at, { outcome: 'interrupted', status: null, error: 'in flight when its replica stopped', retried: true })
        markers.push({ at, label: `taken over by ${typeof data.replica === 'string' ? data.replica : 'another replica'}` })
        break
      case 'run.completed':
      case 'run.failed':
      case 'run.cancelled': {
        end = at
        finalEvent = { status: event.type.slice(4) as RunRecord['status'], stopReason: typeof data.stop_reason === 'string' ? data.stop_reason : null }
        const outcome: AttemptOutcome = event.type === 'run.cancelled' ? 'cancelled' : data.stop_reason === 'timeout' ? 'timeout' : event.type === 'run.failed' ? 'error' : 'cancelled'
        const error = event.type === 'run.cancelled' ? 'the run was cancelled' : run.error?.message ?? null
        closeAll(at, { outcome, status: null, error: error === null ? null : text(error), retried: false })
        break
      }
    }
  }

  const finish = (now = Date.now()): Timeline => {
  // The run is read before its events, so the events may already hold its end.
    const live = !FINAL_STATUSES.has(run.status) && end === null
    const span = Math.max(1, end ?? (live ? Math.max(rel(now), rel(last)) : rel(last)))
    if (live) closeAll(span, { outcome: 'running', status: null, error: null, retried: false })

    const kindRank = { model: 0, tool: 1, client: 2 }
    const built = allRows().filter((r) => r.bars.length > 0).sort((a, b) =>
      a.step - b.step || kindRank[a.kind] - kindRank[b.kind] || a.bars[0]!.start - b.bars[0]!.start || a.order - b.order)
    // The call each step waited for: the one that finished last (of two that did, the longer).
    const heldBy = new Map<number, { order: number, start: number, end: number }>()
    const callsPerStep = new Map<number, number>()
    for (const row of built) {
      if (row.kind !== 'tool') continue
      callsPerStep.set(row.step, (callsPerStep.get(row.step) ?? 0) + 1)
      const start = Math.min(...row.bars.map((b) => b.start))
      const end = Math.max(...row.bars.map((b) => b.end))
      const best = heldBy.get(row.step)
      if (best === undefined || end > best.end || (end === best.end && end - start > best.end - best.start)) heldBy.set(row.step, { order: row.order, start, end })
    }
    const rows = built.map((r): TimelineRow => ({
      kind: r.kind,
      step: r.step,
      name: r.name,
      toolUseId: r.toolUseId,
      bars: r.bars,
      start: Math.min(...r.bars.map((b) => b.start)),
      end: Math.max(...r.bars.map((b) => b.end)),
      heldUp: heldBy.get(r.step)?.order === r.order && (callsPerStep.get(r.step) ?? 0) > 1,
      outcome: r.bars[r.bars.length - 1]!.outcome,
      ...(r.codeCaller === undefined ? {} : { codeCaller: r.codeCaller })
    }))

    const toolRows = rows.filter((r) => r.kind === 'tool' && r.bars.some((b) => b.attempt > 0))
    const intervals = toolRows.map(sentSpan)
    const toolSumMs = intervals.reduce((sum, [s, e]) => sum + (e - s), 0)
    const toolBusyMs = unionLength(intervals)
    const modelRows = rows.filter((r) => r.kind === 'model')
    const calls = rows.filter((r) => r.kind !== 'model')
    return {
      runId: run.id,
      status: finalEvent?.status ?? run.status,
      stopReason: finalEvent?.stopReason ?? run.stop_reason,
      live,
      origin,
      span,
      rows: rows.slice(0, MAX_TIMELINE_ROWS),
      markers,
      summary: {
        wallMs: span,
        queuedMs: startedAt ?? (live ? span : 0),
        steps: new Set(rows.map((r) => r.step)).size,
        modelCalls: modelRows.reduce((n, r) => n + r.bars.length, 0),
        modelMs: modelRows.reduce((sum, r) => sum + r.bars.reduce((s, b) => s + b.end - b.start, 0), 0),
        toolCalls: calls.length,
        toolErrors: calls.filter((r) => isFailure(r.outcome)).length,
        toolSumMs,
        toolBusyMs,
        savedMs: Math.max(0, toolSumMs - toolBusyMs)
      },
      rowsLeftOut: Math.max(0, rows.length - MAX_TIMELINE_ROWS)
    }
  }
  return { add, finish }
}

/** From a call's first request to the end of its last, leaving out any wait for a result posted later. */
export function sentSpan (row: TimelineRow): [number, number] {
  const sent = row.bars.filter((b) => b.wait !== true)
  if (sent.length === 0) return [row.start, row.start]
  return [Math.min(...sent.map((b) => b.start)), Math.max(...sent.map((b) => b.end))]
}

/** Whether an outcome is a failure the page marks as one. */
export function isFailure (outcome: AttemptOutcome): boolean {
  return outcome !== 'ok' && outcome !== 'running' && outcome !== 'client' && outcome !== 'cached'
}

function toolRow (tools: Map<string, RowBuilder>, data: Record<string, unknown>, step: number, next: () => number): RowBuilder {
  const id = String(data.tool_use_id)
  let row = tools.get(id)
  if (row === undefined) {
    row = { kind: 'tool', step, name: typeof data.name === 'string' ? data.name : '?', toolUseId: id, bars: [], open: null, order: next() }
    if (data.caller === 'code') row.codeCaller = typeof data.caller_tool_id === 'string' ? data.caller_tool_id : ''
    tools.set(id, row)
  }
  return row
}

const OUTCOMES = new Set<AttemptOutcome>(['ok', 'error', 'timeout', 'unreachable', 'refused', 'cancelled', 'unknown', 'client', 'circuit_open', 'cached'])

function completedOutcome (data: Record<string, unknown>): AttemptOutcome {
  if (typeof data.outcome === 'string' && OUTCOMES.has(data.outcome as AttemptOutcome)) return data.outcome as AttemptOutcome
  return data.is_error === true ? 'error' : 'ok'
}

/** How a retried attempt failed; events stored before they said so are read from their message. */
function retriedOutcome (data: Record<string, unknown>): AttemptOutcome {
  if (typeof data.outcome === 'string' && OUTCOMES.has(data.outcome as AttemptOutcome)) return data.outcome as AttemptOutcome
  if (typeof data.error === 'string' && /timed out/.test(data.error)) return 'timeout'
  return typeof data.status === 'number' ? 'error' : 'unreachable'
}

function contentText (content: unknown): string {
  if (typeof content === 'string') return content
  if (Array.isArray(content)) return content.map((b: { type?: string, text?: string }) => b.type === 'text' ? b.text ?? '' : `[${b.type ?? 'block'}]`).join('')
  return ''
}

function text (value: unknown): string | null {
  if (typeof value !== 'string' || value === '') return null
  return value.length > ERROR_CHARS ? `${cutText(value, ERROR_CHARS)}…` : value
}

function numberOrNull (value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null
}

function numberOr (value: unknown, fallback: number): number {
  return numberOrNull(value) ?? fallback
}

/** The length of the union of intervals: how long at least one of them was going on. */
export function unionLength (intervals: ReadonlyArray<readonly [number, number]>): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0])
  let total = 0
  let from = -Infinity
  let to = -Infinity
  for (const [start, end] of sorted) {
    if (start > to) {
      if (to > from) total += to - from
      from = start
      to = end
    } else {
      to = Math.max(to, end)
    }
  }
  if (to > from) total += to - from
  return total
}

/** Events one page reads at most (a run of 1000 steps of 25 calls each fits). */
export const MAX_TIMELINE_EVENTS = 100_000
// Small pages: an event may carry a whole tool result.
const EVENT_PAGE = 200

/**
 * The timeline of a stored run, read from its events a page at a time (at most
 * {@link MAX_TIMELINE_EVENTS} of them). Read the run before calling: its events then reach at
 * least as far as its status.
 */
export async function readTimeline (store: Pick<Store, 'listEvents'>, run: RunFacts): Promise<Timeline> {
  const builder = createTimelineBuilder(run)
  let after = 0
  for (let read = 0; read < MAX_TIMELINE_EVENTS;) {
    const page = await store.listEvents(run.id, after, EVENT_PAGE)
    for (const event of page) builder.add(event)
    read += page.length
    if (page.length < EVENT_PAGE) break
    after = page[page.length - 1]!.seq
  }
  return builder.finish()
}
