import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import { runContainer } from '../model/code-execution.js'
import { isoDate } from '../schemas/common.js'
import { FINAL_STATUSES, type Run, type RunEvent, type StopReason } from '../schemas/runs.js'
import type { EventRecord, RunRecord } from '../store/index.js'

/**
 * A stored run as the API shows it (SPEC §4.2); with `messages`, the whole transcript too. A
 * `timelineUrl` is only given to answers: events and callbacks are stored or sent once, and would
 * carry a link that expires.
 */
export function toRunObject (run: RunRecord, messages?: MessageParam[], timelineUrl: string | null = null): Run {
  const output = run.output as Array<Record<string, unknown>>
  return {
    id: run.id,
    object: 'run',
    status: run.status,
    stop_reason: run.stop_reason as StopReason | null,
    model: run.model,
    created_at: isoDate(run.created_at),
    started_at: isoDate(run.started_at),
    completed_at: isoDate(run.completed_at),
    metadata: run.metadata,
    output,
    output_text: output.filter((b) => b.type === 'text').map((b) => b.text as string).join(''),
    steps: run.steps,
    tool_calls: { total: run.tool_calls_total, errors: run.tool_calls_errors },
    usage: {
      input_tokens: run.usage.input_tokens,
      output_tokens: run.usage.output_tokens,
      cache_creation_input_tokens: run.usage.cache_creation_input_tokens,
      cache_read_input_tokens: run.usage.cache_read_input_tokens,
      // A run stored before cost control: its cache writes were all of the default lifetime, and its cost unknown.
      cache_creation: run.usage.cache_creation ?? { ephemeral_5m_input_tokens: run.usage.cache_creation_input_tokens, ephemeral_1h_input_tokens: 0 },
      cost_usd: run.usage.cost_usd ?? null
    },
    required_action: run.required_action,
    pending_tool_calls: run.pending_calls == null ? null : run.pending_calls.map((c) => ({ tool_use_id: c.tool_use_id, name: c.name, deadline: isoDate(c.deadline_at) })),
    error: run.error,
    container: runContainer(run),
    callback: run.callback_url === null
      ? null
      : { url: run.callback_url, status: run.callback_status ?? 'waiting', attempts: run.callback_attempts, last_error: run.callback_error },
    timeline_url: timelineUrl,
    ...(messages === undefined ? {} : { messages: messages as unknown as Array<Record<string, unknown>> })
  }
}

/** A stored event as the API shows it, in a page or on a stream. */
export function toEventObject (event: EventRecord): RunEvent {
  return { id: event.seq, type: event.type, run_id: event.run_id, at: isoDate(event.at), data: event.data }
}

/** Whether nothing more happens to a run until its caller acts: it ended, or waits for tool outputs. */
export function isSettled (run: RunRecord): boolean {
  return FINAL_STATUSES.has(run.status) || run.status === 'requires_action'
}

/**
 * Whether a sync request answers with the run now: it is settled, or it waits for results its
 * tools post later (SPEC §13), which may take an hour, too long to hold a connection. (A stream
 * goes on through such a wait: its follower chose to hold one.)
 */
export function answersNow (run: RunRecord): boolean {
  return isSettled(run) || run.pending_calls != null
}

/**
 * Whether a run is past its deadline by more than two leases and still not final: no replica is
 * driving it (each would have ended it at its deadline), so waiting on it is pointless.
 */
export function isStalled (run: RunRecord, leaseMs: number, now = Date.now()): boolean {
  return now > run.deadline_at + 2 * leaseMs
}
