import { randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { closeLocal, listenLocal } from './local-server.js'

/** One token the server issued. */
export interface IssuedToken {
  readonly clientId: string
  readonly scope: string | null
  /** Date.now() after which the token is refused. */
  expiresAt: number
}

/** One request at the token endpoint, as the server received it (its form, and how the client authenticated). */
export interface TokenRequest {
  readonly form: Record<string, string>
  readonly authorization: string | undefined
}

/**
 * A small real OAuth 2.0 authorization server on 127.0.0.1 for tests: the metadata document of
 * RFC 8414 (`/.well-known/oauth-authorization-server`, where the MCP client looks for it), and a
 * token endpoint that grants `client_credentials` to its one client, authenticated with HTTP Basic
 * (`client_secret_basic`, what the MCP client sends) or in the form (`client_secret_post`). Tokens
 * live `ttlSeconds`; {@link expireTokens} ends them at once, as a server does when it rotates keys.
 */
export class OAuthTestServer {
  readonly tokenRequests: TokenRequest[] = []
  readonly #server: Server
  readonly #tokens = new Map<string, IssuedToken>()
  readonly #client: { id: string, secret: string }
  readonly #ttlSeconds: number
  #url = ''

  constructor (client: { id: string, secret: string }, options: { ttlSeconds?: number } = {}) {
    this.#client = client
    this.#ttlSeconds = options.ttlSeconds ?? 3600
    this.#server = createServer((req, res) => { this.#handle(req, res).catch(() => res.destroy()) })
  }

  /** The issuer (and the origin of its endpoints). */
  get issuer (): string {
    return this.#url
  }

  /** Tokens granted so far. */
  get issued (): number {
    return this.#tokens.size
  }

  async start (): Promise<this> {
    this.#url = await listenLocal(this.#server)
    return this
  }

  async close (): Promise<void> {
    await closeLocal(this.#server)
  }

  /** Whether `token` is one this server issued and still valid: what a resource server asks. */
  verify (token: string): IssuedToken | null {
    const issued = this.#tokens.get(token)
    return issued !== undefined && issued.expiresAt > Date.now() ? issued : null
  }

  /** Every token issued so far expires now. */
  expireTokens (): void {
    for (const token of this.#tokens.values()) token.expiresAt = 0
  }

  async #handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const path = new URL(req.url ?? '/', this.#url).pathname
    if (req.method === 'GET' && (path === '/.well-known/oauth-authorization-server' || path === '/.well-known/openid-configuration')) {
      json(res, 200, {
        issuer: this.#url,
        token_endpoint: `${this.#url}/token`,
        // RFC 8414 requires them, though a client_credentials client never uses the authorization endpoint.
        authorization_endpoint: `${this.#url}/authorize`,
        response_types_supported: ['code'],
        grant_types_supported: ['client_credentials'],
        token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post']
      })
      return
    }
    if (req.method !== 'POST' || path !== '/token') {
      json(res, 404, { error: 'not_found' })
      return
    }
    const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')))
    this.tokenRequests.push({ form, authorization: req.headers.authorization })
    const client = clientOf(req.headers.authorization, form)
    if (client === null || client.id !== this.#client.id || client.secret !== this.#client.secret) {
      json(res, 401, { error: 'invalid_client', error_description: 'Client authentication failed.' }, { 'www-authenticate': 'Basic realm="test"' })
      return
    }
    if (form.grant_type !== 'client_credentials') {
      json(res, 400, { error: 'unsupported_grant_type' })
      return
    }
    const token = randomBytes(16).toString('hex')
    const scope = form.scope ?? null
    this.#tokens.set(token, { clientId: client.id, scope, expiresAt: Date.now() + this.#ttlSeconds * 1000 })
    json(res, 200, { access_token: token, token_type: 'Bearer', expires_in: this.#ttlSeconds, ...(scope === null ? {} : { scope }) }, { 'cache-control': 'no-store' })
  }
}

/** The client's id and secret, from HTTP Basic (form-urlencoded parts, RFC 6749 §2.3.1) or the form. */
function clientOf (authorization: string | undefined, form: Record<string, string>): { id: string, secret: string } | null {
  if (authorization?.startsWith('Basic ') === true) {
    const decoded = Buffer.from(authorization.slice(6), 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon === -1) return null
    return { id: decodeURIComponent(decoded.slice(0, colon)), secret: decodeURIComponent(decoded.slice(colon + 1)) }
  }
  if (form.client_id !== undefined && form.client_secret !== undefined) return { id: form.client_id, secret: form.client_secret }
  return null
}

function json (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
}
