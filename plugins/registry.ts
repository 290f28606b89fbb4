import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { InputValidators } from '../src/tools/input-validator.js'
import { ToolRegistry } from '../src/tools/registry.js'
import { loadToolsFile, syncToolsFile } from '../src/tools/tools-file.js'
import { OPEN_MODE_TENANT } from '../src/tenants/api-keys.js'
import type { Resolver } from '../src/tools/egress-guard.js'

declare module 'fastify' {
  interface FastifyInstance {
    tools: ToolRegistry
  }
}

/** The tool registry, with TOOLS_FILE loaded into it at start-up. */
export default fp(async function registryPlugin (app: FastifyInstance, options: { resolver?: Resolver | undefined }) {
  const { config } = app
  const registry = new ToolRegistry({
    store: app.store,
    egress: config.egressAllow,
    rotationWindowMs: config.SECRET_ROTATION_WINDOW_MS,
    validators: new InputValidators(),
    ...(options.resolver === undefined ? {} : { resolver: options.resolver })
  })
  app.decorate('tools', registry)
  if (config.TOOLS_FILE !== undefined) {
    const tenants = config.keyring.size === 0 ? [OPEN_MODE_TENANT] : config.keyring.tenants()
    const fileTools = loadToolsFile(config.TOOLS_FILE, config.env, tenants)
    await syncToolsFile(registry, fileTools, tenants, config.TOOLS_FILE, app.log)
  }
}, { name: 'registry', dependencies: ['config', 'store'] })
