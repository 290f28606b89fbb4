import { createHash, createHmac, randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * A fake Anthropic Messages API on 127.0.0.1, as strict as the real one about what it is sent,
 * and scripted per test for what it answers. Tests drive the real SDK against it.
 */

export type ScriptBlock =
  | { type: 'text', text: string }
  | { type: 'tool_use', name: string, input: unknown, id?: string, caller?: { type: string, tool_id?: string } }
  | { type: 'thinking', thinking: string }
  | { type: 'redacted_thinking' }
  /** Any other block, sent as is in content_block_start (an unknown type, say). */
  | { type: 'raw', block: Record<string, unknown> }

export type StopReason = 'end_turn' | 'tool_use' | 'max_tokens' | 'stop_sequence' | 'pause_turn' | 'refusal' | 'model_context_window_exceeded'

/** What the fake answers to one request. */
export type Turn =
  | {
    kind?: 'message'
    content: ScriptBlock[]
    stop_reason?: StopReason
    /** Wait before answering at all. */
    delayMs?: number
    /** Wait before each content block starts streaming. */
    blockDelayMs?: number
    /** Cut the last tool_use block's JSON in half and stop with max_tokens, as the API does. */
    cutAtMaxTokens?: boolean
    /** After this many content blocks, send an SSE `error` event and end the stream. */
    streamErrorAfterBlocks?: number
    /** After this many content blocks, send nothing more, and keep the connection open. */
    stallAfterBlocks?: number
    streamErrorType?: string
    /**
     * The usage to report instead of counting characters: its token counts go in message_start
     * (output_tokens 1 there, as the API does), output_tokens and any `iterations` in message_delta.
     */
    usage?: Record<string, unknown>
  }
  | { kind: 'error', status: number, type: string, message?: string, headers?: Record<string, string> }
  /** Accept the request and never answer. */
  | { kind: 'hang' }
  /**
   * Exactly these bytes, right or wrong: a broken or hostile API. `chunks` are written in order,
   * `chunkDelayMs` apart; then the answer ends, unless `keepOpen`, or unless `forever` is given,
   * which is then written every `chunkDelayMs` (10 by default) until the client goes away.
   */
  | { kind: 'raw', status?: number, headers?: Record<string, string>, chunks: Array<string | Buffer>, chunkDelayMs?: number, keepOpen?: boolean, forever?: string }

export interface RecordedRequest {
  readonly body: Record<string, any>
  readonly headers: IncomingMessage['headers']
  readonly at: number
  /** performance.now() when the request began to arrive, before its body was read and checked. */
  readonly receivedAt: number
  /** performance.now() when the whole answer had been written; null until then. */
  answeredAt: number | null
  /** Position among all requests this fake received, from 0. */
  readonly index: number
}

export type Respond = (request: RecordedRequest) => Turn | Promise<Turn>

interface BuiltMessage {
  final: Record<string, any>
  blocks: Array<Record<string, any>>
  rawJson: Map<number, string>
}

const ALLOWED_FIELDS = new Set([
  'model', 'messages', 'max_tokens', 'system', 'tools', 'tool_choice', 'thinking', 'temperature', 'top_p',
  'top_k', 'stop_sequences', 'stream', 'metadata', 'service_tier', 'output_config', 'context_management', 'container'
])
/** The API's code execution tools that programmatic tool calling takes (SPEC §16): server tools, defined by type and name. */
const CODE_EXECUTION_TYPES = new Set(['code_execution_20250825', 'code_execution_20260120'])
/** How long a container may sit idle before the API lets it go (about 4.5 minutes; see docs/code-execution.md). */
const CONTAINER_IDLE_MS = 270_000
/** The fields of a custom tool's definition (the SDK's Tool). */
const TOOL_FIELDS = ['name', 'description', 'input_schema', 'cache_control', 'type', 'strict', 'input_examples', 'defer_loading', 'eager_input_streaming', 'allowed_callers']
/** The API's tool search tools: server tools, defined by type and name alone. */
const TOOL_SEARCH_TYPES = new Set(['tool_search_tool_regex_20251119', 'tool_search_tool_bm25_20251119'])
/** Blocks of server tools and betas that the model writes and that must come back exactly as written. */
const SERVER_BLOCK = /^(server_tool_use|mcp_tool_use|mcp_tool_result|compaction|.*_tool_result)$/
/** The fewest tokens a cached prefix holds (Claude Sonnet and Opus): a shorter one is not cached. */
const MIN_CACHEABLE_TOKENS = 1024
/** How many blocks before a breakpoint the API looks for a cached prefix. */
const CACHE_LOOKBACK_BLOCKS = 20
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,128}$/
const TOOL_USE_ID = /^[a-zA-Z0-9_-]+$/
const MAX_CACHE_BREAKPOINTS = 4
/** The content blocks the API takes in messages without betas (the SDK's ContentBlockParam). */
const BLOCK_TYPES = new Set([
  'text', 'image', 'document', 'search_result', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result',
  'server_tool_use', 'web_search_tool_result', 'web_fetch_tool_result', 'code_execution_tool_result',
  'bash_code_execution_tool_result', 'text_editor_code_execution_tool_result', 'tool_search_tool_result', 'container_upload',
  'compaction', 'mcp_tool_use', 'mcp_tool_result'
])

export class FakeMessagesApi {
  readonly requests: RecordedRequest[] = []
  /** Every request refused with 400, and why: a correct client causes none. */
  readonly refusals: Array<{ index: number, message: string }> = []
  /** Requests whose client went away before the answer ended (aborted model calls). */
  readonly aborted: number[] = []
  respond: Respond
  readonly #server: Server
  readonly #signingKey = randomBytes(32)
  readonly #redacted = new Set<string>()
  /** Block types this fake answered that the list of known ones lacks: the API takes its own back. */
  readonly #answeredTypes = new Set<string>()
  /** The JSON of each server tool or compaction block answered: one sent back must be one of these. */
  readonly #serverBlocks = new Set<string>()
  /** Prefixes of requests cached by their breakpoints (digest -> tokens), as the API's prompt cache. */
  readonly #cache = new Map<string, number>()
  /**
   * Bill cached input tokens as the API does (on by default): a request's prefix up to its last
   * cache breakpoint is written to the cache (cache_creation_input_tokens), and read back
   * (cache_read_input_tokens) by a later request with the same prefix up to a breakpoint, or up to
   * 20 blocks before one; only what follows the last breakpoint is input_tokens. Tokens are
   * counted as a quarter of the characters of the JSON of tools, system and messages.
   */
  billsCache = true
  /** Containers of code execution (SPEC §16): id -> when a request last used it. */
  readonly containers = new Map<string, number>()
  /** How long a container may sit idle before it has expired (the API's is about 4.5 minutes). */
  containerIdleMs = CONTAINER_IDLE_MS
  #url = ''

  constructor (respond?: Respond) {
    this.respond = respond ?? (() => { throw new Error('no script for this request') })
    this.#server = createServer((req, res) => { this.#handle(req, res).catch((err) => this.#fail(res, 500, 'api_error', String(err))) })
    this.#server.keepAliveTimeout = 60_000
  }

  /** Base URL for ANTHROPIC_BASE_URL. */
  get url (): string {
    return this.#url
  }

  /** Listens on a free loopback port, unless told where (the demo's model service: demo/model-server.ts). */
  async start (port = 0, host = '127.0.0.1'): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(port, host, resolve))
    this.#url = `http://${host}:${(this.#server.address() as AddressInfo).port}`
    return this
  }

  async close (): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  /** The signature the fake gives a thinking text, and will insist on getting back unchanged. */
  signThinking (thinking: string): string {
    return createHmac('sha256', this.#signingKey).update(thinking).digest('base64')
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const receivedAt = performance.now()
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    if (req.method !== 'POST' || !req.url?.startsWith('/v1/messages')) {
      this.#fail(res, 404, 'not_found_error', `no route ${req.method} ${req.url}`)
      return
    }
    let body: Record<string, any>
    const raw = Buffer.concat(chunks).toString('utf8')
    try {
      body = JSON.parse(raw)
    } catch {
      this.#refuse(res, -1, 'request body is not valid JSON')
      return
    }
    // Half a surrogate pair anywhere (half an emoji): the real API refuses the request whole.
    if (hasLoneSurrogate(body)) {
      this.#refuse(res, -1, 'The request body is not valid JSON: no low surrogate in string')
      return
    }
    const request: RecordedRequest = { body, headers: req.headers, at: Date.now(), receivedAt, answeredAt: null, index: this.requests.length }
    this.requests.push(request)
    const problem = this.#check(req, body)
    if (problem !== null) {
      this.#refuse(res, request.index, problem)
      return
    }
    const container = this.#container(body)
    if (container !== null && 'expired' in container) {
      this.#fail(res, 400, 'invalid_request_error', `container_expired: container ${container.expired} has expired and can no longer be used; its code and state are gone. Send the request without \`container\` to get a new one.`)
      return
    }
    const turn = await this.respond(request)
    let finished = false
    res.on('close', () => { if (!finished) this.aborted.push(request.index) })
    if (turn.kind === 'hang') return
    if (turn.kind === 'raw') {
      finished = await this.#raw(res, turn)
      return
    }
    if (turn.kind === 'error') {
      finished = true
      this.#fail(res, turn.status, turn.type, turn.message ?? turn.type, turn.headers)
      return
    }
    if (turn.delayMs !== undefined) await sleep(turn.delayMs)
    const message = this.#build(body, turn)
    if (container !== null) message.final.container = container
    if (body.stream === true) {
      // A stalled stream is left open: only the client can end it.
      if (!await this.#stream(res, message, turn)) return
    } else {
      res.writeHead(200, { 'content-type': 'application/json', 'request-id': `req_fake_${request.index}` })
      res.end(JSON.stringify(message.final))
    }
    request.answeredAt = performance.now()
    finished = true
  }

  /** Everything the real API would refuse, that a correct client must never send. */
  #check (req: IncomingMessage, body: Record<string, any>): string | null {
    if (typeof req.headers['x-api-key'] !== 'string' && typeof req.headers.authorization !== 'string') return 'missing x-api-key header'
    if (typeof req.headers['anthropic-version'] !== 'string') return 'missing anthropic-version header'
    for (const key of Object.keys(body)) if (!ALLOWED_FIELDS.has(key)) return `${key}: Extra inputs are not permitted`
    if (typeof body.model !== 'string' || body.model === '') return 'model: Field required'
    if (!Number.isInteger(body.max_tokens) || body.max_tokens < 1) return 'max_tokens: must be a positive integer'
    if (!Array.isArray(body.messages) || body.messages.length === 0) return 'messages: at least one message is required'

    const tools = new Set<string>()
    if (body.tools !== undefined) {
      if (!Array.isArray(body.tools)) return 'tools: must be a list'
      for (const [i, tool] of body.tools.entries()) {
        if (typeof tool?.name !== 'string' || !TOOL_NAME.test(tool.name)) return `tools.${i}.name: String should match pattern '${TOOL_NAME.source}'`
        if (tools.has(tool.name)) return `tools: Tool names must be unique (${tool.name})`
        tools.add(tool.name)
        if (CODE_EXECUTION_TYPES.has(tool.type)) {
          if (tool.name !== 'code_execution') return `tools.${i}.name: Input should be 'code_execution'`
          const extra = Object.keys(tool).find((k) => !['name', 'type', 'cache_control'].includes(k))
          if (extra !== undefined) return `tools.${i}.${extra}: Extra inputs are not permitted`
          continue
        }
        if (TOOL_SEARCH_TYPES.has(tool.type)) {
          const extra = Object.keys(tool).find((k) => !['name', 'type', 'cache_control', 'defer_loading', 'allowed_callers'].includes(k))
          if (extra !== undefined) return `tools.${i}.${extra}: Extra inputs are not permitted`
          continue
        }
        if (tool.type !== undefined && tool.type !== 'custom') return `tools.${i}.type: Input tag '${String(tool.type)}' does not match any of the expected tags`
        if (tool.input_schema?.type !== 'object') return `tools.${i}.input_schema.type: Input should be 'object'`
        const extra = Object.keys(tool).find((k) => !TOOL_FIELDS.includes(k))
        if (extra !== undefined) return `tools.${i}.${extra}: Extra inputs are not permitted`
        for (const flag of ['strict', 'defer_loading', 'eager_input_streaming']) {
          if (tool[flag] !== undefined && typeof tool[flag] !== 'boolean') return `tools.${i}.${flag}: Input should be a valid boolean`
        }
        if (tool.input_examples !== undefined && (!Array.isArray(tool.input_examples) || tool.input_examples.some((e: unknown) => typeof e !== 'object' || e === null || Array.isArray(e)))) {
          return `tools.${i}.input_examples: Input should be a valid list of dictionaries`
        }
        if (tool.defer_loading === true && tool.cache_control != null) return `tools.${i}: a tool with defer_loading cannot have cache_control`
        if (tool.allowed_callers !== undefined) {
          if (!Array.isArray(tool.allowed_callers) || tool.allowed_callers.length === 0) return `tools.${i}.allowed_callers: Input should be a non-empty list`
          for (const caller of tool.allowed_callers) {
            if (caller === 'direct') continue
            if (!CODE_EXECUTION_TYPES.has(caller)) return `tools.${i}.allowed_callers: Input should be 'direct' or a code execution tool version`
            if (!body.tools.some((t: Record<string, unknown>) => t.type === caller)) return `tools.${i}.allowed_callers: ${String(caller)} is allowed to call this tool, but the request's tools do not include the ${String(caller)} tool`
          }
        }
      }
    }
    if (Array.isArray(body.tools)) {
      const deferred = body.tools.filter((t: Record<string, unknown>) => t.defer_loading === true)
      if (deferred.length > 0 && !body.tools.some((t: Record<string, unknown>) => TOOL_SEARCH_TYPES.has(t.type as string))) return 'tools: deferred tools (defer_loading) need a tool search tool in tools'
      if (deferred.length > 0 && deferred.length === body.tools.length) return 'tools: at least one tool must not be deferred'
    }
    if (body.output_config !== undefined) {
      const { effort, format, ...rest } = body.output_config ?? {}
      if (Object.keys(rest).length > 0) return `output_config.${Object.keys(rest)[0]!}: Extra inputs are not permitted`
      if (effort != null && !['low', 'medium', 'high', 'xhigh', 'max'].includes(effort)) return 'output_config.effort: Input should be \'low\', \'medium\', \'high\', \'xhigh\' or \'max\''
      if (format != null && (format.type !== 'json_schema' || typeof format.schema !== 'object')) return 'output_config.format: Input should be a json_schema format'
    }
    if (body.context_management !== undefined) {
      const beta = String(req.headers['anthropic-beta'] ?? '')
      const compact = (body.context_management.edits ?? []).some((e: { type?: string }) => String(e.type).startsWith('compact_'))
      if (!beta.includes(compact ? 'compact-2026-01-12' : 'context-management-2025-06-27')) return 'context_management: Extra inputs are not permitted (this field needs its anthropic-beta header)'
    }
    if (body.tool_choice !== undefined) {
      if (body.tools === undefined) return 'tool_choice may only be specified while providing tools'
      if (body.tool_choice.type === 'tool' && !tools.has(body.tool_choice.name)) return `tool_choice.name: tool ${body.tool_choice.name} is not in tools`
    }
    if (body.thinking?.type === 'enabled') {
      if (!Number.isInteger(body.thinking.budget_tokens) || body.thinking.budget_tokens < 1024) return 'thinking.enabled.budget_tokens: Input should be greater than or equal to 1024'
      if (!(body.thinking.budget_tokens < body.max_tokens)) return '`max_tokens` must be greater than `thinking.budget_tokens`'
    }
    if (body.thinking !== undefined && body.thinking.type !== 'disabled' && ['any', 'tool'].includes(body.tool_choice?.type)) {
      return 'Thinking may not be enabled when tool_choice forces tool use.'
    }
    if (body.system !== undefined && typeof body.system !== 'string') {
      if (!Array.isArray(body.system)) return 'system: Input should be a valid string or list'
      for (const [i, block] of body.system.entries()) {
        if (block?.type !== 'text') return `system.${i}.type: Input should be 'text'`
        const problem = textBlockProblem(block, `system.${i}`)
        if (problem !== null) return problem
      }
    }
    // Cache breakpoints: a valid cache_control each, at most four in the whole request.
    let breakpoints = 0
    for (const [where, block] of cacheableBlocks(body)) {
      if (block.cache_control === undefined || block.cache_control === null) continue
      const problem = cacheControlProblem(block.cache_control, `${where}.cache_control`)
      if (problem !== null) return problem
      breakpoints++
    }
    if (breakpoints > MAX_CACHE_BREAKPOINTS) return `A maximum of ${MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found ${breakpoints}.`

    const messages = body.messages as Array<{ role: string, content: unknown }>
    for (const [i, message] of messages.entries()) {
      if (message.role !== 'user' && message.role !== 'assistant') return `messages.${i}.role: Input should be 'user' or 'assistant'`
      if (i === 0 && message.role !== 'user') return 'messages: first message must use the "user" role'
      if (i > 0 && messages[i - 1]!.role === message.role) return `messages: roles must alternate between "user" and "assistant", but found multiple "${message.role}" roles in a row`
      if (typeof message.content !== 'string' && !Array.isArray(message.content)) return `messages.${i}.content: Input should be a valid string or list`
      const finalAssistant = i === messages.length - 1 && message.role === 'assistant'
      if ((message.content === '' || message.content.length === 0) && !finalAssistant) {
        return `messages.${i}: all messages must have non-empty content except for the optional final assistant message`
      }
      if (typeof message.content === 'string' && message.content.trim() === '' && !finalAssistant) return `messages.${i}: text content blocks must contain non-whitespace text`
      if (Array.isArray(message.content)) {
        for (const [j, block] of message.content.entries()) {
          if (typeof block?.type !== 'string') return `messages.${i}.content.${j}.type: Field required`
          const problem = this.#checkBlock(block, message.role, tools, `messages.${i}.content.${j}`)
          if (problem !== null) return problem
        }
      }
    }
    // Pairing: each assistant tool_use must be answered by exactly one tool_result, first thing in
    // the next user message; a tool_result must answer a tool_use of the message just before.
    for (const [i, message] of messages.entries()) {
      const content = Array.isArray(message.content) ? message.content as Array<Record<string, any>> : []
      if (message.role === 'assistant') {
        const uses = content.filter((b) => b.type === 'tool_use').map((b) => b.id as string)
        if (uses.length === 0) continue
        if (new Set(uses).size !== uses.length) return `messages.${i}: tool_use ids must be unique`
        const next = messages[i + 1]
        if (next === undefined) {
          if (i === messages.length - 1) return `messages.${i}: the final assistant message cannot end with tool_use blocks; send their tool_result blocks`
          continue
        }
        const results = Array.isArray(next.content) ? next.content as Array<Record<string, any>> : []
        const leading: string[] = []
        for (const block of results) {
          if (block.type !== 'tool_result') break
          leading.push(block.tool_use_id)
        }
        const later = results.slice(leading.length).find((b) => b.type === 'tool_result')
        if (later !== undefined) return `messages.${i + 1}: tool_result blocks must come before any other content in the user message`
        for (const id of uses) {
          const count = leading.filter((r) => r === id).length
          if (count === 0) return `messages.${i + 1}: tool_use ids were found without tool_result blocks immediately after: ${id}. Each tool_use block must have a corresponding tool_result block in the next message.`
          if (count > 1) return `messages.${i + 1}: each tool_use must have a single result. Found multiple tool_result blocks with id: ${id}`
        }
        const stray = leading.find((r) => !uses.includes(r))
        if (stray !== undefined) return `messages.${i + 1}: unexpected tool_use_id found in tool_result blocks: ${stray}. Each tool_result block must have a corresponding tool_use block in the previous message.`
      } else if (i > 0 || content.some((b) => b.type === 'tool_result')) {
        const previous = messages[i - 1]
        const previousUses = previous !== undefined && Array.isArray(previous.content)
          ? (previous.content as Array<Record<string, any>>).filter((b) => b.type === 'tool_use').map((b) => b.id)
          : []
        const stray = content.find((b) => b.type === 'tool_result' && !previousUses.includes(b.tool_use_id))
        if (stray !== undefined) return `messages.${i}: unexpected tool_use_id found in tool_result blocks: ${stray.tool_use_id}`
      }
    }
    return codeContinuationProblem(body)
  }

  /**
   * Programmatic tool calling (SPEC §16): the container of a request, as the API keeps it. A
   * request naming a container idle longer than containerIdleMs (or never made) is answered 400,
   * as the API answers for an expired container; a request with the code execution tool and no
   * container gets a new one. Null for a request without code execution.
   */
  #container (body: Record<string, any>): { id: string, expires_at: string, skills: null } | { expired: string } | null {
    const named = typeof body.container === 'string' ? body.container : body.container?.id
    if (!Array.isArray(body.tools) || !body.tools.some((t: Record<string, unknown>) => CODE_EXECUTION_TYPES.has(t.type as string))) {
      return typeof named === 'string' ? { expired: named } : null
    }
    const now = Date.now()
    let id: string
    if (typeof named === 'string') {
      const lastUsed = this.containers.get(named)
      if (lastUsed === undefined || now - lastUsed > this.containerIdleMs) return { expired: named }
      id = named
    } else {
      id = `container_${randomBytes(12).toString('hex')}`
    }
    this.containers.set(id, now)
    return { id, expires_at: new Date(now + this.containerIdleMs).toISOString(), skills: null }
  }

  #checkBlock (block: Record<string, any>, role: string, tools: Set<string>, where: string): string | null {
    switch (block.type) {
      case 'text':
        return textBlockProblem(block, where)
      case 'image':
        return role === 'user' || role === 'tool' ? null : `${where}: image blocks are only allowed in user messages`
      case 'tool_use':
        if (role !== 'assistant') return `${where}: tool_use blocks are only allowed in assistant messages`
        if (typeof block.id !== 'string' || typeof block.name !== 'string') return `${where}: tool_use needs id and name`
        if (!TOOL_USE_ID.test(block.id)) return `${where}.tool_use.id: String should match pattern '${TOOL_USE_ID.source}'`
        if (typeof block.input !== 'object' || block.input === null || Array.isArray(block.input)) return `${where}.input: Input should be a valid dictionary`
        if (!tools.has(block.name)) return `${where}: tool_use names tool ${block.name}, which is not in tools`
        return null
      case 'tool_result': {
        if (role !== 'user') return `${where}: tool_result blocks are only allowed in user messages`
        if (typeof block.tool_use_id !== 'string') return `${where}.tool_use_id: Field required`
        if (block.is_error !== undefined && typeof block.is_error !== 'boolean') return `${where}.is_error: Input should be a valid boolean`
        const extra = Object.keys(block).find((k) => !['type', 'tool_use_id', 'content', 'is_error', 'cache_control'].includes(k))
        if (extra !== undefined) return `${where}.${extra}: Extra inputs are not permitted`
        if (block.is_error === true && (block.content === undefined || block.content === '' || (Array.isArray(block.content) && block.content.length === 0))) {
          return `${where}: content cannot be empty if \`is_error\` is true`
        }
        if (block.content === undefined || typeof block.content === 'string') return null
        if (!Array.isArray(block.content)) return `${where}.content: Input should be a valid string or list`
        for (const [k, inner] of block.content.entries()) {
          if (inner?.type === 'text') {
            // A tool's text block is its text, and a breakpoint at most: citations here cite nothing of this request.
            const extra = Object.keys(inner).find((key) => !['type', 'text', 'cache_control'].includes(key) && !(key === 'citations' && inner.citations === null))
            if (extra !== undefined) return `${where}.content.${k}.text.${extra}: Extra inputs are not permitted`
            const problem = textBlockProblem(inner, `${where}.content.${k}`)
            if (problem !== null) return problem
          } else if (inner?.type === 'image') {
            if (inner.source?.type !== 'base64' || typeof inner.source.data !== 'string') return `${where}.content.${k}.source: invalid image source`
          } else {
            return `${where}.content.${k}.type: Input tag '${String(inner?.type)}' is not one of 'text', 'image', 'search_result', 'document'`
          }
        }
        return null
      }
      case 'thinking':
        if (role !== 'assistant') return `${where}: thinking blocks are only allowed in assistant messages`
        if (block.signature !== this.signThinking(String(block.thinking))) return `${where}: Invalid \`signature\` in \`thinking\` block`
        return null
      case 'redacted_thinking':
        if (!this.#redacted.has(block.data)) return `${where}: Invalid \`data\` in \`redacted_thinking\` block`
        return null
      default:
        if (role === 'assistant' && SERVER_BLOCK.test(block.type)) {
          const { cache_control: _, ...sent } = block
          if (!this.#serverBlocks.has(JSON.stringify(sent))) return `${where}: the ${String(block.type)} block is not one the API sent: server tool and compaction blocks must be passed back unchanged`
        }
        if (!BLOCK_TYPES.has(block.type) && !this.#answeredTypes.has(block.type)) return `${where}: Input tag '${String(block.type)}' found using 'type' does not match any of the expected tags: ${[...BLOCK_TYPES].map((t) => `'${t}'`).join(', ')}`
        return null
    }
  }

  #build (body: Record<string, any>, turn: Extract<Turn, { content: ScriptBlock[] }>): BuiltMessage {
    const blocks: Array<Record<string, any>> = []
    const rawJson = new Map<number, string>()
    for (const [index, block] of turn.content.entries()) {
      switch (block.type) {
        case 'text':
          blocks.push({ type: 'text', text: block.text, citations: null })
          break
        case 'tool_use':
          blocks.push({ type: 'tool_use', id: block.id ?? `toolu_${randomBytes(12).toString('hex')}`, name: block.name, input: block.input, ...(block.caller === undefined ? {} : { caller: block.caller }) })
          if (block.caller !== undefined && block.caller.type !== 'direct') {
            const tool = (body.tools ?? []).find((t: Record<string, unknown>) => t.name === block.name)
            if (!Array.isArray(tool?.allowed_callers) || !tool.allowed_callers.includes(block.caller.type)) throw new Error(`the script has code call ${block.name}, whose definition does not allow ${block.caller.type} in allowed_callers`)
          }
          rawJson.set(index, JSON.stringify(block.input))
          break
        case 'thinking':
          blocks.push({ type: 'thinking', thinking: block.thinking, signature: this.signThinking(block.thinking) })
          break
        case 'redacted_thinking': {
          const data = randomBytes(24).toString('base64')
          this.#redacted.add(data)
          blocks.push({ type: 'redacted_thinking', data })
          break
        }
        case 'raw':
          blocks.push(block.block)
          if (typeof block.block.type === 'string') this.#answeredTypes.add(block.block.type)
          if (typeof block.block.type === 'string' && SERVER_BLOCK.test(block.block.type)) this.#serverBlocks.add(JSON.stringify(block.block))
          if (block.block.type === 'server_tool_use' || block.block.type === 'mcp_tool_use') rawJson.set(index, JSON.stringify(block.block.input ?? {}))
          break
      }
    }
    let stopReason: StopReason = turn.stop_reason ?? (blocks.some((b) => b.type === 'tool_use') ? 'tool_use' : 'end_turn')
    if (turn.cutAtMaxTokens === true) {
      const last = [...rawJson.keys()].pop()
      if (last !== undefined) {
        const json = rawJson.get(last)!
        rawJson.set(last, json.slice(0, Math.max(1, Math.floor(json.length / 2))))
        blocks[last]!.input = {}
      }
      stopReason = 'max_tokens'
    }
    const outputTokens = Math.max(1, Math.ceil(JSON.stringify(blocks).length / 4))
    const final = {
      id: `msg_${randomBytes(12).toString('hex')}`,
      type: 'message',
      role: 'assistant',
      model: body.model,
      content: blocks,
      stop_reason: stopReason,
      stop_sequence: stopReason === 'stop_sequence' ? (body.stop_sequences?.[0] ?? null) : null,
      usage: { ...this.#inputUsage(body), output_tokens: outputTokens, ...turn.usage } as Record<string, any>
    }
    return { final, blocks, rawJson }
  }

  /**
   * The input side of a request's usage (see billsCache): what was read from the cache, what was
   * written to it, and the rest.
   */
  #inputUsage (body: Record<string, any>): Record<string, any> {
    const segments = promptSegments(body)
    const cumulative: number[] = []
    const digests: string[] = []
    let total = 0
    const hash = createHash('sha256')
    for (const segment of segments) {
      total += Math.ceil(segment.json.length / 4)
      cumulative.push(total)
      hash.update(segment.json)
      digests.push(hash.copy().digest('hex'))
    }
    const breakpoints = segments.flatMap((s, i) => s.breakpoint ? [i] : [])
    if (!this.billsCache || breakpoints.length === 0) {
      return { input_tokens: total, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 }
    }
    let read = 0
    for (const at of breakpoints) {
      for (let i = at; i >= Math.max(0, at - CACHE_LOOKBACK_BLOCKS + 1); i--) {
        if (this.#cache.has(digests[i]!)) {
          read = Math.max(read, cumulative[i]!)
          break
        }
      }
    }
    let written = read
    for (const at of breakpoints) {
      if (cumulative[at]! < MIN_CACHEABLE_TOKENS) continue
      this.#cache.set(digests[at]!, cumulative[at]!)
      written = Math.max(written, cumulative[at]!)
    }
    const creation = written - read
    return {
      input_tokens: total - written,
      cache_creation_input_tokens: creation,
      cache_read_input_tokens: read,
      cache_creation: { ephemeral_5m_input_tokens: creation, ephemeral_1h_input_tokens: 0 }
    }
  }

  /** Streams the answer; false if it stalled on purpose and was left open. */
  async #stream (res: ServerResponse, built: BuiltMessage, turn: Extract<Turn, { content: ScriptBlock[] }>): Promise<boolean> {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': 'req_fake_stream' })
    // Events written together go out together (as a server flushing its buffer would send them),
    // not one packet per event; a block delay sends what came before it first.
    res.cork()
    try {
      return await this.#streamEvents(res, built, turn)
    } finally {
      if (res.writableCorked > 0) res.uncork()
    }
  }

  async #streamEvents (res: ServerResponse, built: BuiltMessage, turn: Extract<Turn, { content: ScriptBlock[] }>): Promise<boolean> {
    const send = (event: string, data: unknown): boolean => {
      if (res.destroyed) return false
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
      return true
    }
    // Uncorked first: on Node 24, an answer ended while corked loses what was still buffered.
    const end = (): void => {
      res.uncork()
      res.end()
    }
    const { final, blocks, rawJson } = built
    const { iterations, ...startUsage } = final.usage
    send('message_start', { type: 'message_start', message: { ...final, content: [], stop_reason: null, stop_sequence: null, usage: { ...startUsage, output_tokens: 1 }, ...(final.container === undefined ? {} : { container: null }) } })
    send('ping', { type: 'ping' })
    for (const [index, block] of blocks.entries()) {
      if (turn.stallAfterBlocks === index) return false
      if (turn.streamErrorAfterBlocks === index) {
        send('error', { type: 'error', error: { type: turn.streamErrorType ?? 'overloaded_error', message: 'Overloaded' } })
        end()
        return true
      }
      if (turn.blockDelayMs !== undefined) {
        res.uncork()
        await sleep(turn.blockDelayMs)
        res.cork()
      }
      if (res.destroyed) return true
      switch (block.type) {
        case 'text':
          send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'text', text: '', citations: null } })
          for (const piece of pieces(block.text, 12)) send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'text_delta', text: piece } })
          break
        case 'server_tool_use':
        case 'mcp_tool_use':
          // As the API streams them: the input as JSON deltas, after a start without it.
          send('content_block_start', { type: 'content_block_start', index, content_block: { ...block, input: {} } })
          for (const piece of pieces(rawJson.get(index) ?? '', 16)) send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: piece } })
          break
        case 'compaction':
          send('content_block_start', { type: 'content_block_start', index, content_block: { ...block, content: null, encrypted_content: null } })
          send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'compaction_delta', content: block.content, encrypted_content: block.encrypted_content } })
          break
        case 'tool_use':
          send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'tool_use', id: block.id, name: block.name, input: {}, ...(block.caller === undefined ? {} : { caller: block.caller }) } })
          for (const piece of pieces(rawJson.get(index) ?? '', 16)) send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: piece } })
          break
        case 'thinking':
          send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'thinking', thinking: '', signature: '' } })
          for (const piece of pieces(block.thinking, 20)) send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'thinking_delta', thinking: piece } })
          send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'signature_delta', signature: block.signature } })
          break
        default:
          send('content_block_start', { type: 'content_block_start', index, content_block: block })
      }
      send('content_block_stop', { type: 'content_block_stop', index })
    }
    if (turn.streamErrorAfterBlocks !== undefined && turn.streamErrorAfterBlocks >= blocks.length) {
      send('error', { type: 'error', error: { type: turn.streamErrorType ?? 'overloaded_error', message: 'Overloaded' } })
      end()
      return true
    }
    send('message_delta', { type: 'message_delta', delta: { stop_reason: final.stop_reason, stop_sequence: final.stop_sequence, ...(final.container === undefined ? {} : { container: final.container }) }, usage: { output_tokens: final.usage.output_tokens, ...(iterations === undefined ? {} : { iterations }) } })
    send('message_stop', { type: 'message_stop' })
    end()
    return true
  }

  /** Writes a raw turn; false if it was left open (or the client went away first). */
  async #raw (res: ServerResponse, turn: Extract<Turn, { kind: 'raw' }>): Promise<boolean> {
    for (const [, type] of turn.chunks.map(String).join('').matchAll(/"content_block":\s*\{\s*"type":\s*"([^"]+)"/g)) this.#answeredTypes.add(type!)
    res.writeHead(turn.status ?? 200, { 'content-type': 'text/event-stream', ...turn.headers })
    for (const chunk of turn.chunks) {
      if (res.destroyed) return false
      res.write(chunk)
      if (turn.chunkDelayMs !== undefined) await sleep(turn.chunkDelayMs)
    }
    if (turn.forever !== undefined) {
      while (!res.destroyed) {
        res.write(turn.forever)
        await sleep(turn.chunkDelayMs ?? 10)
      }
      return false
    }
    if (turn.keepOpen === true || res.destroyed) return false
    res.end()
    return true
  }

  #refuse (res: ServerResponse, index: number, message: string): void {
    this.refusals.push({ index, message })
    this.#fail(res, 400, 'invalid_request_error', message)
  }

  #fail (res: ServerResponse, status: number, type: string, message: string, headers: Record<string, string> = {}): void {
    if (res.headersSent) {
      res.destroy()
      return
    }
    res.writeHead(status, { 'content-type': 'application/json', ...headers })
    res.end(JSON.stringify({ type: 'error', error: { type, message } }))
  }
}

/** The ids of an assistant message's tool_use blocks made by code execution (their `caller` names it). */
function codeCallIds (message: { role: string, content: unknown } | undefined): Set<string> {
  const ids = new Set<string>()
  if (message?.role !== 'assistant' || !Array.isArray(message.content)) return ids
  for (const block of message.content as Array<Record<string, any>>) {
    if (block.type === 'tool_use' && typeof block.caller?.type === 'string' && CODE_EXECUTION_TYPES.has(block.caller.type)) ids.add(block.id)
  }
  return ids
}

/**
 * What the API refuses in a request answering calls made by code (SPEC §16): the request must
 * name the container the code waits in, and the user message must hold tool_result blocks only,
 * those answering code calls with text alone.
 */
function codeContinuationProblem (body: Record<string, any>): string | null {
  const messages = body.messages as Array<{ role: string, content: unknown }>
  const last = messages[messages.length - 1]!
  const pending = codeCallIds(messages[messages.length - 2])
  if (pending.size === 0) return null
  if (body.container === undefined || body.container === null) return 'container_id is required when there are pending tool uses generated by code execution with tools.'
  const where = `messages.${messages.length - 1}`
  if (!Array.isArray(last.content)) return `${where}: when responding to tool use requests from code execution, the message must contain only tool_result blocks`
  for (const [j, block] of (last.content as Array<Record<string, any>>).entries()) {
    if (block.type !== 'tool_result') return `${where}.content.${j}: when responding to tool use requests from code execution, the message must contain only tool_result blocks (found ${String(block.type)})`
    if (!pending.has(block.tool_use_id) || typeof block.content === 'string' || block.content === undefined) continue
    const other = (block.content as Array<Record<string, any>>).find((b) => b.type !== 'text')
    if (other !== undefined) return `${where}.content.${j}.content: a tool_result for a tool use from code execution must be text (found ${String(other.type)})`
  }
  return null
}

/** A text block as the API takes it: text that is not blank, and no field it does not know. */
function textBlockProblem (block: Record<string, any>, where: string): string | null {
  if (typeof block.text !== 'string') return `${where}.text: Field required`
  const extra = Object.keys(block).find((k) => !['type', 'text', 'cache_control', 'citations'].includes(k))
  if (extra !== undefined) return `${where}.text.${extra}: Extra inputs are not permitted`
  if (block.text === '') return `${where}: text content blocks must be non-empty`
  if (block.text.trim() === '') return `${where}: text content blocks must contain non-whitespace text`
  return null
}

function cacheControlProblem (value: unknown, where: string): string | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return `${where}: Input should be a valid dictionary or object`
  const { type, ttl, ...rest } = value as Record<string, unknown>
  if (type !== 'ephemeral') return `${where}.type: Input should be 'ephemeral'`
  if (ttl !== undefined && ttl !== '5m' && ttl !== '1h') return `${where}.ttl: Input should be '5m' or '1h'`
  const extra = Object.keys(rest)[0]
  if (extra !== undefined) return `${where}.${extra}: Extra inputs are not permitted`
  return null
}

/** Every place of a request a cache_control may be: tools, system blocks, message blocks and a tool_result's own blocks. */
function cacheableBlocks (body: Record<string, any>): Array<[string, Record<string, any>]> {
  const out: Array<[string, Record<string, any>]> = []
  const add = (where: string, block: unknown): void => { if (typeof block === 'object' && block !== null) out.push([where, block as Record<string, any>]) }
  if (Array.isArray(body.tools)) body.tools.forEach((tool: unknown, i: number) => add(`tools.${i}`, tool))
  if (Array.isArray(body.system)) body.system.forEach((block: unknown, i: number) => add(`system.${i}`, block))
  if (Array.isArray(body.messages)) {
    for (const [i, message] of body.messages.entries()) {
      if (!Array.isArray(message?.content)) continue
      for (const [j, block] of message.content.entries()) {
        add(`messages.${i}.content.${j}`, block)
        if (block?.type === 'tool_result' && Array.isArray(block.content)) block.content.forEach((inner: unknown, k: number) => add(`messages.${i}.content.${j}.content.${k}`, inner))
      }
    }
  }
  return out
}

/**
 * A request's prompt in the order the API caches it (tools, system, messages), block by block: the
 * JSON of each without its cache_control, and whether it sets a breakpoint.
 */
function promptSegments (body: Record<string, any>): Array<{ json: string, breakpoint: boolean }> {
  const out: Array<{ json: string, breakpoint: boolean }> = []
  const add = (block: unknown): void => {
    if (typeof block !== 'object' || block === null) {
      out.push({ json: JSON.stringify(block) ?? '', breakpoint: false })
      return
    }
    const { cache_control: control, ...rest } = block as Record<string, unknown>
    out.push({ json: JSON.stringify(rest), breakpoint: control !== undefined && control !== null })
  }
  if (Array.isArray(body.tools)) body.tools.forEach(add)
  if (typeof body.system === 'string') add({ type: 'text', text: body.system })
  else if (Array.isArray(body.system)) body.system.forEach(add)
  let codeCalls = new Set<string>()
  for (const message of body.messages as Array<{ role: string, content: unknown }>) {
    // A string is the same prompt as one text block of it.
    if (typeof message.content === 'string') add({ type: 'text', text: message.content })
    // A result of a call made by code goes to the code, not into the model's context (SPEC §16).
    else if (Array.isArray(message.content)) for (const block of message.content) if (!(block?.type === 'tool_result' && codeCalls.has(block.tool_use_id))) add(block)
    codeCalls = codeCallIds(message)
  }
  return out
}

function hasLoneSurrogate (value: unknown): boolean {
  if (typeof value === 'string') return /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(value)
  if (Array.isArray(value)) return value.some(hasLoneSurrogate)
  if (typeof value === 'object' && value !== null) return Object.values(value).some(hasLoneSurrogate)
  return false
}

function pieces (text: string, size: number): string[] {
  if (text === '') return []
  const out: string[] = []
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size))
  return out
}

/** Starts a fake on a free port. */
export async function startFakeMessagesApi (respond?: Respond): Promise<FakeMessagesApi> {
  return await new FakeMessagesApi(respond).start()
}

// ---- helpers for scripts ----

/** The tool_result blocks of the request's last message (empty on a first turn). */
export function toolResults (request: RecordedRequest): Array<{ tool_use_id: string, content?: unknown, is_error?: boolean }> {
  const last = request.body.messages[request.body.messages.length - 1]
  return Array.isArray(last?.content) ? last.content.filter((b: { type: string }) => b.type === 'tool_result') : []
}

/** The text of a tool_result's content, whether a string or blocks. */
export function resultText (result: { content?: unknown }): string {
  if (typeof result.content === 'string') return result.content
  if (Array.isArray(result.content)) return result.content.map((b: { text?: string }) => b.text ?? '').join('')
  return ''
}

/** How many model calls this run has made so far, counted from its transcript. */
export function turnNumber (request: RecordedRequest): number {
  return request.body.messages.filter((m: { role: string }) => m.role === 'assistant').length + 1
}

/**
 * The commonest script: on the run's first model call ask for `calls` (all at once), then answer
 * with text built from the tool results.
 */
export function toolsThenAnswer (calls: Array<{ name: string, input: unknown }>, answer: (results: ReturnType<typeof toolResults>) => string = (r) => `done: ${r.map(resultText).join(' | ')}`): Respond {
  return (request) => {
    if (turnNumber(request) === 1) return { content: calls.map((c) => ({ type: 'tool_use' as const, ...c })) }
    return { content: [{ type: 'text', text: answer(toolResults(request)) }] }
  }
}

/**
 * A turn of programmatic tool calling (SPEC §16): the model runs code (a server_tool_use of the
 * code execution tool) that calls `calls`, each a tool_use whose `caller` names that code.
 */
export function codeCalls (calls: Array<{ name: string, input: unknown }>, code = 'results = [await tool(**args) for args in inputs]'): ScriptBlock[] {
  const toolId = `srvtoolu_${randomBytes(10).toString('hex')}`
  return [
    { type: 'raw', block: { type: 'server_tool_use', id: toolId, name: 'code_execution', input: { code } } },
    ...calls.map((c) => ({ type: 'tool_use' as const, ...c, caller: { type: 'code_execution_20260120', tool_id: toolId } }))
  ]
}

/** The code execution result block that ends the code of `request`'s last code calls, as the API sends it. */
export function codeResult (request: RecordedRequest, stdout: string): ScriptBlock {
  const messages = request.body.messages
  const server = (messages[messages.length - 2]?.content ?? []).find((b: { type: string }) => b.type === 'server_tool_use')
  return { type: 'raw', block: { type: 'code_execution_tool_result', tool_use_id: server?.id ?? 'srvtoolu_missing', content: { type: 'code_execution_result', stdout, stderr: '', return_code: 0, content: [] } } }
}
