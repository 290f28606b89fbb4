import type { ToolRecord } from '../../store/index.js'
import type { ToolOutcome } from '../tool-result.js'

/** A breaker's settings: a tool's `circuit_breaker`. */
export interface BreakerSettings {
  readonly failures: number
  readonly window_ms: number
  readonly open_ms: number
}

export type BreakerState = 'closed' | 'open' | 'half_open'

/** What a breaker says of a call about to be made. */
export type Admission =
  | { readonly pass: true, readonly probe: boolean }
  | { readonly pass: false, readonly failures: number, readonly retryAt: number, readonly probing: boolean }

/** What a breaker shows of itself. */
export interface BreakerView {
  readonly state: BreakerState
  readonly failures: number
  readonly retryAt: number | null
}

/**
 * What a call's outcome says of its tool's health: `failure` when the tool could not be reached,
 * did not answer in time or answered a 5xx; `success` when it answered anything else (a 4xx and
 * an `is_error` answer included: the tool is up, the call was wrong, and counting those would
 * shut out a healthy tool); `neutral` when nothing was learnt (not sent, or cut short by its run).
 */
export function healthOf (outcome: ToolOutcome): 'failure' | 'success' | 'neutral' {
  switch (outcome.kind) {
    case 'timeout':
    case 'unreachable':
      return 'failure'
    case 'error':
      return outcome.status !== null && outcome.status >= 500 ? 'failure' : 'success'
    case 'ok':
      return 'success'
    default:
      return 'neutral'
  }
}

/**
 * One tool's circuit breaker on one replica (SPEC §18). Closed, it counts failed calls in a row
 * (see healthOf), forgetting those older than `window_ms`; at `failures` of them it opens. Open,
 * it refuses every call for `open_ms`; then the first call is let through as a probe (half open)
 * while the others are still refused, and the probe decides: a success closes the breaker, a
 * failure opens it again for `open_ms`. A probe that tells nothing (cancelled with its run) lets
 * the next call probe instead.
 */
export class CircuitBreaker {
  readonly settings: BreakerSettings
  #state: BreakerState = 'closed'
  /** When each failure of the current run of failures happened (closed), or how many opened it. */
  #failures: number[] = []
  #openedWith = 0
  #retryAt: number | null = null
  #probing = false

  constructor (settings: BreakerSettings) {
    this.settings = settings
  }

  view (now: number): BreakerView {
    if (this.#state === 'closed') return { state: 'closed', failures: this.#recentFailures(now).length, retryAt: null }
    return { state: this.#state, failures: this.#openedWith, retryAt: this.#retryAt }
  }

  /** Whether a call may be made now; a call let through must later be `record`ed. */
  admit (now: number): Admission {
    if (this.#state === 'open' && now >= this.#retryAt!) {
      this.#state = 'half_open'
      this.#probing = false
    }
    if (this.#state === 'closed') return { pass: true, probe: false }
    if (this.#state === 'half_open' && !this.#probing) {
      this.#probing = true
      return { pass: true, probe: true }
    }
    return { pass: false, failures: this.#openedWith, retryAt: this.#retryAt!, probing: this.#probing }
  }

  /**
   * What a call let through by `admit` came to; answers the state the breaker entered, if it
   * changed. Calls sent before the breaker opened that end after change nothing.
   */
  record (health: 'failure' | 'success' | 'neutral', probe: boolean, now: number): BreakerState | null {
    if (probe) {
      this.#probing = false
      if (health === 'neutral') return null
      if (health === 'success') return this.#close()
      return this.#open(this.#openedWith + 1, now)
    }
    if (this.#state !== 'closed' || health === 'neutral') return null
    if (health === 'success') {
      this.#failures = []
      return null
    }
    const failures = this.#recentFailures(now)
    failures.push(now)
    this.#failures = failures
    return failures.length >= this.settings.failures ? this.#open(failures.length, now) : null
  }

  #recentFailures (now: number): number[] {
    return this.#failures.filter((at) => at > now - this.settings.window_ms)
  }

  #open (failures: number, now: number): BreakerState {
    this.#state = 'open'
    this.#openedWith = failures
    this.#failures = []
    this.#retryAt = now + this.settings.open_ms
    return 'open'
  }

  #close (): BreakerState {
    this.#state = 'closed'
    this.#openedWith = 0
    this.#failures = []
    this.#retryAt = null
    return 'closed'
  }
}

/**
 * The breakers of one replica, one per tenant's tool. A tool written again (a new revision) with
 * other settings gets a new breaker; so does a tool whose breaker was turned off and on.
 */
export class CircuitBreakers {
  readonly #breakers = new Map<string, CircuitBreaker>()

  /** The breaker of `tool`, or null when it has none (`circuit_breaker: false`). */
  of (tool: ToolRecord): CircuitBreaker | null {
    const key = `${tool.tenant_id}\u0000${tool.name}`
    const settings = tool.circuit_breaker
    if (settings === false) {
      this.#breakers.delete(key)
      return null
    }
    let breaker = this.#breakers.get(key)
    if (breaker === undefined || !sameSettings(breaker.settings, settings)) {
      breaker = new CircuitBreaker(settings)
      this.#breakers.set(key, breaker)
    }
    return breaker
  }

  /** What the breaker of `tool` shows, without making one. */
  peek (tool: ToolRecord): CircuitBreaker | undefined {
    return this.#breakers.get(`${tool.tenant_id}\u0000${tool.name}`)
  }
}

function sameSettings (a: BreakerSettings, b: BreakerSettings): boolean {
  return a.failures === b.failures && a.window_ms === b.window_ms && a.open_ms === b.open_ms
}
