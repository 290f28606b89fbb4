import { randomBytes } from 'node:crypto'

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ' // Crockford base32
const RANDOM_CHARS = 16

let lastTime = -1
let lastRandom = ''

/**
 * A prefixed, time-ordered id (`run_01JD2…`): 10 characters of milliseconds then 16 random ones,
 * like a ULID. Ids made later in one process sort after earlier ones, even within one millisecond,
 * so lists can be ordered newest first by id alone.
 */
export function newId (prefix: string): string {
  const now = Date.now()
  let random: string
  if (now === lastTime) {
    random = increment(lastRandom)
  } else {
    random = randomChars(RANDOM_CHARS)
    lastTime = now
  }
  lastRandom = random
  return `${prefix}_${encodeTime(now)}${random}`
}

function encodeTime (ms: number): string {
  let out = ''
  let rest = ms
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[rest % 32]! + out
    rest = Math.floor(rest / 32)
  }
  return out
}

function randomChars (count: number): string {
  const bytes = randomBytes(count)
  let out = ''
  for (let i = 0; i < count; i++) out += ALPHABET[bytes[i]! % 32]
  return out
}

function increment (value: string): string {
  const chars = value.split('')
  for (let i = chars.length - 1; i >= 0; i--) {
    const index = ALPHABET.indexOf(chars[i]!)
    if (index < 31) {
      chars[i] = ALPHABET[index + 1]!
      return chars.join('')
    }
    chars[i] = ALPHABET[0]!
  }
  return randomChars(RANDOM_CHARS) // all 16 characters overflowed: practically never
}

/** A random secret of `bytes` bytes, base64-encoded. */
export function randomSecret (bytes: number): string {
  return randomBytes(bytes).toString('base64')
}

const RANDOM_POOL_BYTES = 4096
let randomPool = Buffer.alloc(0)
let randomOffset = 0

/**
 * `bytes` random bytes as hex, cut from a pool refilled 4 KB at a time: a span id for every tool
 * call attempt costs a slice of a buffer, not a call into the system's random source each. For
 * identifiers only, never for secrets.
 */
export function randomHex (bytes: number): string {
  if (randomOffset + bytes > randomPool.length) {
    randomPool = randomBytes(RANDOM_POOL_BYTES)
    randomOffset = 0
  }
  const hex = randomPool.toString('hex', randomOffset, randomOffset + bytes)
  randomOffset += bytes
  return hex
}
