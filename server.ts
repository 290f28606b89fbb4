import closeWithGrace from 'close-with-grace'
import pino from 'pino'
import { buildApp } from './app.js'
import { loadConfig, type Config } from './src/config.js'
import { ConfigError } from './src/errors.js'
import { loggerOptions } from './src/logger.js'
import { VERSION } from './src/version.js'

function configOrExit (): Config {
  try {
    return loadConfig(process.env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`switchboard: invalid configuration: ${err.message}\n`)
      process.exit(1)
    }
    throw err
  }
}

const config = configOrExit()
const logger = pino(loggerOptions(config.LOG_LEVEL))

let app: Awaited<ReturnType<typeof buildApp>>
try {
  app = await buildApp({ config, logger })
} catch (err) {
  if (err instanceof ConfigError) {
    logger.fatal({ err }, 'invalid configuration')
    process.stderr.write(`switchboard: invalid configuration: ${err.message}\n`)
    process.exit(1)
  }
  logger.fatal({ err }, 'start-up failed')
  process.exit(1)
}

// SIGTERM and SIGINT drain: /readyz fails at once, running steps get SHUTDOWN_GRACE_MS to finish
// and be stored, leases are released, then the process exits 0. A second signal, or the grace
// period plus a margin running out, forces the exit.
closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS + 5_000, logger }, async ({ signal, err }) => {
  if (err !== undefined) logger.error({ err }, 'shutting down after an uncaught error')
  else logger.info({ signal }, 'shutting down')
  await app.close()
})

await app.listen({ port: config.PORT, host: config.listenHost })
if (config.keyring.size === 0) {
  logger.warn({ host: config.listenHost }, 'open mode: no API_KEYS configured, so every request is accepted as tenant "default"; listening on loopback only. Set API_KEYS before exposing Switchboard.')
}
logger.info({ version: VERSION, storage: app.store.kind, tenants: config.keyring.tenants().length }, 'switchboard ready')
