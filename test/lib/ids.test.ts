import { describe, expect, it } from 'vitest'
import { newId, randomHex } from '../../src/lib/ids.js'

describe('ids', () => {
  it('makes time-ordered ids with their prefix', () => {
    const ids = Array.from({ length: 1000 }, () => newId('run'))
    expect(ids.every((id) => /^run_[0-9A-HJKMNP-TV-Z]{26}$/.test(id))).toBe(true)
    expect([...ids].sort()).toEqual(ids)
    expect(new Set(ids).size).toBe(ids.length)
  })

  it('cuts random hex from its pool without repeating itself across refills', () => {
    // 4096-byte pool: 2000 span ids of 8 bytes go through it four times.
    const ids = Array.from({ length: 2000 }, () => randomHex(8))
    expect(ids.every((id) => /^[0-9a-f]{16}$/.test(id))).toBe(true)
    expect(new Set(ids).size).toBe(ids.length)
    expect(randomHex(16)).toMatch(/^[0-9a-f]{32}$/)
  })
})
