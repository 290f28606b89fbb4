import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { createMcpHandler, fromJsonSchema, isLegacyRequest, McpServer, type CallToolResult, type McpHttpHandler, type ToolAnnotations } from '@modelcontextprotocol/server'
import { NodeStreamableHTTPServerTransport, toNodeHandler, toWebRequest, type NodeMcpRequestHandler } from '@modelcontextprotocol/node'
import { resultText, toolResults, turnNumber, type RecordedRequest } from './fake-messages-api.js'
import type { Harness } from './harness.js'
import type { TestTenant } from './app.js'

/** One tool of the test server: what it is listed with, and what a call of it does. */
export interface McpTestTool {
  readonly name: string
  readonly description?: string
  readonly inputSchema?: Record<string, unknown>
  readonly annotations?: ToolAnnotations
  /** Answers a call; `signal` aborts when the client cancels (notifications/cancelled). */
  readonly run: (args: Record<string, unknown>, signal: AbortSignal) => Promise<CallToolResult> | CallToolResult
}

/** One tools/call the server received. Times are performance.now() milliseconds. */
export interface McpRecordedCall {
  readonly tool: string
  readonly args: Record<string, unknown>
  readonly meta: Record<string, unknown> | undefined
  readonly headers: IncomingMessage['headers']
  readonly sessionId: string | undefined
  /** The protocol era the call came in: `legacy` (2025-11-25, after initialize), `modern` (2026-07-28). */
  readonly era: McpEra
  readonly start: number
  end: number | null
  /** notifications/cancelled came for this call. */
  cancelled: boolean
}

const OBJECT = { type: 'object', properties: {}, additionalProperties: true }

/** An MCP protocol era: 2025-11-25 and before (`legacy`), 2026-07-28 and after (`modern`). */
export type McpEra = 'legacy' | 'modern'

/** How the test server is built. */
export interface McpTestServerOptions {
  /**
   * Which eras it serves: `legacy` (2025-11-25 only, with sessions: the default), `modern`
   * (2026-07-28 only: the SDK's createMcpHandler, which refuses initialize), or `both` (a 2026-07-28
   * endpoint with the 2025 sessionful wiring kept beside it, routed with isLegacyRequest, as the
   * server SDK documents).
   */
  readonly eras?: McpEra | 'both'
  /**
   * Bearer auth: every MCP request needs a token `verify` accepts (401 otherwise, pointing at the
   * protected resource metadata of RFC 9728, which names `authorizationServer`).
   */
  readonly auth?: { readonly authorizationServer: string, readonly verify: (token: string) => boolean }
}

/**
 * An answer to tools/call: 1 GB as one JSON body (`huge-json`) or as one endless SSE event
 * (`huge-sse`), both hostile; or 2 MB of small notifications on the answer's SSE stream, then the
 * result, text `chatty` (`chatty-sse`: long, yet each event small).
 */
export type McpHostility = 'huge-json' | 'huge-sse' | 'chatty-sse'
const HOSTILE_BYTES = 1024 ** 3

/**
 * The standard tools: `echo` (answers its input as text), `hang` (never answers; its cancellation is
 * recorded), `delay` (answers after `ms`), `fail` (isError), `image` (an image block), `structured`
 * (structuredContent only), `resource` (an embedded resource block), and `read` / `write` with
 * readOnlyHint / idempotentHint and destructiveHint annotations.
 */
export function standardTools (): McpTestTool[] {
  return [
    { name: 'echo', description: 'Echoes its input.', run: (args) => ({ content: [{ type: 'text', text: `echo ${JSON.stringify(args)}` }] }) },
    { name: 'hang', description: 'Never answers.', run: async (_args, signal) => { await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true })); return { content: [] } } },
    { name: 'delay', description: 'Answers after ms.', run: async (args) => { await sleep(Number(args.ms ?? 50)); return { content: [{ type: 'text', text: 'done' }] } } },
    { name: 'fail', description: 'Fails.', run: () => ({ content: [{ type: 'text', text: 'the tool broke' }], isError: true }) },
    { name: 'image', description: 'An image.', run: () => ({ content: [{ type: 'text', text: 'a pixel' }, { type: 'image', data: 'iVBORw0KGgo=', mimeType: 'image/png' }] }) },
    { name: 'structured', description: 'Structured only.', run: () => ({ content: [], structuredContent: { temperature: 21, unit: 'C' } }) },
    { name: 'resource', description: 'A resource block.', run: () => ({ content: [{ type: 'resource', resource: { uri: 'file:///notes.txt', mimeType: 'text/plain', text: 'notes' } }] }) },
    { name: 'read', description: 'Reads.', annotations: { readOnlyHint: true }, run: () => ({ content: [{ type: 'text', text: 'read ok' }] }) },
    { name: 'upsert', description: 'Idempotent write.', annotations: { readOnlyHint: false, idempotentHint: true }, run: () => ({ content: [{ type: 'text', text: 'upserted' }] }) },
    { name: 'write', description: 'Writes.', annotations: { destructiveHint: true }, run: () => ({ content: [{ type: 'text', text: 'written' }] }) }
  ]
}

/**
 * A real MCP server (the official server SDK, Streamable HTTP, stateful sessions) on 127.0.0.1,
 * controllable by tests: tools can be replaced (clients get notifications/tools/list_changed),
 * sessions expired (the next request answers 404), and every call and cancellation is recorded.
 */
export class McpTestServer {
  readonly calls: McpRecordedCall[] = []
  /** Sessions initialized so far (one per connection the client made). */
  initializations = 0
  /** MCP requests answered 401 for want of a valid bearer token. */
  unauthorized = 0
  /** Bytes of hostile answers written so far (the client hanging up stops them). */
  hostileBytes = 0
  readonly #server: Server
  readonly #options: McpTestServerOptions
  readonly #modern: { handler: McpHttpHandler, node: NodeMcpRequestHandler } | null
  readonly #sessions = new Map<string, { transport: NodeStreamableHTTPServerTransport, mcp: McpServer, registered: Map<string, { remove: () => void }> }>()
  #tools: McpTestTool[]
  #url = ''
  /** Paths that answer something else than MCP, for tests of broken servers. */
  #broken: 'garbage' | 'refuse' | null = null
  #hostile: McpHostility | null = null

  constructor (tools: McpTestTool[] = standardTools(), options: McpTestServerOptions = {}) {
    this.#tools = tools
    this.#options = options
    const eras = options.eras ?? 'legacy'
    if (eras === 'legacy') {
      this.#modern = null
    } else {
      // A fresh server instance per request, as the 2026-07-28 era is stateless.
      const handler = createMcpHandler(() => {
        const mcp = new McpServer({ name: 'switchboard-test', version: '1.0.0' }, { capabilities: { tools: { listChanged: true } } })
        for (const tool of this.#tools) this.#register(mcp, tool, 'modern')
        return mcp
      }, { legacy: 'reject' })
      this.#modern = { handler, node: toNodeHandler(handler) }
    }
    this.#server = createServer((req, res) => { this.#handle(req, res).catch(() => res.destroy()) })
  }

  /** The Streamable HTTP endpoint. */
  get url (): string {
    return `${this.#url}/mcp`
  }

  get origin (): string {
    return this.#url
  }

  async start (port = 0): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(port, '127.0.0.1', resolve))
    this.#url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`
    return this
  }

  async close (): Promise<void> {
    await this.#modern?.handler.close()
    for (const session of this.#sessions.values()) await session.transport.close().catch(() => {})
    this.#sessions.clear()
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  /** Replaces the tool list; every open session is told (notifications/tools/list_changed). */
  setTools (tools: McpTestTool[]): void {
    this.#tools = tools
    for (const session of this.#sessions.values()) {
      for (const entry of session.registered.values()) entry.remove()
      session.registered.clear()
      for (const tool of tools) session.registered.set(tool.name, this.#register(session.mcp, tool, 'legacy'))
    }
    this.#modern?.handler.notify.toolsChanged()
  }

  /** Forgets every session: the next request of a client answers 404 (its session expired). */
  expireSessions (): void {
    for (const session of this.#sessions.values()) session.transport.close().catch(() => {})
    this.#sessions.clear()
  }

  /** Answers every request with something that is not MCP (`garbage`), or closes connections (`refuse`). */
  breakWith (how: 'garbage' | 'refuse' | null): void {
    this.#broken = how
  }

  /** Answers every tools/call as `how` says (see {@link McpHostility}), until called with null. */
  answerCallsWith (how: McpHostility | null): void {
    this.#hostile = how
  }

  callsOf (tool: string): McpRecordedCall[] {
    return this.calls.filter((c) => c.tool === tool)
  }

  /** How many calls were in flight at once, at most. */
  static maxOverlap (calls: readonly McpRecordedCall[]): number {
    const points = calls.flatMap((c) => [[c.start, 1], [c.end ?? Number.POSITIVE_INFINITY, -1]] as Array<[number, number]>)
    points.sort((a, b) => a[0] - b[0] || a[1] - b[1])
    let now = 0
    let most = 0
    for (const [, delta] of points) {
      now += delta
      most = Math.max(most, now)
    }
    return most
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.#broken === 'refuse') {
      req.socket.destroy()
      return
    }
    if (this.#broken === 'garbage') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"this is": not json')
      return
    }
    const path = new URL(req.url ?? '/', this.#url).pathname
    if (this.#options.auth !== undefined && path.startsWith('/.well-known/oauth-protected-resource')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ resource: this.url, authorization_servers: [this.#options.auth.authorizationServer], bearer_methods_supported: ['header'] }))
      return
    }
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString('utf8')
    const body: unknown = text === '' ? undefined : JSON.parse(text)
    if (this.#options.auth !== undefined) {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1]
      if (token === undefined || !this.#options.auth.verify(token)) {
        this.unauthorized++
        res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': `Bearer error="invalid_token", resource_metadata="${this.origin}/.well-known/oauth-protected-resource/mcp"` })
          .end(JSON.stringify({ error: 'invalid_token' }))
        return
      }
    }
    if (this.#hostile !== null && (body as { method?: unknown } | undefined)?.method === 'tools/call') {
      await this.#answerHostile(res, this.#hostile, (body as { id: unknown }).id)
      return
    }
    if (this.#modern !== null && (this.#options.eras === 'modern' || !await isLegacyRequest(await toWebRequest(req, body), body))) {
      await this.#modern.node(req, res, body)
      return
    }
    const sessionId = req.headers['mcp-session-id']
    if (typeof sessionId === 'string') {
      const session = this.#sessions.get(sessionId)
      if (session === undefined) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null }))
        return
      }
      await session.transport.handleRequest(req, res, body)
      return
    }
    const mcp = new McpServer({ name: 'switchboard-test', version: '1.0.0' }, { capabilities: { tools: { listChanged: true } } })
    const registered = new Map<string, { remove: () => void }>()
    for (const tool of this.#tools) registered.set(tool.name, this.#register(mcp, tool, 'legacy'))
    const transport: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id: string) => {
        this.initializations++
        this.#sessions.set(id, { transport, mcp, registered })
      }
    } as ConstructorParameters<typeof NodeStreamableHTTPServerTransport>[0])
    await mcp.connect(transport)
    await transport.handleRequest(req, res, body)
  }

  /** Writes up to 1 GB, as fast as the client reads it, until the client hangs up. */
  async #answerHostile (res: ServerResponse, how: McpHostility, id: unknown): Promise<void> {
    if (how === 'chatty-sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      const note = `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'n'.repeat(1000) } })}\n\n`
      for (let sent = 0; sent < 2 * 1024 * 1024 && !res.destroyed; sent += note.length) {
        if (!res.write(note)) await new Promise((resolve) => res.once('drain', resolve))
      }
      res.end(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'chatty' }] } })}\n\n`)
      return
    }
    const sse = how === 'huge-sse'
    res.writeHead(200, { 'content-type': sse ? 'text/event-stream' : 'application/json' })
    res.write(sse ? `event: message\ndata: {"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":{"content":[{"type":"text","text":"` : `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":{"content":[{"type":"text","text":"`)
    const chunk = Buffer.alloc(64 * 1024, 'a')
    const closed = new Promise<void>((resolve) => res.once('close', resolve))
    for (let sent = 0; sent < HOSTILE_BYTES && !res.destroyed; sent += chunk.length) {
      this.hostileBytes += chunk.length
      if (!res.write(chunk)) await Promise.race([new Promise((resolve) => res.once('drain', resolve)), closed])
    }
    res.end()
  }

  #register (mcp: McpServer, tool: McpTestTool, era: McpEra): { remove: () => void } {
    return mcp.registerTool(tool.name, {
      description: tool.description ?? tool.name,
      inputSchema: fromJsonSchema(tool.inputSchema ?? OBJECT),
      ...(tool.annotations === undefined ? {} : { annotations: tool.annotations })
    }, async (args: unknown, ctx) => {
      const call: McpRecordedCall = {
        tool: tool.name,
        args: args as Record<string, unknown>,
        meta: ctx.mcpReq._meta as Record<string, unknown> | undefined,
        headers: Object.fromEntries(ctx.http?.req?.headers.entries() ?? []),
        sessionId: ctx.sessionId,
        era,
        start: performance.now(),
        end: null,
        cancelled: false
      }
      this.calls.push(call)
      ctx.mcpReq.signal.addEventListener('abort', () => { call.cancelled = true }, { once: true })
      try {
        return await tool.run(call.args, ctx.mcpReq.signal)
      } finally {
        call.end = performance.now()
      }
    })
  }
}

/** A fake model's turns: asks once for each of `calls`, then ends with a text. */
export function callThenEnd (calls: Array<{ name: string, input?: unknown }>) {
  return (request: RecordedRequest) => turnNumber(request) === 1
    ? { content: calls.map((c) => ({ type: 'tool_use' as const, name: c.name, input: c.input ?? {} })) }
    : { content: [{ type: 'text' as const, text: 'ok' }] }
}

/**
 * Runs one call of the MCP tool `name` (a run name, `<server>__<tool>`) and answers the text of its
 * tool_result as the model got it, its tool_call.completed event, and the run.
 */
export async function runOneCall (h: Harness, name: string, input: unknown = {}, tenant?: TestTenant): Promise<{ text: string, isError: boolean, completed: { data: Record<string, any> }, run: Record<string, any> }> {
  h.model.respond = callThenEnd([{ name, input }])
  const { body } = await h.startRun({ input: 'go', tools: [name] }, tenant)
  if (body.status !== 'completed') throw new Error(`run ended ${String(body.status)}: ${JSON.stringify(body.error)}`)
  const [result] = toolResults(h.model.requests[h.model.requests.length - 1]!)
  const completed = (await h.events(String(body.id), tenant)).find((e) => e.type === 'tool_call.completed')!
  return { text: resultText(result!), isError: result!.is_error === true, completed, run: body }
}
