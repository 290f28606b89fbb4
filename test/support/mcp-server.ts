import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fromJsonSchema, McpServer, type CallToolResult, type ToolAnnotations } from '@modelcontextprotocol/server'
import { NodeStreamableHTTPServerTransport } from '@modelcontextprotocol/node'

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
  readonly start: number
  end: number | null
  /** notifications/cancelled came for this call. */
  cancelled: boolean
}

const OBJECT = { type: 'object', properties: {}, additionalProperties: true }

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
  readonly #server: Server
  readonly #sessions = new Map<string, { transport: NodeStreamableHTTPServerTransport, mcp: McpServer, registered: Map<string, { remove: () => void }> }>()
  #tools: McpTestTool[]
  #url = ''
  /** Paths that answer something else than MCP, for tests of broken servers. */
  #broken: 'garbage' | 'refuse' | null = null

  constructor (tools: McpTestTool[] = standardTools()) {
    this.#tools = tools
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
      for (const tool of tools) session.registered.set(tool.name, this.#register(session.mcp, tool))
    }
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
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString('utf8')
    const body: unknown = text === '' ? undefined : JSON.parse(text)
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
    for (const tool of this.#tools) registered.set(tool.name, this.#register(mcp, tool))
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

  #register (mcp: McpServer, tool: McpTestTool): { remove: () => void } {
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
