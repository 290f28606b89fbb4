import { createHash, timingSafeEqual } from 'node:crypto'
import { ConfigError } from '../errors.js'

/** The tenant every request belongs to when no API keys are configured (open mode). */
export const OPEN_MODE_TENANT = 'default'

const TENANT_PATTERN = /^[a-zA-Z0-9_-]{1,64}$/
const MIN_KEY_LENGTH = 16
const SHA256_FORM = /^sha256:([0-9a-f]{64})$/i

interface KeyEntry {
  readonly tenantId: string
  readonly hash: Buffer
}

/**
 * The configured API keys, held only as SHA-256 digests. Keys are long random strings, so a fast
 * hash is enough: what must not leak is the key itself (in memory dumps, logs or the environment
 * of a `tenant:sha256:<hex>` entry), and comparisons must not leak timing.
 */
export class Keyring {
  readonly #entries: KeyEntry[]

  constructor (entries: KeyEntry[]) {
    this.#entries = entries
  }

  get size (): number {
    return this.#entries.length
  }

  /** The tenants that own at least one key. */
  tenants (): string[] {
    return [...new Set(this.#entries.map((e) => e.tenantId))]
  }

  /**
   * The tenant owning `presentedKey`, or null. Every configured digest is compared, in constant
   * time, so neither the answer's timing nor which entry matched depends on the key's content.
   */
  authenticate (presentedKey: string): string | null {
    const digest = sha256(presentedKey)
    let tenantId: string | null = null
    for (const entry of this.#entries) {
      if (timingSafeEqual(entry.hash, digest) && tenantId === null) tenantId = entry.tenantId
    }
    return tenantId
  }
}

/**
 * Parses `API_KEYS`: comma-separated `tenant:key` pairs, where the key may instead be given as
 * `sha256:<64 hex digits>` so that the plain key never has to sit in the environment. Answers the
 * keyring, and the keys given as they are (the secrets to keep out of any text from outside).
 * Throws {@link ConfigError} naming the variable and the faulty entry (never its key).
 */
export function parseApiKeys (value: string): { keyring: Keyring, plainKeys: string[] } {
  const entries: KeyEntry[] = []
  const plainKeys: string[] = []
  const seen = new Set<string>()
  const items = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0)
  items.forEach((item, index) => {
    const colon = item.indexOf(':')
    const position = `entry ${index + 1}`
    if (colon <= 0) {
      throw new ConfigError(`API_KEYS ${position} is not a \`tenant:key\` pair: write it as tenant:key, separated from the next one by a comma.`)
    }
    const tenantId = item.slice(0, colon)
    const key = item.slice(colon + 1)
    if (!TENANT_PATTERN.test(tenantId)) {
      throw new ConfigError(`API_KEYS ${position}: the tenant must match ${TENANT_PATTERN.source} (letters, digits, _ and -, at most 64).`)
    }
    const hashed = SHA256_FORM.exec(key)
    let hash: Buffer
    if (hashed !== null) {
      hash = Buffer.from(hashed[1]!, 'hex')
    } else if (key.length < MIN_KEY_LENGTH) {
      throw new ConfigError(`API_KEYS ${position} (tenant ${tenantId}): the key is shorter than ${MIN_KEY_LENGTH} characters; use a long random value such as \`openssl rand -hex 24\`.`)
    } else {
      hash = sha256(key)
      plainKeys.push(key)
    }
    const fingerprint = hash.toString('hex')
    if (seen.has(fingerprint)) {
      throw new ConfigError(`API_KEYS ${position} (tenant ${tenantId}) repeats a key listed before it; every key must be unique.`)
    }
    seen.add(fingerprint)
    entries.push({ tenantId, hash })
  })
  return { keyring: new Keyring(entries), plainKeys }
}

function sha256 (value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest()
}
