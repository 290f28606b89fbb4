import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { ModelClient } from '../src/model/model-client.js'
import { RunEngine } from '../src/runs/engine.js'
import { WebhookClient } from '../src/tools/webhook/webhook-client.js'
import { VERSION } from '../src/version.js'
import type { Resolver } from '../src/tools/egress-guard.js'
import { Telemetry } from '../src/telemetry/index.js'
import { CostControl } from '../src/cost/index.js'
import type { Redactor } from '../src/lib/redact.js'

declare module 'fastify' {
  interface FastifyInstance {
    engine: RunEngine
  }
}

/**
 * The run engine, with its model client (the Anthropic SDK) and its webhook client (undici). On
 * close it drains: runs in flight get SHUTDOWN_GRACE_MS to finish before they are handed back.
 * The drain happens before the server stops, so that waiting sync requests still get their answer.
 */
export default fp(async function enginePlugin (app: FastifyInstance, options: { resolver?: Resolver | undefined, redactor: Redactor }) {
  const { config } = app
  const { redactor } = options
  const telemetry = new Telemetry(app.metrics, app.tracing)
  const engine = new RunEngine({
    store: app.store,
    registry: app.tools,
    log: app.log,
    model: new ModelClient({ apiKey: config.ANTHROPIC_API_KEY, baseURL: config.ANTHROPIC_BASE_URL, idleTimeoutMs: config.MODEL_IDLE_TIMEOUT_MS, redactor }),
    webhooks: new WebhookClient({
      egress: config.egressAllow,
      maxResponseBytes: config.TOOL_MAX_RESPONSE_BYTES,
      maxResultChars: config.TOOL_MAX_RESULT_CHARS,
      userAgent: `switchboard/${VERSION}`,
      telemetry,
      redactor,
      ...(options.resolver === undefined ? {} : { resolver: options.resolver })
    }),
    publicUrl: config.PUBLIC_URL,
    limits: {
      defaultModel: config.DEFAULT_MODEL,
      maxSteps: config.RUN_MAX_STEPS,
      maxTimeoutMs: config.RUN_MAX_TIMEOUT_MS,
      leaseMs: config.RUN_LEASE_MS,
      modelMaxRetries: config.MODEL_MAX_RETRIES,
      maxResultChars: config.TOOL_MAX_RESULT_CHARS,
      maxRunningRuns: config.MAX_RUNNING_RUNS,
      maxActiveRunsPerTenant: config.TENANT_MAX_ACTIVE_RUNS,
      batchToolDefault: config.BATCH_TOOL_DEFAULT
    },
    callbacks: {
      maxAttempts: config.CALLBACK_MAX_ATTEMPTS,
      retryBaseMs: config.CALLBACK_RETRY_BASE_MS,
      timeoutMs: config.CALLBACK_TIMEOUT_MS,
      rotationWindowMs: config.SECRET_ROTATION_WINDOW_MS
    },
    modelConfigured: config.ANTHROPIC_API_KEY !== undefined || config.ANTHROPIC_BASE_URL !== undefined,
    mcp: app.mcp,
    cost: new CostControl({ prices: config.prices, tenantBudgets: config.tenantBudgets, usage: app.store.usage, metrics: app.metrics, log: app.log }),
    telemetry
  })
  app.decorate('engine', engine)
  // Leases and the sweep start once every plugin has loaded: a replica whose start-up fails later
  // must not claim runs it will never drive.
  app.addHook('onReady', async () => { engine.start() })
  app.metrics.track({ runsDriving: () => engine.driving, unfinishedRuns: async () => await app.store.countUnfinishedRuns() })
  // After the lifecycle plugin's own preClose (registered first), which starts draining.
  app.addHook('preClose', async () => { await engine.close(config.SHUTDOWN_GRACE_MS) })
}, { name: 'engine', dependencies: ['config', 'store', 'registry', 'mcp', 'lifecycle', 'metrics', 'tracing'] })
