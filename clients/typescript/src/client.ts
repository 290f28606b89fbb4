import { Transport, param, type ClientOptions, type CreateOptions, type RequestOptions } from './core.js'
import { PagePromise, type Page } from './pagination.js'
import { RunStream } from './run-stream.js'
import type {
  ApprovalsParams, CallbackSecret, CallbackSettings, Deleted, DeletedMcpServer, McpServer, McpServerDefinition, McpServerListParams, Run,
  RunCreateParams, RunEvent, RunEventListParams, RunGetParams, RunListParams, Tool, ToolDefinition, ToolListParams,
  ToolOutputsParams, ToolStats, ToolStatsParams, ToolWithSecret, Usage, UsageParams
} from './types.js'

/**
 * The client of a Switchboard service.
 *
 * ```ts
 * const client = new Switchboard({ baseURL: 'http://127.0.0.1:3000', apiKey: process.env.KEY })
 * const run = await client.runs.create({ input: 'Weather in Paris?', tools: ['get_weather'] })
 * ```
 */
export class Switchboard {
  readonly tools: Tools
  readonly runs: Runs
  readonly callbacks: Callbacks
  readonly mcpServers: McpServers
  readonly usage: UsageReports
  readonly health: Health
  /** Where requests go, with the settings they are sent with. */
  readonly transport: Transport

  constructor (options: ClientOptions = {}) {
    this.transport = new Transport(options)
    this.tools = new Tools(this.transport)
    this.runs = new Runs(this.transport)
    this.callbacks = new Callbacks(this.transport)
    this.mcpServers = new McpServers(this.transport)
    this.usage = new UsageReports(this.transport)
    this.health = new Health(this.transport)
  }
}

/** Tools: webhooks the model may call (`/tools`). */
export class Tools {
  readonly #t: Transport
  constructor (transport: Transport) { this.#t = transport }

  /**
   * Creates or replaces a tool. A create answers its `signing_secret`, shown this once: keep it
   * (registerTools does). A replace answers the tool without it.
   */
  async put (name: string, definition: ToolDefinition, options?: RequestOptions): Promise<Tool | ToolWithSecret> {
    return await this.#t.json({ ...options, method: 'PUT', path: `/tools/${param(name)}`, body: definition })
  }

  async get (name: string, options?: RequestOptions): Promise<Tool> {
    return await this.#t.json({ ...options, method: 'GET', path: `/tools/${param(name)}` })
  }

  /** The tools, newest first: `await` for a page, `for await` for every tool. */
  list (query: ToolListParams = {}, options?: RequestOptions): PagePromise<Tool> {
    const { after, ...rest } = query
    return new PagePromise((cursor) => this.#t.json<Page<Tool>>({ ...options, method: 'GET', path: '/tools', query: { ...rest, after: cursor } }), after)
  }

  async delete (name: string, options?: RequestOptions): Promise<Deleted> {
    return await this.#t.json({ ...options, method: 'DELETE', path: `/tools/${param(name)}` })
  }

  /** Issues a new signing secret; the old one keeps signing calls for the rotation window too. */
  async rotateSecret (name: string, options?: RequestOptions): Promise<ToolWithSecret> {
    return await this.#t.json({ ...options, method: 'POST', path: `/tools/${param(name)}/rotate-secret` })
  }

  /** How the tool's calls went over `window` (`1h` by default), on every replica. */
  async stats (name: string, query: ToolStatsParams = {}, options?: RequestOptions): Promise<ToolStats> {
    return await this.#t.json({ ...options, method: 'GET', path: `/tools/${param(name)}/stats`, query })
  }
}

/** MCP servers: remote servers whose tools runs may call (`/mcp-servers`). */
export class McpServers {
  readonly #t: Transport
  constructor (transport: Transport) { this.#t = transport }

  /** Registers (or replaces) a server; the service connects and lists its tools before it answers. */
  async put (name: string, definition: McpServerDefinition, options?: RequestOptions): Promise<McpServer> {
    return await this.#t.json({ ...options, method: 'PUT', path: `/mcp-servers/${param(name)}`, body: definition })
  }

  async get (name: string, options?: RequestOptions): Promise<McpServer> {
    return await this.#t.json({ ...options, method: 'GET', path: `/mcp-servers/${param(name)}` })
  }

  /** The servers: `await` for a page, `for await` for every one. */
  list (query: McpServerListParams = {}, options?: RequestOptions): PagePromise<McpServer> {
    const { after, ...rest } = query as McpServerListParams & { after?: string }
    return new PagePromise((cursor) => this.#t.json<Page<McpServer>>({ ...options, method: 'GET', path: '/mcp-servers', query: { ...rest, after: cursor } }), after)
  }

  async delete (name: string, options?: RequestOptions): Promise<DeletedMcpServer> {
    return await this.#t.json({ ...options, method: 'DELETE', path: `/mcp-servers/${param(name)}` })
  }

  /** Lists the server's tools again. */
  async refresh (name: string, options?: RequestOptions): Promise<McpServer> {
    return await this.#t.json({ ...options, method: 'POST', path: `/mcp-servers/${param(name)}/refresh` })
  }
}

/** The tenant's usage (`/usage`). */
export class UsageReports {
  readonly #t: Transport
  constructor (transport: Transport) { this.#t = transport }

  /** Tokens, cost, runs, tool calls and errors from `from` to `to`, grouped by day, model or tool. */
  async get (query: UsageParams = {}, options?: RequestOptions): Promise<Usage> {
    return await this.#t.json({ ...options, method: 'GET', path: '/usage', query })
  }
}

/** A run's create, for `runs.create`: a sync or background run (`runs.stream` streams one). */
export type RunCreateBody = Omit<RunCreateParams, 'stream'> & { stream?: false }
/** Tool outputs, for `runs.submitToolOutputs`: answered when the run ends or at once (`background`). */
export type ToolOutputsBody = Omit<ToolOutputsParams, 'stream'> & { stream?: false }
/** Decisions, for `runs.approve`: answered when the run ends or at once (`background`). */
export type ApprovalsBody = Omit<ApprovalsParams, 'stream'> & { stream?: false }

export interface StreamOptions extends CreateOptions {
  /** For a run already started: the events after this number (the last one you saw). */
  after?: number | undefined
}

/** Runs: agent loops (`/runs`). */
export class Runs {
  readonly #t: Transport
  constructor (transport: Transport) { this.#t = transport }

  /**
   * Starts a run. By default the answer comes when the run ends (or waits for client tool
   * outputs); with `background: true` at once, `queued`. Sent with an `Idempotency-Key` (a fresh
   * one unless given), the same on every retry, so a retried create never starts a second run.
   */
  async create (body: RunCreateBody, options?: CreateOptions): Promise<Run> {
    const idempotencyKey = options?.idempotencyKey ?? Transport.idempotencyKey()
    return await this.#t.json({ ...options, method: 'POST', path: '/runs', body, idempotencyKey })
  }

  async get (id: string, query: RunGetParams = {}, options?: RequestOptions): Promise<Run> {
    return await this.#t.json({ ...options, method: 'GET', path: `/runs/${param(id)}`, query })
  }

  /** Runs, newest first (filters `status` and `metadata`): `await` for a page, `for await` for every run. */
  list (query: RunListParams = {}, options?: RequestOptions): PagePromise<Run> {
    const { after, metadata, ...rest } = query
    const filters: Record<string, string | number | undefined> = { ...rest }
    for (const [key, value] of Object.entries(metadata ?? {})) filters[`metadata[${key}]`] = value
    return new PagePromise((cursor) => this.#t.json<Page<Run>>({ ...options, method: 'GET', path: '/runs', query: { ...filters, after: cursor } }), after)
  }

  /** A run's stored events, oldest first, paged by event number: `for await` for every one. */
  events (id: string, query: RunEventListParams = {}, options?: RequestOptions): PagePromise<RunEvent> {
    const { after, ...rest } = query
    return new PagePromise(
      (cursor) => this.#t.json<Page<RunEvent>>({ ...options, method: 'GET', path: `/runs/${param(id)}/events`, query: { ...rest, after: cursor } }),
      after === undefined ? undefined : String(after)
    )
  }

  /**
   * A run's events as they happen, as an async iterator. Given a run's body, starts it (with an
   * Idempotency-Key) and streams it; given a run's id, follows it from `after` on. A dropped
   * connection is resumed from the last event received (`Last-Event-ID`), missing none and
   * repeating none.
   */
  stream (idOrBody: string | RunCreateBody, options: StreamOptions = {}): RunStream {
    const { after = 0, idempotencyKey = Transport.idempotencyKey(), ...request } = options
    const body = typeof idOrBody === 'string' ? null : { ...idOrBody, stream: true }
    return new RunStream(async (runId, lastEventId, signal) => {
      const response = runId === null
        ? await this.#t.send({ ...request, signal, method: 'POST', path: '/runs', body, idempotencyKey, accept: 'text/event-stream' })
        : await this.#t.send({
          ...request,
          signal,
          method: 'GET',
          path: `/runs/${param(runId)}/events`,
          headers: { ...request.headers, ...(lastEventId > 0 ? { 'last-event-id': String(lastEventId) } : {}) },
          accept: 'text/event-stream'
        })
      if (response.status === 204) {
        await response.body?.cancel()
        return null
      }
      return response
    }, { runId: typeof idOrBody === 'string' ? idOrBody : null, after, maxRetries: request.maxRetries ?? this.#t.maxRetries, signal: request.signal })
  }

  /** Ends a run at once; each open tool call gets a "cancelled" result. A run that ended is a ConflictError. */
  async cancel (id: string, options?: RequestOptions): Promise<Run> {
    return await this.#t.json({ ...options, method: 'POST', path: `/runs/${param(id)}/cancel` })
  }

  /**
   * Answers the client tool calls a run waits on (`required_action.tool_calls`), one output each;
   * the run then goes on. Follow it live with `runs.stream(id, { after })`.
   */
  async submitToolOutputs (id: string, body: ToolOutputsBody, options?: RequestOptions): Promise<Run> {
    return await this.#t.json({ ...options, method: 'POST', path: `/runs/${param(id)}/tool_outputs`, body })
  }

  /** A run's timeline page (HTML). A browser opens the run's `timeline_url` instead. */
  async timeline (id: string, options?: RequestOptions): Promise<string> {
    return await this.#t.json({ ...options, method: 'GET', path: `/runs/${param(id)}/timeline`, accept: 'text/html' })
  }

  /**
   * Decides tool calls a run waits on for approval (`required_action.type: 'approve_tool_calls'`):
   * some or all of them. Once every call is decided, approved calls are made, denied ones answered
   * "Not run: denied by the reviewer", and the run goes on, answered as by `create`.
   */
  async approve (id: string, body: ApprovalsBody, options?: RequestOptions): Promise<Run> {
    return await this.#t.json({ ...options, method: 'POST', path: `/runs/${param(id)}/approvals`, body })
  }
}

/** The tenant's completion callbacks: the secret that signs them (`/callbacks`). */
export class Callbacks {
  readonly #t: Transport
  constructor (transport: Transport) { this.#t = transport }

  async get (options?: RequestOptions): Promise<CallbackSettings> {
    return await this.#t.json({ ...options, method: 'GET', path: '/callbacks' })
  }

  /** Makes (or replaces) the callback signing secret, answered this once. */
  async rotateSecret (options?: RequestOptions): Promise<CallbackSecret> {
    return await this.#t.json({ ...options, method: 'POST', path: '/callbacks/rotate-secret' })
  }
}

/** The probes (no key needed). */
export class Health {
  readonly #t: Transport
  constructor (transport: Transport) { this.#t = transport }

  /** `/healthz`: the process is alive. */
  async alive (options?: RequestOptions): Promise<{ status: string }> {
    return await this.#t.json({ ...options, method: 'GET', path: '/healthz' })
  }

  /** `/readyz`: storage answers and the replica is not shutting down (else a ServiceUnavailableError). */
  async ready (options?: RequestOptions): Promise<{ status: string }> {
    return await this.#t.json({ ...options, method: 'GET', path: '/readyz' })
  }
}
