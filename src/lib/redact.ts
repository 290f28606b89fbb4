/** What a secret is replaced with. */
export const REDACTED = '[redacted]'

/**
 * Secrets shorter than this are not looked for: a value of a few characters (a tool's `x-region:
 * eu` header) would match ordinary words, and text would be mangled for nothing. Every secret the
 * service makes or asks for (API keys, signing secrets, METRICS_TOKEN) is far longer.
 */
const MIN_SECRET_CHARS = 8

/** `Bearer <token>`, `Basic <base64>`, `Token <key>`: a header value's scheme, then its credential. */
const SCHEME_AND_CREDENTIAL = /^([A-Za-z][\w.-]*) +(\S+)$/
/** How deep {@link Redactor.redactValue} goes into nested objects: an error, its cause, their fields. */
const MAX_DEPTH = 8

/**
 * Finds known secrets in text that came from outside (a gateway's error page that quotes the key it
 * was sent, a tool's error answer echoing its request headers) and puts {@link REDACTED} in their
 * place, before that text is stored, answered or logged. Each secret is looked for as it is, and in
 * the forms it is commonly echoed in: URL-encoded, escaped in JSON, and in base64 (at each of the
 * three alignments a base64 stream can hold it at, so a `Basic` header of `user:<secret>` is caught
 * whatever the user). For a header value such as `Bearer <token>` the token alone is a secret too,
 * and for `Basic <base64>` the `user:password` it encodes and the password.
 *
 * Made once from the configuration; a tool's own secrets are added per call with {@link with}.
 * Only failures' texts are scanned, never a successful answer: the success path costs nothing.
 */
export class Redactor {
  /** Redacts nothing. */
  static readonly none = new Redactor([])

  /** The secrets as given (for {@link with}). */
  readonly #secrets: readonly string[]
  readonly #pattern: RegExp | null

  /** `secrets`: the values to hide; empty, undefined and short ones are ignored. */
  constructor (secrets: Iterable<string | null | undefined>) {
    const kept = new Set<string>()
    for (const secret of secrets) if (typeof secret === 'string' && secret.length >= MIN_SECRET_CHARS) kept.add(secret)
    this.#secrets = [...kept]
    const forms = new Set<string>()
    for (const secret of kept) for (const form of secretForms(secret)) forms.add(form)
    this.#pattern = pattern(forms)
  }

  /** True when there is nothing to look for. */
  get empty (): boolean {
    return this.#pattern === null
  }

  /** A redactor for these secrets as well as this one's (a tool's headers, its signing secrets). */
  with (secrets: Iterable<string | null | undefined>): Redactor {
    const more = [...secrets].filter((s): s is string => typeof s === 'string' && s.length >= MIN_SECRET_CHARS && !this.#secrets.includes(s))
    return more.length === 0 ? this : new Redactor([...this.#secrets, ...more])
  }

  /** `text` with every secret in it replaced; the same string when there was none. */
  redact (text: string): string {
    if (this.#pattern === null || text.length < MIN_SECRET_CHARS) return text
    this.#pattern.lastIndex = 0
    return this.#pattern.test(text) ? text.replace(this.#pattern, REDACTED) : text
  }

  /**
   * `value` with every string in it redacted, through arrays, plain objects and errors (their
   * message, stack, fields and `cause`), a few levels deep. What holds no secret is returned as it
   * is; what does is copied (an error keeps its class), never changed in place.
   */
  redactValue<T> (value: T): T {
    return this.#pattern === null ? value : this.#value(value, 0) as T
  }

  #value (value: unknown, depth: number): unknown {
    if (typeof value === 'string') return this.redact(value)
    if (typeof value !== 'object' || value === null || depth >= MAX_DEPTH) return value
    if (Array.isArray(value)) {
      let copy: unknown[] | undefined
      value.forEach((item, i) => {
        const next = this.#value(item, depth + 1)
        if (next !== item) (copy ??= [...value])[i] = next
      })
      return copy ?? value
    }
    const proto = Object.getPrototypeOf(value) as object | null
    const isError = value instanceof Error
    // Other objects (a Headers, a request) are not taken apart: they are logged by their own serializers.
    if (!isError && proto !== Object.prototype && proto !== null) return value
    let changed = false
    const fields: Array<[string | symbol, PropertyDescriptor, unknown]> = []
    for (const key of Reflect.ownKeys(value)) {
      const descriptor = Object.getOwnPropertyDescriptor(value, key)!
      // An accessor (a stack, on some versions of V8) is read once, and copied as its value.
      const field = 'value' in descriptor ? descriptor.value : (value as Record<string | symbol, unknown>)[key]
      const next = this.#value(field, depth + 1)
      if (next !== field) changed = true
      fields.push([key, descriptor, next])
    }
    if (!changed) return value
    const copy = Object.create(proto) as Record<string | symbol, unknown>
    for (const [key, descriptor, next] of fields) {
      Object.defineProperty(copy, key, { value: next, enumerable: descriptor.enumerable ?? false, writable: true, configurable: true })
    }
    return copy
  }
}

/**
 * The forms a secret is looked for in: as is, URL-encoded, escaped in JSON, inside base64; for a
 * `<scheme> <credential>` header value, the credential's forms too, and for `Basic`, what it encodes.
 */
export function secretForms (secret: string): string[] {
  const forms = new Set<string>()
  const add = (value: string): void => {
    if (value.length < MIN_SECRET_CHARS) return
    forms.add(value)
    forms.add(encodeURIComponent(value))
    forms.add(JSON.stringify(value).slice(1, -1))
    for (const encoded of base64Forms(value)) forms.add(encoded)
  }
  add(secret)
  const scheme = SCHEME_AND_CREDENTIAL.exec(secret)
  if (scheme !== null) {
    const credential = scheme[2]!
    add(credential)
    if (scheme[1]!.toLowerCase() === 'basic') {
      const decoded = Buffer.from(credential, 'base64').toString('utf8')
      const colon = decoded.indexOf(':')
      if (colon !== -1 && !decoded.includes('\uFFFD')) {
        add(decoded)
        add(decoded.slice(colon + 1))
      }
    }
  }
  // A Standard Webhooks secret's key, without its prefix, is what signs.
  if (secret.startsWith('whsec_')) add(secret.slice('whsec_'.length))
  return [...forms].filter((form) => form.length >= MIN_SECRET_CHARS)
}

/**
 * The secret inside any base64 text: base64 turns each 3 bytes into 4 characters, so text holding
 * the secret at an offset of 0, 1 or 2 bytes (mod 3) encodes it in one of three ways. Each form
 * keeps only the groups made of the secret's bytes alone, which do not depend on what surrounds
 * it; both alphabets (base64 and base64url).
 */
function base64Forms (value: string): string[] {
  const bytes = Buffer.from(value, 'utf8')
  const out: string[] = []
  for (let shift = 0; shift < 3; shift++) {
    const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString('base64')
    const first = shift === 0 ? 0 : 1
    const last = Math.floor((shift + bytes.length) / 3)
    const inner = encoded.slice(first * 4, last * 4)
    if (inner.length < MIN_SECRET_CHARS) continue
    out.push(inner, inner.replace(/\+/g, '-').replace(/\//g, '_'))
  }
  return out
}

/** One expression for all the forms, the longest first so that a form inside another never cuts it. */
function pattern (forms: Set<string>): RegExp | null {
  if (forms.size === 0) return null
  const sorted = [...forms].sort((a, b) => b.length - a.length)
  return new RegExp(sorted.map((form) => form.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|'), 'g')
}
