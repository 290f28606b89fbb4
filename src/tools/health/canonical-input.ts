import { createHash } from 'node:crypto'

/**
 * The JSON text of `value` with every object's keys in sorted order (arrays keep theirs), so that
 * two inputs that differ only in the order of their keys are one text: `{"b":1,"a":2}` and
 * `{"a":2,"b":1}` both give `{"a":2,"b":1}`.
 */
export function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).filter((k) => (value as Record<string, unknown>)[k] !== undefined).sort()
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}

/** The hash a cached result is found by: SHA-256 of the input's canonical JSON, in hex. */
export function inputHash (input: unknown): string {
  return createHash('sha256').update(canonicalJson(input)).digest('hex')
}
