import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** How a path of the health tool server answers. */
export type Behaviour = 'ok' | 'reset' | 'is_error' | number | { delayMs: number }

/**
 * A tool server on 127.0.0.1 that counts every TCP connection and every request per path, so a
 * test can tell that a call was never sent: no request, and no connection either. Each path
 * (`/name`) answers as `behave` says; `ok` answers the input it was given, and with `echo` the
 * input's `q` picks the behaviour (`{ "q": "500" }`, `{ "q": "reset" }`...).
 */
export class HealthToolServer {
  readonly #server: Server
  readonly behaviours = new Map<string, Behaviour>()
  readonly requests = new Map<string, number>()
  connections = 0
  url = ''

  constructor () {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const path = (req.url ?? '/').split('?')[0]!
        this.requests.set(path, (this.requests.get(path) ?? 0) + 1)
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as { input?: Record<string, unknown> }
        let behaviour = this.behaviours.get(path) ?? 'ok'
        if (behaviour === 'ok' && path === '/echo') behaviour = pick(String(body.input?.q ?? 'ok'))
        const answer = (): void => {
          if (behaviour === 'reset') {
            req.socket.destroy()
          } else if (behaviour === 'is_error') {
            json(res, 200, { content: 'no such city', is_error: true })
          } else if (typeof behaviour === 'number') {
            res.writeHead(behaviour, { 'content-type': 'text/plain' })
            res.end(`status ${behaviour}`)
          } else {
            json(res, 200, { content: `answer ${this.requests.get(path)} for ${JSON.stringify(body.input)}` })
          }
        }
        if (typeof behaviour === 'object') setTimeout(() => { behaviour = 'ok'; answer() }, behaviour.delayMs)
        else answer()
      })
    })
    this.#server.on('connection', () => { this.connections++ })
  }

  async start (): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`
    return this
  }

  requestsTo (path: string): number {
    return this.requests.get(path) ?? 0
  }

  async close (): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }
}

function pick (q: string): Behaviour {
  if (q === 'reset' || q === 'is_error') return q
  if (/^\d{3}$/.test(q)) return Number(q)
  if (/^slow\d+$/.test(q)) return { delayMs: Number(q.slice(4)) }
  return 'ok'
}

function json (res: import('node:http').ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}
