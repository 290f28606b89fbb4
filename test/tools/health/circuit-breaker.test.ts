import { describe, expect, it } from 'vitest'
import { CircuitBreaker, CircuitBreakers, healthOf } from '../../../src/tools/health/circuit-breaker.js'
import { canonicalJson, inputHash } from '../../../src/tools/health/canonical-input.js'
import { errorOutcome, type ToolOutcome } from '../../../src/tools/tool-result.js'
import type { ToolRecord } from '../../../src/store/index.js'

const settings = { failures: 3, window_ms: 1000, open_ms: 5000 }

/** Lets `n` calls through at `now` and records each as `health`. */
function calls (breaker: CircuitBreaker, n: number, health: 'failure' | 'success' | 'neutral', now: number): void {
  for (let i = 0; i < n; i++) {
    const admission = breaker.admit(now)
    expect(admission.pass).toBe(true)
    breaker.record(health, admission.pass && admission.probe, now)
  }
}

describe('circuit breaker', () => {
  it('opens at `failures` in a row within `window_ms`; older failures and a success in between start the count again', () => {
    const breaker = new CircuitBreaker(settings)
    calls(breaker, 2, 'failure', 0)
    calls(breaker, 1, 'failure', 1500) // the first two are past the window
    expect(breaker.view(1500)).toEqual({ state: 'closed', failures: 1, retryAt: null })
    calls(breaker, 1, 'failure', 1600)
    calls(breaker, 1, 'success', 1700)
    calls(breaker, 2, 'failure', 1800)
    expect(breaker.view(1800).state).toBe('closed')
    // A call that told nothing (cancelled with its run) neither counts nor starts the count again.
    calls(breaker, 1, 'neutral', 1850)
    const admission = breaker.admit(1900)
    expect(breaker.record('failure', false, 1900)).toBe('open')
    expect(admission.pass).toBe(true)
    expect(breaker.view(1900)).toEqual({ state: 'open', failures: 3, retryAt: 6900 })
  })

  it('refuses every call while open; then lets one probe through at a time, which decides', () => {
    const breaker = new CircuitBreaker(settings)
    calls(breaker, 3, 'failure', 0)
    expect(breaker.admit(4999)).toEqual({ pass: false, failures: 3, retryAt: 5000, probing: false })
    expect(breaker.admit(5000)).toEqual({ pass: true, probe: true })
    expect(breaker.admit(5001)).toEqual({ pass: false, failures: 3, retryAt: 5000, probing: true })
    // A probe cut short tells nothing: the next call probes instead.
    expect(breaker.record('neutral', true, 5002)).toBeNull()
    expect(breaker.admit(5003)).toEqual({ pass: true, probe: true })
    expect(breaker.record('failure', true, 5004)).toBe('open')
    expect(breaker.view(5004)).toEqual({ state: 'open', failures: 4, retryAt: 10_004 })
    expect(breaker.admit(10_004)).toEqual({ pass: true, probe: true })
    expect(breaker.record('success', true, 10_005)).toBe('closed')
    expect(breaker.view(10_005)).toEqual({ state: 'closed', failures: 0, retryAt: null })
    expect(breaker.admit(10_006)).toEqual({ pass: true, probe: false })
  })

  it('a call sent before it opened that fails after changes nothing', () => {
    const breaker = new CircuitBreaker(settings)
    const late = breaker.admit(0)
    calls(breaker, 3, 'failure', 0)
    expect(breaker.record('failure', late.pass && late.probe, 10)).toBeNull()
    expect(breaker.view(10)).toMatchObject({ state: 'open', failures: 3 })
  })

  it('counts transport failures, timeouts and 5xx; never 4xx, is_error answers, refusals or cancels', () => {
    const answered = (status: number, isError: boolean): ToolOutcome => ({ kind: isError ? 'error' : 'ok', isError, content: 'x', status, retry: 'no' })
    expect(healthOf(errorOutcome('unreachable', 'reset'))).toBe('failure')
    expect(healthOf(errorOutcome('timeout', 'slow'))).toBe('failure')
    expect(healthOf(answered(500, true))).toBe('failure')
    expect(healthOf(answered(503, true))).toBe('failure')
    expect(healthOf(answered(404, true))).toBe('success')
    expect(healthOf(answered(429, true))).toBe('success')
    expect(healthOf(answered(200, true))).toBe('success')
    expect(healthOf(answered(200, false))).toBe('success')
    expect(healthOf(errorOutcome('refused', 'egress'))).toBe('neutral')
    expect(healthOf(errorOutcome('cancelled', 'run cancelled'))).toBe('neutral')
    expect(healthOf(errorOutcome('circuit_open', 'open'))).toBe('neutral')
  })

  it('one per tenant\'s tool; new settings make a new one; `false` has none', () => {
    const breakers = new CircuitBreakers()
    const tool = (tenant: string, name: string, circuit: ToolRecord['circuit_breaker']) => ({ tenant_id: tenant, name, circuit_breaker: circuit }) as unknown as ToolRecord
    const a = breakers.of(tool('a', 'x', settings))!
    expect(breakers.of(tool('a', 'x', { ...settings }))).toBe(a)
    expect(breakers.of(tool('b', 'x', settings))).not.toBe(a)
    expect(breakers.of(tool('a', 'y', settings))).not.toBe(a)
    expect(breakers.of(tool('a', 'x', { ...settings, failures: 4 }))).not.toBe(a)
    expect(breakers.of(tool('a', 'x', false))).toBeNull()
    expect(breakers.peek(tool('a', 'x', false))).toBeUndefined()
  })
})

describe('canonical input', () => {
  it('sorts object keys at every depth and keeps array order', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}')
    expect(inputHash({ city: 'Paris', units: 'C' })).toBe(inputHash({ units: 'C', city: 'Paris' }))
    expect(inputHash([1, 2])).not.toBe(inputHash([2, 1]))
    expect(inputHash({ q: '1' })).not.toBe(inputHash({ q: 1 }))
  })
})
