import { BlockList, isIP, type LookupFunction } from 'node:net'
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { ConfigError } from '../errors.js'

/** Where a tool or callback URL may send requests, beyond the public internet. */
export interface EgressAllowList {
  /** Host names (lower case) allowed even though they resolve to private or loopback addresses. */
  readonly hosts: ReadonlySet<string>
  /** Private or loopback ranges that may be reached. */
  readonly ranges: BlockList
}

export type AddressClass = 'public' | 'private' | 'metadata'

/**
 * Resolves a host name to all its addresses; the OS resolver (`dns.lookup`) unless a test gives
 * its own, to fail a lookup or to change an answer between two lookups (DNS rebinding).
 */
export type Resolver = (hostname: string, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void

export const systemResolver: Resolver = (hostname, callback) => { dnsLookup(hostname, { all: true }, callback) }

/** Refusal of an address by the egress policy: never dispatched, never retried. */
export class EgressDeniedError extends Error {
  override name = 'EgressDeniedError'
  readonly code = 'ERR_EGRESS_DENIED'
  readonly address: string

  constructor (address: string, hostname: string, addressClass: AddressClass) {
    const why = addressClass === 'metadata'
      ? 'a cloud metadata or link-local address, which is always refused'
      : 'a private or loopback address not listed in TOOL_EGRESS_ALLOW'
    // For a name, say what kind of address it resolves to, not which one: callers must not be able
    // to map internal DNS through our error messages. The address is kept for logs.
    const subject = isIP(unbracket(hostname)) === 0 ? `${hostname} resolves to an address that` : `address ${address}`
    super(`${subject} is not allowed by the egress policy: it is ${why}`)
    this.address = address
  }
}

// Cloud metadata services and link-local ranges: never reachable, whatever the allow list says.
const METADATA = new BlockList()
METADATA.addSubnet('169.254.0.0', 16, 'ipv4')
METADATA.addAddress('100.100.100.200', 'ipv4')
METADATA.addAddress('fd00:ec2::254', 'ipv6')
METADATA.addSubnet('fe80::', 10, 'ipv6')

// Addresses that are not the public internet: loopback, private, shared, reserved and so on.
const PRIVATE = new BlockList()
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4]
] as const) PRIVATE.addSubnet(net, prefix, 'ipv4')
for (const [net, prefix] of [
  ['::', 128], ['::1', 128], ['fc00::', 7], ['ff00::', 8], ['2001:db8::', 32], ['100::', 64],
  // Site-local (deprecated by RFC 3879, yet still routed inside some networks): as private as fc00::/7.
  ['fec0::', 10],
  // Teredo tunnels to IPv4 hosts it hides: refused unless allowed.
  ['2001::', 32]
] as const) PRIVATE.addSubnet(net, prefix, 'ipv6')

/**
 * Parses `TOOL_EGRESS_ALLOW`: comma-separated host names, IP addresses and CIDR ranges that tool
 * and callback URLs may reach although they are private or loopback. Metadata and link-local
 * addresses cannot be allowed.
 */
export function parseEgressAllow (value: string): EgressAllowList {
  const hosts = new Set<string>()
  const ranges = new BlockList()
  const entries = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0)
  for (const entry of entries) {
    const slash = entry.indexOf('/')
    const address = unbracket(slash === -1 ? entry : entry.slice(0, slash))
    const family = isIP(address)
    if (family === 0) {
      if (slash !== -1 || !/^[a-zA-Z0-9.-]+$/.test(entry)) {
        throw new ConfigError(`TOOL_EGRESS_ALLOW entry "${entry}" is neither a host name, an IP address nor a CIDR range (such as 10.0.0.0/8).`)
      }
      hosts.add(entry.toLowerCase())
      continue
    }
    const type = family === 4 ? 'ipv4' : 'ipv6'
    const max = family === 4 ? 32 : 128
    const prefix = slash === -1 ? max : Number(entry.slice(slash + 1))
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) {
      throw new ConfigError(`TOOL_EGRESS_ALLOW entry "${entry}" has an invalid prefix length: use 0 to ${max}.`)
    }
    ranges.addSubnet(address, prefix, type)
  }
  return { hosts, ranges }
}

/** Whether an IP address is public, private (refused unless allowed) or metadata (always refused). */
export function classifyAddress (address: string): AddressClass {
  const ip = normalizeAddress(address)
  const type = isIP(ip) === 4 ? 'ipv4' : 'ipv6'
  if (METADATA.check(ip, type)) return 'metadata'
  if (PRIVATE.check(ip, type)) return 'private'
  return 'public'
}

/**
 * Throws {@link EgressDeniedError} unless the policy lets a request for `hostname` connect to
 * `address`. This is the check made on the address actually connected to.
 */
export function assertAddressAllowed (policy: EgressAllowList, address: string, hostname: string): void {
  const ip = normalizeAddress(address)
  const addressClass = classifyAddress(ip)
  if (addressClass === 'public') return
  if (addressClass === 'private') {
    if (policy.hosts.has(hostname.toLowerCase())) return
    if (policy.ranges.check(ip, isIP(ip) === 4 ? 'ipv4' : 'ipv6')) return
  }
  throw new EgressDeniedError(ip, hostname, addressClass)
}

/**
 * Checks a URL before it is stored: the scheme, and the addresses its host names today. A name
 * that does not resolve is accepted (it is checked again on every connection); a name that
 * resolves to any refused address is not.
 */
export async function checkUrlEgress (policy: EgressAllowList, url: URL, resolver: Resolver = systemResolver): Promise<void> {
  const hostname = unbracket(url.hostname)
  if (isIP(hostname) !== 0) {
    assertAddressAllowed(policy, hostname, hostname)
    return
  }
  if (policy.hosts.has(hostname.toLowerCase())) return
  let addresses: LookupAddress[]
  try {
    addresses = await new Promise<LookupAddress[]>((resolve, reject) => {
      resolver(hostname, (err, result) => err !== null ? reject(err) : resolve(result))
    })
  } catch {
    return
  }
  for (const { address } of addresses) assertAddressAllowed(policy, address, hostname)
}

/**
 * A `lookup` for `net.connect` that only hands back addresses the policy allows, so the socket can
 * only ever connect to those: a name that resolved to a public address when it was registered and
 * resolves to 127.0.0.1 or 169.254.169.254 now is refused (DNS rebinding).
 */
export function createGuardedLookup (policy: EgressAllowList, resolve: Resolver = systemResolver): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, (err, found) => {
      if (err !== null) {
        callback(err, '', 0)
        return
      }
      const family = options.family === 4 || options.family === 6 ? options.family : 0
      const addresses = family === 0 ? found : found.filter((a) => a.family === family)
      let denied: EgressDeniedError | undefined
      const allowed = addresses.filter(({ address }) => {
        try {
          assertAddressAllowed(policy, address, hostname)
          return true
        } catch (error) {
          denied ??= error as EgressDeniedError
          return false
        }
      })
      if (allowed.length === 0) {
        callback(denied ?? new Error(`no address found for ${hostname}`) as NodeJS.ErrnoException, '', 0)
        return
      }
      if (options.all === true) {
        (callback as unknown as (err: null, addresses: LookupAddress[]) => void)(null, allowed)
      } else {
        callback(null, allowed[0]!.address, allowed[0]!.family)
      }
    })
  }
}

/** `[::1]` → `::1`: URL host names keep IPv6 brackets, addresses do not. */
export function unbracket (hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname
}

/**
 * An IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64,
 * 6to4) stands for that IPv4 address: a request to it reaches the IPv4 network, so it is judged as
 * the IPv4 address. Other addresses are returned as written (lower case, without brackets).
 */
function normalizeAddress (address: string): string {
  const ip = unbracket(address).toLowerCase().split('%')[0]!
  if (isIP(ip) !== 6) return ip
  const bytes = ipv6Bytes(ip)
  if (bytes === null) return ip
  const embedded = embeddedIPv4(bytes)
  return embedded ?? ip
}

function embeddedIPv4 (b: number[]): string | null {
  const zero = (from: number, to: number) => b.slice(from, to).every((x) => x === 0)
  const v4 = (at: number) => b.slice(at, at + 4).join('.')
  // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated)
  if (zero(0, 10) && b[10] === 0xff && b[11] === 0xff) return v4(12)
  if (zero(0, 8) && b[8] === 0xff && b[9] === 0xff && b[10] === 0 && b[11] === 0) return v4(12)
  // 64:ff9b::/96 (NAT64, well-known) and 64:ff9b:1::/48 (NAT64, local use)
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b) {
    if (zero(4, 12)) return v4(12)
    if (b[4] === 0 && b[5] === 1) return v4(12)
  }
  // ::a.b.c.d (IPv4-compatible, deprecated), but not :: and ::1 themselves
  if (zero(0, 12) && !(zero(12, 15) && (b[15] === 0 || b[15] === 1))) return v4(12)
  // 2002:aabb:ccdd::/16 (6to4)
  if (b[0] === 0x20 && b[1] === 0x02) return v4(2)
  return null
}

/** The 16 bytes of an IPv6 address (already checked by isIP), or null. */
function ipv6Bytes (ip: string): number[] | null {
  // A dotted IPv4 tail (::ffff:1.2.3.4) is two more groups of hex.
  const text = ip.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_m, a: string, b: string, c: string, d: string) =>
    `${((Number(a) << 8) | Number(b)).toString(16)}:${((Number(c) << 8) | Number(d)).toString(16)}`)
  const halves = text.split('::')
  if (halves.length > 2) return null
  const groups = (part: string) => part === '' ? [] : part.split(':').map((g) => parseInt(g, 16))
  const front = groups(halves[0]!)
  const back = halves.length === 2 ? groups(halves[1]!) : []
  const missing = 8 - front.length - back.length
  if (missing < 0 || (halves.length === 1 && missing !== 0)) return null
  const all = [...front, ...Array.from({ length: missing }, () => 0), ...back]
  if (all.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return null
  return all.flatMap((g) => [g >> 8, g & 0xff])
}
