/**
 * Who on this replica waits for a run's next events (a stream, a sync request waiting for the
 * end), and the wake-up when this process stores some. Events stored by another replica are only
 * seen by reading again: every wait ends after its timeout, for the waiter to look.
 */
export class RunWatchers {
  readonly #waiters = new Map<string, Set<() => void>>()

  /** Whether anyone here waits for the run's events now. */
  watched (runId: string): boolean {
    return this.#waiters.has(runId)
  }

  /**
   * Resolves when {@link wake} is called for `runId`, after `timeoutMs` at the latest, or when
   * `signal` aborts; never rejects.
   */
  async wait (runId: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted === true) return
    await new Promise<void>((resolve) => {
      let waiters = this.#waiters.get(runId)
      if (waiters === undefined) {
        waiters = new Set()
        this.#waiters.set(runId, waiters)
      }
      const set = waiters
      const done = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        set.delete(done)
        if (set.size === 0 && this.#waiters.get(runId) === set) this.#waiters.delete(runId)
        resolve()
      }
      const timer = setTimeout(done, timeoutMs)
      signal?.addEventListener('abort', done, { once: true })
      set.add(done)
    })
  }

  /** Ends every wait for the run's events: some were stored. */
  wake (runId: string): void {
    const waiters = this.#waiters.get(runId)
    if (waiters !== undefined) for (const wake of [...waiters]) wake()
  }
}
