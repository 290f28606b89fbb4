import { afterEach, describe, expect, it, vi } from 'vitest'
import { backoffDelay, parseRetryAfter, retry, retryAfterMs, retryDelay, sleep, type Backoff } from '../../src/lib/retry.js'
import { TOOL_BACKOFF } from '../../src/tools/tool-attempts.js'
import { STORAGE_BACKOFF } from '../../src/runs/event-log.js'

const EXACT: Backoff = { baseMs: 100, factor: 2, capMs: 1000, jitter: 0, maxRetries: 8 }
const HALF: Backoff = { ...EXACT, jitter: 0.5 }

/** Milliseconds `promise` takes to settle, and how it settled. */
async function timed (promise: Promise<unknown>): Promise<{ ms: number, error: unknown }> {
  const started = performance.now()
  let error: unknown
  try {
    await promise
  } catch (err) {
    error = err
  }
  return { ms: performance.now() - started, error }
}

describe('backoffDelay', () => {
  it('grows by its factor from its base, up to its cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(EXACT, n))).toEqual([100, 200, 400, 800, 1000, 1000, 1000])
    expect(backoffDelay({ ...EXACT, factor: 3 }, 3)).toBe(900)
  })

  it('with jitter, waits between the full wait less its random share and the full wait, never more', () => {
    expect(backoffDelay(HALF, 3, 0)).toBe(400)
    expect(backoffDelay(HALF, 3, 0.5)).toBe(300)
    expect(backoffDelay(HALF, 3, 0.999_999)).toBe(200)
    for (let i = 0; i < 1000; i++) {
      const retry = 1 + (i % 8)
      const full = Math.min(1000, 100 * 2 ** (retry - 1))
      const delay = backoffDelay(HALF, retry)
      expect(delay).toBeGreaterThanOrEqual(full / 2)
      expect(delay).toBeLessThanOrEqual(full)
    }
  })

  it('is spread out by its jitter, not one value', () => {
    const delays = new Set(Array.from({ length: 200 }, () => backoffDelay(HALF, 5)))
    expect(delays.size).toBeGreaterThan(10)
  })
})

describe('retryDelay', () => {
  it('is the backoff\'s wait, until the retries are used up', () => {
    expect(retryDelay(EXACT, 1)).toBe(100)
    expect(retryDelay(EXACT, 8)).toBe(1000)
    expect(retryDelay(EXACT, 9)).toBeNull()
    expect(retryDelay({ ...EXACT, maxRetries: 0 }, 1)).toBeNull()
  })

  it('is what the other side asked for, when it did, instead of the backoff', () => {
    expect(retryDelay(EXACT, 1, { retryAfterMs: 7000 })).toBe(7000)
    expect(retryDelay(EXACT, 1, { retryAfterMs: 0 })).toBe(0)
    expect(retryDelay(EXACT, 9, { retryAfterMs: 10 })).toBeNull()
  })

  it('is null when the retry could not start before the deadline', () => {
    const now = Date.now()
    expect(retryDelay(EXACT, 1, { deadline: now + 60_000 })).toBe(100)
    expect(retryDelay(EXACT, 1, { deadline: now + 50 })).toBeNull()
    expect(retryDelay(EXACT, 1, { retryAfterMs: 30_000, deadline: now + 10_000 })).toBeNull()
    expect(retryDelay(EXACT, 1, { retryAfterMs: 0, deadline: now - 1 })).toBeNull()
  })
})

describe('retryAfterMs', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('reads retry-after-ms before Retry-After, from Fetch headers or Node headers', () => {
    expect(retryAfterMs(new Headers({ 'retry-after-ms': '250', 'retry-after': '9' }))).toBe(250)
    expect(retryAfterMs({ 'retry-after-ms': '250', 'retry-after': '9' })).toBe(250)
    expect(retryAfterMs(new Headers({ 'retry-after-ms': '12.5' }))).toBe(12.5)
    expect(retryAfterMs(new Headers({ 'retry-after': '9' }))).toBe(9000)
    expect(retryAfterMs({ 'retry-after': ['3', '9'] })).toBe(3000)
  })

  it('falls back to Retry-After when retry-after-ms is unreadable, and to nothing without either', () => {
    expect(retryAfterMs(new Headers({ 'retry-after-ms': 'soon', 'retry-after': '2' }))).toBe(2000)
    expect(retryAfterMs(new Headers({ 'retry-after-ms': '-5', 'retry-after': '2' }))).toBe(2000)
    expect(retryAfterMs(new Headers({ 'retry-after-ms': '-5' }))).toBeUndefined()
    expect(retryAfterMs(new Headers())).toBeUndefined()
    expect(retryAfterMs({})).toBeUndefined()
    expect(retryAfterMs(undefined)).toBeUndefined()
  })

  it('reads an HTTP date as the time left until then, never negative', () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(new Date('2030-01-01T00:00:00.000Z'))
    expect(retryAfterMs(new Headers({ 'retry-after': 'Tue, 01 Jan 2030 00:00:30 GMT' }))).toBe(30_000)
    expect(retryAfterMs({ 'retry-after': 'Mon, 31 Dec 2029 23:59:00 GMT' })).toBe(0)
  })
})

describe('parseRetryAfter', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('reads seconds and HTTP dates, and nothing else', () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(new Date('2030-06-15T12:00:00.000Z'))
    expect(parseRetryAfter('120')).toBe(120_000)
    expect(parseRetryAfter(' 3 ')).toBe(3000)
    expect(parseRetryAfter('0.3')).toBe(300)
    expect(parseRetryAfter('Sat, 15 Jun 2030 12:00:10 GMT')).toBe(10_000)
    // RFC 850's obsolete form is still an HTTP date.
    expect(parseRetryAfter('Saturday, 15-Jun-30 12:01:00 GMT')).toBe(60_000)
    expect(parseRetryAfter('Sat, 15 Jun 2030 11:00:00 GMT')).toBe(0)
    expect(parseRetryAfter('0')).toBe(0)
    for (const unreadable of ['', 'soon', '12abc', '-5', '-1', '1e3', '2030-06-15T12:00:10Z', 'Sat, 15 Jun 2030 12:00:10']) {
      expect(parseRetryAfter(unreadable), unreadable).toBeUndefined()
    }
  })
})

describe('sleep', () => {
  it('waits', async () => {
    const { ms, error } = await timed(sleep(50))
    expect(error).toBeUndefined()
    // Timers may fire a millisecond early; never much earlier.
    expect(ms).toBeGreaterThanOrEqual(45)
  })

  it('ends at once when the signal aborts, rejecting with its reason', async () => {
    const controller = new AbortController()
    const reason = new Error('the run was cancelled')
    setTimeout(() => controller.abort(reason), 20)
    const { ms, error } = await timed(sleep(10_000, controller.signal))
    expect(error).toBe(reason)
    expect(ms).toBeLessThan(5_000)
  })

  it('does not wait at all on a signal already aborted', async () => {
    const reason = new Error('shutting down')
    const { ms, error } = await timed(sleep(10_000, AbortSignal.abort(reason)))
    expect(error).toBe(reason)
    expect(ms).toBeLessThan(5_000)
  })
})

describe('retry', () => {
  const QUICK: Backoff = { baseMs: 1, factor: 2, capMs: 5, jitter: 0, maxRetries: 3 }
  const SLOW: Backoff = { baseMs: 10_000, factor: 2, capMs: 10_000, jitter: 0, maxRetries: 3 }

  /** An attempt that fails `failures` times, then answers 'done'; `calls` counts its calls. */
  function flaky (failures: number) {
    const calls: number[] = []
    const errors: Error[] = []
    const attempt = async (n: number): Promise<string> => {
      calls.push(n)
      if (calls.length <= failures) {
        const err = new Error(`failure ${calls.length}`)
        errors.push(err)
        throw err
      }
      return 'done'
    }
    return { attempt, calls, errors }
  }

  it('retries until an attempt succeeds, telling of each retry', async () => {
    const { attempt, calls } = flaky(2)
    const retries: Array<[string, number, number]> = []
    const result = await retry(QUICK, attempt, { onRetry: (err, n, delayMs) => retries.push([(err as Error).message, n, delayMs]) })
    expect(result).toBe('done')
    expect(calls).toEqual([1, 2, 3])
    expect(retries).toEqual([['failure 1', 1, 1], ['failure 2', 2, 2]])
  })

  it('gives up at once on a failure that is not retryable, throwing it', async () => {
    const { attempt, calls, errors } = flaky(5)
    const { error } = await timed(retry(QUICK, attempt, { retryable: (err) => (err as Error).message !== 'failure 1' }))
    expect(error).toBe(errors[0])
    expect(calls).toEqual([1])
  })

  it('gives up when the retries run out, throwing the last failure', async () => {
    const { attempt, calls, errors } = flaky(10)
    const { error } = await timed(retry(QUICK, attempt))
    expect(calls).toEqual([1, 2, 3, 4])
    expect(error).toBe(errors[3])
  })

  it('does not retry when the retry could not start before the deadline', async () => {
    const { attempt, calls, errors } = flaky(10)
    const { error } = await timed(retry(SLOW, attempt, { deadline: Date.now() + 5_000 }))
    expect(calls).toEqual([1])
    expect(error).toBe(errors[0])
  })

  it('ends a wait at once when the signal aborts, throwing the failure it had', async () => {
    const { attempt, calls, errors } = flaky(10)
    const controller = new AbortController()
    const retrying = retry(SLOW, attempt, { signal: controller.signal, onRetry: () => setTimeout(() => controller.abort(new Error('cancelled')), 20) })
    const { ms, error } = await timed(retrying)
    expect(error).toBe(errors[0])
    expect(calls).toEqual([1])
    // The wait was 10 s.
    expect(ms).toBeLessThan(5_000)
  })

  it('still makes the first attempt on a signal already aborted, but no retry', async () => {
    const succeeding = flaky(0)
    expect(await retry(SLOW, succeeding.attempt, { signal: AbortSignal.abort() })).toBe('done')
    const failing = flaky(10)
    const { ms, error } = await timed(retry(SLOW, failing.attempt, { signal: AbortSignal.abort() }))
    expect(error).toBe(failing.errors[0])
    expect(failing.calls).toEqual([1])
    expect(ms).toBeLessThan(5_000)
  })
})

describe('the service\'s backoffs', () => {
  /** The least and the most a backoff waits through all its retries. */
  function window (backoff: Backoff): [number, number] {
    const retries = Array.from({ length: backoff.maxRetries }, (_, i) => i + 1)
    const sum = (randomness: number): number => retries.reduce((total, n) => total + backoffDelay(backoff, n, randomness), 0)
    return [sum(0.999_999), sum(0)]
  }

  it('a tool call waits 200 ms doubling to 10 s, each wait between half the full one and all of it', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(TOOL_BACKOFF, n, 0))).toEqual([200, 400, 800, 1600, 3200, 6400, 10_000])
    expect([1, 2, 7].map((n) => backoffDelay(TOOL_BACKOFF, n, 0.999_999))).toEqual([100, 200, 5000])
    // A tool may ask for 10 attempts.
    expect(retryDelay(TOOL_BACKOFF, 9)).not.toBeNull()
  })

  it('storage is retried 8 times, for about half a minute', () => {
    expect(STORAGE_BACKOFF.maxRetries).toBe(8)
    const [least, most] = window(STORAGE_BACKOFF)
    expect(most).toBe(30_875)
    expect(least).toBeGreaterThan(24_000)
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(STORAGE_BACKOFF, n, 0))).toEqual([125, 250, 500, 1000, 2000, 4000, 8000, 15_000])
  })
})
