import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { closeLocal, listenLocal } from './local-server.js'

/** One request a tool server received. Times are performance.now() milliseconds. */
export interface RecordedCall {
  readonly path: string
  readonly headers: IncomingMessage['headers']
  /** The raw body, as signed. */
  readonly raw: string
  readonly body: Record<string, any>
  readonly start: number
  end: number | null
  /** The caller closed the connection before the answer was complete. */
  aborted: boolean
}

export type Handler = (req: IncomingMessage, res: ServerResponse, call: RecordedCall) => void | Promise<void>

/**
 * A tool server on 127.0.0.1 that behaves as asked by the path of the URL a tool is registered
 * with, and records every call's start and end:
 *
 * - `/ok`                      200 `{ content: "ok <tool> <input>" }`
 * - `/delay/:ms`               the same, after ms
 * - `/status/:code`            that status, with a text body
 * - `/hang`                    never answers
 * - `/reset`                   closes the connection without answering
 * - `/drip/:ms`                sends headers, then a byte every ms, for ever
 * - `/oversized/:bytes`        a text body of that many bytes
 * - `/malformed`               `content-type: application/json` with a body that is not JSON
 * - `/text`, `/empty`, `/image`, `/json-array`, `/error-result`, `/blocks`
 * - `/redirect`                302 to /ok
 * - `/flaky/:n/:status`        the first n calls of each idempotency key answer status, then /ok
 * - `/retry-after/:s`          the first call of each key answers 503 with `Retry-After: s`, then /ok
 *
 * Other paths can be given handlers with `on(path, handler)`.
 */
export class WebhookServer {
  readonly calls: RecordedCall[] = []
  readonly #handlers = new Map<string, Handler>()
  readonly #server: Server
  readonly #attempts = new Map<string, number>()
  #url = ''

  constructor () {
    this.#server = createServer((req, res) => { this.#handle(req, res).catch(() => res.destroy()) })
  }

  get url (): string {
    return this.#url
  }

  async start (): Promise<this> {
    this.#url = await listenLocal(this.#server)
    return this
  }

  async close (): Promise<void> {
    await closeLocal(this.#server)
  }

  /** Gives `path` (exact, without query) a handler of the test's own. */
  on (path: string, handler: Handler): this {
    this.#handlers.set(path, handler)
    return this
  }

  /** Calls received on a path (or all), in arrival order. */
  callsTo (path?: string): RecordedCall[] {
    return path === undefined ? this.calls : this.calls.filter((c) => c.path === path)
  }

  /** How many calls were in flight at once, at most, among `calls`. */
  static maxOverlap (calls: readonly RecordedCall[]): number {
    const points = calls.flatMap((c) => [[c.start, 1], [c.end ?? Number.POSITIVE_INFINITY, -1]] as Array<[number, number]>)
    points.sort((a, b) => a[0] - b[0] || a[1] - b[1])
    let current = 0
    let max = 0
    for (const [, delta] of points) {
      current += delta
      max = Math.max(max, current)
    }
    return max
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const start = performance.now()
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const raw = Buffer.concat(chunks).toString('utf8')
    let body: Record<string, any> = {}
    try {
      body = JSON.parse(raw)
    } catch {}
    const path = (req.url ?? '/').split('?')[0]!
    const call: RecordedCall = { path, headers: req.headers, raw, body, start, end: null, aborted: false }
    this.calls.push(call)
    res.on('finish', () => { call.end = performance.now() })
    res.on('close', () => {
      if (call.end === null) {
        call.aborted = true
        call.end = performance.now()
      }
    })

    const custom = this.#handlers.get(path)
    if (custom !== undefined) {
      await custom(req, res, call)
      return
    }
    const [, route, a, b] = path.split('/')
    const key = String(req.headers['idempotency-key'] ?? '')
    const ok = () => json(res, 200, { content: `ok ${body.tool} ${JSON.stringify(body.input)}` })
    switch (route) {
      case 'ok':
        return ok()
      case 'delay':
        await sleep(Number(a))
        if (!res.destroyed) ok()
        return
      case 'status':
        res.writeHead(Number(a), { 'content-type': 'text/plain' })
        res.end(`upstream said no (status ${a})`)
        return
      case 'hang':
        return
      case 'reset':
        req.socket.destroy()
        return
      case 'drip': {
        res.writeHead(200, { 'content-type': 'text/plain' })
        const timer = setInterval(() => { if (!res.destroyed) res.write('.') }, Number(a))
        res.on('close', () => clearInterval(timer))
        return
      }
      case 'oversized': {
        res.writeHead(200, { 'content-type': 'text/plain' })
        const total = Number(a)
        const chunk = Buffer.alloc(64 * 1024, 'x')
        let sent = 0
        while (sent < total && !res.destroyed) {
          const size = Math.min(chunk.length, total - sent)
          if (!res.write(chunk.subarray(0, size))) await drainOrClose(res)
          sent += size
        }
        if (!res.destroyed) res.end()
        return
      }
      case 'malformed':
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"content": "unterminated')
        return
      case 'text':
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
        res.end(`plain text for ${body.tool}`)
        return
      case 'empty':
        res.writeHead(204)
        res.end()
        return
      case 'image':
        res.writeHead(200, { 'content-type': 'image/png' })
        res.end(Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'))
        return
      case 'json-array':
        return json(res, 200, [1, 2, 3])
      case 'error-result':
        return json(res, 200, { content: 'the city is unknown', is_error: true })
      case 'blocks':
        return json(res, 200, { content: [{ type: 'text', text: 'first' }, { type: 'text', text: 'second' }] })
      case 'redirect':
        res.writeHead(302, { location: '/ok' })
        res.end()
        return
      case 'flaky': {
        const seen = (this.#attempts.get(key) ?? 0) + 1
        this.#attempts.set(key, seen)
        if (seen <= Number(a)) {
          res.writeHead(Number(b), { 'content-type': 'text/plain' })
          res.end(`failure ${seen}`)
          return
        }
        return ok()
      }
      case 'retry-after': {
        const seen = (this.#attempts.get(key) ?? 0) + 1
        this.#attempts.set(key, seen)
        if (seen === 1) {
          res.writeHead(503, { 'retry-after': a, 'content-type': 'text/plain' })
          res.end('busy')
          return
        }
        return ok()
      }
      default:
        res.writeHead(404, { 'content-type': 'text/plain' })
        res.end(`no such test route ${path}`)
    }
  }
}

/** Waits until a paused response can take more, or is gone; leaves no listener behind. */
function drainOrClose (res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.on('drain', done)
    res.on('close', done)
  })
}

function json (res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

export async function startWebhookServer (): Promise<WebhookServer> {
  return await new WebhookServer().start()
}
