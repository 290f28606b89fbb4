import { newId } from '../../src/lib/ids.js'
import type { NewRun, RunRecord } from '../../src/store/index.js'

/**
 * A run shaped as the engine creates one (step_events_after aside), for store tests: queued,
 * leased to `leaseOwner` (none when null) for 10 s, with one user message and its run.created
 * event; `overrides` change any field.
 */
export function newRun (tenant: string, overrides: Partial<RunRecord> = {}, leaseOwner: string | null = 'replica-a'): NewRun {
  const now = Date.now()
  const id = newId('run')
  return {
    run: {
      id,
      tenant_id: tenant,
      status: 'queued',
      stop_reason: null,
      model: 'claude-test',
      params: { max_steps: 5 },
      metadata: { customer: 'c1' },
      created_at: now,
      started_at: null,
      completed_at: null,
      deadline_at: now + 60_000,
      steps: 0,
      tool_calls_total: 0,
      tool_calls_errors: 0,
      usage: { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
      output: [],
      required_action: null,
      error: null,
      message_count: 1,
      event_count: 1,
      idempotency_key: null,
      request_hash: null,
      trace_id: 'a'.repeat(32),
      lease_owner: leaseOwner,
      lease_token: leaseOwner === null ? 0 : 1,
      lease_expires_at: leaseOwner === null ? 0 : now + 10_000,
      pending_results: null,
      cancel_requested_at: null,
      callback_url: null,
      callback_status: null,
      callback_attempts: 0,
      callback_next_at: null,
      callback_error: null,
      step_events_after: 0,
      ...overrides
    },
    messages: [{ role: 'user', content: 'hello' }],
    event: { seq: 1, type: 'run.created', at: now, data: { id } }
  }
}
