import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Tracing } from '../src/telemetry/index.js'
import { VERSION } from '../src/version.js'

declare module 'fastify' {
  interface FastifyInstance {
    tracing: Tracing
  }
}

/**
 * OpenTelemetry tracing, on when the OTEL_* variables configure an OTLP exporter, off (and free)
 * otherwise. On close, after the engine has drained, the spans not yet sent are sent (for a few
 * seconds at most).
 */
export default fp(async function tracingPlugin (app: FastifyInstance) {
  const { config } = app
  const tracing = await Tracing.start({
    exporter: config.tracesExporter,
    serviceName: config.OTEL_SERVICE_NAME,
    serviceVersion: VERSION,
    resourceAttributes: config.resourceAttributes,
    log: app.log
  })
  app.decorate('tracing', tracing)
  if (tracing.enabled) {
    app.log.info({ collector: new URL(config.tracesExporter!.url).host }, 'tracing on')
    app.addHook('onClose', async () => { await tracing.shutdown() })
  }
}, { name: 'tracing', dependencies: ['config'] })
