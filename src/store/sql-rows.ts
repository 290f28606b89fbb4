import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import { encodeCursor } from '../lib/pagination.js'
import { messageJson } from '../model/message-json.js'
import type { Row } from './sql-driver.js'
import { TOOL_COLUMNS } from './sql-statements.js'
import type { EventRecord, NewEvent, Page, RunRecord, ToolRecord } from './store.js'

// Between the SQL store's rows and the records of the Store interface, both ways: JSON columns are
// stored as text, booleans as 0 and 1, and PostgreSQL answers a BIGINT as a string.

/** A tool's async_timeout_ms when it sets none (SPEC §13): an hour. */
const DEFAULT_ASYNC_TIMEOUT_MS = 3_600_000

const JSON_RUN_COLUMNS = new Set(['params', 'metadata', 'usage', 'output', 'required_action', 'error', 'pending_results', 'pending_calls'])

/** A tool's values, in the order of TOOL_COLUMNS. */
export function toolValues (tool: ToolRecord): unknown[] {
  return TOOL_COLUMNS.map((column) => {
    const value = tool[column]
    if (column === 'input_schema' || column === 'headers' || column === 'signing_secrets' || column === 'circuit_breaker') return JSON.stringify(value)
    if (column === 'model_options') return JSON.stringify(value ?? {})
    if (column === 'parallel') return value === true ? 1 : 0
    if (column === 'approval') return value ?? 'never'
    if (column === 'async_timeout_ms') return value ?? DEFAULT_ASYNC_TIMEOUT_MS
    return value
  })
}

/** The tool a `tools` row holds. */
export function toToolRecord (row: Row): ToolRecord {
  return {
    tenant_id: row.tenant_id as string,
    name: row.name as string,
    description: row.description as string,
    input_schema: JSON.parse(row.input_schema as string),
    url: row.url as string,
    headers: JSON.parse(row.headers as string),
    timeout_ms: Number(row.timeout_ms),
    effect: row.effect as ToolRecord['effect'],
    parallel: Number(row.parallel) === 1,
    max_concurrency: row.max_concurrency === null ? null : Number(row.max_concurrency),
    max_attempts: Number(row.max_attempts),
    circuit_breaker: row.circuit_breaker == null ? { failures: 5, window_ms: 60_000, open_ms: 30_000 } : JSON.parse(row.circuit_breaker as string),
    cache_ttl_ms: Number(row.cache_ttl_ms ?? 0),
    model_options: row.model_options == null ? {} : JSON.parse(row.model_options as string),
    approval: row.approval === 'always' ? 'always' : 'never',
    async_timeout_ms: Number(row.async_timeout_ms ?? DEFAULT_ASYNC_TIMEOUT_MS),
    signing_secrets: JSON.parse(row.signing_secrets as string),
    source: row.source as ToolRecord['source'],
    revision: row.revision as string,
    created_at: Number(row.created_at),
    updated_at: Number(row.updated_at)
  }
}

/** What a run's `column` stores of `value`. */
export function runValue (column: string, value: unknown): unknown {
  if (JSON_RUN_COLUMNS.has(column)) return value === null || value === undefined ? null : JSON.stringify(value)
  return value === undefined ? null : value
}

function parseJson<T> (value: unknown): T {
  return (value === null ? null : JSON.parse(value as string)) as T
}

/** A nullable number column's value (PostgreSQL answers a BIGINT as a string). */
export function numberOrNull (value: unknown): number | null {
  return value === null || value === undefined ? null : Number(value)
}

/** The run a `runs` row holds. */
export function toRunRecord (row: Row): RunRecord {
  return {
    id: row.id as string,
    tenant_id: row.tenant_id as string,
    status: row.status as RunRecord['status'],
    stop_reason: (row.stop_reason ?? null) as string | null,
    model: row.model as string,
    params: parseJson(row.params),
    metadata: parseJson(row.metadata),
    created_at: Number(row.created_at),
    started_at: numberOrNull(row.started_at),
    completed_at: numberOrNull(row.completed_at),
    deadline_at: Number(row.deadline_at),
    steps: Number(row.steps),
    tool_calls_total: Number(row.tool_calls_total),
    tool_calls_errors: Number(row.tool_calls_errors),
    usage: parseJson(row.usage),
    output: parseJson(row.output),
    required_action: parseJson(row.required_action),
    error: parseJson(row.error),
    message_count: Number(row.message_count),
    event_count: Number(row.event_count),
    idempotency_key: (row.idempotency_key ?? null) as string | null,
    request_hash: (row.request_hash ?? null) as string | null,
    trace_id: row.trace_id as string,
    lease_owner: (row.lease_owner ?? null) as string | null,
    lease_token: Number(row.lease_token),
    lease_expires_at: numberOrNull(row.lease_expires_at),
    pending_results: parseJson(row.pending_results ?? null),
    cancel_requested_at: numberOrNull(row.cancel_requested_at),
    callback_url: (row.callback_url ?? null) as string | null,
    callback_status: (row.callback_status ?? null) as RunRecord['callback_status'],
    callback_attempts: Number(row.callback_attempts ?? 0),
    callback_next_at: numberOrNull(row.callback_next_at),
    callback_error: (row.callback_error ?? null) as string | null,
    step_events_after: Number(row.step_events_after ?? 0),
    // Only on a run waiting on pending calls (SPEC §13): every other run reads as before.
    ...(row.pending_calls == null ? {} : { pending_calls: parseJson(row.pending_calls) }),
    // Only a run with code execution has one (SPEC §16).
    ...(row.container_id == null ? {} : { container_id: row.container_id as string }),
    ...(row.container_expires_at == null ? {} : { container_expires_at: row.container_expires_at as string })
  }
}

/** The event a `run_events` row holds. */
export function toEventRecord (row: Row): EventRecord {
  return {
    run_id: row.run_id as string,
    seq: Number(row.seq),
    type: row.type as string,
    at: Number(row.at),
    data: JSON.parse(row.data as string) as Record<string, unknown>
  }
}

/** The `run_messages` rows of messages numbered from `first`, for messageInserts. */
export function messageRows (runId: string, tenantId: string, first: number, messages: readonly MessageParam[]): unknown[][] {
  return messages.map((message, i) => [runId, first + i, tenantId, messageJson(message)])
}

/** The `run_events` rows of events, for eventInserts. */
export function eventRows (runId: string, tenantId: string, events: readonly NewEvent[]): unknown[][] {
  return events.map((e) => [runId, e.seq, tenantId, e.type, e.at, JSON.stringify(e.data)])
}

/**
 * The parameters of pgInserts (see sql-statements). The large values, a step's messages and its
 * events' data, go as one JSON text each rather than as text arrays: the driver escapes every
 * element of an array character by character, which cost more than the rest of the write, and a
 * message goes in as the text its run's driver already made of it.
 */
export function pgInsertParams (runId: string, tenantId: string, first: number, messages: readonly MessageParam[], events: readonly NewEvent[]): unknown[] {
  return [
    runId, first, tenantId, `[${messages.map(messageJson).join(',')}]`,
    runId, tenantId, events.map((e) => e.seq), events.map((e) => e.type), events.map((e) => e.at), JSON.stringify(events.map((e) => e.data))
  ]
}

/** A page of `limit` records from `rows` (read one over the limit), with the cursor of the next if there is one. */
export function toPage<T> (rows: T[], limit: number, position: (item: T) => unknown[]): Page<T> {
  const items = rows.slice(0, limit)
  const nextCursor = rows.length > limit ? encodeCursor(position(items[items.length - 1]!)) : null
  return { items, nextCursor }
}
