import Type, { type Static } from 'typebox'
import { ISODate } from './common.js'
import { JsonObject, ToolCallersSchema, ToolEffectSchema } from './tools.js'

export const MCP_SERVER_NAME_PATTERN = '^[a-zA-Z0-9_-]{1,32}$'

export const McpServerNameSchema = Type.String({ pattern: MCP_SERVER_NAME_PATTERN, description: 'Letters, digits, _ and -, at most 32. A tool `search` of server `github` is offered to runs as `github__search`.' })

const OverrideSchema = Type.Object({
  effect: Type.Optional(ToolEffectSchema),
  parallel: Type.Optional(Type.Boolean({ description: '`false`: a call runs alone, as for webhook tools.' })),
  timeout_ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 600_000 })),
  approval: Type.Optional(Type.Union([Type.Literal('never'), Type.Literal('always')], { description: '`always`: each call of the tool waits for a reviewer\'s decision (SPEC §12), as for webhook tools.' })),
  callers: Type.Optional(ToolCallersSchema)
}, { additionalProperties: false })

/** The body of `PUT /mcp-servers/{name}` and an entry of TOOLS_FILE's `mcp_servers`. */
export const McpServerDefinitionSchema = Type.Object({
  url: Type.String({ minLength: 1, maxLength: 2048, description: 'The server\'s Streamable HTTP endpoint (http or https), checked against the egress policy now and on every connection.' }),
  headers: Type.Optional(Type.Record(Type.String(), Type.String({ maxLength: 8192 }), { default: {}, description: 'Sent with every request, e.g. `Authorization`. Write-only: values are never returned or logged.' })),
  oauth: Type.Optional(Type.Object({
    client_id: Type.String({ minLength: 1, maxLength: 512 }),
    client_secret: Type.String({ minLength: 1, maxLength: 4096, description: 'Write-only.' }),
    scope: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
    issuer: Type.Optional(Type.String({ minLength: 1, maxLength: 2048, description: 'The authorization server\'s issuer identifier (https://auth.example.com): the credentials are then sent to that authorization server only, whichever one the MCP server names. Without it, they go to the one the MCP server names.' }))
  }, { additionalProperties: false, description: 'OAuth client credentials: the token is fetched from the server\'s authorization server.' })),
  tools: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 512, uniqueItems: true, description: 'Allow-list of the server\'s tool names; by default every tool.' })),
  trust_annotations: Type.Optional(Type.Boolean({ default: false, description: '`true`: readOnlyHint makes a tool `read_only`, idempotentHint `idempotent`. Otherwise every tool is `side_effecting` unless overridden.' })),
  defaults: Type.Optional(Type.Object({
    timeout_ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 600_000, default: 30_000 })),
    max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 10, default: 3 })),
    max_concurrency: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 1_000_000 }), Type.Null()], { default: null }))
  }, { additionalProperties: false })),
  overrides: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 128 }), OverrideSchema, { maxProperties: 512, description: 'Per tool (by the server\'s name for it).' }))
}, { additionalProperties: false, title: 'McpServerDefinition' })

export type McpServerDefinition = Static<typeof McpServerDefinitionSchema>

/** One of a server's tools as the API shows it. */
export const McpToolSchema = Type.Object({
  name: Type.String({ description: 'The server\'s name for the tool.' }),
  run_name: Type.String({ description: 'What runs call it: `<server>__<tool>`.' }),
  description: Type.String(),
  input_schema: JsonObject('JSON Schema of the tool\'s input, as the server lists it.'),
  effect: ToolEffectSchema,
  annotations: Type.Union([JsonObject('As the server lists them (hints, untrusted unless trust_annotations).'), Type.Null()])
}, { title: 'McpTool' })

/** A registered MCP server as the API shows it: header names without values, no OAuth secret. */
export const McpServerSchema = Type.Object({
  object: Type.Literal('mcp_server'),
  name: Type.String(),
  url: Type.String(),
  header_names: Type.Array(Type.String()),
  oauth: Type.Union([Type.Object({ client_id: Type.String(), scope: Type.Union([Type.String(), Type.Null()]), issuer: Type.Union([Type.String(), Type.Null()]), has_client_secret: Type.Boolean() }), Type.Null()]),
  allowed_tools: Type.Union([Type.Array(Type.String()), Type.Null()], { description: 'The allow-list; null: every tool.' }),
  trust_annotations: Type.Boolean(),
  defaults: Type.Object({ timeout_ms: Type.Integer(), max_attempts: Type.Integer(), max_concurrency: Type.Union([Type.Integer(), Type.Null()]) }),
  overrides: Type.Record(Type.String(), OverrideSchema),
  tools: Type.Array(McpToolSchema, { description: 'The tools runs may use, as last listed.' }),
  listed_at: ISODate,
  protocol_version: Type.Union([Type.String(), Type.Null()], { description: 'The MCP revision the server spoke when it was registered: 2025-11-25 or earlier (the initialize handshake), 2026-07-28 or later (server/discover); null for a server registered before Switchboard told them apart.' }),
  source: Type.Union([Type.Literal('api'), Type.Literal('file')]),
  created_at: ISODate,
  updated_at: ISODate
}, { $id: 'McpServer', title: 'McpServer' })

export type McpServer = Static<typeof McpServerSchema>

/** An MCP tool as a run pinned it when it started (kept in the run's params, never a secret). */
export interface PinnedMcpTool {
  readonly run_name: string
  readonly server: string
  readonly tool: string
  readonly description: string
  readonly input_schema: Record<string, unknown>
  readonly effect: 'read_only' | 'idempotent' | 'side_effecting'
  readonly parallel: boolean
  readonly timeout_ms: number
  readonly max_attempts: number
  readonly max_concurrency: number | null
  /** Set when every call waits for a reviewer (SPEC §12). */
  readonly approval?: 'always'
  /** Set when the model's code may call it too (SPEC §16): an override's, if its effect class allows. */
  readonly callers?: Array<'direct' | 'code'>
}
