import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Store } from '../store/index.js'

/** How long a timeline link stands in for the API key (SPEC §10: an hour). */
export const TIMELINE_LINK_TTL_MS = 3_600_000

/** The name of the link key among the service's stored secrets. */
const KEY_NAME = 'timeline_link_key'
const EXPIRES = /^\d{1,12}$/
const SIGNATURE = /^[A-Za-z0-9_-]{43}$/

/** What a link's signature proves: the run's tenant, or why it proves nothing. */
export type LinkCheck =
  | { readonly ok: true, readonly tenantId: string }
  | { readonly ok: false, readonly reason: 'expired' | 'invalid' }

/**
 * Signed links to a run's timeline page, which a browser opens without the API key (SPEC §10).
 * A link is `/runs/{id}/timeline?expires=<unix seconds>&sig=<HMAC-SHA256>`, the HMAC taken with a
 * key every replica shares over a purpose, the run id, its tenant and the expiry: it opens that
 * one run's timeline until then, and nothing else. The tenant is not in the link; a check tries
 * each configured tenant, in constant time.
 */
export class TimelineLinks {
  readonly #key: Buffer
  readonly #tenants: readonly string[]
  readonly #base: string

  /**
   * @param key the shared signing key
   * @param tenants every tenant a link may belong to
   * @param base prepended to every link: the service's public URL, or '' for a path alone
   */
  constructor (key: Buffer, tenants: readonly string[], base = '') {
    this.#key = key
    this.#tenants = tenants
    this.#base = base.replace(/\/+$/, '')
  }

  /** A link to the timeline of `run`, valid for {@link TIMELINE_LINK_TTL_MS} from `now`. */
  url (run: { readonly id: string, readonly tenant_id: string }, now = Date.now()): string {
    const expires = Math.floor((now + TIMELINE_LINK_TTL_MS) / 1000)
    return `${this.#base}/runs/${run.id}/timeline?expires=${expires}&sig=${this.#sign(run.id, run.tenant_id, expires).toString('base64url')}`
  }

  /**
   * Checks the `expires` and `sig` of a request for the timeline of `runId`. Null when the request
   * carries no signature at all (it then needs the API key).
   */
  check (runId: string, expires: unknown, sig: unknown, now = Date.now()): LinkCheck | null {
    if (expires === undefined && sig === undefined) return null
    if (typeof expires !== 'string' || typeof sig !== 'string' || !EXPIRES.test(expires) || !SIGNATURE.test(sig)) {
      return { ok: false, reason: 'invalid' }
    }
    const given = Buffer.from(sig, 'base64url')
    const at = Number(expires)
    // Every tenant is tried, whatever matched, so the time taken says nothing about which did.
    let tenantId: string | null = null
    for (const tenant of this.#tenants) {
      if (timingSafeEqual(this.#sign(runId, tenant, at), given) && tenantId === null) tenantId = tenant
    }
    if (tenantId === null) return { ok: false, reason: 'invalid' }
    if (at * 1000 <= now) return { ok: false, reason: 'expired' }
    return { ok: true, tenantId }
  }

  #sign (runId: string, tenantId: string, expires: number): Buffer {
    return createHmac('sha256', this.#key).update(`timeline\n${runId}\n${tenantId}\n${expires}`).digest()
  }
}

/**
 * The links of this service: their key is made once, stored, and read by every replica, so that a
 * link made by one opens on any other behind the same load balancer. Replicas starting together
 * agree on the first key stored.
 */
export async function loadTimelineLinks (store: Store, tenants: readonly string[], base = ''): Promise<TimelineLinks> {
  const key = await store.serviceSecret(KEY_NAME, randomBytes(32).toString('base64url'))
  return new TimelineLinks(Buffer.from(key, 'base64url'), tenants, base)
}
