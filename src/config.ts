import envSchema from 'env-schema'
import Type, { type Static } from 'typebox'
import { ConfigError } from './errors.js'
import { parseApiKeys, type Keyring } from './tenants/api-keys.js'
import { parseEgressAllow, type EgressAllowList } from './tools/egress-guard.js'
import { otlpSettings, parseKeyValues, type OtlpSettings } from './telemetry/otlp-settings.js'
import { loadPriceTable, type PriceTable } from './cost/prices.js'
import { parseTenantBudgets, type TenantBudget } from './cost/tenant-budgets.js'

/**
 * Every setting Switchboard reads, with its default. This is the only place that knows about
 * `process.env`; the rest of the code receives a validated {@link Config}.
 */
export const ConfigSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development', description: '`production` refuses to start without API_KEYS.' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000, description: 'TCP port to listen on.' }),
  HOST: Type.Optional(Type.String({ minLength: 1, description: 'Address to bind. Defaults to 0.0.0.0 with API keys, 127.0.0.1 without.' })),
  DATA_DIR: Type.String({ minLength: 1, default: './data', description: 'Folder of the embedded SQLite database (used when DATABASE_URL is unset).' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://', description: 'PostgreSQL connection string; enables PostgreSQL storage and several replicas.' })),
  PUBLIC_URL: Type.Optional(Type.String({ pattern: '^https?://[^/?#]+(/[^?#]*)?$', description: 'The address browsers reach this service at (`https://switchboard.example.com`, a path prefix allowed); makes `timeline_url` a full URL. Unset: `timeline_url` is a path on this service.' })),
  ANTHROPIC_API_KEY: Type.Optional(Type.String({ minLength: 1, description: 'Key for the Anthropic Messages API.' })),
  ANTHROPIC_BASE_URL: Type.Optional(Type.String({ pattern: '^https?://', description: 'Base URL of the Messages API (a proxy, a gateway or a fake).' })),
  DEFAULT_MODEL: Type.String({ minLength: 1, default: 'claude-sonnet-4-6', description: 'Model of a run that names none.' }),
  API_KEYS: Type.String({ default: '', description: 'Comma-separated `tenant:key` pairs (or `tenant:sha256:<hex>`). Empty: open mode on 127.0.0.1.' }),
  LOG_LEVEL: Type.Union([
    Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'),
    Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent')
  ], { default: 'info', description: 'pino log level.' }),
  METRICS_TOKEN: Type.Optional(Type.String({ minLength: 16, description: 'Bearer token GET /metrics asks for. Unset: /metrics is open in open mode and refused (401) with API_KEYS, since metrics span every tenant.' })),
  OTEL_SDK_DISABLED: Type.Boolean({ default: false, description: '`true` turns tracing off whatever else is set.' }),
  OTEL_SERVICE_NAME: Type.String({ minLength: 1, default: 'switchboard', description: 'service.name of the spans.' }),
  OTEL_RESOURCE_ATTRIBUTES: Type.Optional(Type.String({ description: 'More resource attributes of the spans, `key=value,key2=value2`.' })),
  OTEL_TRACES_EXPORTER: Type.Optional(Type.Union([Type.Literal('otlp'), Type.Literal('none')], { description: '`otlp` turns tracing on (to http://localhost:4318 unless an endpoint is set); `none` turns it off.' })),
  OTEL_EXPORTER_OTLP_ENDPOINT: Type.Optional(Type.String({ pattern: '^https?://', description: 'OTLP/HTTP collector base URL (`/v1/traces` is appended); setting it turns tracing on.' })),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Type.Optional(Type.String({ pattern: '^https?://', description: 'OTLP/HTTP traces URL, used as is; setting it turns tracing on.' })),
  OTEL_EXPORTER_OTLP_HEADERS: Type.Optional(Type.String({ description: 'Headers sent to the collector, `key=value,key2=value2` (percent-encoded values).' })),
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: Type.Optional(Type.String({ description: 'Headers sent with traces, over OTEL_EXPORTER_OTLP_HEADERS.' })),
  OTEL_EXPORTER_OTLP_PROTOCOL: Type.Optional(Type.Union([Type.Literal('http/json'), Type.Literal('http/protobuf'), Type.Literal('grpc')], { description: 'Only `http/json` is supported (any OTLP/HTTP receiver accepts it).' })),
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: Type.Optional(Type.Union([Type.Literal('http/json'), Type.Literal('http/protobuf'), Type.Literal('grpc')], { description: 'As OTEL_EXPORTER_OTLP_PROTOCOL, for traces.' })),
  TOOLS_FILE: Type.Optional(Type.String({ minLength: 1, description: 'YAML or JSON file of tools to register at start-up.' })),
  TOOL_EGRESS_ALLOW: Type.String({ default: '', description: 'Comma-separated hosts or CIDRs that tool and callback URLs may reach although private or loopback.' }),
  TOOL_MAX_RESPONSE_BYTES: Type.Integer({ minimum: 1024, default: 1_048_576, description: 'A tool response body is cut at this many bytes.' }),
  TOOL_MAX_RESULT_CHARS: Type.Integer({ minimum: 100, default: 50_000, description: 'Text sent to the model from one tool result is cut at this many characters.' }),
  BATCH_TOOL_DEFAULT: Type.Boolean({ default: false, description: 'Whether a run that does not say (`batch_tool`) is offered the batch meta-tool, `batch_tool` (SPEC §14).' }),
  MCP_LIST_TTL_MS: Type.Integer({ minimum: 0, maximum: 86_400_000, default: 60_000, description: 'A run starting re-lists an MCP server\'s tools when its list is older than this (SPEC §11); notifications/tools/list_changed re-lists at once.' }),
  SECRET_ROTATION_WINDOW_MS: Type.Integer({ minimum: 0, default: 86_400_000, description: 'After a secret rotation, how long the old secret keeps signing calls too.' }),
  BODY_LIMIT_BYTES: Type.Integer({ minimum: 1024, default: 4_194_304, description: 'Largest request body accepted (413 past it).' }),
  RUN_MAX_STEPS: Type.Integer({ minimum: 1, maximum: 1000, default: 1000, description: 'Highest `max_steps` a run may ask for.' }),
  RUN_MAX_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 2_147_483_647, default: 3_600_000, description: 'Highest `timeout_ms` a run may ask for.' }),
  MODEL_MAX_RETRIES: Type.Integer({ minimum: 0, maximum: 20, default: 6, description: 'Retries of a model call on 429, 529, 5xx and connection failures.' }),
  MODEL_IDLE_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 120_000, description: 'A model stream that sends nothing for this long is abandoned and retried.' }),
  CALLBACK_MAX_ATTEMPTS: Type.Integer({ minimum: 1, maximum: 50, default: 8, description: 'Delivery attempts of a completion callback before it is given up.' }),
  CALLBACK_RETRY_BASE_MS: Type.Integer({ minimum: 10, default: 5000, description: 'Wait before a callback\'s second attempt; each later one waits four times longer, at most an hour.' }),
  CALLBACK_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 600_000, default: 10_000, description: 'One callback attempt\'s timeout.' }),
  MAX_RUNNING_RUNS: Type.Integer({ minimum: 1, default: 5000, description: 'Runs one replica drives at once; more wait as `queued` for any replica with room.' }),
  RUN_LEASE_MS: Type.Integer({ minimum: 1000, default: 15_000, description: 'How long a replica holds a run without renewing its lease.' }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 0, default: 30_000, description: 'On SIGTERM, how long running steps may take to finish.' }),
  TENANT_MAX_ACTIVE_RUNS: Type.Integer({ minimum: 1, maximum: 1_000_000_000, default: 100, description: 'Runs one tenant may have not yet finished (queued, running or requires_action), across all replicas; POST /runs answers 429 past it.' }),
  TENANT_MAX_SSE_STREAMS: Type.Integer({ minimum: 1, default: 100, description: 'Server-Sent Event streams one tenant may hold open on one replica; more are answered 429.' }),
  MODEL_PRICES_FILE: Type.Optional(Type.String({ minLength: 1, description: 'File of model prices (USD per million tokens, one family a line) that replace or add to the built-in table; a bad line stops start-up naming it.' })),
  TENANT_BUDGETS: Type.String({ default: '', description: 'Comma-separated caps on what a tenant\'s model calls cost per UTC day or month, across replicas: `acme:100usd/day,acme:2000usd/month`. Past one, POST /runs answers 429 and running runs stop at their next model call.' }),
  RATE_LIMIT_PER_MINUTE: Type.Integer({ minimum: 0, default: 6000, description: 'Authenticated requests one tenant may make per minute on one replica (429 past it); 0 turns the limit off.' })
})

export type Env = Static<typeof ConfigSchema>

/** Validated settings, plus the values parsed out of the composite ones. */
export interface Config extends Env {
  /** API keys by tenant, hashed; empty in open mode. */
  readonly keyring: Keyring
  /** Hosts and CIDRs exempt from the private-address refusal. */
  readonly egressAllow: EgressAllowList
  /** Address to listen on, derived from HOST and open mode. */
  readonly listenHost: string
  /** Where spans are exported (from the OTEL_* variables); null: tracing is off. */
  readonly tracesExporter: OtlpSettings | null
  /** Every secret the settings hold, as far as it can be recognised in a text (see configuredSecrets). */
  readonly secrets: readonly string[]
  /** OTEL_RESOURCE_ATTRIBUTES, parsed. */
  readonly resourceAttributes: Readonly<Record<string, string>>
  /** Model prices: the built-in table with MODEL_PRICES_FILE's families over it. */
  readonly prices: PriceTable
  /** TENANT_BUDGETS, parsed. */
  readonly tenantBudgets: readonly TenantBudget[]
  /** The environment the settings were read from, for `${VAR}` references in TOOLS_FILE. */
  readonly env: Readonly<Record<string, string | undefined>>
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost'])

/**
 * Validates an environment (process.env or a plain object in tests) against {@link ConfigSchema}
 * and derives the parsed settings. Throws {@link ConfigError} naming the offending variable.
 */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  let parsed: Env
  try {
    // env: false: read only what we are given (process.env from server.ts, a plain object in tests).
    parsed = envSchema<Env>({ schema: ConfigSchema, data: env, env: false, dotenv: false })
  } catch (err) {
    throw new ConfigError(describeEnvError(err))
  }

  const { keyring, plainKeys } = parseApiKeys(parsed.API_KEYS)
  const egressAllow = parseEgressAllow(parsed.TOOL_EGRESS_ALLOW)
  const openMode = keyring.size === 0

  if (openMode && parsed.NODE_ENV === 'production') {
    throw new ConfigError('API_KEYS is empty but NODE_ENV=production: set API_KEYS to `tenant:key` pairs; open mode is for local use only.')
  }
  if (openMode && parsed.HOST !== undefined && !LOOPBACK_HOSTS.has(parsed.HOST)) {
    throw new ConfigError(`HOST=${parsed.HOST} needs API_KEYS: without keys Switchboard only listens on 127.0.0.1. Set API_KEYS or unset HOST.`)
  }
  const listenHost = parsed.HOST ?? (openMode ? '127.0.0.1' : '0.0.0.0')
  let tracesExporter: OtlpSettings | null
  let resourceAttributes: Record<string, string>
  try {
    tracesExporter = otlpSettings(parsed)
    resourceAttributes = parseKeyValues(parsed.OTEL_RESOURCE_ATTRIBUTES, 'OTEL_RESOURCE_ATTRIBUTES')
  } catch (err) {
    throw new ConfigError((err as Error).message)
  }
  const secrets = configuredSecrets(parsed, plainKeys, tracesExporter)
  const prices = loadPriceTable(parsed.MODEL_PRICES_FILE)
  const tenantBudgets = parseTenantBudgets(parsed.TENANT_BUDGETS)
  return { ...parsed, keyring, egressAllow, listenHost, tracesExporter, resourceAttributes, secrets, prices, tenantBudgets, env: { ...env } }
}

/**
 * The secrets the settings hold: the Anthropic key, API keys given as they are, the metrics token,
 * the database's password and the trace collector's headers. An API key given as
 * `tenant:sha256:<hex>` is not among them: only its digest is known, so it cannot be recognised in
 * a text (which is why that form keeps the key out of the environment in the first place).
 */
function configuredSecrets (parsed: Env, plainKeys: readonly string[], tracesExporter: OtlpSettings | null): string[] {
  const secrets = [parsed.ANTHROPIC_API_KEY, parsed.METRICS_TOKEN, ...plainKeys, ...Object.values(tracesExporter?.headers ?? {})]
  if (parsed.DATABASE_URL !== undefined) {
    try {
      secrets.push(decodeURIComponent(new URL(parsed.DATABASE_URL).password))
    } catch {}
  }
  return secrets.filter((s): s is string => s !== undefined && s !== '')
}

function describeEnvError (err: unknown): string {
  const errors = (err as { errors?: Array<{ instancePath: string, message?: string, params?: Record<string, unknown> }> }).errors
  if (Array.isArray(errors) && errors.length > 0) {
    return errors.map((e) => {
      const name = e.instancePath.replace(/^\//, '') || String(e.params?.missingProperty ?? 'environment')
      return `${name} ${e.message ?? 'is invalid'}`
    }).join('; ')
  }
  return err instanceof Error ? err.message : String(err)
}
