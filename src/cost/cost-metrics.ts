import { Counter, type Registry } from 'prom-client'
import type { Metrics } from '../telemetry/index.js'
import type { CallCost } from './call-cost.js'

// Tenants are the configured ones (API_KEYS): a bounded set, unlike run ids. Capped all the same.
const MAX_TENANT_LABELS = 500

const TOKENS = 'switchboard_tenant_tokens_total'
const COST = 'switchboard_tenant_cost_usd_total'

/**
 * The counters of what tenants spend (SPEC §17): tokens by tenant, model and kind, and USD by
 * tenant and model, for every model call this replica made. Made on the app's registry once.
 */
export class CostMetrics {
  readonly tokens: Counter<'tenant' | 'model' | 'type'>
  readonly cost: Counter<'tenant' | 'model'>
  readonly #metrics: Metrics
  readonly #tenants = new Set<string>()

  constructor (metrics: Metrics) {
    this.#metrics = metrics
    const registry: Registry = metrics.registry
    const registers = [registry]
    this.tokens = (registry.getSingleMetric(TOKENS) as Counter<'tenant' | 'model' | 'type'> | undefined) ?? new Counter({
      name: TOKENS,
      help: 'Tokens of model calls by tenant, model and type (input, output, cache_write_5m, cache_write_1h, cache_read).',
      labelNames: ['tenant', 'model', 'type'],
      registers
    })
    this.cost = (registry.getSingleMetric(COST) as Counter<'tenant' | 'model'> | undefined) ?? new Counter({
      name: COST,
      help: 'What model calls cost in USD, by tenant and model, at the price table\'s prices (calls of models without a price are not counted).',
      labelNames: ['tenant', 'model'],
      registers
    })
  }

  /** Counts one model call of `tenant`'s run of `model`. */
  count (tenant: string, model: string, call: CallCost): void {
    try {
      const labels = { tenant: this.#tenant(tenant), model: this.#metrics.modelLabel(model) }
      const { tokens } = call
      for (const [type, n] of [['input', tokens.input], ['output', tokens.output], ['cache_write_5m', tokens.cacheWrite5m], ['cache_write_1h', tokens.cacheWrite1h], ['cache_read', tokens.cacheRead]] as const) {
        if (n > 0) this.tokens.inc({ ...labels, type }, n)
      }
      if (call.nanoUsd !== null && call.nanoUsd > 0) this.cost.inc(labels, call.nanoUsd / 1e9)
    } catch {
      // A metric is never worth a run.
    }
  }

  #tenant (tenant: string): string {
    if (this.#tenants.has(tenant)) return tenant
    if (this.#tenants.size >= MAX_TENANT_LABELS) return 'other'
    this.#tenants.add(tenant)
    return tenant
  }
}
