import type { Span } from '@opentelemetry/api'
import { linkedController } from '../../lib/abort.js'
import type { McpServerRecord, ToolRecord } from '../../store/index.js'
import { Telemetry, traceparent } from '../../telemetry/index.js'
import { Redactor } from '../../lib/redact.js'
import { errorOutcome, type ToolOutcome } from '../tool-result.js'
import type { CallContext, CallHooks, CallResult, ToolSource } from '../tool-source.js'
import { callWithRetries, cancelledOutcome as cancelled } from '../tool-attempts.js'
import type { McpConnections } from './mcp-connection.js'
import { callStreams } from './mcp-fetch.js'
import { failureOf, outcomeFromFailure, outcomeFromResult } from './mcp-result.js'

export interface McpSourceOptions {
  readonly connections: McpConnections
  /** A tenant's server as registered now (cached), or null once it is gone. */
  readonly server: (tenantId: string, name: string) => Promise<McpServerRecord | null>
  /** Text sent to the model from one result is cut at this many characters. */
  readonly maxResultChars: number
  readonly telemetry?: Telemetry
  /** The service's own secrets, taken out of what a failed call's result quotes; the server's are added at each call. */
  readonly redactor?: Redactor
}

/** Where the `_meta` of a call puts what Switchboard says of it (SPEC §11). */
export const META_KEYS = { runId: 'switchboard/run_id', toolUseId: 'switchboard/tool_use_id', idempotencyKey: 'switchboard/idempotency_key', attempt: 'switchboard/attempt' } as const

/**
 * Calls the tools of MCP servers (SPEC §11) as `tools/call` requests on this replica's one
 * connection to each server, under the same rules as webhook calls: every attempt has the tool's
 * timeout and the run's deadline, a timeout or a cancel sends `notifications/cancelled`, failures
 * are retried by effect class (§6), and every failure is an `is_error` outcome naming the server
 * and the tool, never an exception.
 */
export class McpSource implements ToolSource {
  readonly #options: McpSourceOptions
  readonly #telemetry: Telemetry

  constructor (options: McpSourceOptions) {
    this.#options = options
    this.#telemetry = options.telemetry ?? Telemetry.none
  }

  async call (tool: ToolRecord, input: unknown, context: CallContext, hooks: CallHooks = {}): Promise<CallResult> {
    return await callWithRetries(tool, context, hooks, this.#telemetry, async (attempt, span) => await this.attempt(tool, input, context, attempt, span))
  }

  /**
   * One attempt: resolves with its outcome whatever happens. A failure quotes no secret of the
   * service's or the server's (its headers, its OAuth client secret), even when the server's
   * error message echoes its request.
   */
  async attempt (tool: ToolRecord, input: unknown, context: CallContext, attempt: number, span?: Span): Promise<ToolOutcome> {
    const outcome = await this.#attempt(tool, input, context, attempt, span)
    if (!outcome.isError) return outcome
    const server = tool.mcp === undefined ? null : await this.#options.server(tool.tenant_id, tool.mcp.server).catch(() => null)
    const redactor = (this.#options.redactor ?? Redactor.none).with([...Object.values(server?.headers ?? {}), server?.oauth?.client_secret])
    const { content } = outcome
    return { ...outcome, content: typeof content === 'string' ? redactor.redact(content) : content.map((b) => b.type === 'text' ? { ...b, text: redactor.redact(b.text) } : b) }
  }

  async #attempt (tool: ToolRecord, input: unknown, context: CallContext, attempt: number, span?: Span): Promise<ToolOutcome> {
    const mcp = tool.mcp
    if (mcp === undefined) return errorOutcome('refused', `Tool ${tool.name} was not called: it is not a tool of an MCP server.`)
    const subject = `Tool ${tool.name} (tool ${mcp.tool} of MCP server ${mcp.server})`
    const server = await this.#options.server(tool.tenant_id, mcp.server).catch(() => undefined)
    if (server === undefined) return errorOutcome('unreachable', `${subject} was not called: its server's registration could not be read.`, { retry: 'any-tool' })
    if (server === null) return errorOutcome('refused', `${subject} was not called: MCP server ${mcp.server} is no longer registered.`)
    const now = Date.now()
    // When the run's deadline comes first, it is the run that stops the call (with its reason).
    const ownDeadline = now + tool.timeout_ms < context.runDeadline
    const link = linkedController(context.signal)
    let timedOut = false
    let settled = false
    let lost: { error: unknown } | null = null
    // The answer's stream ended without the answer: the server went away mid-call. The client
    // reads the answer before the stream's end is seen, so a call still open a moment later has none.
    const onStreamEnd = (error: unknown): void => {
      setTimeout(() => {
        if (settled) return
        lost = { error }
        link.controller.abort(new Error('the connection was lost before the answer came'))
      }, 20).unref()
    }
    const timer = ownDeadline ? setTimeout(() => { timedOut = true; link.controller.abort(new Error(`timed out after ${tool.timeout_ms} ms`)) }, tool.timeout_ms) : undefined
    const connection = this.#options.connections.of(server)
    const trace = traceparent(span, context.traceId)
    callStreams.set(trace, onStreamEnd)
    try {
      const result = await connection.withSession(async (client) => await client.callTool({
        name: mcp.tool,
        arguments: input as Record<string, unknown>,
        _meta: {
          [META_KEYS.runId]: context.runId,
          [META_KEYS.toolUseId]: context.toolUseId,
          [META_KEYS.idempotencyKey]: `${context.runId}:${context.toolUseId}`,
          [META_KEYS.attempt]: attempt
        }
      }, {
        signal: link.signal,
        // The SDK's own timer (60 s by default) must never cut in before ours or the run's.
        timeout: Math.max(1, context.runDeadline - now) + 60_000,
        headers: { traceparent: trace }
      }), link.signal)
      return outcomeFromResult(subject, result as Parameters<typeof outcomeFromResult>[1], this.#options.maxResultChars)
    } catch (err) {
      if (context.signal.aborted) return cancelled(tool.name, context.signal)
      if (timedOut) return errorOutcome('timeout', `Tool ${tool.name} timed out after ${tool.timeout_ms} ms`, { retry: 'idempotent-only' })
      if (lost !== null) {
        const { tooLarge } = failureOf((lost as { error: unknown }).error)
        if (tooLarge !== null) return errorOutcome('error', `${subject} failed: ${tooLarge.message}`)
        return errorOutcome('unreachable', `${subject} failed: the server closed the connection before answering`, { retry: 'idempotent-only' })
      }
      return outcomeFromFailure(subject, err)
    } finally {
      callStreams.delete(trace)
      settled = true
      clearTimeout(timer)
      link.dispose()
    }
  }
}
