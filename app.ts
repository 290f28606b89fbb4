import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { IncomingMessage } from 'node:http'
import pino, { type Logger } from 'pino'
import type { Config } from './src/config.js'
import { loggerOptions, redactLogs } from './src/logger.js'
import { Redactor } from './src/lib/redact.js'
import { newId } from './src/lib/ids.js'
import { createRequestValidators } from './src/schemas/validation.js'
import { MAX_JSON_DEPTH, nestsDeeperThan } from './src/lib/json-depth.js'
import { AppError } from './src/errors.js'
import type { Store } from './src/store/index.js'
import type { Resolver } from './src/tools/egress-guard.js'
import configPlugin from './plugins/config.js'
import lifecyclePlugin from './plugins/lifecycle.js'
import errorHandlerPlugin, { answerFrameworkError } from './plugins/error-handler.js'
import storePlugin from './plugins/store.js'
import authPlugin from './plugins/auth.js'
import rateLimitPlugin from './plugins/rate-limit.js'
import openapiPlugin from './plugins/openapi.js'
import registryPlugin from './plugins/registry.js'
import enginePlugin from './plugins/engine.js'
import mcpPlugin from './plugins/mcp.js'
import metricsPlugin from './plugins/metrics.js'
import tracingPlugin from './plugins/tracing.js'
import timelinePlugin from './plugins/timeline.js'
import healthRoutes from './routes/health.js'
import toolRoutes from './routes/tools/index.js'
import runRoutes from './routes/runs/index.js'
import callbackRoutes from './routes/callbacks/index.js'
import usageRoutes from './routes/usage/index.js'
import mcpServerRoutes from './routes/mcp-servers/index.js'

export interface AppOptions {
  readonly config: Config
  /** A pino logger; by default one writing JSON lines to stdout at LOG_LEVEL. */
  readonly logger?: Logger
  /** An open store to use instead of opening the configured one (it is then not closed). */
  readonly store?: Store
  /** How tool and callback host names are resolved; the OS resolver by default (tests replace it). */
  readonly resolver?: Resolver
}

const REQUEST_ID = /^[\w.:-]{1,128}$/

/** Honours a caller's `x-request-id` if it is a sane token; otherwise makes one. */
function requestId (request: IncomingMessage): string {
  const given = request.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : newId('req')
}

/**
 * Builds the Switchboard app: Fastify with the TypeBox type provider, its plugins, then its routes.
 * It does not listen; server.ts does, and tests use `inject` or `listen({ port: 0 })`.
 */
export async function buildApp (options: AppOptions) {
  const { config } = options
  const fastifyOptions: FastifyServerOptions = {
    loggerInstance: options.logger ?? pino(loggerOptions(config.LOG_LEVEL)),
    bodyLimit: config.BODY_LIMIT_BYTES,
    genReqId: requestId,
    // Once closing, the lifecycle plugin refuses new requests itself, in the error shape.
    return503OnClosing: false,
    // Bounds plugin start-up and the close hooks alike: the drain on close may take up to
    // SHUTDOWN_GRACE_MS, and Fastify's default (10 s) would cut it short.
    pluginTimeout: Math.max(10_000, config.SHUTDOWN_GRACE_MS + 15_000),
    routerOptions: { ignoreTrailingSlash: true },
    // A URL Fastify cannot route (bad percent-encoding, an overlong parameter) gets our error shape.
    frameworkErrors: answerFrameworkError
  }
  const app = Fastify(fastifyOptions).withTypeProvider<TypeBoxTypeProvider>()
  // The settings' secrets, taken out of every text from outside (a model error, a tool's or a
  // callback receiver's error answer) before it is stored, answered or logged: from the first
  // plugin's log line on.
  const redactor = new Redactor(config.secrets)
  redactLogs(app.log, redactor)

  const validators = createRequestValidators()
  app.setValidatorCompiler(({ schema, httpPart }) =>
    (httpPart === 'body' ? validators.body : validators.text).compile(schema))
  // A body nested deeper than any real request would overflow the stack of whatever walks it later.
  app.addHook('preValidation', async (request) => {
    if (nestsDeeperThan(request.body, MAX_JSON_DEPTH)) {
      throw new AppError('REQUEST_ERR_VALIDATION', `The body nests objects and arrays more than ${MAX_JSON_DEPTH} levels deep: send a flatter document.`)
    }
  })
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
  })

  await app.register(configPlugin, { config })
  await app.register(lifecyclePlugin)
  await app.register(errorHandlerPlugin)
  await app.register(storePlugin, { store: options.store })
  await app.register(authPlugin)
  await app.register(rateLimitPlugin)
  await app.register(metricsPlugin)
  await app.register(tracingPlugin)
  await app.register(registryPlugin, { resolver: options.resolver })
  await app.register(mcpPlugin, { resolver: options.resolver, redactor })
  await app.register(enginePlugin, { resolver: options.resolver, redactor })
  await app.register(timelinePlugin)
  await app.register(openapiPlugin)

  await app.register(healthRoutes)
  await app.register(toolRoutes)
  await app.register(runRoutes)
  await app.register(callbackRoutes)
  await app.register(usageRoutes)
  await app.register(mcpServerRoutes)
  return app
}

export type App = FastifyInstance
