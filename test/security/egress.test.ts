import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { LookupAddress } from 'node:dns'
import { backends } from '../support/backends.js'
import { auth, TENANT_A } from '../support/app.js'
import { startHarness, type Harness } from '../support/harness.js'
import { resultText, toolResults, turnNumber, type RecordedRequest } from '../support/fake-messages-api.js'

// SPEC §8 egress, under attack: a tool or callback host name that resolved to a public address
// when it was registered and resolves to an internal one when it is called (DNS rebinding) is
// refused on the address actually connected to, on every attempt, and the target never sees a
// connection. Metadata and link-local addresses stay refused whatever TOOL_EGRESS_ALLOW says.
//
// Every name resolves through a resolver the test controls. The refusals below happen before any
// packet is sent; where a refusal that failed to happen would connect, it connects to the canary
// on 127.0.0.1 / [::1] (loopback cases) or would try the address itself (metadata cases).

/** Public when registered: the check at registration passes; nothing ever connects to it. */
const PUBLIC = '93.184.215.14'
const ALWAYS_REFUSED = 'a cloud metadata or link-local address, which is always refused'
const NOT_LISTED = 'a private or loopback address not listed in TOOL_EGRESS_ALLOW'

/** Where a rebound name points at call time, and what the refusal says it is. */
const REBINDINGS: Array<[string, string]> = [
  ['127.0.0.1', NOT_LISTED],
  ['0.0.0.0', NOT_LISTED],
  ['::1', NOT_LISTED],
  ['::ffff:127.0.0.1', NOT_LISTED],
  ['::ffff:7f00:1', NOT_LISTED],
  // Site-local (fec0::/10): deprecated, but routed inside some networks.
  ['fec0::1', NOT_LISTED],
  ['169.254.169.254', ALWAYS_REFUSED],
  ['::ffff:169.254.169.254', ALWAYS_REFUSED],
  ['fd00:ec2::254', ALWAYS_REFUSED],
  ['100.100.100.200', ALWAYS_REFUSED],
  ['fe80::1', ALWAYS_REFUSED]
]
const METADATA = ['169.254.169.254', '::ffff:169.254.169.254', 'fd00:ec2::254', '100.100.100.200', 'fe80::1', '64:ff9b::a9fe:a9fe']

/** Host names the test resolves, changed at will, and every lookup made. */
class TestDns {
  readonly #answers = new Map<string, string[]>()
  readonly lookups: string[] = []
  readonly resolver = (hostname: string, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void): void => {
    this.lookups.push(hostname)
    const addresses = this.#answers.get(hostname)
    if (addresses === undefined) {
      callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), [])
      return
    }
    callback(null, addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })))
  }

  set (hostname: string, ...addresses: string[]): void {
    this.#answers.set(hostname, addresses)
  }

  lookupsOf (hostname: string): number {
    return this.lookups.filter((h) => h === hostname).length
  }
}

/**
 * A tool and callback server listening on 127.0.0.1 and [::1] on one port, counting every TCP
 * connection it accepts. It closes each connection after its answer, so that every attempt needs a
 * new one (and so a new lookup and check): a kept-alive connection would be reused, to the address
 * that was checked when it was opened.
 */
class Canary {
  connections = 0
  requests: string[] = []
  handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', connection: 'close' }).end(JSON.stringify({ content: 'reached' }))
  }

  readonly #servers: Server[] = []
  port = 0

  async start (): Promise<this> {
    for (const host of ['127.0.0.1', '::1']) {
      const server = createServer((req, res) => {
        this.requests.push(req.url ?? '')
        req.resume()
        req.on('end', () => this.handler(req, res))
      })
      server.on('connection', (socket: Socket) => {
        this.connections++
        socket.on('error', () => {})
      })
      await new Promise<void>((resolve) => server.listen({ host, port: this.port, ipv6Only: host === '::1' }, resolve))
      this.port = (server.address() as AddressInfo).port
      this.#servers.push(server)
    }
    return this
  }

  async close (): Promise<void> {
    for (const server of this.#servers) {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/** The model asks once for `name`, then ends. */
function callOnce (name: string) {
  return (request: RecordedRequest) => turnNumber(request) === 1
    ? { content: [{ type: 'tool_use' as const, name, input: { q: 'x' } }] }
    : { content: [{ type: 'text' as const, text: 'ok' }] }
}

/** Runs one call of `name`; answers the tool_result the model got and the call's completed event. */
async function callTool (h: Harness, name: string) {
  h.model.respond = callOnce(name)
  const { body } = await h.startRun({ input: 'go', tools: [name] })
  expect(body.status, JSON.stringify(body.error)).toBe('completed')
  const [result] = toolResults(h.model.requests[h.model.requests.length - 1]!)
  const completed = (await h.events(body.id)).find((e) => e.type === 'tool_call.completed')!
  return { result: result!, text: resultText(result!), completed }
}

async function registerAt (h: Harness, name: string, url: string, fields: Record<string, unknown> = {}) {
  return await h.app.inject({
    method: 'PUT',
    url: `/tools/${name}`,
    headers: auth(TENANT_A),
    payload: { description: name, input_schema: { type: 'object' }, url, effect: 'read_only', max_attempts: 3, ...fields }
  })
}

/** `url` is refused both as a tool's URL and as a run's callback_url, saying `why`. */
async function expectUnregistrable (h: Harness, url: string, why: string): Promise<void> {
  const tool = await registerAt(h, 'refused', url)
  expect(tool.statusCode).toBe(400)
  expect(tool.json()).toMatchObject({ code: 'TOOL_ERR_URL_NOT_ALLOWED' })
  expect(tool.json().message).toContain(why)
  const run = await h.startRun({ input: 'x', callback_url: url })
  expect(run.status).toBe(400)
  expect(run.body).toMatchObject({ code: 'RUN_ERR_CALLBACK_URL' })
  expect(run.body.message).toContain(why)
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`egress under DNS rebinding: ${backend.name}`, () => {
    const dns = new TestDns()
    let canary: Canary
    let h: Harness
    beforeAll(async () => {
      canary = await new Canary().start()
      // Nothing private is allowed here: not even loopback.
      h = await startHarness(backend, { env: { TOOL_EGRESS_ALLOW: '', CALLBACK_MAX_ATTEMPTS: '3', CALLBACK_RETRY_BASE_MS: '20' }, resolver: dns.resolver })
      expect((await h.app.inject({ method: 'POST', url: '/callbacks/rotate-secret', headers: auth(TENANT_A) })).statusCode).toBe(200)
    })
    afterAll(async () => {
      await h?.close()
      await canary?.close()
    })
    beforeEach(() => {
      canary.connections = 0
      canary.requests.length = 0
    })

    it.each(REBINDINGS)('a tool whose name rebinds to %s is refused at call time: an is_error result, no connection', async (address, why) => {
      const host = `tool-${address.replace(/[^0-9a-f]/g, '-')}.rebind.test`
      const name = `rebind_${address.replace(/[^0-9a-f]/g, '_')}`
      dns.set(host, PUBLIC)
      const registered = await registerAt(h, name, `http://${host}:${canary.port}/hook`)
      expect(registered.statusCode, registered.body).toBe(201)
      dns.set(host, address)
      const lookupsBefore = dns.lookupsOf(host)

      const { result, text, completed } = await callTool(h, name)
      expect(result.is_error).toBe(true)
      expect(text).toBe(`Tool ${name} was not called: ${host} resolves to an address that is not allowed by the egress policy: it is ${why}`)
      // Refused, not retried (although read_only with 3 attempts), and it says which host, not which address.
      expect(completed.data).toMatchObject({ is_error: true, attempts: 1, outcome: 'refused', status: null })
      expect(text).not.toContain(address)
      expect(dns.lookupsOf(host)).toBeGreaterThan(lookupsBefore)
      expect(canary.connections).toBe(0)
    })

    it.each(['http://[fec0::1]/', 'http://[FEC0::5]:8080/hook', 'http://[feff::ffff:127.0.0.1]/', 'http://[fed0:0:0:1::a9fe:a9fe]/'])('a site-local address (fec0::/10), %s, cannot be registered as a tool or a callback', async (url) => {
      await expectUnregistrable(h, url, NOT_LISTED)
    })

    it('a name with a public and an internal address never reaches the internal one', async () => {
      // Only 127.0.0.1 is on this machine: the refusal is the only way this call ends without reaching it.
      dns.set('mixed.rebind.test', PUBLIC)
      expect((await registerAt(h, 'mixed', `http://mixed.rebind.test:${canary.port}/hook`)).statusCode).toBe(201)
      dns.set('mixed.rebind.test', '127.0.0.1', '169.254.169.254', '::1')
      const { text } = await callTool(h, 'mixed')
      expect(text).toMatch(/^Tool mixed was not called: mixed\.rebind\.test resolves to an address that is not allowed by the egress policy/)
      expect(canary.connections).toBe(0)
    })

    it.each(REBINDINGS)('a callback URL whose name rebinds to %s is refused at every delivery attempt, with no connection', async (address) => {
      const host = `cb-${address.replace(/[^0-9a-f]/g, '-')}.rebind.test`
      dns.set(host, PUBLIC)
      // The name is checked when the run is created (public then), and rebinds while the run goes on.
      h.model.respond = () => {
        dns.set(host, address)
        return { content: [{ type: 'text', text: 'done' }] }
      }
      const { status, body } = await h.startRun({ input: 'x', callback_url: `http://${host}:${canary.port}/callback` })
      expect(status).toBe(200)
      const read = async () => (await h.app.inject({ method: 'GET', url: `/runs/${body.id as string}`, headers: auth(TENANT_A) })).json()
      await expect.poll(async () => (await read()).callback?.status, { timeout: 15_000 }).toBe('failed')
      const { callback } = await read()
      expect(callback.attempts).toBe(3)
      expect(callback.last_error).toMatch(new RegExp(`^The callback was not called: ${host.replace(/\./g, '\\.')} resolves to an address that is not allowed by the egress policy`))
      // Looked up again for each attempt, refused each time.
      expect(dns.lookupsOf(host)).toBeGreaterThanOrEqual(1 + 3)
      expect(canary.connections).toBe(0)
    })
  })

  describe.skipIf(backend.skip)(`metadata stays refused whatever TOOL_EGRESS_ALLOW says: ${backend.name}`, () => {
    const dns = new TestDns()
    let canary: Canary
    let h: Harness
    beforeAll(async () => {
      canary = await new Canary().start()
      h = await startHarness(backend, {
        // Everything, every metadata address by name and by range, and the host name itself.
        env: { TOOL_EGRESS_ALLOW: '0.0.0.0/0,::/0,169.254.0.0/16,169.254.169.254,fd00:ec2::254,fd00::/8,100.100.100.200,100.64.0.0/10,fe80::/10,meta.rebind.test' },
        resolver: dns.resolver
      })
      expect((await h.app.inject({ method: 'POST', url: '/callbacks/rotate-secret', headers: auth(TENANT_A) })).statusCode).toBe(200)
    })
    afterAll(async () => {
      await h?.close()
      await canary?.close()
    })

    it.each(['http://169.254.169.254/latest/meta-data/', 'http://[fd00:ec2::254]/', 'http://100.100.100.200/', 'http://[::ffff:169.254.169.254]/', 'http://[::ffff:a9fe:a9fe]/', 'http://[fe80::1]/', 'http://[64:ff9b::a9fe:a9fe]/'])('%s cannot be registered as a tool or a callback', async (url) => {
      await expectUnregistrable(h, url, ALWAYS_REFUSED)
    })

    it('a listed name reaches loopback (the allow list works), but never a metadata address it resolves to', async () => {
      dns.set('meta.rebind.test', '127.0.0.1')
      expect((await registerAt(h, 'listed', `http://meta.rebind.test:${canary.port}/hook`)).statusCode).toBe(201)
      const reached = await callTool(h, 'listed')
      expect(reached.text).toBe('reached')
      expect(canary.connections).toBe(1)

      for (const address of METADATA) {
        dns.set('meta.rebind.test', address)
        const { result, text, completed } = await callTool(h, 'listed')
        expect(result.is_error, address).toBe(true)
        expect(text).toBe(`Tool listed was not called: meta.rebind.test resolves to an address that is not allowed by the egress policy: it is ${ALWAYS_REFUSED}`)
        expect(completed.data).toMatchObject({ attempts: 1, outcome: 'refused' })
      }
      expect(canary.connections).toBe(1)
    })
  })

  describe.skipIf(backend.skip)(`a retried call is checked again: ${backend.name}`, () => {
    const dns = new TestDns()
    let canary: Canary
    let h: Harness
    // 127.0.0.2 is loopback too, but not listed: refused like 169.254.169.254, for a different reason.
    let secondLoopback: Server
    let secondLoopbackConnections = 0
    beforeAll(async () => {
      canary = await new Canary().start()
      secondLoopback = createServer((_req, res) => { res.end('{"content":"reached 127.0.0.2"}') })
      secondLoopback.on('connection', () => { secondLoopbackConnections++ })
      await new Promise<void>((resolve) => secondLoopback.listen({ host: '127.0.0.2', port: canary.port }, resolve))
      h = await startHarness(backend, { env: { TOOL_EGRESS_ALLOW: '127.0.0.1' }, resolver: dns.resolver })
    })
    afterAll(async () => {
      await h?.close()
      await canary?.close()
      secondLoopback?.closeAllConnections()
      await new Promise<void>((resolve) => secondLoopback ? secondLoopback.close(() => resolve()) : resolve())
    })

    it.each([['127.0.0.2', NOT_LISTED], ['169.254.169.254', ALWAYS_REFUSED], ['::ffff:127.0.0.2', NOT_LISTED]])('a name that rebinds to %s between attempt 1 (503) and attempt 2 is refused on attempt 2', async (address, why) => {
      const host = `retry-${address.replace(/[^0-9a-f]/g, '-')}.rebind.test`
      const name = `retry_${address.replace(/[^0-9a-f]/g, '_')}`
      dns.set(host, PUBLIC)
      expect((await registerAt(h, name, `http://${host}:${canary.port}/flaky`, { effect: 'read_only', max_attempts: 3 })).statusCode).toBe(201)
      dns.set(host, '127.0.0.1')
      canary.connections = 0
      canary.requests.length = 0
      secondLoopbackConnections = 0
      // Attempt 1 reaches the tool (127.0.0.1 is allowed), which answers 503 and closes the
      // connection; by the time the call is retried, its name points elsewhere.
      canary.handler = (_req, res) => {
        dns.set(host, address)
        res.writeHead(503, { connection: 'close' }).end('busy')
      }
      const { result, text, completed } = await callTool(h, name)
      expect(result.is_error).toBe(true)
      expect(text).toBe(`Tool ${name} was not called: ${host} resolves to an address that is not allowed by the egress policy: it is ${why}`)
      expect(completed.data).toMatchObject({ attempts: 2, outcome: 'refused' })
      expect(canary.requests).toEqual(['/flaky'])
      expect(canary.connections).toBe(1)
      expect(secondLoopbackConnections).toBe(0)
    })
  })
}
