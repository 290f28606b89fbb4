import { BlockList, isIP, type LookupFunction } from 'node:net'
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { ConfigError } from '../errors.js'

/** Where a tool or callback URL may send requests, beyond the public internet. */
export interface EgressAllowList {
  /** Host names (lower case) allowed even though they resolve to private or loopback addresses. */
  readonly hosts: ReadonlySet<string>
  /** Private or loopback ranges that may be reached. */
  readonly ranges: BlockList
  /** The entries as configured, for messages. */
  readonly entries: readonly string[]
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
    const via = isIP(unbracket(hostname)) === 0 ? ` (${hostname} resolves to it)` : ''
    super(`address ${address}${via} is not allowed by the egress policy: it is ${why}`)
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
  ['::', 128], ['::1', 128], ['fc00::', 7], ['ff00::', 8], ['2001:db8::', 32], ['100::', 64]
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
  return { hosts, ranges, entries }
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

/** Reduces IPv4-mapped and NAT64 IPv6 forms to the IPv4 address they carry. */
function normalizeAddress (address: string): string {
  const ip = unbracket(address).toLowerCase()
  if (isIP(ip) !== 6) return ip
  const mapped = /^(?:0{0,4}:){0,5}(?:::)?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(ip) ?? /^64:ff9b::(\d+\.\d+\.\d+\.\d+)$/.exec(ip)
  if (mapped !== null) return mapped[1]!
  const hexMapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(ip)
  if (hexMapped !== null) {
    const high = parseInt(hexMapped[1]!, 16)
    const low = parseInt(hexMapped[2]!, 16)
    return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`
  }
  return ip
}
