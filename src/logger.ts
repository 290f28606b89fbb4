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

/** pino options shared by the server and the tests: JSON lines, secrets redacted. */
export function loggerOptions (level: string): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { service: 'switchboard' },
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
    formatters: {
      level: (label) => ({ level: label })
    }
  }
}
