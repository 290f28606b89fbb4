import type { Span } from '@opentelemetry/api'
import type { ToolRecord } from '../store/index.js'
import type { ToolOutcome } from './tool-result.js'

/** What a call knows of its run. */
export interface CallContext {
  readonly runId: string
  readonly toolUseId: string
  readonly metadata: Readonly<Record<string, string>>
  /** The run's W3C trace id (32 hex digits); each attempt is a span of it. */
  readonly traceId: string
  /** The span of the call's step: each attempt's span is its child. */
  readonly span?: Span | undefined
  /** The run's deadline (ms since the epoch): no attempt or wait goes past it. */
  readonly runDeadline: number
  /** Aborted when the run stops (cancelled, timed out, shutting down). */
  readonly signal: AbortSignal
  /**
   * Where the tool may post the call's result later, after answering `202 Accepted` (SPEC §13).
   * None (a batch_tool invocation): a 202 is an error.
   */
  readonly resultUrl?: string | undefined
}

export interface CallHooks {
  /** An attempt is about to be sent; a promise it returns is awaited first (to store the fact). */
  onAttempt?: (attempt: number) => void | Promise<void>
  /** An attempt failed and another will follow after `delayMs`. */
  onRetry?: (attempt: number, outcome: ToolOutcome, durationMs: number, delayMs: number) => void
}

export interface CallResult {
  readonly outcome: ToolOutcome
  readonly attempts: number
}

/**
 * Where a registered tool's calls go: a webhook today (webhook/), an MCP server next
 * (SPEC §11). A source makes the call with every attempt its tool allows, within the tool's
 * timeout and the run's deadline, and always resolves: a failure is an `is_error` outcome, never
 * an exception. The engine knows sources only through this interface.
 */
export interface ToolSource {
  call (tool: ToolRecord, input: unknown, context: CallContext, hooks?: CallHooks): Promise<CallResult>
}
