import type { LoggerOptions, LogFn } from 'pino'

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
  // The environment the settings were read from: every secret above, as given.
  'config.env'
]

// A timeline link's signature stands in for an API key for an hour: never in a logged URL.
const LINK_SIGNATURE = /([?&]sig=)[^&#]*/g

/** A request as Fastify's logs show it, with a timeline link's signature cut out of its URL. */
function requestSummary (req: { method?: string, url?: string, host?: string, ip?: string, socket?: { remotePort?: number } }): Record<string, unknown> {
  return {
    method: req.method,
    url: req.url?.replace(LINK_SIGNATURE, '$1[redacted]'),
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort
  }
}

/** pino options shared by the server and the tests: JSON lines, secrets redacted. */
export function loggerOptions (level: string): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    // Fastify takes these over its own request serializer.
    serializers: { req: requestSummary },
    base: { service: 'switchboard' },
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
    formatters: {
      level: (label) => ({ level: label })
    }
  }
}
