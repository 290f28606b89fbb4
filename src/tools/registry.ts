import { AppError } from '../errors.js'
import { newId, randomSecret } from '../lib/ids.js'
import type { Page, PageRequest, SigningSecret, Store, ToolRecord } from '../store/index.js'
import { CIRCUIT_BREAKER_DEFAULTS, type ToolDefinition } from '../schemas/tools.js'
import { checkUrlEgress, EgressDeniedError, type EgressAllowList, type Resolver } from './egress-guard.js'
import { InputValidators, InvalidInputSchemaError } from './input-validator.js'
import { callersProblem } from '../model/code-execution.js'

// Headers Switchboard sets on every call itself; a tool's configured headers may not override them.
const RESERVED_HEADERS = new Set([
  'host', 'content-type', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade',
  'te', 'trailer', 'expect', 'proxy-authorization', 'proxy-connection', 'idempotency-key', 'webhook-id',
  'webhook-timestamp', 'webhook-signature', 'traceparent', 'tracestate', 'user-agent'
])
/** Names of tools Switchboard itself offers the model: no registered tool may take one. */
export const RESERVED_TOOL_NAMES: ReadonlySet<string> = new Set(['batch_tool'])
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

// How a refused webhook URL is reported, by the field it came in.
const URL_REFUSALS = {
  url: { invalid: 'TOOL_ERR_INVALID_URL', denied: 'TOOL_ERR_URL_NOT_ALLOWED', hint: ' To allow a private or loopback host, list it in TOOL_EGRESS_ALLOW.' },
  callback_url: { invalid: 'RUN_ERR_CALLBACK_URL', denied: 'RUN_ERR_CALLBACK_URL', hint: '' }
} as const

/** A Standard Webhooks secret: `whsec_` then base64 of 32 random bytes. */
export function newSigningSecret (): string {
  return `whsec_${randomSecret(32)}`
}

/**
 * The secrets after a rotation to `fresh`: it alone is current; the one it replaces goes on signing
 * until `now + windowMs` (not at all with a zero window); older ones are dropped.
 */
export function rotatedSecrets (current: readonly SigningSecret[], fresh: string, now: number, windowMs: number): SigningSecret[] {
  const previous = current.find((s) => s.expires_at === null)
  const secrets: SigningSecret[] = [{ secret: fresh, expires_at: null }]
  if (previous !== undefined && windowMs > 0) secrets.push({ secret: previous.secret, expires_at: now + windowMs })
  return secrets
}

/** The secrets that sign calls now: the current one, and the previous one during its rotation window. */
export function activeSecrets (secrets: readonly SigningSecret[], now: number): string[] {
  return secrets.filter((s) => s.expires_at === null || s.expires_at > now).map((s) => s.secret)
}

export interface ToolRegistryOptions {
  readonly store: Store
  readonly egress: EgressAllowList
  /** After a rotation, how long the previous secret keeps signing. */
  readonly rotationWindowMs: number
  readonly validators: InputValidators
  readonly now?: () => number
  /** How host names are resolved; the OS resolver by default. */
  readonly resolver?: Resolver
}

export interface ToolWrite {
  readonly tool: ToolRecord
  readonly created: boolean
  /** Present when a secret was issued: on create and on rotation, the only times it is shown. */
  readonly signingSecret?: string
}

/**
 * Registers, reads and removes a tenant's tools. Everything a tool is checked for happens here,
 * whether it comes through the API or TOOLS_FILE: its input schema must compile, its URL must be
 * http(s) and allowed by the egress policy, its headers must be sendable.
 */
export class ToolRegistry {
  readonly #store: Store
  readonly #egress: EgressAllowList
  readonly #rotationWindowMs: number
  readonly #validators: InputValidators
  readonly #now: () => number
  readonly #resolver: Resolver | undefined

  constructor (options: ToolRegistryOptions) {
    this.#store = options.store
    this.#egress = options.egress
    this.#rotationWindowMs = options.rotationWindowMs
    this.#validators = options.validators
    this.#now = options.now ?? Date.now
    this.#resolver = options.resolver
  }

  /**
   * Creates or replaces a tool. A replace keeps the tool's secrets; a create issues one. Tools
   * declared in TOOLS_FILE can only be changed by the file (`source: 'file'`).
   */
  async put (tenantId: string, name: string, definition: ToolDefinition, source: 'api' | 'file' = 'api'): Promise<ToolWrite> {
    const existing = await this.#store.getTool(tenantId, name)
    if (existing !== null && existing.source === 'file' && source === 'api') {
      throw new AppError('TOOL_ERR_READ_ONLY', `Tool ${name} is declared in TOOLS_FILE: change it there and restart, or remove it from the file first.`)
    }
    const record = await this.#check(tenantId, name, definition, source)
    const secret = newSigningSecret()
    const { tool, created } = await this.#store.putTool({ ...record, signing_secrets: [{ secret, expires_at: null }] })
    this.#validators.compile(tool.input_schema, { key: cacheKey(tenantId, name), revision: tool.revision })
    return created ? { tool, created, signingSecret: secret } : { tool, created }
  }

  async get (tenantId: string, name: string): Promise<ToolRecord> {
    const tool = await this.#store.getTool(tenantId, name)
    if (tool === null) throw notFound(name)
    return tool
  }

  list (tenantId: string, page: PageRequest): Promise<Page<ToolRecord>> {
    return this.#store.listTools(tenantId, page)
  }

  async delete (tenantId: string, name: string, source: 'api' | 'file' = 'api'): Promise<void> {
    const existing = await this.get(tenantId, name)
    if (existing.source === 'file' && source === 'api') {
      throw new AppError('TOOL_ERR_READ_ONLY', `Tool ${name} is declared in TOOLS_FILE: remove it from the file and restart.`)
    }
    await this.#store.deleteTool(tenantId, name)
    this.#validators.forget(cacheKey(tenantId, name))
  }

  /**
   * Issues a new signing secret. The previous one keeps signing every call, beside the new one,
   * for the rotation window, so a tool can switch to the new secret without missing a call.
   */
  async rotateSecret (tenantId: string, name: string, newSecret = newSigningSecret()): Promise<ToolWrite> {
    // Compare-and-set: if another rotation lands between our read and our write, read again.
    for (;;) {
      const existing = await this.get(tenantId, name)
      const now = this.#now()
      const secrets = rotatedSecrets(existing.signing_secrets, newSecret, now, this.#rotationWindowMs)
      const tool = await this.#store.setToolSecrets(tenantId, name, secrets, now, existing.signing_secrets)
      if (tool !== null) return { tool, created: false, signingSecret: newSecret }
    }
  }

  /**
   * A webhook URL as given by a caller (a tool's `url`, a run's `callback_url`): absolute, http or
   * https, without credentials (URLs are shown back), and allowed by the egress policy. Refusals
   * name `field`, with that field's error codes.
   */
  async checkWebhookUrl (value: string, field: keyof typeof URL_REFUSALS): Promise<URL> {
    const refusal = URL_REFUSALS[field]
    const url = parseWebhookUrl(value, field, refusal.invalid)
    try {
      await checkUrlEgress(this.#egress, url, this.#resolver)
    } catch (err) {
      if (err instanceof EgressDeniedError) throw new AppError(refusal.denied, `${field} is refused: ${err.message}.${refusal.hint}`)
      throw err
    }
    return url
  }

  /** Checks a schema that is not a registered tool's (a run's client tool), without caching it. */
  compileSchema (schema: Record<string, unknown>): (input: unknown) => string | null {
    return this.#validators.compile(schema)
  }

  /** The compiled check of a tool's input schema, compiled once per revision of the tool. */
  inputCheck (tool: ToolRecord): (input: unknown) => string | null {
    return this.#validators.compile(tool.input_schema, { key: cacheKey(tool.tenant_id, tool.name), revision: tool.revision })
  }

  /** Checks a definition and turns it into the record to store (without secrets). */
  async #check (tenantId: string, name: string, definition: ToolDefinition, source: 'api' | 'file'): Promise<ToolRecord> {
    if (RESERVED_TOOL_NAMES.has(name)) {
      throw new AppError('TOOL_ERR_RESERVED_NAME', `${name} is a name Switchboard gives a tool of its own (the batch meta-tool, SPEC §14): give this tool another name.`)
    }
    let inputCheck: (input: unknown) => string | null
    try {
      inputCheck = this.#validators.compile(definition.input_schema)
    } catch (err) {
      if (err instanceof InvalidInputSchemaError) throw new AppError('TOOL_ERR_INVALID_SCHEMA', err.message)
      throw err
    }
    // The API shows examples to the model as inputs to copy: one that breaks the schema would teach it to break it.
    for (const [index, example] of (definition.input_examples ?? []).entries()) {
      const problem = inputCheck(example)
      if (problem !== null) throw new AppError('TOOL_ERR_INVALID_EXAMPLE', `input_examples[${index}] does not match input_schema: ${problem}. Fix the example or the schema.`)
    }
    const cacheTtlMs = definition.cache_ttl_ms ?? 0
    const effect = definition.effect ?? 'side_effecting'
    if (cacheTtlMs > 0 && effect !== 'read_only') {
      throw new AppError('TOOL_ERR_CACHE_NOT_READ_ONLY', `cache_ttl_ms is only for read_only tools, and this one is ${effect}: a result is reused only where calling again would change nothing. Set effect to read_only, or cache_ttl_ms to 0.`)
    }
    const callers = callersProblem(definition.callers, effect, name)
    if (callers !== null) throw new AppError('TOOL_ERR_CALLERS_NOT_ALLOWED', callers)
    const url = await this.checkWebhookUrl(definition.url, 'url')
    const headers = definition.headers ?? {}
    for (const [header, value] of Object.entries(headers)) {
      if (!HEADER_NAME.test(header)) {
        throw new AppError('REQUEST_ERR_VALIDATION', `headers has an invalid header name "${header}": use letters, digits and -.`)
      }
      if (RESERVED_HEADERS.has(header.toLowerCase())) {
        throw new AppError('REQUEST_ERR_VALIDATION', `headers may not set "${header}": Switchboard sets it on every call itself.`)
      }
      if (!HEADER_VALUE.test(value)) {
        throw new AppError('REQUEST_ERR_VALIDATION', `headers["${header}"] has a control character (such as a line break) that a header value cannot hold.`)
      }
    }
    const now = this.#now()
    return {
      tenant_id: tenantId,
      name,
      description: definition.description,
      input_schema: definition.input_schema,
      url: url.toString(),
      headers,
      timeout_ms: definition.timeout_ms ?? 30_000,
      effect,
      parallel: definition.parallel ?? true,
      max_concurrency: definition.max_concurrency ?? null,
      max_attempts: definition.max_attempts ?? 3,
      circuit_breaker: definition.circuit_breaker === false ? false : { ...CIRCUIT_BREAKER_DEFAULTS, ...definition.circuit_breaker },
      cache_ttl_ms: cacheTtlMs,
      model_options: modelOptions(definition),
      approval: definition.approval ?? 'never',
      async_timeout_ms: definition.async_timeout_ms ?? 3_600_000,
      signing_secrets: [],
      source,
      revision: newId('rev'),
      created_at: now,
      updated_at: now
    }
  }
}

/** A definition's fields passed through to the Messages API, only those it sets. */
function modelOptions (definition: ToolDefinition): NonNullable<ToolRecord['model_options']> {
  const out: { -readonly [K in keyof NonNullable<ToolRecord['model_options']>]: NonNullable<ToolRecord['model_options']>[K] } = {}
  if (definition.strict !== undefined) out.strict = definition.strict
  if (definition.input_examples !== undefined) out.input_examples = definition.input_examples
  if (definition.defer_loading !== undefined) out.defer_loading = definition.defer_loading
  if (definition.eager_input_streaming !== undefined) out.eager_input_streaming = definition.eager_input_streaming
  if (definition.callers !== undefined) out.callers = definition.callers
  return out
}

function parseWebhookUrl (value: string, field: string, code: 'TOOL_ERR_INVALID_URL' | 'RUN_ERR_CALLBACK_URL'): URL {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new AppError(code, `${field} "${value.slice(0, 200)}" is not an absolute URL: write it as https://host/path.`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new AppError(code, `${field} must use http or https, not ${url.protocol.replace(':', '')}.`)
  }
  if (url.username !== '' || url.password !== '') {
    throw new AppError(code, `${field} must not hold credentials (user:password@): URLs are shown when read back; tools can have write-only \`headers\` instead.`)
  }
  url.hash = ''
  return url
}

function notFound (name: string): AppError {
  return new AppError('TOOL_ERR_NOT_FOUND', `No tool named ${name}: register it with PUT /tools/${name}, or list your tools with GET /tools.`)
}

function cacheKey (tenantId: string, name: string): string {
  return `${tenantId}\u0000${name}`
}
