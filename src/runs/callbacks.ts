import type { Log } from '../logger.js'
import { AppError } from '../errors.js'
import { retryDelay, type Backoff } from '../lib/retry.js'
import { wellFormed } from '../lib/text.js'
import type { RunRecord, SigningSecret, Store } from '../store/index.js'
import { activeSecrets, newSigningSecret, rotatedSecrets, type ToolRegistry } from '../tools/registry.js'
import type { WebhookClient } from '../tools/webhook/webhook-client.js'
import { toRunObject } from './run-object.js'

export interface CallbackLimits {
  /** Delivery attempts before a callback is given up. */
  readonly maxAttempts: number
  /** Wait before the second attempt; each later one waits four times longer (at most an hour). */
  readonly retryBaseMs: number
  /** One attempt's timeout. */
  readonly timeoutMs: number
  /** After a rotation, how long the previous callback secret keeps signing. */
  readonly rotationWindowMs: number
}

export interface CallbacksOptions {
  readonly store: Store
  readonly registry: ToolRegistry
  readonly webhooks: WebhookClient
  readonly log: Log
  readonly limits: CallbackLimits
}

/** Beyond an attempt's timeout, how long a callback being delivered stays claimed by one replica. */
const CALLBACK_CLAIM_MARGIN_MS = 30_000
/** Callbacks claimed at once. */
const CLAIM_BATCH = 100

/**
 * Completion callbacks (SPEC §4): a run with a `callback_url` has its final run object POSTed
 * there, signed with its tenant's callback secret (Standard Webhooks), until a 2xx answer or
 * CALLBACK_MAX_ATTEMPTS. Which callbacks are due is stored, so any replica delivers them; each is
 * claimed by one replica at a time. Also keeps the tenants' callback secrets.
 */
export class Callbacks {
  readonly #options: CallbacksOptions
  readonly #backoff: Backoff
  readonly #deliveries = new Set<Promise<void>>()
  /** Aborted on close: attempts under way stop (and are due again at once, for any replica). */
  readonly #closing = new AbortController()

  constructor (options: CallbacksOptions) {
    this.#options = options
    // Retries are stored (callback_next_at) rather than slept on, for any replica to make.
    this.#backoff = { baseMs: options.limits.retryBaseMs, factor: 4, capMs: 3_600_000, jitter: 0.2, maxRetries: options.limits.maxAttempts - 1 }
  }

  /**
   * Checks a run's `callback_url` at create: a URL the egress policy allows, and a tenant that has
   * a callback secret to sign with. Answers the URL as it will be called.
   */
  async checkUrl (tenantId: string, value: string): Promise<string> {
    const url = await this.#options.registry.checkWebhookUrl(value, 'callback_url')
    if ((await this.#options.store.getCallbackSecrets(tenantId)) === null) {
      throw new AppError('RUN_ERR_NO_CALLBACK_SECRET', 'Callbacks are signed with your callback secret, and you have none yet: make it with POST /callbacks/rotate-secret (once), then retry.')
    }
    return url.toString()
  }

  /** What `GET /callbacks` shows of the tenant's callback signing secrets. */
  async secrets (tenantId: string): Promise<readonly SigningSecret[]> {
    return await this.#options.store.getCallbackSecrets(tenantId) ?? []
  }

  /** A new callback signing secret; the previous one keeps signing for the rotation window. */
  async rotateSecret (tenantId: string): Promise<{ secret: string, secrets: SigningSecret[] }> {
    const { store, limits } = this.#options
    const fresh = newSigningSecret()
    for (;;) {
      const current = await store.getCallbackSecrets(tenantId)
      const secrets = rotatedSecrets(current ?? [], fresh, Date.now(), limits.rotationWindowMs)
      if (await store.setCallbackSecrets(tenantId, secrets, Date.now(), current)) return { secret: fresh, secrets }
    }
  }

  /**
   * Claims the callbacks that are due, each for one replica, and sends them without waiting for
   * them: a slow receiver must not hold up the sweep's other work (deadlines, cancels).
   */
  async deliverDue (): Promise<void> {
    if (this.#closing.signal.aborted) return
    const now = Date.now()
    // Claimed for longer than an attempt can take, so that nobody else sends it meanwhile.
    const claimUntil = now + this.#options.limits.timeoutMs + CALLBACK_CLAIM_MARGIN_MS
    const due = await this.#options.store.claimDueCallbacks(now, claimUntil, CLAIM_BATCH)
    for (const run of due) {
      const delivery = this.#deliver(run, claimUntil)
        .catch((err) => this.#options.log.warn({ err, runId: run.id }, 'callback delivery failed'))
        .finally(() => this.#deliveries.delete(delivery))
      this.#deliveries.add(delivery)
    }
  }

  /** Stops: attempts under way are cut short (not counted), and are due again at once, for any replica. */
  async close (): Promise<void> {
    this.#closing.abort()
    await Promise.allSettled([...this.#deliveries])
  }

  async #deliver (run: RunRecord, claimedUntil: number): Promise<void> {
    const { store, webhooks, limits, log } = this.#options
    const secrets = activeSecrets(await store.getCallbackSecrets(run.tenant_id) ?? [], Date.now())
    const attempts = run.callback_attempts + 1
    const closing = this.#closing.signal
    const result = await webhooks.deliver(run.callback_url!, JSON.stringify(toRunObject(run)), { messageId: run.status === 'requires_action' ? `${run.id}:callback:${run.event_count}` : `${run.id}:callback`, secrets, timeoutMs: limits.timeoutMs, signal: closing })
    if (result.ok) {
      await store.recordCallback(run.id, claimedUntil, { status: 'delivered', attempts, next_at: null, error: null })
      log.info({ runId: run.id, attempts }, 'callback delivered')
      return
    }
    if (closing.aborted && result.status === null) {
      // Cut short by shutdown: not an attempt that counts.
      await store.recordCallback(run.id, claimedUntil, { status: 'pending', attempts: run.callback_attempts, next_at: Date.now(), error: run.callback_error })
      return
    }
    const error = wellFormed(result.error ?? 'failed')
    const delay = retryDelay(this.#backoff, attempts)
    if (delay === null) {
      await store.recordCallback(run.id, claimedUntil, { status: 'failed', attempts, next_at: null, error })
      log.warn({ runId: run.id, attempts, error }, 'callback failed; no more attempts')
      return
    }
    await store.recordCallback(run.id, claimedUntil, { status: 'pending', attempts, next_at: Date.now() + delay, error })
    log.info({ runId: run.id, attempts, delayMs: delay, error }, 'callback failed; retrying')
    // Come back for it on time here; the sweep would too, on any replica, within a second.
    setTimeout(() => { this.deliverDue().catch((err) => log.warn({ err }, 'callback delivery failed')) }, delay).unref()
  }
}
