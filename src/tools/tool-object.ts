import { isoDate } from '../schemas/common.js'
import type { Tool } from '../schemas/tools.js'
import type { SigningSecret, ToolRecord } from '../store/index.js'

/** A stored tool as the API shows it: header names without values, and no secret. */
export function toToolObject (tool: ToolRecord, now: number = Date.now()): Tool {
  return {
    object: 'tool',
    name: tool.name,
    description: tool.description,
    input_schema: tool.input_schema,
    url: tool.url,
    header_names: Object.keys(tool.headers),
    timeout_ms: tool.timeout_ms,
    effect: tool.effect,
    parallel: tool.parallel,
    max_concurrency: tool.max_concurrency,
    max_attempts: tool.max_attempts,
    circuit_breaker: tool.circuit_breaker,
    cache_ttl_ms: tool.cache_ttl_ms,
    approval: tool.approval ?? 'never',
    async_timeout_ms: tool.async_timeout_ms ?? 3_600_000,
    ...tool.model_options,
    source: tool.source,
    ...secretStatus(tool.signing_secrets, now),
    created_at: isoDate(tool.created_at),
    updated_at: isoDate(tool.updated_at)
  }
}

/** What is shown of signing secrets (a tool's, or a tenant's for callbacks): never the secrets. */
export function secretStatus (secrets: readonly SigningSecret[], now: number = Date.now()): { has_signing_secret: boolean, previous_secret_expires_at: string | null } {
  const previous = secrets.find((s) => s.expires_at !== null && s.expires_at > now)
  return {
    has_signing_secret: secrets.length > 0,
    previous_secret_expires_at: previous === undefined ? null : isoDate(previous.expires_at)
  }
}
