import { Ajv, type ValidateFunction } from 'ajv'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { Webhook } from 'standardwebhooks'
import type { ToolDefinition } from '../types.js'
import { ToolSecrets } from './tool-secrets.js'

/** A block of a tool's answer, as the model takes it in a tool result. */
export type ContentBlock =
  | { type: 'text', text: string }
  | { type: 'image', source: { type: 'base64', media_type: 'image/png' | 'image/jpeg' | 'image/gif' | 'image/webp', data: string } | { type: 'url', url: string } }

/** What a tool's handler is told about the call besides its input. */
export interface ToolCallContext {
  /** Fires at the call's `deadline` (Switchboard has given up on it then), or when Switchboard hangs up. */
  readonly signal: AbortSignal
  readonly runId: string
  readonly toolUseId: string
  /** `<run_id>:<tool_use_id>`: the same on every attempt and after a crash. */
  readonly idempotencyKey: string
  /** When this attempt is abandoned. */
  readonly deadline: Date
  /** Tries on one replica, from 1 (it starts again at 1 after a crash: see docs/webhooks.md). */
  readonly attempt: number
  /** The run's metadata. */
  readonly metadata: Readonly<Record<string, string>>
  /** The tool's name. */
  readonly tool: string
  /** The request's headers (the tool's own `headers` of its registration among them). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  /** The request's path and query, as received. */
  readonly url: string
  /**
   * Answers the call `202 Accepted` now, whatever the handler returns, and gives what posts its
   * result later, signed with the tool's secret, to the call's `result_url` (docs/webhooks.md,
   * answering later): for work that takes minutes or hours. The run waits for it, up to the
   * tool's `async_timeout_ms`. If the handler throws after this, its error is posted as the
   * result. Throws for a call that cannot be answered later (inside `batch_tool`, or made by
   * the model's code: it has no `result_url`), or when no signing secret of the tool is known.
   */
  answerLater (): LaterAnswer
}

/** What a handler that answered its call 202 posts its result with (see ToolCallContext.answerLater). */
export interface LaterAnswer {
  /** Where the result goes. */
  readonly resultUrl: string
  /**
   * Posts the result: a string, content blocks or any JSON value, as a handler returns it
   * (`{ is_error: true }` with `fail`). Retried on a failed connection, 429 and 5xx answers; rejects
   * with a {@link LaterAnswerError} when Switchboard refuses it (409: it had its result already,
   * or gave up waiting).
   */
  send (result: unknown): Promise<void>
  /** Posts an `is_error` result with the error's message, which the model reads. */
  fail (error: unknown): Promise<void>
}

/** Switchboard refused a result posted later: `status` says why (401, 404, 409, 400). */
export class LaterAnswerError extends Error {
  override name = 'LaterAnswerError'
  constructor (readonly status: number, message: string) {
    super(message)
  }
}

/**
 * A tool a service hosts: its definition as `PUT /tools/{name}` takes it, but for the `url`
 * (registerTools gives it), and its handler. The handler answers a string, content blocks, or any
 * JSON value (sent as its JSON text); what it throws becomes an `is_error` answer with the error's
 * message, which the model reads.
 */
export type HostedTool<Input = any> = Omit<ToolDefinition, 'url'> & {
  handler (input: Input, context: ToolCallContext): unknown
}

export type HostedTools = Readonly<Record<string, HostedTool>>

/** A store for the answers given, keyed by idempotency key: in memory by default. */
export interface AnswerCache {
  get (key: string): Promise<ToolAnswer | undefined> | ToolAnswer | undefined
  set (key: string, answer: ToolAnswer): Promise<void> | void
}

export interface ToolHostOptions {
  /** The tools, by name. */
  readonly tools: HostedTools
  /**
   * The signing secrets calls are verified with: one (or a list) for every tool, a record by
   * tool name, or a ToolSecrets that registerTools fills.
   */
  readonly secrets?: string | readonly string[] | Readonly<Record<string, string | readonly string[] | undefined>> | ToolSecrets | undefined
  /**
   * Accepts unsigned calls for tools with no secret known. For a local demo only: anyone who can
   * reach the host could then call its tools.
   */
  readonly allowUnsigned?: boolean | undefined
  /** Where first answers are kept for repeated idempotency keys; in memory (10,000 answers, 24 h) by default. */
  readonly answers?: AnswerCache | undefined
  /** The largest request body taken, in bytes (1 MiB). */
  readonly maxBodyBytes?: number | undefined
  /** Told of every error a handler throws (the caller gets an `is_error` answer either way). */
  readonly onError?: ((err: unknown, call: { tool: string, runId: string, toolUseId: string }) => void) | undefined
  /** What results posted later (answerLater) are sent with: the global fetch by default. */
  readonly fetch?: typeof fetch | undefined
  /**
   * Where results posted later go instead of the scheme and host of each call's `result_url`
   * (`http://switchboard:3000`): for a host that reaches Switchboard at another address than its
   * callers do, such as a container network. The path is kept.
   */
  readonly resultOrigin?: string | undefined
}

/** What a tool host answers Switchboard: `{ content, is_error? }`, or an error of the protocol. */
export interface ToolAnswer {
  readonly content: string | ContentBlock[]
  readonly is_error?: boolean
}

export interface HostReply {
  readonly status: number
  readonly body: ToolAnswer | { error: string } | { accepted: true }
}

interface CallBody {
  run_id: string
  tool_use_id: string
  tool: string
  input: unknown
  attempt?: number
  deadline?: string
  metadata?: Record<string, string>
  result_url?: string
}

const ANSWERS_KEPT = 10_000
const ANSWER_TTL_MS = 24 * 3600_000

/**
 * The protocol of docs/webhooks.md, with no HTTP framework: checks a call (signature, fresh
 * timestamp, known tool, valid input), runs its handler under a signal that fires at the call's
 * deadline, and answers a repeated idempotency key with the first answer. createToolHandler and
 * switchboardTools adapt it to node:http and Fastify.
 */
export class ToolHost {
  readonly secrets: ToolSecrets
  readonly maxBodyBytes: number
  readonly #tools: HostedTools
  readonly #allowUnsigned: boolean
  readonly #answers: AnswerCache
  readonly #inFlight = new Map<string, Promise<{ answer: ToolAnswer, abandoned: boolean, later: boolean }>>()
  readonly #validators = new Map<string, ValidateFunction>()
  readonly #onError: ToolHostOptions['onError']
  readonly #fetch: typeof fetch
  readonly #resultOrigin: URL | undefined

  constructor (options: ToolHostOptions) {
    this.#tools = options.tools
    this.secrets = options.secrets instanceof ToolSecrets ? options.secrets : new ToolSecrets(options.secrets)
    this.#allowUnsigned = options.allowUnsigned === true
    this.#answers = options.answers ?? new MemoryAnswers(ANSWERS_KEPT, ANSWER_TTL_MS)
    this.maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024
    this.#onError = options.onError
    this.#fetch = options.fetch ?? fetch
    this.#resultOrigin = options.resultOrigin === undefined || options.resultOrigin === '' ? undefined : new URL(options.resultOrigin)
    const ajv = new Ajv({ allErrors: true, strict: false })
    const ajv2020 = new Ajv2020({ allErrors: true, strict: false })
    for (const [name, tool] of Object.entries(this.#tools)) {
      const draft2020 = String(tool.input_schema.$schema ?? '').includes('2020-12')
      this.#validators.set(name, (draft2020 ? ajv2020 : ajv).compile(tool.input_schema))
    }
  }

  /**
   * Answers one call: `raw` is the request body exactly as received (the signature covers its
   * bytes), `hangUp` fires if Switchboard goes away before the answer.
   */
  async answer (raw: string, headers: Readonly<Record<string, string | string[] | undefined>>, hangUp: AbortSignal, url = '/'): Promise<HostReply> {
    let call: CallBody
    try {
      call = JSON.parse(raw) as CallBody
    } catch {
      return { status: 400, body: { error: 'The body is not JSON.' } }
    }
    if (typeof call !== 'object' || call === null || typeof call.tool !== 'string' || typeof call.run_id !== 'string' || typeof call.tool_use_id !== 'string') {
      return { status: 400, body: { error: 'The body is not a Switchboard tool call ({ run_id, tool_use_id, tool, input, … }).' } }
    }
    const tool = Object.hasOwn(this.#tools, call.tool) ? this.#tools[call.tool] : undefined
    if (tool === undefined) return { status: 404, body: { error: `This host has no tool named ${call.tool}.` } }

    const refused = this.#verify(call.tool, raw, headers)
    if (refused !== null) return { status: 401, body: { error: refused } }

    const key = `${call.tool}\n${header(headers, 'idempotency-key') ?? `${call.run_id}:${call.tool_use_id}`}`
    const first = await this.#answers.get(key)
    if (first !== undefined) return { status: 200, body: first }
    const running = this.#inFlight.get(key)
    if (running !== undefined) {
      const outcome = await running
      // A first attempt abandoned at its deadline gave Switchboard no answer: this one runs anew.
      if (!outcome.abandoned) return { status: 200, body: outcome.answer }
    }
    const outcome = this.#run(tool, call, headers, hangUp, url)
    this.#inFlight.set(key, outcome)
    try {
      const { answer, abandoned, later } = await outcome
      // Answered later: 202 now, the result goes to result_url (a repeat of the call gets 202 again).
      if (later) return { status: 202, body: { accepted: true } }
      // Abandoned at its deadline, the attempt's answer (most often the handler's abort) is one
      // Switchboard no longer waits for: it is held until Switchboard hangs up, so that the run
      // records Switchboard's own timeout rather than whichever of the two came first.
      if (abandoned) await hangUpOrAfter(hangUp, ABANDONED_HOLD_MS)
      else await this.#answers.set(key, answer)
      return { status: 200, body: answer }
    } finally {
      if (this.#inFlight.get(key) === outcome) this.#inFlight.delete(key)
    }
  }

  /** Null when the call is signed by one of the tool's secrets with a fresh timestamp; else why not. */
  #verify (tool: string, raw: string, headers: Readonly<Record<string, string | string[] | undefined>>): string | null {
    const secrets = this.secrets.for(tool)
    if (secrets.length === 0) {
      return this.#allowUnsigned ? null : `No signing secret is known for ${tool}: give it in \`secrets\` (or register the tool with registerTools).`
    }
    const signed = {
      'webhook-id': header(headers, 'webhook-id') ?? '',
      'webhook-timestamp': header(headers, 'webhook-timestamp') ?? '',
      'webhook-signature': header(headers, 'webhook-signature') ?? ''
    }
    let reason = 'No matching signature found'
    for (const secret of secrets) {
      try {
        // Also refuses a timestamp more than five minutes away from now: a replayed call.
        new Webhook(secret).verify(raw, signed)
        return null
      } catch (err) {
        reason = (err as Error).message
      }
    }
    return `The call's signature does not verify: ${reason}.`
  }

  async #run (tool: HostedTool, call: CallBody, headers: Readonly<Record<string, string | string[] | undefined>>, hangUp: AbortSignal, url: string): Promise<{ answer: ToolAnswer, abandoned: boolean, later: boolean }> {
    const validate = this.#validators.get(call.tool)!
    if (!validate(call.input)) {
      const problems = (validate.errors ?? []).slice(0, 5).map((e) => `input${e.instancePath.replaceAll('/', '.')}: ${e.message ?? 'is invalid'}`)
      return { answer: { content: `Tool ${call.tool} was not run: invalid input: ${problems.join('; ')}`, is_error: true }, abandoned: false, later: false }
    }
    let later: LaterAnswer | undefined
    const deadlineMs = Date.parse(call.deadline ?? '')
    const deadline = Number.isFinite(deadlineMs) ? new Date(deadlineMs) : new Date(Date.now() + 30_000)
    const signal = AbortSignal.any([hangUp, AbortSignal.timeout(Math.max(0, deadline.getTime() - Date.now()))])
    const context: ToolCallContext = {
      signal,
      runId: call.run_id,
      toolUseId: call.tool_use_id,
      idempotencyKey: header(headers, 'idempotency-key') ?? `${call.run_id}:${call.tool_use_id}`,
      deadline,
      attempt: typeof call.attempt === 'number' ? call.attempt : 1,
      metadata: call.metadata ?? {},
      tool: call.tool,
      headers,
      url,
      answerLater: () => {
        later ??= this.#laterAnswer(call)
        return later
      }
    }
    let answer: ToolAnswer
    try {
      answer = toAnswer(await tool.handler(call.input, context))
    } catch (err) {
      this.#onError?.(err, { tool: call.tool, runId: call.run_id, toolUseId: call.tool_use_id })
      // Answered 202 already: the error is the result Switchboard waits for.
      if (later !== undefined) later.fail(err).catch(() => {})
      const message = err instanceof Error ? err.message : String(err)
      answer = { content: message === '' ? `Tool ${call.tool} failed.` : message, is_error: true }
    }
    return { answer, abandoned: later === undefined && signal.aborted, later: later !== undefined }
  }

  /** What posts a call's result later (see ToolCallContext.answerLater). */
  #laterAnswer (call: CallBody): LaterAnswer {
    if (typeof call.result_url !== 'string' || call.result_url === '') {
      throw new Error(`This call of ${call.tool} cannot be answered later: it has no result_url (it was made inside batch_tool, or by the model's code). Answer it now.`)
    }
    const resultUrl = this.#resultOrigin === undefined ? call.result_url : withOrigin(call.result_url, this.#resultOrigin)
    const [secret] = this.secrets.for(call.tool)
    if (secret === undefined) throw new Error(`Answering a call of ${call.tool} later needs its signing secret: give it in \`secrets\` (or register the tool with registerTools).`)
    const post = async (answer: ToolAnswer): Promise<void> => {
      const raw = JSON.stringify(answer)
      for (let attempt = 1; ; attempt++) {
        const id = `${call.run_id}:${call.tool_use_id}:result`
        const at = new Date()
        let res: Response | undefined
        try {
          res = await this.#fetch(resultUrl, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              'webhook-id': id,
              'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
              'webhook-signature': new Webhook(secret).sign(id, at, raw)
            },
            body: raw
          })
        } catch (err) {
          if (attempt >= LATER_ATTEMPTS) throw err
        }
        if (res !== undefined) {
          if (res.ok) return
          const text = await res.text()
          if ((res.status < 500 && res.status !== 429) || attempt >= LATER_ATTEMPTS) throw new LaterAnswerError(res.status, `Switchboard refused the result of ${call.tool_use_id} (HTTP ${res.status}): ${laterMessage(text)}`)
        }
        await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** attempt))
      }
    }
    return {
      resultUrl,
      send: async (result) => { await post(toAnswer(result)) },
      fail: async (error) => {
        const message = error instanceof Error ? error.message : String(error)
        await post({ content: message === '' ? `Tool ${call.tool} failed.` : message, is_error: true })
      }
    }
  }
}

/** `url` at `origin`'s scheme and host, its path and query kept. */
function withOrigin (url: string, origin: URL): string {
  const moved = new URL(url)
  moved.protocol = origin.protocol
  moved.host = origin.host
  return moved.href
}

/** Tries of a result posted later, on failed connections, 429 and 5xx answers. */
const LATER_ATTEMPTS = 5

/** The message of Switchboard's error answer, or the start of the text. */
function laterMessage (text: string): string {
  try {
    const parsed = JSON.parse(text) as { message?: unknown }
    if (typeof parsed.message === 'string') return parsed.message
  } catch {}
  return text.slice(0, 200)
}

// How long an abandoned attempt's answer waits for Switchboard to hang up: its timeout and the
// deadline it sent are the same moment, so a hang-up comes at once unless the clocks disagree.
const ABANDONED_HOLD_MS = 2000

/** Resolves when `signal` fires, or after `ms`, whichever comes first. */
async function hangUpOrAfter (signal: AbortSignal, ms: number): Promise<void> {
  if (signal.aborted) return
  await new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}

/** A handler's result as the answer Switchboard takes. */
export function toAnswer (result: unknown): ToolAnswer {
  if (typeof result === 'string') return { content: result }
  if (result === undefined) return { content: '' }
  if (isContentBlocks(result)) return { content: result }
  return { content: JSON.stringify(result) }
}

function isContentBlocks (value: unknown): value is ContentBlock[] {
  return Array.isArray(value) && value.length > 0 && value.every((block) =>
    typeof block === 'object' && block !== null &&
    ((block.type === 'text' && typeof block.text === 'string') || (block.type === 'image' && typeof block.source === 'object')))
}

function header (headers: Readonly<Record<string, string | string[] | undefined>>, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}

/** The first answers, in memory: the oldest go first past `max`, and each after `ttlMs`. */
class MemoryAnswers implements AnswerCache {
  readonly #entries = new Map<string, { answer: ToolAnswer, at: number }>()
  readonly #max: number
  readonly #ttlMs: number

  constructor (max: number, ttlMs: number) {
    this.#max = max
    this.#ttlMs = ttlMs
  }

  get (key: string): ToolAnswer | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined) return undefined
    if (Date.now() - entry.at > this.#ttlMs) {
      this.#entries.delete(key)
      return undefined
    }
    return entry.answer
  }

  set (key: string, answer: ToolAnswer): void {
    this.#entries.delete(key)
    this.#entries.set(key, { answer, at: Date.now() })
    if (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value!)
  }
}
