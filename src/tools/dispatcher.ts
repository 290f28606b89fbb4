import { Semaphore, type Release } from './semaphore.js'

/**
 * The per-replica limits of tools' `max_concurrency`: one semaphore per tenant's tool, shared by
 * every run in this process, and dropped when nobody holds or waits for it.
 */
export class ToolConcurrency {
  readonly #semaphores = new Map<string, Semaphore>()

  async acquire (key: string, limit: number, signal: AbortSignal): Promise<Release> {
    let semaphore = this.#semaphores.get(key)
    if (semaphore === undefined) {
      semaphore = new Semaphore(limit)
      this.#semaphores.set(key, semaphore)
    } else {
      semaphore.limit = limit
    }
    const owner = semaphore
    try {
      const release = await owner.acquire(signal)
      return () => {
        release()
        this.#forget(key, owner)
      }
    } catch (err) {
      this.#forget(key, owner)
      throw err
    }
  }

  /** How many semaphores are alive (for tests: none should outlive their calls). */
  get size (): number {
    return this.#semaphores.size
  }

  #forget (key: string, semaphore: Semaphore): void {
    if (semaphore.held === 0 && semaphore.waiting === 0 && this.#semaphores.get(key) === semaphore) this.#semaphores.delete(key)
  }
}

export interface ScheduleOptions {
  /** `false`: the call runs alone, after every call listed before it, before any listed after it. */
  readonly parallel: boolean
  /** The tool's max_concurrency, keyed per tenant and tool; null for no limit. */
  readonly limit: { key: string, max: number } | null
}

/**
 * Schedules one step's tool calls as the model lists them (SPEC §5.3): each call may start the
 * moment it is submitted, within the run's `parallelism` and its tool's `max_concurrency`, except
 * around a `parallel: false` call, which waits for every call before it and holds back every call
 * after it until it is done.
 *
 * Slots are taken tool first, then run: a call waiting for a busy tool does not hold one of the
 * run's slots, so the run's other calls go ahead. Holding a tool slot while waiting for a run slot
 * cannot deadlock, because run slots are only ever held by calls that already run.
 */
export class StepDispatcher {
  readonly #runSlots: Semaphore
  readonly #tools: ToolConcurrency
  readonly #signal: AbortSignal
  /** Settles when the latest `parallel: false` call is done. */
  #barrier: Promise<void> = Promise.resolve()
  /** Calls submitted since the latest barrier. */
  #sinceBarrier: Array<Promise<unknown>> = []

  constructor (parallelism: number, tools: ToolConcurrency, signal: AbortSignal) {
    this.#runSlots = new Semaphore(parallelism)
    this.#tools = tools
    this.#signal = signal
  }

  /**
   * Runs `call` when its turn comes. If the run stops before then, `call` never runs and the
   * promise rejects with the signal's reason.
   */
  schedule<T> (options: ScheduleOptions, call: () => Promise<T>): Promise<T> {
    const barrier = this.#barrier
    let scheduled: Promise<T>
    if (options.parallel) {
      scheduled = barrier.then(async () => await this.#run(options, call))
      this.#sinceBarrier.push(scheduled)
    } else {
      const before = [barrier, ...this.#sinceBarrier]
      scheduled = Promise.allSettled(before).then(async () => await this.#run(options, call))
      this.#barrier = scheduled.then(() => undefined, () => undefined)
      this.#sinceBarrier = []
    }
    return scheduled
  }

  async #run<T> (options: ScheduleOptions, call: () => Promise<T>): Promise<T> {
    this.#signal.throwIfAborted()
    const releaseTool = options.limit === null ? undefined : await this.#tools.acquire(options.limit.key, options.limit.max, this.#signal)
    try {
      const releaseRun = await this.#runSlots.acquire(this.#signal)
      try {
        return await call()
      } finally {
        releaseRun()
      }
    } finally {
      releaseTool?.()
    }
  }
}
