/**
 * Counts what each tenant holds open in this process (its event streams, say) against one limit.
 * In memory: every replica counts its own.
 */
export class TenantSlots {
  readonly #limit: number
  readonly #held = new Map<string, number>()

  constructor (limit: number) {
    this.#limit = limit
  }

  get limit (): number {
    return this.#limit
  }

  /** Slots the tenant holds now. */
  held (tenantId: string): number {
    return this.#held.get(tenantId) ?? 0
  }

  /**
   * Takes a slot for the tenant. Answers the function that gives it back (calling it again does
   * nothing), or null when the tenant already holds `limit` slots.
   */
  take (tenantId: string): (() => void) | null {
    const held = this.held(tenantId)
    if (held >= this.#limit) return null
    this.#held.set(tenantId, held + 1)
    let given = false
    return () => {
      if (given) return
      given = true
      const left = this.held(tenantId) - 1
      if (left <= 0) this.#held.delete(tenantId)
      else this.#held.set(tenantId, left)
    }
  }
}
