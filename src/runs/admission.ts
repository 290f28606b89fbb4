import { AppError } from '../errors.js'
import type { RunParams } from '../schemas/runs.js'
import { CreateRefusedError, type CreatedRun, type NewRun, type Store } from '../store/index.js'

export interface AdmissionLimits {
  /** Runs this replica drives at once; more wait as `queued`. */
  readonly maxRunningRuns: number
  /** Runs one tenant may have not yet final, across replicas; creates past it are refused (429). */
  readonly maxActiveRunsPerTenant: number
}

/** What a create refused for TENANT_MAX_ACTIVE_RUNS is told to wait: runs end in seconds to minutes. */
const ACTIVE_RUNS_RETRY_AFTER_S = 5

/**
 * Who gets in: this replica's slots for runs it drives (MAX_RUNNING_RUNS), and each tenant's
 * limit of runs not yet final (TENANT_MAX_ACTIVE_RUNS), which the insert of a new run checks.
 */
export class Admission {
  readonly #store: Store
  readonly #limits: AdmissionLimits
  readonly #driving: () => number
  /** Slots promised to runs being created or taken over, not yet driving: counted against the cap. */
  #reserved = 0
  /** Per tenant, the inserts of creates under way here: not yet stored, or not known to be. */
  readonly #inserting = new Map<string, Set<Promise<unknown>>>()

  /** `driving` counts the runs this replica drives now. */
  constructor (store: Store, limits: AdmissionLimits, driving: () => number) {
    this.#store = store
    this.#limits = limits
    this.#driving = driving
  }

  /**
   * Takes a slot for one run, if this replica has room for it; `release` gives it back once the
   * run drives (or did not start). Taken before any await, so that concurrent creates cannot
   * overshoot the cap.
   */
  reserveOne (): boolean {
    if (this.#driving() + this.#reserved >= this.#limits.maxRunningRuns) return false
    this.#reserved++
    return true
  }

  /** Takes every free slot up to `most`, and answers how many (zero or more). */
  reserveUpTo (most: number): number {
    const room = Math.max(0, Math.min(most, this.#limits.maxRunningRuns - this.#driving() - this.#reserved))
    this.#reserved += room
    return room
  }

  /** Gives back `count` slots taken with reserveOne or reserveUpTo. */
  release (count = 1): void {
    this.#reserved -= count
  }

  /**
   * Stores a new run under the per-tenant limit on runs not yet final (TENANT_MAX_ACTIVE_RUNS),
   * which the insert itself checks (see Store.createRun). The tenant's other inserts under way here
   * count against the limit too, so that concurrent creates on one replica cannot overshoot it.
   * One of them may be stored by the time this insert counts, and so count twice: a refusal that
   * only they explain (the stored runs alone leave room) is tried again once they are done, so
   * that a create is never refused early; one the stored runs explain is final at once. Creates at
   * the same moment on several replicas can overshoot the limit by at most the number under way on
   * the others. Refusals are thrown as the store's CreateRefusedError (see {@link refusal}).
   */
  async insert (tenantId: string, input: Omit<NewRun, 'admit'>): Promise<CreatedRun> {
    const limit = this.#limits.maxActiveRunsPerTenant
    const params = input.run.params as unknown as RunParams
    for (;;) {
      let inserting = this.#inserting.get(tenantId)
      if (inserting === undefined) {
        inserting = new Set()
        this.#inserting.set(tenantId, inserting)
      }
      const others = [...inserting]
      if (others.length < limit) {
        const insert = this.#store.createRun({ ...input, admit: { tools: params.tools, limit, reserved: others.length } })
        inserting.add(insert)
        try {
          return await insert
        } catch (err) {
          const onlyOthers = err instanceof CreateRefusedError && err.reason === 'too_many_active' && err.active < limit && others.length > 0
          if (!onlyOthers) throw err
        } finally {
          inserting.delete(insert)
          if (inserting.size === 0 && this.#inserting.get(tenantId) === inserting) this.#inserting.delete(tenantId)
        }
      }
      await Promise.allSettled(others)
    }
  }

  /** What the caller is told of an insert refused by {@link insert}: which tools are unknown, or that the tenant is full. */
  refusal (err: CreateRefusedError): AppError {
    if (err.reason === 'unknown_tools') {
      const { missing } = err
      return new AppError('RUN_ERR_UNKNOWN_TOOL', `Unknown tool${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}. Register ${missing.length > 1 ? 'them' : 'it'} with PUT /tools/{name} first, or list yours with GET /tools.`)
    }
    const limit = this.#limits.maxActiveRunsPerTenant
    return new AppError('RUN_ERR_TOO_MANY_ACTIVE', `This tenant already has ${limit} runs that have not finished (queued, running or waiting in requires_action), the most TENANT_MAX_ACTIVE_RUNS allows: wait for some to end, answer those waiting for tool outputs, or cancel those you no longer need (POST /runs/{id}/cancel), then retry.`, { headers: { 'retry-after': String(ACTIVE_RUNS_RETRY_AFTER_S) } })
  }
}
