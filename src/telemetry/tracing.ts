import { randomBytes } from 'node:crypto'
import { INVALID_SPAN_CONTEXT, isSpanContextValid, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api'
import type { BasicTracerProvider, IdGenerator, ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base'
import type { Message } from '@anthropic-ai/sdk/resources/messages'
import type { Log } from '../logger.js'
import type { RunRecord, ToolRecord } from '../store/index.js'
import type { ToolOutcome } from '../tools/tool-result.js'
import type { OtlpSettings } from './otlp-settings.js'
import { randomHex } from '../lib/ids.js'

export interface TracingOptions {
  /** Null: tracing is off, spans cost nothing and are never exported. */
  readonly exporter: OtlpSettings | null
  readonly serviceName: string
  readonly serviceVersion: string
  /** More resource attributes (OTEL_RESOURCE_ATTRIBUTES). */
  readonly resourceAttributes?: Readonly<Record<string, string>>
  readonly log: Log
}

// Stable semantic conventions.
const ATTR_ERROR_TYPE = 'error.type'
const ATTR_HTTP_RESPONSE_STATUS_CODE = 'http.response.status_code'
const ATTR_SERVER_ADDRESS = 'server.address'
const ATTR_SERVICE_NAME = 'service.name'
const ATTR_SERVICE_VERSION = 'service.version'
// GenAI semantic conventions (still "development" in OpenTelemetry, so written here rather than
// imported from the incubating entry point, as OpenTelemetry advises).
const GEN_AI_OPERATION_NAME = 'gen_ai.operation.name'
const GEN_AI_PROVIDER_NAME = 'gen_ai.provider.name'
const GEN_AI_AGENT_NAME = 'gen_ai.agent.name'
const GEN_AI_CONVERSATION_ID = 'gen_ai.conversation.id'
const GEN_AI_REQUEST_MODEL = 'gen_ai.request.model'
const GEN_AI_REQUEST_MAX_TOKENS = 'gen_ai.request.max_tokens'
const GEN_AI_RESPONSE_ID = 'gen_ai.response.id'
const GEN_AI_RESPONSE_MODEL = 'gen_ai.response.model'
const GEN_AI_RESPONSE_FINISH_REASONS = 'gen_ai.response.finish_reasons'
const GEN_AI_USAGE_INPUT_TOKENS = 'gen_ai.usage.input_tokens'
const GEN_AI_USAGE_OUTPUT_TOKENS = 'gen_ai.usage.output_tokens'
const GEN_AI_TOOL_NAME = 'gen_ai.tool.name'
const GEN_AI_TOOL_CALL_ID = 'gen_ai.tool.call.id'
const GEN_AI_TOOL_TYPE = 'gen_ai.tool.type'

/** What every span is when tracing is off: records nothing, carries no context. */
const NOOP_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT)
/** The longest a close waits for the last spans to be sent. */
const SHUTDOWN_TIMEOUT_MS = 5_000
/** Export failures are logged at most this often. */
const EXPORT_WARNING_INTERVAL_MS = 60_000

/** The trace id of a run's span is the run's own (stored with the run, shared by every replica). */
class RunTraceIds implements IdGenerator {
  /** Set for the length of one synchronous startSpan call. */
  next: string | null = null

  generateTraceId (): string {
    return this.next ?? randomBytes(16).toString('hex')
  }

  generateSpanId (): string {
    return randomHex(8)
  }
}

/**
 * The spans of runs (OpenTelemetry, GenAI semantic conventions): one per run as driven by a
 * replica (`invoke_agent switchboard`), with a child per step, and under each step one per model
 * call attempt (`chat {model}`) and one per tool call attempt (`execute_tool {tool}`), whose
 * context is the `traceparent` its webhook receives. Every span of a run has the run's trace id.
 *
 * Off unless an exporter is configured: then every method returns or takes a no-op span and
 * costs nothing, and the SDK is not even loaded. On, spans are batched and sent over OTLP/HTTP.
 */
export class Tracing {
  /** Tracing off. */
  static readonly disabled = new Tracing(null, null, new RunTraceIds())

  readonly #provider: BasicTracerProvider | null
  readonly #tracer: Tracer | null
  readonly #ids: RunTraceIds

  private constructor (provider: BasicTracerProvider | null, tracer: Tracer | null, ids: RunTraceIds) {
    this.#provider = provider
    this.#tracer = tracer
    this.#ids = ids
  }

  /** Tracing as configured: {@link Tracing.disabled} without an exporter. */
  static async start (options: TracingOptions): Promise<Tracing> {
    if (options.exporter === null) return Tracing.disabled
    const [{ OTLPTraceExporter }, { AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor }, { defaultResource, resourceFromAttributes }] = await Promise.all([
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/sdk-trace-base'),
      import('@opentelemetry/resources')
    ])
    const ids = new RunTraceIds()
    const exporter = new LoggedExporter(new OTLPTraceExporter({ url: options.exporter.url, headers: { ...options.exporter.headers } }), options.log)
    const provider = new BasicTracerProvider({
      resource: defaultResource().merge(resourceFromAttributes({
        ...options.resourceAttributes,
        [ATTR_SERVICE_NAME]: options.serviceName,
        [ATTR_SERVICE_VERSION]: options.serviceVersion
      })),
      // Every run is traced: sample in the collector if there are too many.
      sampler: new AlwaysOnSampler(),
      idGenerator: ids,
      spanProcessors: [new BatchSpanProcessor(exporter)]
    })
    return new Tracing(provider, provider.getTracer('switchboard', options.serviceVersion), ids)
  }

  get enabled (): boolean {
    return this.#tracer !== null
  }

  /** The span of one driving of a run on this replica: a root span with the run's trace id. */
  startRun (run: Pick<RunRecord, 'id' | 'tenant_id' | 'model' | 'trace_id'>): Span {
    if (this.#tracer === null) return NOOP_SPAN
    this.#ids.next = run.trace_id
    try {
      return this.#tracer.startSpan('invoke_agent switchboard', {
        kind: SpanKind.INTERNAL,
        attributes: {
          [GEN_AI_OPERATION_NAME]: 'invoke_agent',
          [GEN_AI_PROVIDER_NAME]: 'anthropic',
          [GEN_AI_AGENT_NAME]: 'switchboard',
          [GEN_AI_CONVERSATION_ID]: run.id,
          [GEN_AI_REQUEST_MODEL]: run.model,
          'switchboard.run.id': run.id,
          'switchboard.tenant.id': run.tenant_id
        }
      }, ROOT_CONTEXT)
    } finally {
      this.#ids.next = null
    }
  }

  /** Ends a run's span with where the run got to; `handback` if this replica gave it up. */
  endRun (span: Span, run: RunRecord, handback: string | null): void {
    if (!span.isRecording()) return
    const attributes: Attributes = {
      'switchboard.run.status': run.status,
      'switchboard.run.steps': run.steps,
      [GEN_AI_USAGE_INPUT_TOKENS]: run.usage.input_tokens,
      [GEN_AI_USAGE_OUTPUT_TOKENS]: run.usage.output_tokens
    }
    if (run.stop_reason !== null) attributes['switchboard.run.stop_reason'] = run.stop_reason
    if (handback !== null) attributes['switchboard.run.handback'] = handback
    span.setAttributes(attributes)
    if (run.status === 'failed') {
      const code = (run.error as { code?: string } | null)?.code ?? 'error'
      span.setAttribute(ATTR_ERROR_TYPE, code)
      span.setStatus({ code: SpanStatusCode.ERROR, message: code })
    }
    span.end()
  }

  startStep (parent: Span | undefined, runId: string, step: number): Span {
    return this.#child(parent, 'step', SpanKind.INTERNAL, { 'switchboard.run.id': runId, 'switchboard.step': step })
  }

  /** Ends a step's span; `err` if the step threw (a stop, a failed model call, storage). */
  endStep (span: Span, err?: unknown): void {
    if (!span.isRecording()) return
    if (err !== undefined) setError(span, errorType(err))
    span.end()
  }

  /** The span of one model call attempt. */
  startModelCall (parent: Span | undefined, request: { model: string, max_tokens: number }): Span {
    return this.#child(parent, `chat ${request.model}`, SpanKind.CLIENT, {
      [GEN_AI_OPERATION_NAME]: 'chat',
      [GEN_AI_PROVIDER_NAME]: 'anthropic',
      [GEN_AI_REQUEST_MODEL]: request.model,
      [GEN_AI_REQUEST_MAX_TOKENS]: request.max_tokens
    })
  }

  /** Ends a model call's span with the message it answered, or how it failed. */
  endModelCall (span: Span, message: Message | null, err?: unknown): void {
    if (!span.isRecording()) return
    if (message !== null) {
      const attributes: Attributes = {
        [GEN_AI_RESPONSE_ID]: message.id,
        [GEN_AI_RESPONSE_MODEL]: message.model,
        [GEN_AI_USAGE_INPUT_TOKENS]: message.usage.input_tokens,
        [GEN_AI_USAGE_OUTPUT_TOKENS]: message.usage.output_tokens
      }
      if (message.stop_reason !== null) attributes[GEN_AI_RESPONSE_FINISH_REASONS] = [message.stop_reason]
      span.setAttributes(attributes)
    } else {
      const status = (err as { status?: unknown } | undefined)?.status
      if (typeof status === 'number') span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status)
      setError(span, errorType(err))
    }
    span.end()
  }

  /** The span of one HTTP attempt of a webhook tool call; its context is the webhook's traceparent. */
  startToolAttempt (parent: Span | undefined, tool: ToolRecord, toolUseId: string, attempt: number): Span {
    if (this.#tracer === null) return NOOP_SPAN
    return this.#child(parent, `execute_tool ${tool.name}`, SpanKind.CLIENT, {
      [GEN_AI_OPERATION_NAME]: 'execute_tool',
      [GEN_AI_TOOL_NAME]: tool.name,
      [GEN_AI_TOOL_CALL_ID]: toolUseId,
      [GEN_AI_TOOL_TYPE]: 'extension',
      [ATTR_SERVER_ADDRESS]: hostOf(tool.url),
      'switchboard.tool.attempt': attempt,
      'switchboard.tool.effect': tool.effect
    })
  }

  /** Ends a tool attempt's span with its outcome (never its content: that is the tool's data). */
  endToolAttempt (span: Span, outcome: ToolOutcome | undefined): void {
    if (!span.isRecording()) return
    if (outcome === undefined) {
      setError(span, 'internal')
    } else {
      span.setAttribute('switchboard.tool.outcome', outcome.kind)
      if (outcome.status !== null) span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, outcome.status)
      if (outcome.isError) setError(span, outcome.kind)
    }
    span.end()
  }

  /** Sends the spans not sent yet and stops; waits at most a few seconds. */
  async shutdown (): Promise<void> {
    if (this.#provider === null) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      this.#provider.shutdown().catch(() => {}),
      new Promise((resolve) => { timer = setTimeout(resolve, SHUTDOWN_TIMEOUT_MS) })
    ])
    clearTimeout(timer)
  }

  #child (parent: Span | undefined, name: string, kind: SpanKind, attributes: Attributes): Span {
    if (this.#tracer === null || parent === undefined || !parent.isRecording()) return NOOP_SPAN
    return this.#tracer.startSpan(name, { kind, attributes }, trace.setSpan(ROOT_CONTEXT, parent))
  }
}

/**
 * The W3C `traceparent` a webhook receives: the context of its attempt's span; with tracing off,
 * a new span id in the run's trace, so that a tool's own traces still group by run.
 */
export function traceparent (span: Span | undefined, traceId: string): string {
  const context = span?.spanContext()
  if (context !== undefined && isSpanContextValid(context)) {
    return `00-${context.traceId}-${context.spanId}-${(context.traceFlags & 0xff).toString(16).padStart(2, '0')}`
  }
  return `00-${traceId}-${randomHex(8)}-01`
}

/** The OTLP exporter, with its failures logged (at most once a minute) rather than lost. */
class LoggedExporter implements SpanExporter {
  readonly #inner: SpanExporter
  readonly #log: Log
  #warnedAt = 0

  constructor (inner: SpanExporter, log: Log) {
    this.#inner = inner
    this.#log = log
  }

  export (spans: ReadableSpan[], done: Parameters<SpanExporter['export']>[1]): void {
    this.#inner.export(spans, (result) => {
      if (result.code !== 0 && Date.now() - this.#warnedAt > EXPORT_WARNING_INTERVAL_MS) {
        this.#warnedAt = Date.now()
        this.#log.warn({ spans: spans.length, err: result.error }, 'could not export spans')
      }
      done(result)
    })
  }

  async shutdown (): Promise<void> {
    await this.#inner.shutdown()
  }

  async forceFlush (): Promise<void> {
    await this.#inner.forceFlush?.()
  }
}

function setError (span: Span, type: string): void {
  span.setAttribute(ATTR_ERROR_TYPE, type)
  span.setStatus({ code: SpanStatusCode.ERROR, message: type })
}

/** A low-cardinality name for an error: its code, or its class. */
function errorType (err: unknown): string {
  if (typeof err === 'object' && err !== null) {
    const { code, reason, name } = err as { code?: unknown, reason?: unknown, name?: unknown }
    if (typeof reason === 'string') return reason // a RunStop: timeout, cancelled, shutdown, lease_lost
    if (typeof code === 'string') return code
    if (typeof name === 'string') return name
  }
  return 'error'
}

function hostOf (url: string): string {
  try {
    return new URL(url).hostname
  } catch {
    return ''
  }
}
