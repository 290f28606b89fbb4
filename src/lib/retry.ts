/**
 * The one retry policy of the service: how long to wait before trying again (exponential backoff
 * with jitter, or what the other side asked for with `retry-after-ms` or `Retry-After`), never past
 * a deadline, in a sleep that an AbortSignal ends at once. Tool calls, model calls, storage and
 * callbacks each have a {@link Backoff} of their own and use the same functions.
 */

/** The waits of one kind of retry: `baseMs` before the first, `factor` times longer each next one, at most `capMs`. */
export interface Backoff {
  readonly baseMs: number
  readonly factor: number
  readonly capMs: number
  /**
   * The share of each wait that is random, so that callers failing together do not retry together:
   * 0.5 waits between half the full wait and all of it; 0 waits exactly. The full wait is never exceeded.
   */
  readonly jitter: number
  /** Retries after the first attempt; beyond them, the failure is final. */
  readonly maxRetries: number
}

/**
 * How long to wait before retry number `retry` (1 for the first retry). `randomness` is a number
 * in [0, 1), Math.random() by default.
 */
export function backoffDelay (backoff: Backoff, retry: number, randomness = Math.random()): number {
  const full = Math.min(backoff.capMs, backoff.baseMs * backoff.factor ** Math.max(0, retry - 1))
  return Math.round(full * (1 - backoff.jitter * randomness))
}

/**
 * The wait before retry number `retry`: what the other side asked for (`retryAfterMs`) if it did,
 * else the backoff's. Null when the retries are used up, or when the retry could not start before
 * `deadline` (a time in ms since the epoch): then it is not worth waiting for.
 */
export function retryDelay (backoff: Backoff, retry: number, options: { retryAfterMs?: number | undefined, deadline?: number | undefined } = {}): number | null {
  if (retry > backoff.maxRetries) return null
  const delay = options.retryAfterMs ?? backoffDelay(backoff, retry)
  if (options.deadline !== undefined && Date.now() + delay >= options.deadline) return null
  return delay
}

/** Reads a response's headers, whatever their shape (Fetch's Headers, Node's incoming headers). */
export type HeaderSource = Pick<Headers, 'get'> | Record<string, string | string[] | undefined>

/**
 * What the other side asked us to wait, in ms: `retry-after-ms` (the Anthropic API's, a number of
 * milliseconds) first, else `Retry-After` (RFC 9110: a number of seconds, or an HTTP date, which
 * gives the time left until then). Undefined when neither is there or readable, so that the
 * caller falls back to its backoff. Never negative.
 */
export function retryAfterMs (headers: HeaderSource | undefined): number | undefined {
  if (headers === undefined) return undefined
  const ms = header(headers, 'retry-after-ms')
  if (ms !== undefined && NUMBER.test(ms.trim())) return Number(ms.trim())
  const value = header(headers, 'retry-after')
  return value === undefined ? undefined : parseRetryAfter(value)
}

const NUMBER = /^\d+(\.\d+)?$/

/** `Retry-After`'s value (a number of seconds, or an HTTP date) in ms; undefined if unreadable. */
export function parseRetryAfter (value: string): number | undefined {
  const trimmed = value.trim()
  if (NUMBER.test(trimmed)) return Number(trimmed) * 1000
  // An HTTP date ends in GMT (RFC 9110's IMF-fixdate, and the obsolete RFC 850 form).
  if (!/GMT$/i.test(trimmed)) return undefined
  const date = Date.parse(trimmed)
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : undefined
}

function header (headers: HeaderSource, name: string): string | undefined {
  if (typeof headers.get === 'function') return (headers as Pick<Headers, 'get'>).get(name) ?? undefined
  const value = (headers as Record<string, string | string[] | undefined>)[name]
  return Array.isArray(value) ? value[0] : value
}

/** The longest a Node timer waits; a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * Waits `ms` (at most about 24.8 days, a Node timer's longest), or until `signal` aborts: then it
 * rejects at once with the signal's reason. An aborted signal rejects before any wait.
 */
export async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(signal!.reason)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, Math.min(ms, MAX_TIMER_MS))
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

export interface RetryOptions {
  /** Ends the waits at once; an attempt in progress is not interrupted (it has its own). */
  readonly signal?: AbortSignal | undefined
  /** No retry starts at or after this time (ms since the epoch). */
  readonly deadline?: number | undefined
  /** Whether a failure is worth another attempt; by default every failure is. */
  readonly retryable?: (err: unknown) => boolean
  /** Told of each failure that is retried, with the wait before the next attempt. */
  readonly onRetry?: (err: unknown, retry: number, delayMs: number) => void
}

/**
 * Runs `attempt` until it succeeds, retrying its failures under `backoff`. The last failure is
 * thrown as it was when a retry is not worth it (not retryable, retries used up, past the
 * deadline), or when `signal` aborts before or during a wait.
 */
export async function retry<T> (backoff: Backoff, attempt: (n: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt(n)
    } catch (err) {
      if (options.signal?.aborted === true || options.retryable?.(err) === false) throw err
      const delay = retryDelay(backoff, n, { deadline: options.deadline })
      if (delay === null) throw err
      options.onRetry?.(err, n, delay)
      try {
        await sleep(delay, options.signal)
      } catch {
        throw err
      }
    }
  }
}
