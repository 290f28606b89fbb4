import type { Logger } from 'pino'
import { backends, type Backend } from './backends.js'
import { auth, startApp, TENANT_A, type StartedApp, type TestTenant } from './app.js'
import { startFakeMessagesApi, type FakeMessagesApi, type Respond } from './fake-messages-api.js'
import { startWebhookServer, type WebhookServer } from './webhook-server.js'
import type { Resolver } from '../../src/tools/egress-guard.js'

/** The real app, a strict fake Messages API and a tool server, wired together. */
export interface Harness extends StartedApp {
  readonly model: FakeMessagesApi
  readonly tools: WebhookServer
  /** Registers a tool pointing at the tool server's `path`. */
  registerTool: (name: string, path: string, fields?: Record<string, unknown>, tenant?: TestTenant) => Promise<Record<string, any>>
  /** POST /runs; answers status and body. */
  startRun: (body: Record<string, unknown>, tenant?: TestTenant) => Promise<{ status: number, body: Record<string, any>, headers: Record<string, unknown> }>
  /** Every stored event of a run. */
  events: (runId: string, tenant?: TestTenant) => Promise<Array<{ id: number, type: string, data: Record<string, any>, at: string }>>
}

export const sqliteBackend: Backend = backends[0]!

export async function startHarness (backend: Backend = sqliteBackend, options: { respond?: Respond, env?: Record<string, string | null>, logger?: Logger, resolver?: Resolver } = {}): Promise<Harness> {
  const model = await startFakeMessagesApi(options.respond)
  const tools = await startWebhookServer()
  const started = await startApp(backend, {
    env: { ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-ant-test-key-000', ...options.env },
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.resolver === undefined ? {} : { resolver: options.resolver })
  })
  const { app } = started
  return {
    ...started,
    model,
    tools,
    close: async () => {
      await started.close()
      await Promise.all([model.close(), tools.close()])
    },
    registerTool: async (name, path, fields = {}, tenant = TENANT_A) => {
      const res = await app.inject({
        method: 'PUT',
        url: `/tools/${name}`,
        headers: auth(tenant),
        payload: {
          description: `The ${name} tool`,
          input_schema: { type: 'object', properties: { q: { type: 'string' } } },
          url: `${tools.url}${path}`,
          ...fields
        }
      })
      if (res.statusCode >= 300) throw new Error(`could not register ${name}: ${res.body}`)
      return res.json()
    },
    startRun: async (body, tenant = TENANT_A) => {
      const res = await app.inject({ method: 'POST', url: '/runs', headers: auth(tenant), payload: body })
      return { status: res.statusCode, body: res.json(), headers: res.headers }
    },
    events: async (runId, tenant = TENANT_A) => {
      const out: Array<{ id: number, type: string, data: Record<string, any>, at: string }> = []
      let after = 0
      for (;;) {
        const res = await app.inject({ method: 'GET', url: `/runs/${runId}/events?after=${after}&limit=100`, headers: auth(tenant) })
        const page = res.json()
        out.push(...page.data)
        if (!page.has_more) return out
        after = out[out.length - 1]!.id
      }
    }
  }
}
