import type { ToolHealthStore, ToolRecord } from '../../store/index.js'
import type { ToolOutcome, ToolResultContent } from '../tool-result.js'
import { inputHash } from './canonical-input.js'

/**
 * Results of `read_only` tools kept in storage for their `cache_ttl_ms` (SPEC §18), shared by
 * every replica. A result is found by its tenant, its tool's name and revision (a tool written
 * again starts afresh) and the hash of its input's canonical JSON (the order of keys aside), so
 * another tenant, another version of the tool or another input never finds it. Only answers the
 * tool gave without error are kept; tools of other effects never use it.
 */
export class ResultCache {
  readonly #store: ToolHealthStore

  constructor (store: ToolHealthStore) {
    this.#store = store
  }

  /** Whether calls of `tool` may be answered from the cache. */
  static applies (tool: ToolRecord): boolean {
    return tool.effect === 'read_only' && tool.cache_ttl_ms > 0
  }

  /** The stored outcome for this input, as a `cached` outcome, or null. */
  async find (tool: ToolRecord, input: unknown, now: number): Promise<ToolOutcome | null> {
    const stored = await this.#store.getResult(tool.tenant_id, tool.name, tool.revision, inputHash(input), now)
    if (stored === null) return null
    return { kind: 'cached', isError: false, content: JSON.parse(stored.content) as ToolResultContent, status: stored.status, retry: 'no' }
  }

  /** Keeps an `ok` outcome of this input for the tool's TTL; any other outcome is not kept. */
  async keep (tool: ToolRecord, input: unknown, outcome: ToolOutcome, now: number): Promise<void> {
    if (outcome.kind !== 'ok' || outcome.isError) return
    await this.#store.putResult({
      tenant_id: tool.tenant_id,
      name: tool.name,
      revision: tool.revision,
      input_hash: inputHash(input),
      content: JSON.stringify(outcome.content),
      status: outcome.status,
      stored_at: now,
      expires_at: now + tool.cache_ttl_ms
    })
  }
}
