import type { Message, Tool as ModelTool, ToolUnion, ToolUseBlock } from '@anthropic-ai/sdk/resources/messages'

/**
 * Programmatic tool calling (SPEC §16): what a run with `code_execution: true` adds to its model
 * requests, how a call made by the model's code differs from a direct one, and how the API says
 * that the run's container is gone. docs/code-execution.md says where each rule comes from.
 */

/**
 * The version of the API's code execution tool a run is given: the one with REPL state persisted
 * across the requests of a container, and the one the SDK's `caller` type names
 * (ServerToolCaller20260120). It is generally available: no beta header.
 */
export const CODE_EXECUTION_TOOL_TYPE = 'code_execution_20260120'

/** The code execution tool as it goes in a request's `tools`. */
export const CODE_EXECUTION_TOOL: ToolUnion = { type: CODE_EXECUTION_TOOL_TYPE, name: 'code_execution' }

/** Who may call a tool: the model (`direct`) and/or the code it runs in the API's container (`code`). */
export type ToolCaller = 'direct' | 'code'

/**
 * The longest a call made by code may take, all its attempts together (SPEC §16). The code waits
 * in the API's container for the result, and a container left idle for about five minutes is
 * checkpointed, its running code stopped (see docs/code-execution.md): 240 s leaves the rest of
 * that window for the backoff between attempts, the result to be stored and the next model
 * request to reach the API.
 */
export const CODE_CALL_TIMEOUT_CAP_MS = 240_000

/** The run error of a request refused because the run's container expired or is gone. */
export const CONTAINER_EXPIRED = 'RUN_ERR_CONTAINER_EXPIRED'

/**
 * Why a tool of effect class `effect` may not have `callers`, or null when it may: only read_only
 * and idempotent tools may be called from code, since the model's code may call them again (a
 * loop that retries, a script run twice) where Switchboard cannot see it.
 */
export function callersProblem (callers: readonly ToolCaller[] | undefined, effect: string, name: string): string | null {
  if (callers === undefined || !callers.includes('code') || effect === 'read_only' || effect === 'idempotent') return null
  return `tool ${name} is ${effect}, but callers lists "code": only read_only and idempotent tools may be called from the model's code, which may call them again on its own. Set its effect to read_only or idempotent, or leave "code" out of callers.`
}

/**
 * A registered tool's definition for a run with code execution: `allowed_callers` as the API
 * spells them, when the tool may be called from code. Unchanged otherwise (and always in a run
 * without code execution, where the API would refuse `allowed_callers` naming a tool it lacks).
 */
export function withCallers (definition: ModelTool, callers: readonly ToolCaller[] | undefined, codeExecution: boolean): ModelTool {
  if (!codeExecution || callers === undefined || !callers.includes('code')) return definition
  const allowed: NonNullable<ModelTool['allowed_callers']> = callers.includes('direct') ? ['direct', CODE_EXECUTION_TOOL_TYPE] : [CODE_EXECUTION_TOOL_TYPE]
  return { ...definition, allowed_callers: allowed }
}

/** What made a tool call: the model itself, or its code, run by the server tool `tool_id` (a `srvtoolu_` id). */
export type CallerRef = { readonly type: 'direct' } | { readonly type: 'code', readonly tool_id: string }

/** Whether a tool_use was made by the model's code (its `caller` names a code execution tool). */
export function isCodeCall (block: Pick<ToolUseBlock, 'caller'>): boolean {
  const caller = block.caller as { type?: unknown } | undefined
  return typeof caller?.type === 'string' && caller.type.startsWith('code_execution_')
}

/** The caller of a tool_use, as events and the timeline show it. */
export function callerOf (block: Pick<ToolUseBlock, 'caller'>): CallerRef {
  if (!isCodeCall(block)) return { type: 'direct' }
  return { type: 'code', tool_id: String((block.caller as { tool_id?: unknown }).tool_id ?? '') }
}

/**
 * A tool as a call made by code makes it: each attempt's timeout the tool's, at most
 * {@link CODE_CALL_TIMEOUT_CAP_MS}, and no more attempts than fit that time together (one at
 * least), so that a tool that keeps failing still answers the code before its container stops.
 * The tool itself when it fits already (most do: 30 s and 3 attempts), so nothing is copied.
 */
export function codeCallTool<T extends { readonly timeout_ms: number, readonly max_attempts: number }> (tool: T): T {
  const timeoutMs = Math.min(tool.timeout_ms, CODE_CALL_TIMEOUT_CAP_MS)
  const maxAttempts = Math.max(1, Math.min(tool.max_attempts, Math.floor(CODE_CALL_TIMEOUT_CAP_MS / timeoutMs)))
  return timeoutMs === tool.timeout_ms && maxAttempts === tool.max_attempts ? tool : { ...tool, timeout_ms: timeoutMs, max_attempts: maxAttempts }
}

type ResultContent = string | ReadonlyArray<{ readonly type: string, readonly text?: string, readonly source?: object }>

/**
 * A result for the model's code, as text: the API takes only text for a call made by code. Text
 * blocks are joined; any other block (an image) is replaced by a note of what it was.
 */
export function resultAsText (content: ResultContent): string {
  if (typeof content === 'string') return content
  let out = ''
  for (const block of content) {
    if (block.type === 'text') out += block.text ?? ''
    else {
      const media = (block.source as { media_type?: unknown } | undefined)?.media_type
      out += `[${block.type}${typeof media === 'string' ? ` ${media}` : ''} left out: a result for code is text only]`
    }
  }
  return out
}

/** The id of the container a model answer ran code in, if any. */
export function containerIdOf (message: Pick<Message, 'container'> | { readonly container?: unknown }): string | undefined {
  const container = (message as { container?: { id?: unknown } | null }).container
  return typeof container?.id === 'string' && container.id !== '' ? container.id : undefined
}

/**
 * Whether an error answer of the Messages API says that the request's container expired or no
 * longer exists: an `invalid_request_error` or `not_found_error` (400, 404) that names the
 * container and its end, or an error of type `container_expired`. Such a run cannot go on: the
 * code it was running, and the state of that code, are lost.
 */
export function isContainerGone (status: number | undefined, type: string | undefined, message: string): boolean {
  if (type === 'container_expired') return true
  if (status !== 400 && status !== 404) return false
  return /container/i.test(message) && /expired|not found|no longer (exists|available)/i.test(message)
}

/** What a run keeps of its container: the id, and when it expires unless a request uses it. */
export interface ContainerPatch {
  container_id?: string
  container_expires_at?: string
}

/**
 * What a step's write and its `step.completed` event keep of a model answer's container: its id
 * when the answer names one other than `known` (the run's so far), and its `expires_at`, which each
 * answer moves on (the container expires after a time without requests). Empty for an answer
 * without a container.
 */
export function containerPatch (message: Pick<Message, 'container'> | { readonly container?: unknown }, known: string | null | undefined): ContainerPatch {
  const id = containerIdOf(message)
  if (id === undefined) return {}
  const expiresAt = (message.container as { expires_at?: unknown }).expires_at
  return {
    ...(id === known ? {} : { container_id: id }),
    ...(typeof expiresAt === 'string' && expiresAt !== '' ? { container_expires_at: expiresAt } : {})
  }
}

/** The run object's `container` (SPEC §16): null for a run whose model never ran code. */
export function runContainer (run: { readonly container_id?: string | null, readonly container_expires_at?: string | null }): { id: string, expires_at: string | null } | null {
  return run.container_id == null ? null : { id: run.container_id, expires_at: run.container_expires_at ?? null }
}
