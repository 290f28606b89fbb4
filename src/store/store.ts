import type { MessageParam } from '@anthropic-ai/sdk/resources/messages'
import type { ToolHealthStore } from './tool-health.js'
import type { UsageEntry, UsageStore } from './usage-ledger.js'
import type { CallWaitStore } from './call-waits.js'

export type { CircuitRow, StoredResult, ToolCallRow, ToolCallTotals, ToolHealthStore } from './tool-health.js'
export type { UsageEntry, UsageGrouping, UsageStore, UsageTotals } from './usage-ledger.js'
export type { CallWait, CallWaitStore } from './call-waits.js'

export type ToolEffect = 'read_only' | 'idempotent' | 'side_effecting'

/** A signing secret of a tool; `expires_at` is set on the previous secret during a rotation. */
export interface SigningSecret {
  readonly secret: string
  readonly expires_at: number | null
}

/** A registered tool as stored: its definition, its secrets, and where it came from. */
export interface ToolRecord {
  readonly tenant_id: string
  readonly name: string
  readonly description: string
  readonly input_schema: Record<string, unknown>
  readonly url: string
  readonly headers: Record<string, string>
  readonly timeout_ms: number
  readonly effect: ToolEffect
  readonly parallel: boolean
  readonly max_concurrency: number | null
  readonly max_attempts: number
  /** Its circuit breaker (SPEC §18), or false for none. */
  readonly circuit_breaker: { readonly failures: number, readonly window_ms: number, readonly open_ms: number } | false
  /** How long a read_only tool's results are reused for the same input; 0: never. */
  readonly cache_ttl_ms: number
  /** Fields passed through to the Messages API with the definition (SPEC §15); none when absent. */
  readonly model_options?: {
    readonly strict?: boolean
    readonly input_examples?: Array<Record<string, unknown>>
    readonly defer_loading?: boolean
    readonly eager_input_streaming?: boolean
    /** Who may call the tool (SPEC §16); absent: the model alone. */
    readonly callers?: Array<'direct' | 'code'>
  } | undefined
  /** `always`: each call waits for a reviewer's decision (SPEC §12); absent: `never`. */
  readonly approval?: 'always' | 'never' | undefined
  /** How long a call answered `202 Accepted` waits for its result (SPEC §13); absent: an hour. */
  readonly async_timeout_ms?: number | undefined
  /** Newest first. */
  readonly signing_secrets: readonly SigningSecret[]
  readonly source: 'api' | 'file'
  /** Changes on every write of the definition (not on a rotation of its secrets): keys caches of what is derived from the definition, and the store's own of the definition. */
  readonly revision: string
  readonly created_at: number
  readonly updated_at: number
  /**
   * Set for a tool of a registered MCP server (SPEC §11), as a run pinned it: which server and
   * which of its tools a call goes to. Such a record is never stored in `tools`.
   */
  readonly mcp?: { readonly server: string, readonly tool: string } | undefined
}

/** A tool as an MCP server lists it (SPEC §11), kept with its server. */
export interface McpListedTool {
  readonly name: string
  readonly description: string
  readonly input_schema: Record<string, unknown>
  readonly annotations: Record<string, unknown> | null
}

/**
 * A registered MCP server (SPEC §11): how to reach it (its headers and OAuth client secret are
 * secrets: never shown, never logged), which of its tools runs may use and how they are called,
 * and its tool list as last read.
 */
export interface McpServerRecord {
  readonly tenant_id: string
  readonly name: string
  readonly url: string
  readonly headers: Record<string, string>
  readonly oauth: { readonly client_id: string, readonly client_secret: string, readonly scope?: string | undefined, readonly issuer?: string | undefined } | null
  /** The allow-list of tool names; null: every tool. */
  readonly tools: readonly string[] | null
  readonly trust_annotations: boolean
  readonly defaults: { readonly timeout_ms: number, readonly max_attempts: number, readonly max_concurrency: number | null }
  readonly overrides: Readonly<Record<string, { readonly effect?: ToolEffect | undefined, readonly parallel?: boolean | undefined, readonly timeout_ms?: number | undefined, readonly approval?: 'never' | 'always' | undefined, readonly callers?: Array<'direct' | 'code'> | undefined }>>
  readonly listed: readonly McpListedTool[]
  readonly listed_at: number
  /** The MCP revision the server spoke at registration (it tells the era); absent on servers registered before. */
  readonly protocol_version?: string | null | undefined
  readonly source: 'api' | 'file'
  readonly created_at: number
  readonly updated_at: number
}

export type RunStatus = 'queued' | 'running' | 'requires_action' | 'completed' | 'failed' | 'cancelled'

export interface Usage {
  input_tokens: number
  output_tokens: number
  cache_creation_input_tokens: number
  cache_read_input_tokens: number
  /** Cache writes by lifetime (SPEC §17); absent on runs stored before cost control. */
  cache_creation?: { ephemeral_5m_input_tokens: number, ephemeral_1h_input_tokens: number }
  /** What the run's model calls cost, in USD; null when its model has no price (src/cost/). */
  cost_usd?: number | null
  /** What the budget guard estimates the next call from, stored so that every replica agrees (src/cost/). Not shown. */
  estimate_basis?: EstimateBasis
}

/** The run's last model call as the budget guard sees it, and its longest answer so far. */
export interface EstimateBasis {
  readonly prompt_tokens: number
  /** What its prompt cost, in USD (cache reads and writes at their prices); null: no price. */
  readonly prompt_cost_usd: number | null
  readonly output_tokens: number
  /** Messages of the history it was sent. */
  readonly messages: number
  readonly longest_output_tokens: number
}

/** A run as stored. `params` holds what the run was started with; the rest is its state. */
export interface RunRecord {
  readonly id: string
  readonly tenant_id: string
  readonly status: RunStatus
  readonly stop_reason: string | null
  readonly model: string
  readonly params: Record<string, unknown>
  readonly metadata: Record<string, string>
  readonly created_at: number
  readonly started_at: number | null
  readonly completed_at: number | null
  readonly deadline_at: number
  readonly steps: number
  readonly tool_calls_total: number
  readonly tool_calls_errors: number
  readonly usage: Usage
  readonly output: unknown[]
  readonly required_action: Record<string, unknown> | null
  readonly error: { code: string, message: string } | null
  readonly message_count: number
  readonly event_count: number
  readonly idempotency_key: string | null
  readonly request_hash: string | null
  readonly trace_id: string
  readonly lease_owner: string | null
  readonly lease_token: number
  readonly lease_expires_at: number | null
  /** While `requires_action`: the tool_results of the step's webhook calls, in the model's order. */
  readonly pending_results: unknown[] | null
  /** Set when a cancel was asked of a replica that does not drive the run. */
  readonly cancel_requested_at: number | null
  readonly callback_url: string | null
  readonly callback_status: CallbackStatus | null
  readonly callback_attempts: number
  /** When the next delivery attempt is due (or, while one is under way, until when it is claimed). */
  readonly callback_next_at: number | null
  readonly callback_error: string | null
  /** Events after this number belong to the step in progress (the last step commit's last event). */
  readonly step_events_after: number
  /**
   * While the run waits, held by no replica, for results of calls that answer later (SPEC §13):
   * those calls and their deadlines. Null (or absent) otherwise.
   */
  readonly pending_calls?: PendingCallEntry[] | null
  /**
   * The Messages API container the run's code runs in (SPEC §16), from the last model answer that
   * named one: sent with each later request of the run. Null (or absent) for a run without one.
   */
  readonly container_id?: string | null
  /** When that container expires unless a request uses it (the API's `expires_at`, ISO), from the last answer that named one. */
  readonly container_expires_at?: string | null
}

/** A call a run waits on, as the run shows it (see RunRecord.pending_calls). */
export interface PendingCallEntry {
  readonly tool_use_id: string
  readonly name: string
  /** When it stops waiting (ms since the epoch). */
  readonly deadline_at: number
}

export type CallbackStatus = 'pending' | 'delivered' | 'failed'

/** The part of a run its driver changes as it goes. */
export type RunPatch = Partial<Pick<RunRecord,
  'status' | 'stop_reason' | 'started_at' | 'completed_at' | 'steps' | 'tool_calls_total' |
  'tool_calls_errors' | 'usage' | 'output' | 'required_action' | 'error' | 'pending_results' |
  'callback_status' | 'callback_next_at' | 'pending_calls' | 'container_id' | 'container_expires_at'>>

/** The outcome of a callback delivery attempt. */
export interface CallbackUpdate {
  readonly status: CallbackStatus
  readonly attempts: number
  readonly next_at: number | null
  readonly error: string | null
}

export interface EventRecord {
  readonly run_id: string
  readonly seq: number
  readonly type: string
  readonly at: number
  readonly data: Record<string, unknown>
}

/** An event about to be stored; its number is given by the run's driver. */
export type NewEvent = Omit<EventRecord, 'run_id'>

export interface Page<T> {
  readonly items: T[]
  /** Opaque; pass it back as `after` for the next page. Null on the last page. */
  readonly nextCursor: string | null
}

export interface PageRequest {
  readonly limit: number
  /** The `nextCursor` of the previous page. */
  readonly after?: string | undefined
}

export interface RunFilter extends PageRequest {
  readonly status?: RunStatus | undefined
  readonly metadata?: Readonly<Record<string, string>> | undefined
}

/** The fence of a run's driver: a write with a stale token is refused (another replica took over). */
export interface Lease {
  readonly owner: string
  readonly token: number
}

/** A run's writer lost its lease: it must stop driving the run at once. */
export class LeaseLostError extends Error {
  override name = 'LeaseLostError'
  constructor (runId: string) {
    super(`lease on ${runId} was lost`)
  }
}

/**
 * A create that {@link NewRun.admit} refused; nothing was stored. `missing` names the tools asked
 * for that the tenant does not have (refused for them first, whatever its count of runs);
 * `active` is the tenant's count of runs not yet final as the insert saw it (at most `limit`).
 */
export class CreateRefusedError extends Error {
  override name = 'CreateRefusedError'
  constructor (readonly reason: 'unknown_tools' | 'too_many_active', readonly missing: readonly string[] = [], readonly active = 0) {
    super(reason === 'unknown_tools' ? `unknown tools: ${missing.join(', ')}` : 'too many active runs')
  }
}

export interface NewRun {
  /** The whole run, as it starts (with its lease when its creator drives it). */
  readonly run: RunRecord
  readonly messages: readonly MessageParam[]
  /** The first event (`run.created`), numbered 1. */
  readonly event: NewEvent
  /**
   * `run.started`, numbered 2, for a run whose creator starts it at once (the run is `running`):
   * stored in the same transaction, rather than in a second one before the first model call.
   */
  readonly started?: NewEvent
  /**
   * What must hold for the run to be stored, checked by the statement (PostgreSQL) or transaction
   * (SQLite) that stores it: each of `tools` is one of the tenant's tools (they come back with the
   * run), and the tenant's runs not yet final, counted up to `limit`, are fewer than `limit`
   * less `reserved` (creates under way elsewhere that may not be stored yet). Otherwise nothing is
   * stored and {@link CreateRefusedError} says why. One round trip rather than a read of each first.
   */
  readonly admit?: { readonly tools: readonly string[], readonly limit: number, readonly reserved: number }
}

/** What {@link Store.createRun} answers. */
export interface CreatedRun {
  readonly run: RunRecord
  /** False when the idempotency key was used already: `run` is that run, and nothing was stored. */
  readonly created: boolean
  /** The tools of `admit.tools`, as read with the insert (empty without `admit`, or not created). */
  readonly tools: ToolRecord[]
}

/** What a run's driver writes at once: a step's messages, the run's new state and events. */
export interface RunWrite {
  readonly messages?: readonly MessageParam[]
  readonly patch?: RunPatch
  readonly events?: readonly NewEvent[]
  /**
   * Tools of the run's tenant to read back with the write, in the same statement or transaction:
   * a step's commit reads the next step's tools so, rather than in a round trip of their own.
   */
  readonly readTools?: readonly string[]
  /**
   * The step's usage lines (SPEC §17), stored in the same statement or transaction as the rest of
   * the write, only if it is: no round trip of their own, and a lost lease stores none. Lines
   * already stored (the same run and key: a replica that took the run over) are left as they are.
   */
  readonly usage?: readonly UsageEntry[]
}

/** What {@link Store.writeRun} answers. */
export interface WrittenRun {
  /** The run as now stored. */
  readonly run: RunRecord
  /** The tools of `readTools` that exist, as of the write (none asked for: empty). */
  readonly tools: ToolRecord[]
}

/**
 * Everything Switchboard keeps. Two implementations, SQLite and PostgreSQL, pass one contract
 * suite (test/store/store.test.ts). Every read and write of tenant data names the tenant.
 */
export interface Store {
  readonly kind: 'sqlite' | 'postgres'
  /** What the tool health guards keep: calls for the statistics, cached results, breakers. */
  readonly toolHealth: ToolHealthStore
  /** What the cost guards keep: each model call's and tool call's usage, per tenant (src/cost/). */
  readonly usage: UsageStore
  /** Calls that answer later (SPEC §13): their waits and results. */
  readonly callWaits: CallWaitStore
  /** Succeeds when the storage answers. */
  ping (): Promise<void>
  close (): Promise<void>

  /**
   * Creates the tool or replaces its definition, keeping its secrets and creation time. Each
   * definition written must have a revision of its own (a new one for every write): reads answer a
   * definition they already hold by its revision alone.
   */
  putTool (tool: ToolRecord): Promise<{ tool: ToolRecord, created: boolean }>
  getTool (tenantId: string, name: string): Promise<ToolRecord | null>
  getTools (tenantId: string, names: readonly string[]): Promise<ToolRecord[]>
  listTools (tenantId: string, page: PageRequest): Promise<Page<ToolRecord>>
  deleteTool (tenantId: string, name: string): Promise<boolean>
  /**
   * Replaces a tool's secrets if they still are `expected` (compare-and-set, so that two rotations
   * at once cannot lose one's secret). Null when the tool is gone or its secrets changed meanwhile.
   */
  setToolSecrets (tenantId: string, name: string, secrets: readonly SigningSecret[], updatedAt: number, expected: readonly SigningSecret[]): Promise<ToolRecord | null>

  /** Creates or replaces an MCP server's registration, keeping its creation time. */
  putMcpServer (server: McpServerRecord): Promise<{ server: McpServerRecord, created: boolean }>
  getMcpServer (tenantId: string, name: string): Promise<McpServerRecord | null>
  listMcpServers (tenantId: string, page: PageRequest): Promise<Page<McpServerRecord>>
  deleteMcpServer (tenantId: string, name: string): Promise<boolean>
  /** Stores a server's tool list as read at `listedAt`; null when the server is gone. */
  setMcpServerTools (tenantId: string, name: string, listed: readonly McpListedTool[], listedAt: number): Promise<McpServerRecord | null>

  /**
   * Stores a new run with its first messages and event. With an idempotency key already used by
   * the tenant, stores nothing and returns the existing run with `created: false`. Throws
   * {@link CreateRefusedError} when `admit` does not hold.
   */
  createRun (input: NewRun): Promise<CreatedRun>
  getRun (tenantId: string, runId: string): Promise<RunRecord | null>
  getRunByIdempotencyKey (tenantId: string, key: string): Promise<RunRecord | null>
  listRuns (tenantId: string, filter: RunFilter): Promise<Page<RunRecord>>
  getMessages (runId: string): Promise<MessageParam[]>
  listEvents (runId: string, afterSeq: number, limit: number): Promise<EventRecord[]>
  /** Runs not yet final across every tenant and replica, by status (the metrics' gauge). */
  countUnfinishedRuns (): Promise<Record<'queued' | 'running' | 'requires_action', number>>

  /**
   * Takes the lease of a queued or running run that no live lease holds. Returns the new fence,
   * or null when another replica holds it or the run has ended.
   */
  claimRun (runId: string, owner: string, leaseMs: number): Promise<Lease | null>
  /**
   * Extends the leases `owner` holds on these runs; answers the ids of those it still holds. (A
   * cancel asked of another replica is read by cancelRequested, the one way it reaches a run.)
   */
  renewLeases (owner: string, runIds: readonly string[], leaseMs: number): Promise<string[]>
  /** Gives a lease up, so that another replica may take the run at once. */
  releaseRun (runId: string, lease: Lease): Promise<void>
  /**
   * Takes up to `limit` runs nobody drives: queued ones without a lease, and queued or running
   * ones whose lease has expired (their replica died, or stalled). Oldest first. Each is claimed
   * by one replica only (PostgreSQL skips rows another replica is claiming).
   */
  claimAbandonedRuns (owner: string, leaseMs: number, limit: number): Promise<RunRecord[]>
  /** Takes queued runs nobody holds whose deadline has passed, to end them. */
  claimExpiredQueuedRuns (owner: string, leaseMs: number, limit: number): Promise<RunRecord[]>
  /**
   * Drops every lease but `except`'s: only for a store no other process can be using (SQLite holds
   * its file exclusively), at start-up, so that a restart resumes at once what the dead one held.
   */
  releaseAllLeases (except: string): Promise<number>
  /**
   * Takes a run out of `requires_action` (status `running`, lease held by `owner`), for the one
   * caller that gets there first, and only from the wait the caller read (`eventCount` is the
   * run's event count then). Null if the run is not in that wait (any more).
   */
  resumeWaitingRun (runId: string, eventCount: number, owner: string, leaseMs: number): Promise<RunRecord | null>
  /** Puts a run taken by resumeWaitingRun back to waiting, when resuming it failed. */
  returnToWaiting (runId: string, lease: Lease): Promise<void>
  /**
   * Lets go of a running run that waits on pending calls (SPEC §13): no replica holds it, and
   * none takes it over before `until` (its first pending call's deadline), when the sweep's
   * takeover ends the calls due. Answers false if the lease was lost meanwhile.
   */
  parkRun (runId: string, lease: Lease, until: number): Promise<boolean>
  /**
   * Takes a run parked by parkRun (lease held by `owner`), for the one that gets there first, and
   * only as `eventCount` shows it. Null if it is not parked so (any more).
   */
  takeParkedRun (runId: string, eventCount: number, owner: string, leaseMs: number): Promise<RunRecord | null>
  /** Marks a queued or running run for cancellation by whichever replica drives it. */
  requestCancel (tenantId: string, runId: string, at: number): Promise<RunRecord | null>
  /** Runs `owner` drives for which another replica was asked to cancel. */
  cancelRequested (owner: string): Promise<string[]>
  /** Runs waiting in `requires_action` past their deadline. */
  expiredWaitingRuns (now: number, limit: number): Promise<RunRecord[]>

  /**
   * Claims callbacks due by `now` until `claimUntil` (another replica skips them meanwhile) and
   * answers them; at most `limit`.
   */
  claimDueCallbacks (now: number, claimUntil: number, limit: number): Promise<RunRecord[]>
  /** Records a delivery's outcome, unless its claim (`claimedUntil`) was lost meanwhile. */
  recordCallback (runId: string, claimedUntil: number, update: CallbackUpdate): Promise<boolean>
  getCallbackSecrets (tenantId: string): Promise<SigningSecret[] | null>
  /** Compare-and-set of a tenant's callback secrets: `expected` null means there are none yet. */
  setCallbackSecrets (tenantId: string, secrets: readonly SigningSecret[], updatedAt: number, expected: readonly SigningSecret[] | null): Promise<boolean>
  /**
   * A secret of the service itself, the same for every replica (the key that signs timeline links):
   * the one stored under `name`, or else `candidate`, stored now. Replicas starting at once all get
   * whichever was stored first.
   */
  serviceSecret (name: string, candidate: string): Promise<string>

  /**
   * Writes a driver's messages, run state and events in one transaction, fenced by its lease.
   * Throws {@link LeaseLostError} when the lease is no longer the driver's.
   */
  writeRun (run: RunRecord, lease: Lease, write: RunWrite): Promise<WrittenRun>
}
