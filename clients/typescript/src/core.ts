import { randomUUID } from 'node:crypto'
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from './errors.js'

export interface ClientOptions {
  /** Where the service is; `SWITCHBOARD_BASE_URL` by default, then `http://127.0.0.1:3000`. */
  baseURL?: string | undefined
  /** An API key of the service's `API_KEYS`; `SWITCHBOARD_API_KEY` by default. None: open mode. */
  apiKey?: string | null | undefined
  /** Retries of a request answered 429 or 503, or whose connection failed: 2 by default. */
  maxRetries?: number | undefined
  /** How long one attempt may take, in ms: 10 minutes by default (a sync run answers when it ends). */
  timeout?: number | undefined
  /** The longest `retry-after` the client waits before a retry, in ms (60 s): a longer one is thrown at once. */
  maxRetryDelay?: number | undefined
  /** Headers sent with every request. */
  defaultHeaders?: Record<string, string> | undefined
  /** The fetch to use: the global one by default. */
  fetch?: typeof fetch | undefined
}

export interface RequestOptions {
  /** Ends the request (and its retries) early. */
  signal?: AbortSignal | undefined
  /** This request's timeout per attempt, in ms, instead of the client's. */
  timeout?: number | undefined
  /** This request's retries, instead of the client's. */
  maxRetries?: number | undefined
  /** More headers for this request. */
  headers?: Record<string, string> | undefined
}

export interface CreateOptions extends RequestOptions {
  /** The create's `Idempotency-Key`: a fresh UUID by default, the same on every retry of this call. */
  idempotencyKey?: string | undefined
}

export interface Request extends RequestOptions {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE'
  readonly path: string
  readonly query?: Record<string, string | number | boolean | undefined> | undefined
  readonly body?: unknown
  /** Sent as `Idempotency-Key`; a request carrying one is safe to send again after a broken connection. */
  readonly idempotencyKey?: string | undefined
  readonly accept?: string | undefined
}

const RETRY_BASE_MS = 500
const RETRY_CAP_MS = 8_000

/** The transport every resource goes through: one place for auth, retries, timeouts and errors. */
export class Transport {
  readonly baseURL: string
  readonly apiKey: string | null
  readonly maxRetries: number
  readonly timeout: number
  readonly maxRetryDelay: number
  readonly #headers: Record<string, string>
  readonly #fetch: typeof fetch

  constructor (options: ClientOptions = {}) {
    const env = typeof process === 'undefined' ? {} : process.env
    this.baseURL = (options.baseURL ?? env.SWITCHBOARD_BASE_URL ?? 'http://127.0.0.1:3000').replace(/\/+$/, '')
    const apiKey = options.apiKey === undefined ? env.SWITCHBOARD_API_KEY : options.apiKey
    this.apiKey = apiKey === undefined || apiKey === null || apiKey === '' ? null : apiKey
    this.maxRetries = options.maxRetries ?? 2
    this.timeout = options.timeout ?? 600_000
    this.maxRetryDelay = options.maxRetryDelay ?? 60_000
    this.#headers = { ...options.defaultHeaders }
    this.#fetch = options.fetch ?? globalThis.fetch
  }

  /** A fresh Idempotency-Key for a create. */
  static idempotencyKey (): string {
    return randomUUID()
  }

  /** Sends a request and answers its parsed JSON (or text), throwing an APIError for any non-2xx. */
  async json<T> (request: Request): Promise<T> {
    const response = await this.send(request)
    return await readBody(response) as T
  }

  /**
   * Sends a request, retrying it on 429 and 503 after their `retry-after` (bounded by
   * maxRetryDelay), and on a failed connection when sending it again is safe (GET, PUT, DELETE, or
   * a request with an Idempotency-Key). Answers the 2xx response, its body unread.
   */
  async send (request: Request): Promise<Response> {
    const url = new URL(this.baseURL + request.path)
    for (const [name, value] of Object.entries(request.query ?? {})) {
      if (value !== undefined) url.searchParams.set(name, String(value))
    }
    const headers: Record<string, string> = { accept: request.accept ?? 'application/json', ...this.#headers, ...request.headers }
    if (this.apiKey !== null) headers.authorization = `Bearer ${this.apiKey}`
    if (request.idempotencyKey !== undefined) headers['idempotency-key'] = request.idempotencyKey
    let body: string | undefined
    if (request.body !== undefined) {
      headers['content-type'] = 'application/json'
      body = JSON.stringify(request.body)
    }
    const maxRetries = request.maxRetries ?? this.maxRetries
    const timeout = request.timeout ?? this.timeout
    const resendable = request.method !== 'POST' || request.idempotencyKey !== undefined
    const aborted = (): boolean => request.signal?.aborted === true
    for (let attempt = 0; ; attempt++) {
      if (aborted()) throw new APIUserAbortError()
      const timer = AbortSignal.timeout(timeout)
      const signal = request.signal === undefined ? timer : AbortSignal.any([request.signal, timer])
      let response: Response
      try {
        response = await this.#fetch(url, { method: request.method, headers, body, signal })
      } catch (err) {
        if (aborted()) throw new APIUserAbortError()
        const timedOut = timer.aborted
        if (resendable && attempt < maxRetries) {
          await sleep(backoff(attempt), request.signal)
          continue
        }
        throw timedOut
          ? new APIConnectionTimeoutError(`${request.method} ${request.path}: no answer within ${timeout} ms.`, { cause: err })
          : new APIConnectionError(`${request.method} ${request.path}: could not reach Switchboard at ${this.baseURL}: ${(err as Error).message}`, { cause: err })
      }
      if (response.ok) return response
      if ((response.status === 429 || response.status === 503) && attempt < maxRetries) {
        const delay = retryDelay(response.headers, attempt)
        if (delay <= this.maxRetryDelay) {
          await response.body?.cancel().catch(() => {})
          await sleep(delay, request.signal)
          continue
        }
      }
      throw APIError.of(response.status, await readBody(response).catch(() => null), response.headers)
    }
  }
}

/** How long to wait before retry number `attempt + 1`: what the answer asks, or a backoff. */
function retryDelay (headers: Headers, attempt: number): number {
  const ms = Number(headers.get('retry-after-ms') ?? Number.NaN)
  if (Number.isFinite(ms) && ms >= 0) return ms
  const after = headers.get('retry-after')
  if (after !== null) {
    const seconds = Number(after)
    if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
    const date = Date.parse(after)
    if (Number.isFinite(date)) return Math.max(0, date - Date.now())
  }
  return backoff(attempt)
}

/** Exponential backoff with jitter: about 0.5 s, 1 s, 2 s… up to 8 s. */
export function backoff (attempt: number): number {
  return Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** attempt) * (0.75 + Math.random() * 0.25)
}

export async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return
  await new Promise<void>((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', aborted)
      resolve()
    }
    const aborted = (): void => {
      clearTimeout(timer)
      reject(new APIUserAbortError())
    }
    const timer = setTimeout(done, ms)
    if (signal?.aborted === true) aborted()
    else signal?.addEventListener('abort', aborted, { once: true })
  })
}

async function readBody (response: Response): Promise<unknown> {
  const text = await response.text()
  if (text === '') return null
  if ((response.headers.get('content-type') ?? '').includes('json')) {
    try {
      return JSON.parse(text)
    } catch {
      return text
    }
  }
  return text
}

/** Encodes a path parameter. */
export function param (value: string): string {
  return encodeURIComponent(value)
}
