import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import { isoDate } from '../schemas/common.js'
import type { Run, StopReason } from '../schemas/runs.js'
import type { RunRecord } from '../store/index.js'

/** A stored run as the API shows it (SPEC §4.2); with `messages`, the whole transcript too. */
export function toRunObject (run: RunRecord, messages?: MessageParam[]): Run {
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
    usage: run.usage,
    required_action: run.required_action,
    error: run.error,
    callback: run.callback_url === null
      ? null
      : { url: run.callback_url, status: run.callback_status ?? 'waiting', attempts: run.callback_attempts, last_error: run.callback_error },
    ...(messages === undefined ? {} : { messages: messages as unknown as Array<Record<string, unknown>> })
  }
}
