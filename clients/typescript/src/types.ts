/**
 * Friendly names for the generated types of api-types.ts: what the API takes and answers.
 */
import type { components, operations } from './api-types.js'

type Ops = operations
type JsonBody<K extends keyof Ops> = Ops[K] extends { requestBody?: { content: { 'application/json': infer B } } } ? B : never
type JsonAnswer<K extends keyof Ops, S extends number> = Ops[K]['responses'] extends Record<S, { content: { 'application/json': infer A } }> ? A : never
type Query<K extends keyof Ops> = Ops[K]['parameters'] extends { query?: infer Q } ? Partial<NonNullable<Q>> : never

export type Run = components['schemas']['Run']
export type RunEvent = components['schemas']['RunEvent']
export type Tool = components['schemas']['Tool']
export type ErrorObject = components['schemas']['Error']

/** The body of `PUT /tools/{name}`. */
export type ToolDefinition = JsonBody<'putTool'>
/** A tool as a create or a secret rotation answers it: with its `signing_secret`, shown this once. */
export type ToolWithSecret = JsonAnswer<'putTool', 201>
/** The body of `POST /runs`. */
export type RunCreateParams = JsonBody<'createRun'>
/** The body of `POST /runs/{id}/tool_outputs`. */
export type ToolOutputsParams = JsonBody<'submitToolOutputs'>
export type ToolOutput = ToolOutputsParams['tool_outputs'][number]
/** The body of `POST /runs/{id}/approvals`. */
export type ApprovalsParams = JsonBody<'approveToolCalls'>
export type CallbackSettings = JsonAnswer<'getCallbackSettings', 200>
export type CallbackSecret = JsonAnswer<'rotateCallbackSecret', 200>
export type Deleted = JsonAnswer<'deleteTool', 200>

/** `GET /runs` filters, besides `limit` and `after`; `metadata` becomes `metadata[key]=value`. */
export type RunListParams = Query<'listRuns'> & { metadata?: Record<string, string> }
export type ToolListParams = Query<'listTools'>
export type RunEventListParams = Query<'listRunEvents'>
export type RunGetParams = Query<'getRun'>

/** `GET /tools/{name}/stats`: how a tool's calls went over a window, on every replica. */
export type ToolStats = JsonAnswer<'getToolStats', 200>
export type ToolStatsParams = Query<'getToolStats'>
/** `GET /usage`: the tenant's tokens, cost, runs and tool calls over a period. */
export type Usage = JsonAnswer<'getUsage', 200>
export type UsageParams = Query<'getUsage'>
/** The body of `PUT /mcp-servers/{name}`. */
export type McpServerDefinition = JsonBody<'putMcpServer'>
export type McpServer = JsonAnswer<'getMcpServer', 200>
export type McpServerListParams = Query<'listMcpServers'>
export type DeletedMcpServer = JsonAnswer<'deleteMcpServer', 200>
