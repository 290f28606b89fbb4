import type { Logger } from 'pino'
import { buildApp } from '../../app.js'
import { loadConfig, type Config } from '../../src/config.js'
import type { Backend, StorageLocation } from './backends.js'
import type { Resolver } from '../../src/tools/egress-guard.js'
import { silentLog } from './log.js'

export interface TestTenant {
  readonly id: string
  readonly key: string
}

export const TENANT_A: TestTenant = { id: 'acme', key: 'sk_test_acme_0123456789abcdef' }
export const TENANT_B: TestTenant = { id: 'globex', key: 'sk_test_globex_0123456789abcdef' }

/** Settings every test app starts from: two tenants, quiet logs, loopback tools allowed. */
export const BASE_ENV: Record<string, string> = {
  API_KEYS: `${TENANT_A.id}:${TENANT_A.key},${TENANT_B.id}:${TENANT_B.key}`,
  LOG_LEVEL: 'silent',
  TOOL_EGRESS_ALLOW: '127.0.0.1,::1'
}

export function auth (tenant: TestTenant): Record<string, string> {
  return { authorization: `Bearer ${tenant.key}` }
}

export type TestApp = Awaited<ReturnType<typeof buildApp>>

export interface StartedApp {
  readonly app: TestApp
  readonly config: Config
  /** Closes the app and destroys its storage. */
  readonly close: () => Promise<void>
}

/**
 * Builds the real app on a fresh storage location of `backend`, configured by BASE_ENV plus
 * `env` (null removes a variable), exactly as the service is configured from its environment.
 */
export interface StartOptions {
  readonly env?: Record<string, string | null>
  readonly logger?: Logger
  /** Called after the app is built, before it is ready: to add a test route, say. */
  readonly beforeReady?: (app: TestApp) => void
  /** Storage to use (and leave in place on close), e.g. to restart on the same data. */
  readonly location?: StorageLocation
  /** Host name resolution for tool URLs, instead of the OS resolver. */
  readonly resolver?: Resolver
}

export async function startApp (backend: Backend, options: StartOptions = {}): Promise<StartedApp> {
  const owned = options.location === undefined
  const location = options.location ?? await backend.location()
  const env: Record<string, string | undefined> = { ...BASE_ENV, DATA_DIR: location.dataDir }
  if (location.databaseUrl !== undefined) env.DATABASE_URL = location.databaseUrl
  for (const [name, value] of Object.entries(options.env ?? {})) {
    if (value === null) delete env[name]
    else env[name] = value
  }
  const config = loadConfig(env)
  let app: TestApp
  try {
    app = await buildApp({ config, logger: options.logger ?? silentLog, ...(options.resolver === undefined ? {} : { resolver: options.resolver }) })
    options.beforeReady?.(app)
    await app.ready()
  } catch (err) {
    if (owned) await location.destroy()
    throw err
  }
  return {
    app,
    config,
    close: async () => {
      await app.close()
      if (owned) await location.destroy()
    }
  }
}
