import { createHmac, createSecretKey, type KeyObject } from 'node:crypto'
import { StringDecoder } from 'node:string_decoder'
import { isIP } from 'node:net'
import { Agent, buildConnector, errors, type Dispatcher } from 'undici'
import type { ToolRecord } from '../../store/index.js'
import { assertAddressAllowed, createGuardedLookup, unbracket, type EgressAllowList, type Resolver } from '../egress-guard.js'
import { activeSecrets } from '../registry.js'
import { cutText, wellFormed } from '../../lib/text.js'
import { Redactor } from '../../lib/redact.js'
import { capContent, errorOutcome, type ToolOutcome } from '../tool-result.js'
import type { CallContext, CallHooks, CallResult, ToolSource } from '../tool-source.js'
import { callWithRetries, cancelledOutcome as cancelled } from '../tool-attempts.js'
import { outcomeFromResponse, type ResultLimits } from './webhook-response.js'
import type { Span } from '@opentelemetry/api'
import { Telemetry, traceparent } from '../../telemetry/index.js'

export interface WebhookClientOptions {
  readonly egress: EgressAllowList
  /** A response body is cut at this many bytes. */
  readonly maxResponseBytes: number
  /** Text sent to the model from one result is cut at this many characters. */
  readonly maxResultChars: number
  /** `switchboard/<version>`. */
  readonly userAgent: string
  /** How host names are resolved; the OS resolver by default. */
  readonly resolver?: Resolver
  /** Spans of attempts, requests in flight; none by default. */
  readonly telemetry?: Telemetry
  /**
   * The service's own secrets, taken out of what a failed call's result or a callback's error
   * quotes of the answer; a tool's own headers and signing secrets are added at each call.
   */
  readonly redactor?: Redactor
}

/** What a tool call needs to know of its run. */
interface SignedPost {
  readonly url: string
  readonly payload: string
  /** The Standard Webhooks message id, also sent as the idempotency key. */
  readonly messageId: string
  readonly secrets: readonly string[]
  /** The tool's own headers, sent first: the protocol's headers below override any of the same name. */
  readonly headers: Record<string, string>
  /** The attempt's trace context, for a tool call; a callback has none. */
  readonly traceparent?: string
  readonly timeoutMs: number
  /** When the attempt is abandoned (ms since the epoch); null: only when `signal` aborts. */
  readonly deadline: number | null
  readonly signal: AbortSignal
}

type PostResult =
  | { kind: 'answered', status: number, headers: Record<string, string | string[] | undefined>, body: Buffer, oversized: boolean }
  | { kind: 'timeout' }
  | { kind: 'cancelled' }
  | { kind: 'failed', error: unknown }

const { RequestAbortedError } = errors

// How long the TCP (and TLS) connection may take, within the attempt's own timeout.
const CONNECT_TIMEOUT_MS = 10_000

// Failures that can only happen before a request is written: safe to retry for every tool.
const BEFORE_SEND = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'UND_ERR_CONNECT_TIMEOUT'])
// Failures that may come after it was written (on a reused connection, a network that went away
// mid-request): retried only for tools that may be called twice.
const AFTER_SEND = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH'])
const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

/**
 * Calls tool webhooks (SPEC §6) through one pooled keep-alive undici Agent. Every connection is
 * checked against the egress policy on the address actually connected to; every attempt is signed
 * (Standard Webhooks), has its own deadline chained to the run's signal, reads (or drops) its whole
 * body up to a cap, and ends as a {@link ToolOutcome}: a failed call is data, never an exception.
 */
export class WebhookClient implements ToolSource {
  readonly #options: WebhookClientOptions
  readonly #agent: Agent
  readonly #telemetry: Telemetry
  readonly #redactor: Redactor
  readonly #signingKeys = new Map<string, KeyObject>()
  readonly #targets = new Map<string, { origin: string, path: string }>()
  /** Each tool's redactor: the service's secrets and the tool's own, made at its first failure. */
  readonly #toolRedactors = new WeakMap<ToolRecord, Redactor>()

  constructor (options: WebhookClientOptions) {
    this.#options = options
    this.#telemetry = options.telemetry ?? Telemetry.none
    this.#redactor = options.redactor ?? Redactor.none
    const connect = buildConnector({ lookup: createGuardedLookup(options.egress, options.resolver), timeout: CONNECT_TIMEOUT_MS })
    this.#agent = new Agent({
      connect: (connectOptions, callback) => {
        // An IP literal never goes through lookup: check it here, before any packet is sent.
        const host = unbracket(connectOptions.hostname)
        if (isIP(host) !== 0) {
          try {
            assertAddressAllowed(options.egress, host, host)
          } catch (err) {
            callback(err as Error, null)
            return
          }
        }
        connect(connectOptions, callback)
      },
      // Reuse a connection for 4 s unless the server says longer: a server that closes idle
      // connections sooner would otherwise meet a reused, dead socket, and a side_effecting call
      // on it could not be retried although it was never processed.
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 600_000,
      // Per-request timeouts are set on each attempt; these only bound what nothing else does.
      headersTimeout: 600_000,
      bodyTimeout: 600_000
    })
  }

  /**
   * Calls `tool` with `input`: attempts up to `max_attempts` times for retryable failures (SPEC §6),
   * waiting as TOOL_BACKOFF (tool-attempts.ts) says (or as Retry-After asks) but never past the run's deadline.
   */
  async call (tool: ToolRecord, input: unknown, context: CallContext, hooks: CallHooks = {}): Promise<CallResult> {
    return await callWithRetries(tool, context, hooks, this.#telemetry, async (attempt, span) => await this.attempt(tool, input, context, attempt, span))
  }

  /**
   * One attempt, whose traceparent is `span`'s context. Resolves with its outcome whatever happens.
   * A failed one quotes no secret of the service's or the tool's (its headers, its signing secrets),
   * even when the tool's answer echoes its request.
   */
  async attempt (tool: ToolRecord, input: unknown, context: CallContext, attempt: number, span?: Span): Promise<ToolOutcome> {
    const outcome = await this.#attempt(tool, input, context, attempt, span)
    // Only a failure is scanned: a successful result is the tool's answer to the model, sent as is.
    return outcome.isError ? redactOutcome(outcome, this.#toolRedactor(tool)) : outcome
  }

  async #attempt (tool: ToolRecord, input: unknown, context: CallContext, attempt: number, span: Span | undefined): Promise<ToolOutcome> {
    const now = Date.now()
    const deadline = Math.min(now + tool.timeout_ms, context.runDeadline)
    const payload = JSON.stringify({
      run_id: context.runId,
      tool_use_id: context.toolUseId,
      tool: tool.name,
      input,
      attempt,
      deadline: isoTime(deadline),
      metadata: context.metadata,
      result_url: context.resultUrl
    })
    const sent = await this.#signedPost({
      url: tool.url,
      payload,
      messageId: `${context.runId}:${context.toolUseId}`,
      secrets: activeSecrets(tool.signing_secrets, now),
      headers: tool.headers,
      traceparent: traceparent(span, context.traceId),
      timeoutMs: tool.timeout_ms,
      // When the run's deadline comes first, it is the run that stops the call (with its reason),
      // not a timer of the call's own racing it.
      deadline: now + tool.timeout_ms < context.runDeadline ? deadline : null,
      signal: context.signal
    })
    if (sent.kind === 'answered') {
      // An error answer is redacted before it is cut to a preview, so that no secret is left half in.
      const limits = sent.status >= 200 && sent.status < 300
        ? this.#options
        : { maxResultChars: this.#options.maxResultChars, redact: (text: string) => this.#toolRedactor(tool).redact(text) }
      if (sent.status === 202) return accepted(tool.name, context.resultUrl)
      if (sent.oversized) return this.#oversized(tool, sent.status, sent.headers, sent.body, limits)
      return outcomeFromResponse(tool.name, sent.status, sent.headers, sent.body, limits)
    }
    if (sent.kind === 'cancelled') return cancelled(tool.name, context.signal)
    if (sent.kind === 'timeout') return timedOut(`Tool ${tool.name}`, tool.timeout_ms)
    return describeFailure(`Tool ${tool.name}`, tool.url, tool.timeout_ms, sent.error)
  }

  /**
   * POSTs a signed JSON document (a completion callback): one attempt, with its own timeout, under
   * the same egress policy and size cap as tool calls. `ok` for a 2xx answer.
   */
  async deliver (url: string, payload: string, options: { messageId: string, secrets: readonly string[], timeoutMs: number, signal: AbortSignal }): Promise<{ ok: boolean, status: number | null, error: string | null }> {
    const sent = await this.#signedPost({ ...options, url, payload, headers: {}, deadline: Date.now() + options.timeoutMs })
    if (sent.kind === 'answered') {
      const ok = sent.status >= 200 && sent.status < 300
      if (ok) return { ok, status: sent.status, error: null }
      // Stored as the run's callback.last_error, which the tenant reads: the receiver's answer
      // without the secrets it may echo (the callback's signing secrets, the service's), redacted
      // before it is cut; control characters (NUL, which PostgreSQL text cannot hold, among them)
      // become spaces, as line breaks do.
      const text = this.#redactor.with(options.secrets).redact(sent.body.toString('utf8'))
      const preview = wellFormed(cutText(text, 200)).replace(/[\s\p{Cc}]+/gu, ' ')
      return { ok, status: sent.status, error: `HTTP ${sent.status}${preview !== '' ? `: ${preview}` : ''}` }
    }
    if (sent.kind === 'timeout') return { ok: false, status: null, error: `no answer within ${options.timeoutMs} ms` }
    const failure = sent.kind === 'failed' ? describeFailure('The callback', url, options.timeoutMs, sent.error) : null
    return { ok: false, status: null, error: failure === null ? 'cancelled' : this.#redactor.with(options.secrets).redact(String(failure.content)) }
  }

  async #signedPost (post: SignedPost): Promise<PostResult> {
    const now = Date.now()
    const timestamp = String(Math.floor(now / 1000))
    // Standard Webhooks: HMAC-SHA256 over `id.timestamp.body`, one `v1,<base64>` per active secret.
    // node:crypto rather than the standardwebhooks package's pure-JS SHA-256, which cost several
    // times more per call; tests verify every signature with that package.
    const signed = `${post.messageId}.${timestamp}.${post.payload}`
    const signature = post.secrets.map((secret) => `v1,${createHmac('sha256', this.#signingKey(secret)).update(signed).digest('base64')}`).join(' ')
    // Built by assignment: spreading the tool's headers into a literal takes V8's slow path, a
    // cost paid on every call.
    const headers: Record<string, string> = {}
    for (const name in post.headers) headers[name] = post.headers[name]!
    if (post.traceparent !== undefined) headers.traceparent = post.traceparent
    headers['content-type'] = 'application/json'
    headers['user-agent'] = this.#options.userAgent
    headers['idempotency-key'] = post.messageId
    headers['webhook-id'] = post.messageId
    headers['webhook-timestamp'] = timestamp
    headers['webhook-signature'] = signature
    return await new Promise<PostResult>((resolve) => {
      const handler = new PostHandler(this.#options.maxResponseBytes, post.signal, resolve)
      if (post.deadline !== null) handler.expireIn(Math.max(0, post.deadline - now))
      if (post.signal.aborted) {
        handler.stop('cancelled')
        return
      }
      try {
        const target = this.#target(post.url)
        this.#agent.dispatch({
          origin: target.origin,
          path: target.path,
          method: 'POST',
          headers,
          body: post.payload,
          headersTimeout: post.timeoutMs,
          bodyTimeout: post.timeoutMs
        }, handler)
      } catch (err) {
        handler.onResponseError(null, err as Error)
      }
    })
  }

  async close (): Promise<void> {
    await this.#agent.close()
  }

  /**
   * An answer longer than TOOL_MAX_RESPONSE_BYTES, cut there (SPEC §6). Text is still worth giving
   * the model, with a note that it was cut; a cut JSON document does not parse, so that is an error.
   */
  #oversized (tool: ToolRecord, status: number, headers: Record<string, string | string[] | undefined>, head: Buffer, limits: ResultLimits): ToolOutcome {
    const limit = this.#options.maxResponseBytes
    const contentType = String(headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
    // A failure is a failure whatever its size: its status and the start of its body, as always
    // (and retried when its status says so).
    if (status < 200 || status >= 300) return outcomeFromResponse(tool.name, status, headers, head, limits)
    const text = new StringDecoder('utf8').write(head) // drops a character cut in the middle
    if (contentType === '' || contentType.startsWith('text/')) {
      const content = capContent(text, this.#options.maxResultChars)
      return { kind: 'ok', isError: false, status, retry: 'no', content: `${content as string}\n[the response was longer than ${limit} bytes (TOOL_MAX_RESPONSE_BYTES) and was cut there]` }
    }
    const start = wellFormed(cutText(text, 200).replace(/\s+/g, ' '))
    return errorOutcome('error', `${tool.name} answered more than ${limit} bytes (TOOL_MAX_RESPONSE_BYTES); the response was cut there and, being ${contentType !== '' ? contentType : 'binary'}, could not be used. It began: ${start}`, { status })
  }

  /** The secrets a tool's failures are redacted of: the service's, and the tool's headers and signing secrets. */
  #toolRedactor (tool: ToolRecord): Redactor {
    let redactor = this.#toolRedactors.get(tool)
    if (redactor === undefined) {
      // Every signing secret the tool has, a retired one still within its window included.
      redactor = this.#redactor.with([...Object.values(tool.headers), ...tool.signing_secrets.map((s) => s.secret)])
      this.#toolRedactors.set(tool, redactor)
    }
    return redactor
  }

  /** Where a URL's requests go, parsed once per URL rather than once per request. */
  #target (url: string): { origin: string, path: string } {
    let target = this.#targets.get(url)
    if (target === undefined) {
      const parsed = new URL(url)
      target = { origin: parsed.origin, path: `${parsed.pathname}${parsed.search}` }
      if (this.#targets.size > 10_000) this.#targets.clear()
      this.#targets.set(url, target)
    }
    return target
  }

  /** The key bytes of a `whsec_<base64>` secret, decoded once. */
  #signingKey (secret: string): KeyObject {
    let key = this.#signingKeys.get(secret)
    if (key === undefined) {
      key = createSecretKey(Buffer.from(secret.startsWith('whsec_') ? secret.slice(6) : secret, 'base64'))
      if (this.#signingKeys.size > 10_000) this.#signingKeys.clear()
      this.#signingKeys.set(secret, key)
    }
    return key
  }
}

/**
 * One POST, driven by undici's dispatch handler interface rather than `request`: no body stream, no
 * AbortSignal of its own, a few objects per call fewer, which counts at thousands of calls a second.
 * Reads the body up to `limit` bytes; past it, the request is aborted, so the rest is never
 * downloaded, and what came is cut at the limit. Settles once, with the first of: the answer, an
 * error, the run's signal (cancelled), its timer (timeout). A request stopped before undici has
 * started it is aborted as it starts; its caller does not wait for that.
 */
class PostHandler implements Dispatcher.DispatchHandler {
  readonly #limit: number
  readonly #signal: AbortSignal
  readonly #resolve: (result: PostResult) => void
  readonly #onAbort = (): void => this.stop('cancelled')
  #controller: Dispatcher.DispatchController | null = null
  #timer: NodeJS.Timeout | undefined
  #settled = false
  #status = 0
  #headers: Record<string, string | string[] | undefined> = {}
  #chunks: Buffer[] = []
  #size = 0

  constructor (limit: number, signal: AbortSignal, resolve: (result: PostResult) => void) {
    this.#limit = limit
    this.#signal = signal
    this.#resolve = resolve
    signal.addEventListener('abort', this.#onAbort, { once: true })
  }

  expireIn (ms: number): void {
    this.#timer = setTimeout(() => this.stop('timeout'), ms)
  }

  stop (why: 'timeout' | 'cancelled'): void {
    if (this.#settled) return
    // The run's stop wins over the call's own timer when both have come.
    this.#settle({ kind: this.#signal.aborted ? 'cancelled' : why })
    this.#controller?.abort(new RequestAbortedError())
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.#settled) controller.abort(new RequestAbortedError())
  }

  onResponseStart (_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    this.#status = statusCode
    this.#headers = headers
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled) return
    if (this.#size + chunk.length > this.#limit) {
      this.#chunks.push(chunk.subarray(0, this.#limit - this.#size))
      this.#settle({ kind: 'answered', status: this.#status, headers: this.#headers, body: Buffer.concat(this.#chunks), oversized: true })
      controller.abort(new RequestAbortedError())
      return
    }
    this.#size += chunk.length
    this.#chunks.push(chunk)
  }

  onResponseEnd (): void {
    this.#settle({ kind: 'answered', status: this.#status, headers: this.#headers, body: Buffer.concat(this.#chunks, this.#size), oversized: false })
  }

  onResponseError (_controller: Dispatcher.DispatchController | null, error: Error): void {
    this.#settle({ kind: 'failed', error })
  }

  #settle (result: PostResult): void {
    if (this.#settled) return
    this.#settled = true
    clearTimeout(this.#timer)
    this.#signal.removeEventListener('abort', this.#onAbort)
    this.#resolve(result)
  }
}

/** A failed outcome with its text (or its text blocks) redacted. */
function redactOutcome (outcome: ToolOutcome, redactor: Redactor): ToolOutcome {
  const { content } = outcome
  const redacted = typeof content === 'string'
    ? redactor.redact(content)
    : content.map((block) => block.type === 'text' ? { ...block, text: redactor.redact(block.text) } : block)
  return { ...outcome, content: redacted }
}

/**
 * A `202 Accepted`: the call's result comes later, posted to its result_url (SPEC §13), whatever
 * the body said. A call with no result_url (a batch_tool invocation, a call of the model's code)
 * cannot answer later: that is an error the model reads.
 */
function accepted (tool: string, resultUrl: string | undefined): ToolOutcome {
  if (resultUrl === undefined) {
    return errorOutcome('error', `${tool} answered 202 Accepted, but this call cannot be answered later (it was made inside batch_tool or by the model's code): call ${tool} directly for that`, { status: 202 })
  }
  return { kind: 'accepted', isError: false, content: '', status: 202, retry: 'no' }
}

// A call's own timer is only set when it ends before the run's deadline (see `call`): a timeout is
// always the tool's own timeout_ms.
function timedOut (subject: string, timeoutMs: number): ToolOutcome {
  return errorOutcome('timeout', `${subject} timed out after ${timeoutMs} ms`, { retry: 'idempotent-only' })
}

/** A thrown request error as the outcome the model sees, naming the tool and the failure. */
function describeFailure (subject: string, url: string, timeoutMs: number, err: unknown): ToolOutcome {
  const error = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }
  const code = error.code ?? error.cause?.code ?? ''
  const message = error.message ?? String(err)
  if (code === 'ERR_EGRESS_DENIED' || error.cause?.code === 'ERR_EGRESS_DENIED') {
    const denied = error.code === 'ERR_EGRESS_DENIED' ? error : error.cause!
    return errorOutcome('refused', `${subject} was not called: ${denied.message}`)
  }
  if (TIMEOUTS.has(code)) return timedOut(subject, timeoutMs)
  if (BEFORE_SEND.has(code)) {
    const what = code === 'ECONNREFUSED'
      ? 'connection refused'
      : code.startsWith('EAI_') || code === 'ENOTFOUND'
        ? `DNS lookup of ${safeHost(url)} failed (${code})`
        : `could not connect (${code})`
    return errorOutcome('unreachable', `${subject} could not be reached: ${what}`, { retry: 'any-tool' })
  }
  if (AFTER_SEND.has(code)) {
    const what = code === 'ECONNRESET' || code === 'EPIPE' || code.startsWith('UND_ERR') || code === 'ECONNABORTED'
      ? 'closed the connection before answering (connection reset)'
      : `lost the connection before answering (${code})`
    return errorOutcome('unreachable', `${subject} ${what}`, { retry: 'idempotent-only' })
  }
  if (/^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED|HOSTNAME_MISMATCH)/.test(code) || /certificate|tls|ssl/i.test(message)) {
    return errorOutcome('unreachable', `${subject} could not be reached: TLS failure (${code !== '' ? code : message})`)
  }
  return errorOutcome('unreachable', `${subject} failed: ${code !== '' ? `${code}: ` : ''}${message}`, { retry: 'idempotent-only' })
}

function safeHost (url: string): string {
  try {
    return new URL(url).host
  } catch {
    return 'its host'
  }
}

// The calls of a step start within the same few milliseconds: their deadlines repeat.
let lastIso = { ms: NaN, iso: '' }

/** `new Date(ms).toISOString()`, remembered for the last instant asked. */
function isoTime (ms: number): string {
  if (lastIso.ms !== ms) lastIso = { ms, iso: new Date(ms).toISOString() }
  return lastIso.iso
}
