/** Gives back a slot taken from a {@link Semaphore}. Calling it twice is harmless. */
export type Release = () => void

/**
 * A counting semaphore that serves waiters first come, first served. Its limit may change while
 * slots are held (a tool's max_concurrency edited mid-run); a waiter whose signal aborts leaves
 * the queue.
 */
export class Semaphore {
  #limit: number
  #held = 0
  /** Waiters, each a function that hands it its slot. */
  readonly #queue: Array<(release: Release) => void> = []

  constructor (limit: number) {
    this.#limit = limit
  }

  get held (): number {
    return this.#held
  }

  get waiting (): number {
    return this.#queue.length
  }

  get limit (): number {
    return this.#limit
  }

  set limit (limit: number) {
    this.#limit = limit
    this.#drain()
  }

  async acquire (signal?: AbortSignal): Promise<Release> {
    signal?.throwIfAborted()
    if (this.#held < this.#limit && this.#queue.length === 0) return this.#take()
    return await new Promise<Release>((resolve, reject) => {
      const waiter = (release: Release): void => {
        signal?.removeEventListener('abort', onAbort)
        resolve(release)
      }
      const onAbort = (): void => {
        const index = this.#queue.indexOf(waiter)
        if (index !== -1) this.#queue.splice(index, 1)
        reject(signal!.reason)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#queue.push(waiter)
    })
  }

  #take (): Release {
    this.#held++
    let released = false
    return () => {
      if (released) return
      released = true
      this.#held--
      this.#drain()
    }
  }

  #drain (): void {
    while (this.#held < this.#limit && this.#queue.length > 0) this.#queue.shift()!(this.#take())
  }
}
