import type { ToolRecord } from '../store/index.js'
import type { CallContext, CallHooks, CallResult } from './webhook-client.js'

export type { CallContext, CallHooks, CallResult } from './webhook-client.js'

/**
 * Where a registered tool's calls go: a webhook today (webhook-client.ts), an MCP server next
 * (SPEC §11). A source makes the call with every attempt its tool allows, within the tool's
 * timeout and the run's deadline, and always resolves: a failure is an `is_error` outcome, never
 * an exception. The engine knows sources only through this interface.
 */
export interface ToolSource {
  call (tool: ToolRecord, input: unknown, context: CallContext, hooks?: CallHooks): Promise<CallResult>
}
