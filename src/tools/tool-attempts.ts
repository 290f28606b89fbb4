import type { Span } from '@opentelemetry/api'
import { retryDelay, sleep, type Backoff } from '../lib/retry.js'
import type { ToolRecord } from '../store/index.js'
import type { Telemetry } from '../telemetry/index.js'
import { errorOutcome, type ToolOutcome } from './tool-result.js'
import type { CallContext, CallHooks, CallResult } from './tool-source.js'

/**
 * The waits between a tool call's attempts: 200 ms, doubling, at most 10 s, each between half the
 * full wait and all of it, so that calls that failed together do not all come back together. A
 * call makes at most its tool's `max_attempts`; `maxRetries` is the most any tool may ask (10 attempts).
 */
export const TOOL_BACKOFF: Backoff = { baseMs: 200, factor: 2, capMs: 10_000, jitter: 0.5, maxRetries: 9 }

/** One attempt of a source: resolves with its outcome whatever happens; `span` is its trace span. */
export type Attempt = (attempt: number, span: Span | undefined) => Promise<ToolOutcome>

/**
 * Makes a call of `tool` with every attempt its effect class allows (SPEC §6), whatever its source:
 * up to `max_attempts` for retryable failures, waiting as {@link TOOL_BACKOFF} says (or as
 * Retry-After asks) but never past the run's deadline; each attempt is measured as a span.
 */
export async function callWithRetries (tool: ToolRecord, context: CallContext, hooks: CallHooks, telemetry: Telemetry, attemptOnce: Attempt): Promise<CallResult> {
  let attempt = 0
  for (;;) {
    attempt++
    await hooks.onAttempt?.(attempt)
    const started = Date.now()
    const measure = telemetry.toolAttempt(context.span, tool, context.toolUseId, attempt)
    const outcome = await measure.end(attemptOnce(attempt, measure.span))
    const retryable = outcome.retry === 'any-tool' || (outcome.retry === 'idempotent-only' && tool.effect !== 'side_effecting')
    if (!retryable || attempt >= tool.max_attempts || context.signal.aborted) return { outcome, attempts: attempt }
    const delayMs = retryDelay(TOOL_BACKOFF, attempt, { retryAfterMs: outcome.retryAfterMs, deadline: context.runDeadline })
    if (delayMs === null) return { outcome, attempts: attempt }
    hooks.onRetry?.(attempt, outcome, Date.now() - started, delayMs)
    try {
      await sleep(delayMs, context.signal)
    } catch {
      return { outcome: cancelledOutcome(tool.name, context.signal), attempts: attempt }
    }
  }
}

/** A call stopped by its run: the outcome names the run's reason. */
export function cancelledOutcome (name: string, signal: AbortSignal): ToolOutcome {
  const reason = signal.reason instanceof Error ? signal.reason.message : 'the run stopped'
  return errorOutcome('cancelled', `Tool ${name} was cancelled: ${reason}`)
}
