import type { Row } from './sql-driver.js'
import { toToolRecord } from './sql-rows.js'
import type { ToolRecord } from './store.js'

// How much of tools' definitions a store keeps, as read at their revision: their text's length
// (a definition is as large as a request body may be), plus some for the record around it.
const HELD_TOOLS_CHARS = 16 * 2 ** 20
const HELD_TOOL_OVERHEAD_CHARS = 1024

/**
 * Tools' definitions as a store last read them, by tenant and name, at their revision. A run reads
 * its tools at every step, to see any change; most often there is none, and a definition (its
 * description, input schema and headers) can be as large as a request body. So a read names the
 * revisions held here (see toolsReadSql), and a tool still at one of them comes back with only its
 * live columns (its secrets, when it was written), which are joined to the held definition.
 *
 * Bounded by the size of what it holds, in characters; past it, the oldest held go first.
 */
export class ToolCache {
  readonly #held = new Map<string, { tool: ToolRecord, chars: number }>()
  #chars = 0
  readonly #maxChars: number

  constructor (maxChars: number = HELD_TOOLS_CHARS) {
    this.#maxChars = maxChars
  }

  /**
   * The definitions held of a tenant's tools with these names, by revision: those a read of them
   * may answer with only the live columns.
   */
  known (tenantId: string, names: readonly string[]): Map<string, ToolRecord> {
    const known = new Map<string, ToolRecord>()
    for (const name of names) {
      const held = this.#held.get(heldKey(tenantId, name))
      if (held !== undefined) known.set(held.tool.revision, held.tool)
    }
    return known
  }

  /**
   * The tools of rows read with `known` (see known): a row the read marked `known` is its held
   * definition with the row's live columns; a definition read whole is held for next time.
   */
  toolsFrom (rows: readonly Row[], known: ReadonlyMap<string, ToolRecord>): ToolRecord[] {
    return rows.map((row) => {
      const held = row.known === true || row.known === 1 ? known.get(row.revision as string) : undefined
      if (held !== undefined) return { ...held, signing_secrets: JSON.parse(row.signing_secrets as string), updated_at: Number(row.updated_at) }
      const tool = toToolRecord(row)
      this.#hold(tool, String(row.description).length + String(row.input_schema).length + String(row.headers).length + HELD_TOOL_OVERHEAD_CHARS)
      return tool
    })
  }

  #hold (tool: ToolRecord, chars: number): void {
    const key = heldKey(tool.tenant_id, tool.name)
    this.#forget(key)
    this.#held.set(key, { tool, chars })
    this.#chars += chars
    // The oldest held go first (a Map keeps insertion order): a bound, not a cache policy.
    for (const oldest of this.#held.keys()) {
      if (this.#chars <= this.#maxChars) break
      this.#forget(oldest)
    }
  }

  #forget (key: string): void {
    const held = this.#held.get(key)
    if (held === undefined) return
    this.#held.delete(key)
    this.#chars -= held.chars
  }
}

function heldKey (tenantId: string, name: string): string {
  return `${tenantId}\n${name}`
}
