import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http'
import { closeLocal, listenLocal } from '../support/local-server.js'

/** What the proxy does with one request (numbered from 0 in arrival order). */
export type ProxyMode =
  | { readonly kind: 'forward' }
  /** Forwards it, then cuts the connection once this many bytes of the answer's body went through. */
  | { readonly kind: 'cut', readonly afterBytes: number }
  /** Forwards it and lets the service act on it, then drops the connection before any answer. */
  | { readonly kind: 'drop-answer' }
  /** Answers it itself, without forwarding. */
  | { readonly kind: 'answer', readonly status: number, readonly headers: Record<string, string>, readonly body: string }

export interface SeenRequest {
  readonly method: string
  readonly url: string
  readonly headers: IncomingHttpHeaders
}

/**
 * An HTTP proxy on 127.0.0.1 in front of the service, as a flaky network or load balancer would
 * be: it can cut an answer mid-body (a dropped event stream), drop a connection after the service
 * acted, or answer in the service's place (a 429 or 503 from the edge). It records every request.
 */
export class TestProxy {
  readonly seen: SeenRequest[] = []
  mode: (index: number, request: SeenRequest) => ProxyMode = () => ({ kind: 'forward' })
  readonly #server: Server
  readonly #target: URL
  #url = ''

  constructor (target: string) {
    this.#target = new URL(target)
    this.#server = createServer((req, res) => {
      const seen: SeenRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers }
      const mode = this.mode(this.seen.length, seen)
      this.seen.push(seen)
      if (mode.kind === 'answer') {
        req.resume()
        res.writeHead(mode.status, mode.headers)
        res.end(mode.body)
        return
      }
      const upstream = httpRequest({
        host: this.#target.hostname,
        port: this.#target.port,
        method: req.method,
        path: req.url,
        headers: req.headers
      }, (answer) => {
        if (mode.kind === 'drop-answer') {
          answer.resume()
          answer.on('end', () => res.socket?.destroy())
          return
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        res.flushHeaders()
        let sent = 0
        let cut = false
        answer.on('data', (chunk: Buffer) => {
          if (cut) return
          if (mode.kind === 'cut' && sent + chunk.length >= mode.afterBytes) {
            cut = true
            // A cut connection, as a proxy's idle timeout or a lost node makes: what came so far
            // reaches the client, then the connection breaks with no clean end.
            res.write(chunk.subarray(0, Math.max(0, mode.afterBytes - sent)), () => {
              res.socket?.destroy()
              upstream.destroy()
            })
            return
          }
          sent += chunk.length
          res.write(chunk)
        })
        answer.on('end', () => res.end())
      })
      upstream.on('error', () => res.socket?.destroy())
      res.on('close', () => { if (!res.writableFinished) upstream.destroy() })
      req.pipe(upstream)
    })
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
}
