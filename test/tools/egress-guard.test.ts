import { describe, expect, it } from 'vitest'
import { assertAddressAllowed, classifyAddress, createGuardedLookup, parseEgressAllow } from '../../src/tools/egress-guard.js'

describe('egress policy', () => {
  it('classifies addresses in every form', () => {
    const cases: Array<[string, string]> = [
      ['8.8.8.8', 'public'], ['2606:4700::1111', 'public'],
      ['127.0.0.1', 'private'], ['10.0.0.1', 'private'], ['172.16.5.4', 'private'], ['192.168.1.1', 'private'],
      ['100.64.0.1', 'private'], ['0.0.0.0', 'private'], ['::1', 'private'], ['::', 'private'], ['fc00::1', 'private'],
      ['::ffff:127.0.0.1', 'private'], ['::ffff:7f00:1', 'private'], ['64:ff9b::10.0.0.1', 'private'], ['[::1]', 'private'],
      ['169.254.169.254', 'metadata'], ['169.254.0.1', 'metadata'], ['100.100.100.200', 'metadata'],
      ['fd00:ec2::254', 'metadata'], ['fe80::1', 'metadata'], ['::ffff:169.254.169.254', 'metadata'], ['::ffff:a9fe:a9fe', 'metadata'],
      // IPv6 forms that carry an IPv4 address reach that address: judged as it, in every spelling.
      ['64:ff9b::a9fe:a9fe', 'metadata'], ['64:ff9b::169.254.169.254', 'metadata'], ['64:ff9b:1::a9fe:a9fe', 'metadata'],
      ['64:ff9b::a00:5', 'private'], ['64:ff9b::808:808', 'public'], ['::ffff:0:7f00:1', 'private'], ['::ffff:0:169.254.169.254', 'metadata'],
      ['::169.254.169.254', 'metadata'], ['::a00:1', 'private'], ['2002:a9fe:a9fe::1', 'metadata'], ['2002:0a00:0001::', 'private'],
      ['2001::1', 'private'], ['fe80::1%eth0', 'metadata'], ['1:2:3:4:5:6:7:8', 'public'],
      // Site-local (fec0::/10, deprecated but routed in some networks), in every spelling; its
      // neighbours are link-local (febf:…, always refused) and multicast (ff00::, private).
      ['fec0::1', 'private'], ['FEC0::1', 'private'], ['[fec0::1]', 'private'], ['fec0::1%eth0', 'private'],
      ['fed0:1:2::3', 'private'], ['feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'private'], ['fec0::ffff:10.0.0.1', 'private'],
      ['fec0::ffff:8.8.8.8', 'private'], ['fec0::a9fe:a9fe', 'private'], ['[fec0::ffff:808:808]', 'private'],
      ['febf:ffff::1', 'metadata'], ['ff00::1', 'private']
    ]
    for (const [address, expected] of cases) expect(classifyAddress(address), address).toBe(expected)
  })

  it('allows private addresses only when listed, and metadata never', () => {
    const policy = parseEgressAllow('10.0.0.0/8,tools.internal,169.254.169.254')
    expect(() => assertAddressAllowed(policy, '10.9.9.9', '10.9.9.9')).not.toThrow()
    expect(() => assertAddressAllowed(policy, '192.168.0.1', 'tools.internal')).not.toThrow()
    expect(() => assertAddressAllowed(policy, '192.168.0.1', 'other.internal')).toThrow(/not listed in TOOL_EGRESS_ALLOW/)
    expect(() => assertAddressAllowed(policy, '169.254.169.254', 'tools.internal')).toThrow(/always refused/)
    expect(() => assertAddressAllowed(policy, '::ffff:10.1.1.1', '::ffff:10.1.1.1')).not.toThrow()
  })

  it('refuses site-local addresses (fec0::/10) unless listed, like the other private ranges', () => {
    const none = parseEgressAllow('')
    for (const address of ['fec0::1', '[fec0::1]', 'FEC0:0:0:1::5', 'feff::ffff:8.8.8.8']) {
      expect(() => assertAddressAllowed(none, address, 'tools.internal'), address).toThrow(/private or loopback address not listed in TOOL_EGRESS_ALLOW/)
    }
    const listed = parseEgressAllow('fec0::/10,[fec1::7]')
    expect(() => assertAddressAllowed(listed, 'fec0::1', 'fec0::1')).not.toThrow()
    expect(() => assertAddressAllowed(listed, '[feff::1]', 'tools.internal')).not.toThrow()
    expect(() => assertAddressAllowed(parseEgressAllow('fec1::7'), 'fec1::8', 'fec1::8')).toThrow(/not listed/)
  })

  it('connect-time lookup hands back only allowed addresses, and fails when none is', async () => {
    const lookup = createGuardedLookup(parseEgressAllow(''))
    const result = await new Promise<{ err: NodeJS.ErrnoException | null, address: unknown }>((resolve) => {
      lookup('localhost', { all: true }, (err, address) => resolve({ err, address }))
    })
    expect(result.err).toMatchObject({ code: 'ERR_EGRESS_DENIED' })
    expect(result.err!.message).toBe('localhost resolves to an address that is not allowed by the egress policy: it is a private or loopback address not listed in TOOL_EGRESS_ALLOW')
    expect((result.err as unknown as { address: string }).address).toMatch(/^(127\.0\.0\.1|::1)$/)

    const allowing = createGuardedLookup(parseEgressAllow('127.0.0.0/8'))
    const allowed = await new Promise<{ err: NodeJS.ErrnoException | null, address: unknown }>((resolve) => {
      allowing('localhost', { family: 4 }, (err, address) => resolve({ err, address }))
    })
    expect(allowed.err).toBeNull()
    expect(allowed.address).toBe('127.0.0.1')
  })
})
