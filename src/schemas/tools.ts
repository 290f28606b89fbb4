import Type, { type Static } from 'typebox'
import { ISODate, NO_NUL } from './common.js'

/** Any JSON object, typed as a record. */
export function JsonObject (description: string) {
  return Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true, description })
}

export const TOOL_NAME_PATTERN = '^[a-zA-Z0-9_-]{1,64}$'

export const ToolNameSchema = Type.String({ pattern: TOOL_NAME_PATTERN, description: 'What the model calls the tool: letters, digits, _ and -, at most 64.' })

const EFFECT_DESCRIPTION = 'Decides retries and crash recovery: only `read_only` and `idempotent` calls are retried after a timeout or a 408/429/502/503/504, or called again after a crash.'
function effectSchema (options: { default?: string } = {}) {
  return Type.Union([Type.Literal('read_only'), Type.Literal('idempotent'), Type.Literal('side_effecting')], { ...options, description: EFFECT_DESCRIPTION })
}

export const ToolEffectSchema = effectSchema()

/** A tool's circuit breaker (SPEC §18). */
export const CircuitBreakerSchema = Type.Object({
  failures: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 5, description: 'Failed calls in a row that open the circuit.' })),
  window_ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400_000, default: 60_000, description: 'Only failures within this many ms of the latest count.' })),
  open_ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400_000, default: 30_000, description: 'How long the circuit stays open before one probe call is let through.' }))
}, { additionalProperties: false, title: 'CircuitBreaker' })

export type CircuitBreaker = Required<Static<typeof CircuitBreakerSchema>>

/** The breaker a tool has unless it says otherwise. */
export const CIRCUIT_BREAKER_DEFAULTS: CircuitBreaker = { failures: 5, window_ms: 60_000, open_ms: 30_000 }

/** What one replica's breaker of a tool says now. */
export const CircuitStateSchema = Type.Object({
  replica: Type.String({ description: 'The replica whose breaker this is: each has its own.' }),
  state: Type.Union([Type.Literal('closed'), Type.Literal('open'), Type.Literal('half_open'), Type.Literal('off')], { description: '`open`: calls fail at once; `half_open`: one probe call is under way; `off`: the tool has no breaker.' }),
  failures: Type.Integer({ description: 'Failed calls in a row, within the window.' }),
  retry_at: Type.Union([ISODate, Type.Null()], { description: 'While open: when a probe call is let through.' })
}, { title: 'CircuitState', description: 'Health: the circuit breaker of the replica that answered (GET /tools/{name}/stats shows every replica\'s).' })

export type CircuitState = Static<typeof CircuitStateSchema>

/** Who may call a tool (SPEC §16): the model, and/or the code it runs with a run's `code_execution`. */
export const ToolCallersSchema = Type.Array(Type.Union([Type.Literal('direct'), Type.Literal('code')]), {
  minItems: 1,
  maxItems: 2,
  uniqueItems: true,
  description: 'Who may call the tool: `direct` (the model) and `code` (the model\'s code, in a run with `code_execution`; passed to the Messages API as `allowed_callers`). Default `["direct"]`. Only `read_only` and `idempotent` tools may list `code` (400 TOOL_ERR_CALLERS_NOT_ALLOWED): the model\'s code may call them again.'
})

/** A tool's fields passed through to the Messages API as they are (SPEC §15). */
export const ToolModelOptionsSchema = Type.Object({
  strict: Type.Optional(Type.Boolean({ description: 'Passed to the Messages API: the model\'s input always matches `input_schema` (structured outputs).' })),
  input_examples: Type.Optional(Type.Array(Type.Record(Type.String(), Type.Unknown()), { maxItems: 20, description: 'Passed to the Messages API: example inputs shown to the model. Each must match `input_schema`, or the tool is refused (400 TOOL_ERR_INVALID_EXAMPLE, naming it).' })),
  defer_loading: Type.Optional(Type.Boolean({ description: 'Passed to the Messages API: the definition is not shown to the model until its tool search finds it. Needs a run with `tool_search`.' })),
  eager_input_streaming: Type.Optional(Type.Boolean({ description: 'Passed to the Messages API: the model streams this tool\'s input without buffering it to check it first.' })),
  callers: Type.Optional(ToolCallersSchema)
}, { additionalProperties: false })

export type ToolModelOptions = Static<typeof ToolModelOptionsSchema>

/** Whether every call of a tool waits for a reviewer's decision (SPEC §12). */
export const ApprovalSchema = Type.Union([Type.Literal('never'), Type.Literal('always')], { default: 'never', description: '`always`: each call waits, with the run in `requires_action`, until POST /runs/{id}/approvals decides it.' })

/** How long a call the tool answered `202 Accepted` waits for its result (SPEC §13). */
export const AsyncTimeoutSchema = Type.Integer({ minimum: 1000, maximum: 604_800_000, default: 3_600_000, description: 'When the tool answers a call `202 Accepted`, how long (ms) the run waits for the result posted to `result_url`, never past the run\'s deadline; after it the call gets an `is_error` result. 1 s to 7 days.' })

/** The fields of a tool a caller writes (PUT /tools/{name}, TOOLS_FILE). */
export const ToolDefinitionSchema = Type.Object({
  description: Type.String({ minLength: 1, maxLength: 20_000, pattern: NO_NUL, description: 'Shown to the model: what the tool does and when to use it.' }),
  input_schema: JsonObject('JSON Schema (draft-07 or 2020-12) of the tool\'s input, `type: "object"` at the top. Shown to the model; every input is checked against it before a call.'),
  url: Type.String({ minLength: 1, maxLength: 2048, description: 'The webhook (http or https), checked against the egress policy now and on every call.' }),
  headers: Type.Optional(Type.Record(Type.String(), Type.String({ maxLength: 8192 }), { description: 'Sent with every call, e.g. the tool\'s own auth. Write-only: values are never returned or logged.', default: {} })),
  timeout_ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 600_000, default: 30_000, description: 'Per attempt, from dispatch to the last byte of the response.' })),
  effect: Type.Optional(effectSchema({ default: 'side_effecting' })),
  parallel: Type.Optional(Type.Boolean({ default: true, description: '`false`: a call runs alone, after the calls listed before it and before those listed after it.' })),
  max_concurrency: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 1_000_000 }), Type.Null()], { default: null, description: 'Most calls of this tool in flight at once in one replica; more wait their turn. null: no limit.' })),
  max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 10, default: 3, description: 'Attempts for a retryable failure.' })),
  circuit_breaker: Type.Optional(Type.Union([CircuitBreakerSchema, Type.Literal(false)], { default: CIRCUIT_BREAKER_DEFAULTS, description: 'Per tool and replica: after `failures` failed calls in a row (transport failures, timeouts, 5xx; never `is_error` answers or 4xx) within `window_ms`, calls fail at once for `open_ms`, then one probe call decides. `false`: off.' })),
  cache_ttl_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400_000, default: 0, description: 'Only for `read_only` tools: a call with the same input (key order aside) within this many ms reuses the stored result of this tenant\'s tool at this revision, without a call. 0: off.' })),
  approval: Type.Optional(ApprovalSchema),
  async_timeout_ms: Type.Optional(AsyncTimeoutSchema),
  ...ToolModelOptionsSchema.properties
}, { additionalProperties: false })

export type ToolDefinition = Static<typeof ToolDefinitionSchema>

/** A tool as the API shows it: never its header values nor its secret. */
export const ToolSchema = Type.Object({
  object: Type.Literal('tool'),
  name: Type.String(),
  description: Type.String(),
  input_schema: JsonObject('JSON Schema of the tool\'s input.'),
  url: Type.String(),
  header_names: Type.Array(Type.String(), { description: 'The names of the configured headers; their values are write-only.' }),
  timeout_ms: Type.Integer(),
  effect: ToolEffectSchema,
  parallel: Type.Boolean(),
  max_concurrency: Type.Union([Type.Integer(), Type.Null()]),
  max_attempts: Type.Integer(),
  circuit_breaker: Type.Union([CircuitBreakerSchema, Type.Literal(false)]),
  cache_ttl_ms: Type.Integer(),
  approval: ApprovalSchema,
  async_timeout_ms: AsyncTimeoutSchema,
  ...ToolModelOptionsSchema.properties,
  circuit: Type.Optional(CircuitStateSchema),
  source: Type.Union([Type.Literal('api'), Type.Literal('file')], { description: '`file`: declared in TOOLS_FILE, so only the file can change or remove it.' }),
  has_signing_secret: Type.Boolean(),
  previous_secret_expires_at: Type.Union([ISODate, Type.Null()], { description: 'After a rotation: until when the previous secret also signs calls.' }),
  created_at: ISODate,
  updated_at: ISODate
}, { $id: 'Tool', title: 'Tool' })

export type Tool = Static<typeof ToolSchema>

/** A tool with its signing secret: the answer to a create and to a rotation, the only times it is shown. */
export const ToolWithSecretSchema = Type.Object({
  ...ToolSchema.properties,
  signing_secret: Type.String({ description: 'Standard Webhooks secret (`whsec_…`) to verify calls with. Shown this once: store it now.' })
}, { title: 'ToolWithSecret' })

const count = (description: string) => Type.Integer({ minimum: 0, description })

/** `GET /tools/{name}/stats`: how a tool's calls went over a window, on every replica (SPEC §18). */
export const ToolStatsSchema = Type.Object({
  object: Type.Literal('tool_stats'),
  name: Type.String(),
  window: Type.String({ description: 'As asked: `15m`, `1h`, `7d`.' }),
  since: ISODate,
  until: ISODate,
  calls: count('Calls that ended in the window, on every replica: sent, answered from the cache, or refused by the circuit breaker.'),
  outcomes: Type.Record(Type.String(), Type.Integer(), { description: 'Calls by outcome (`ok`, `error`, `timeout`, `unreachable`, `refused`, `cancelled`, `circuit_open`, `cached`).' }),
  errors: Type.Object({
    timeout: count('No whole answer within the tool\'s timeout.'),
    unreachable: count('Could not be sent or its answer read (refused, reset, DNS, TLS).'),
    http_5xx: count('The tool answered a 5xx.'),
    http_4xx: count('The tool answered a 4xx.'),
    tool_error: count('The tool answered an `is_error` result.'),
    refused: count('Not sent: refused by the egress policy.'),
    circuit_open: count('Not sent: the circuit breaker was open.'),
    cancelled: count('Cut short by its run (cancelled, deadline, shutdown).')
  }, { description: 'The calls that did not end `ok` or `cached`, by what went wrong.' }),
  error_rate: Type.Union([Type.Number(), Type.Null()], { description: 'The share of calls that did not end `ok` or `cached` (0 to 1); null without calls.' }),
  latency_ms: Type.Object({
    sent: count('Calls that were sent (at least one attempt): the percentiles are of their durations, retries included.'),
    p50: Type.Union([Type.Integer(), Type.Null()]),
    p95: Type.Union([Type.Integer(), Type.Null()]),
    p99: Type.Union([Type.Integer(), Type.Null()])
  }),
  circuit: Type.Object({
    state: Type.Union([Type.Literal('closed'), Type.Literal('open'), Type.Literal('half_open'), Type.Literal('off')], { description: 'The worst of the replicas\' breakers: `open` if any is open.' }),
    replicas: Type.Array(CircuitStateSchema, { description: 'Each replica\'s breaker as it last changed, if that was within the window or it is open still (this replica\'s as it is now); a replica whose breaker never changed is not listed.' })
  })
}, { $id: 'ToolStats', title: 'ToolStats' })

export type ToolStats = Static<typeof ToolStatsSchema>

export const ToolStatsQuerySchema = Type.Object({
  window: Type.String({ pattern: '^[1-9][0-9]{0,5}[mhd]$', default: '1h', description: 'How far back: minutes (`15m`), hours (`1h`) or days (`7d`); at most 7 days.' })
})
