import type { Logger, LoggerOptions, LogFn } from 'pino'
import { REDACTED, type Redactor } from './lib/redact.js'

/** The logger the core writes to: pino's, Fastify's, or a child of either. */
export interface Log {
  fatal: LogFn
  error: LogFn
  warn: LogFn
  info: LogFn
  debug: LogFn
  trace: LogFn
  child (bindings: Record<string, unknown>): Log
}

/**
 * Paths that may hold a secret in a log line. The code never logs secrets on purpose; this is the
 * safety net for an object logged whole by mistake.
 */
const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers.cookie',
  'headers',
  '*.headers',
  'signing_secret',
  '*.signing_secret',
  'signingSecrets',
  '*.signingSecrets',
  'signing_secrets',
  '*.signing_secrets',
  'apiKey',
  '*.apiKey',
  'config.ANTHROPIC_API_KEY',
  'config.API_KEYS',
  'config.DATABASE_URL',
  'config.METRICS_TOKEN',
  'config.OTEL_EXPORTER_OTLP_HEADERS',
  'config.OTEL_EXPORTER_OTLP_TRACES_HEADERS',
  'config.tracesExporter',
  'config.secrets',
  // The environment the settings were read from: every secret above, as given.
  'config.env'
]

// A timeline link's signature stands in for an API key for an hour: never in a logged URL.
const LINK_SIGNATURE = /([?&]sig=)[^&#]*/g

/** A request as Fastify's logs show it, with a timeline link's signature cut out of its URL. */
function requestSummary (req: { method?: string, url?: string, host?: string, ip?: string, socket?: { remotePort?: number } }): Record<string, unknown> {
  return {
    method: req.method,
    url: req.url?.replace(LINK_SIGNATURE, `$1${REDACTED}`),
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort
  }
}

/** Where a logger (and every child made from it, later ones included) keeps its {@link Redactor}. */
const REDACTOR = Symbol('switchboard.redactor')

type WithRedactor = Record<typeof REDACTOR, Redactor | undefined>

/**
 * Makes `log` (a logger made with {@link loggerOptions}) and its children redact `redactor`'s
 * secrets from the values of every line that carries an error. pino's `redact` option works on
 * key paths; an error's text (a gateway's answer quoting the key it was sent, kept by the SDK in
 * the error's message and in the `cause` under the model client's error) holds secrets in its
 * values. The secrets are known once the configuration is, after the logger was made: they are
 * given to it here, and children (a request's logger) find them on the logger they were made from.
 */
export function redactLogs (log: Log | Logger, redactor: Redactor): void {
  (log as unknown as WithRedactor)[REDACTOR] = redactor
}

/**
 * A line that carries an error (`log.warn({ err }, …)`, `log.error(err)`) has its arguments
 * redacted: the error with its message, stack, fields and causes, and the line's other values. A
 * line without one is written as it is, at the cost of a look at its first argument.
 */
function logMethod (this: Logger, args: Parameters<LogFn>, method: LogFn): void {
  const redactor = (this as unknown as WithRedactor)[REDACTOR]
  const first: unknown = args[0]
  if (redactor !== undefined && !redactor.empty && (first instanceof Error || (typeof first === 'object' && first !== null && 'err' in first))) {
    for (let i = 0; i < args.length; i++) (args as unknown[])[i] = redactor.redactValue(args[i])
  }
  method.apply(this, args)
}

/** pino options shared by the server and the tests: JSON lines, secrets redacted. */
export function loggerOptions (level: string): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: REDACTED },
    hooks: { logMethod },
    // Fastify takes these over its own request serializer.
    serializers: { req: requestSummary },
    base: { service: 'switchboard' },
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
    formatters: {
      level: (label) => ({ level: label })
    }
  }
}
