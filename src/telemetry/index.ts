import type { Span } from '@opentelemetry/api'
import type { Message } from '@anthropic-ai/sdk/resources/messages'
import type { ToolRecord } from '../store/index.js'
import type { ToolOutcome } from '../tools/tool-result.js'
import { Metrics } from './metrics.js'
import { Tracing } from './tracing.js'

export { Metrics, type EventObserver, type MetricSources, type UnfinishedStatus } from './metrics.js'
export { Tracing, traceparent, type TracingOptions } from './tracing.js'
export type { OtlpSettings } from './otlp-settings.js'

/**
 * The metrics and the tracing of one app, handed to the engine, its drivers and the webhook
 * client. Counters that the event log can tell are counted from it (Metrics.observer); what needs
 * a clock or a span is measured where the call is made, through the two helpers below.
 */
export class Telemetry {
  /** Metrics nobody scrapes and tracing off: for an engine built without telemetry. */
  static readonly none = new Telemetry(new Metrics(), Tracing.disabled)

  constructor (readonly metrics: Metrics, readonly tracing: Tracing) {}

  /** Starts measuring one model call attempt: its span, its duration and the calls in flight. */
  modelCall (parent: Span | undefined, request: { model: string, max_tokens: number }): ModelCallMeasure {
    return new ModelCallMeasure(this, parent, request)
  }

  /**
   * Starts one HTTP attempt of a webhook tool call: its span (whose context is the webhook's
   * traceparent) and the requests in flight. `end` settles both when the attempt does.
   */
  toolAttempt (parent: Span | undefined, tool: ToolRecord, toolUseId: string, attempt: number): ToolAttemptMeasure {
    return new ToolAttemptMeasure(this, parent, tool, toolUseId, attempt)
  }
}

/** One model call attempt being measured; the first of `ok` and `failed` counts, later calls do nothing. */
export class ModelCallMeasure {
  readonly #telemetry: Telemetry
  readonly #span: Span
  readonly #model: string
  readonly #started = performance.now()
  #done = false

  constructor (telemetry: Telemetry, parent: Span | undefined, request: { model: string, max_tokens: number }) {
    this.#telemetry = telemetry
    this.#model = telemetry.metrics.modelLabel(request.model)
    this.#span = telemetry.tracing.startModelCall(parent, request)
    telemetry.metrics.modelCallsInFlight.inc()
  }

  /** The model answered `message`. */
  ok (message: Message): void {
    if (this.#end('ok')) this.#telemetry.tracing.endModelCall(this.#span, message)
  }

  /** The call failed with `err`; `cancelled` when it was its run that stopped it. */
  failed (err: unknown, cancelled: boolean): void {
    if (this.#end(cancelled ? 'cancelled' : 'error')) this.#telemetry.tracing.endModelCall(this.#span, null, err)
  }

  #end (outcome: 'ok' | 'error' | 'cancelled'): boolean {
    if (this.#done) return false
    this.#done = true
    const { metrics } = this.#telemetry
    metrics.modelCallsInFlight.dec()
    metrics.modelCalls.inc({ model: this.#model, outcome })
    metrics.modelCallDuration.observe({ model: this.#model, outcome }, (performance.now() - this.#started) / 1000)
    return true
  }
}

/** One HTTP attempt of a tool call being measured. */
export class ToolAttemptMeasure {
  readonly #telemetry: Telemetry
  readonly span: Span

  constructor (telemetry: Telemetry, parent: Span | undefined, tool: ToolRecord, toolUseId: string, attempt: number) {
    this.#telemetry = telemetry
    this.span = telemetry.tracing.startToolAttempt(parent, tool, toolUseId, attempt)
    telemetry.metrics.toolAttemptsInFlight.inc()
  }

  /** Waits for the attempt, then ends its span with its outcome. */
  async end (attempt: Promise<ToolOutcome>): Promise<ToolOutcome> {
    let outcome: ToolOutcome | undefined
    try {
      outcome = await attempt
      return outcome
    } finally {
      this.#telemetry.metrics.toolAttemptsInFlight.dec()
      this.#telemetry.tracing.endToolAttempt(this.span, outcome)
    }
  }
}
