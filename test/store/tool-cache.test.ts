import { describe, expect, it } from 'vitest'
import { ToolCache } from '../../src/store/tool-cache.js'

// What a read of tools answers for a definition read whole: the `tools` row as stored, `known` false.
function wholeRow (tenant: string, name: string, revision: string, description = `the ${name} tool`): Record<string, unknown> {
  return {
    known: 0,
    tenant_id: tenant,
    name,
    description,
    input_schema: '{"type":"object"}',
    url: `https://tools.example.com/${name}`,
    headers: '{}',
    timeout_ms: 30_000,
    effect: 'read_only',
    parallel: 1,
    max_concurrency: null,
    max_attempts: 3,
    signing_secrets: '[{"secret":"whsec_1","expires_at":null}]',
    source: 'api',
    revision,
    created_at: 1000,
    updated_at: 1000
  }
}

// What it answers for a tool at a revision it named as known: only the live columns.
function liveRow (name: string, revision: string, secrets: string, updatedAt: string): Record<string, unknown> {
  return { known: true, name, revision, signing_secrets: secrets, updated_at: updatedAt, description: null, input_schema: null, headers: null }
}

// The characters a row above is held for: its definition's text, and 1024 for the record around it.
const HELD_CHARS = 'the a tool'.length + '{"type":"object"}'.length + '{}'.length + 1024

describe('ToolCache', () => {
  it('holds a definition read whole, and answers a later read of only its live columns with it', () => {
    const cache = new ToolCache()
    const [first] = cache.toolsFrom([wholeRow('t1', 'a', 'rev1')], new Map())
    expect(first).toMatchObject({ name: 'a', description: 'the a tool', input_schema: { type: 'object' }, parallel: true })

    const known = cache.known('t1', ['a', 'b'])
    expect([...known.keys()]).toEqual(['rev1'])
    // Another tenant's tool of the same name is not this one.
    expect(cache.known('t2', ['a']).size).toBe(0)

    const [now] = cache.toolsFrom([liveRow('a', 'rev1', '[{"secret":"whsec_2","expires_at":null}]', '2000')], known)
    expect(now).toEqual({ ...first, signing_secrets: [{ secret: 'whsec_2', expires_at: null }], updated_at: 2000 })
  })

  it('holds no more characters than its bound, forgetting the oldest first', () => {
    const cache = new ToolCache(2 * HELD_CHARS)
    cache.toolsFrom([wholeRow('t1', 'a', 'rev-a'), wholeRow('t1', 'b', 'rev-b')], new Map())
    expect([...cache.known('t1', ['a', 'b', 'c']).keys()]).toEqual(['rev-a', 'rev-b'])

    cache.toolsFrom([wholeRow('t1', 'c', 'rev-c')], new Map())
    expect([...cache.known('t1', ['a', 'b', 'c']).keys()]).toEqual(['rev-b', 'rev-c'])

    // A definition read again is held anew, as the newest, in place of what was held of it.
    cache.toolsFrom([wholeRow('t1', 'b', 'rev-b2')], new Map())
    cache.toolsFrom([wholeRow('t1', 'a', 'rev-a2')], new Map())
    expect([...cache.known('t1', ['a', 'b', 'c']).keys()]).toEqual(['rev-a2', 'rev-b2'])
  })
})
