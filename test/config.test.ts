import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.js'
import { configError } from './support/config.js'

const KEY = 'sk_0123456789abcdef'

describe('configuration', () => {
  it('has the documented defaults', () => {
    const config = loadConfig({})
    expect(config).toMatchObject({
      PORT: 3000,
      DATA_DIR: './data',
      DEFAULT_MODEL: 'claude-sonnet-4-6',
      LOG_LEVEL: 'info',
      TOOL_MAX_RESPONSE_BYTES: 1_048_576,
      TOOL_MAX_RESULT_CHARS: 50_000,
      SECRET_ROTATION_WINDOW_MS: 86_400_000
    })
    expect(config.DATABASE_URL).toBeUndefined()
  })

  it('names the variable of a bad value, without echoing the value', () => {
    expect(configError({ PORT: 'abc' })).toMatch(/^PORT must be integer/)
    expect(configError({ PORT: '70000' })).toMatch(/^PORT must be <= 65535/)
    expect(configError({ LOG_LEVEL: 'loud' })).toMatch(/LOG_LEVEL/)
    const message = configError({ DATABASE_URL: 'mysql://user:hunter2@db/x' })
    expect(message).toMatch(/DATABASE_URL/)
    expect(message).not.toContain('hunter2')
  })

  it('coerces numeric strings from the environment', () => {
    expect(loadConfig({ PORT: '8080', TOOL_MAX_RESULT_CHARS: '1000' })).toMatchObject({ PORT: 8080, TOOL_MAX_RESULT_CHARS: 1000 })
  })

  describe('open mode (no API_KEYS)', () => {
    it('listens on loopback only', () => {
      expect(loadConfig({}).listenHost).toBe('127.0.0.1')
      expect(loadConfig({ API_KEYS: `a:${KEY}` }).listenHost).toBe('0.0.0.0')
      expect(loadConfig({ API_KEYS: `a:${KEY}`, HOST: '10.1.2.3' }).listenHost).toBe('10.1.2.3')
    })

    it('refuses a public HOST without keys', () => {
      expect(configError({ HOST: '0.0.0.0' })).toMatch(/HOST=0.0.0.0 needs API_KEYS/)
    })

    it('refuses to start in production without keys', () => {
      expect(configError({ NODE_ENV: 'production' })).toMatch(/API_KEYS is empty but NODE_ENV=production/)
      expect(() => loadConfig({ NODE_ENV: 'production', API_KEYS: `a:${KEY}` })).not.toThrow()
    })
  })

  describe('API_KEYS', () => {
    it('maps each key to its tenant, and nothing else to anyone', () => {
      const { keyring } = loadConfig({ API_KEYS: `acme:${KEY}, globex:${KEY}-2 ,acme:${KEY}-3` })
      expect(keyring.size).toBe(3)
      expect(keyring.tenants().sort()).toEqual(['acme', 'globex'])
      expect(keyring.authenticate(KEY)).toBe('acme')
      expect(keyring.authenticate(`${KEY}-2`)).toBe('globex')
      expect(keyring.authenticate(`${KEY}-3`)).toBe('acme')
      expect(keyring.authenticate(`${KEY}-4`)).toBeNull()
      expect(keyring.authenticate('')).toBeNull()
    })

    it('accepts a key given as its SHA-256 digest, so the key itself need not be in the environment', () => {
      const digest = createHash('sha256').update(KEY).digest('hex')
      const { keyring } = loadConfig({ API_KEYS: `acme:sha256:${digest}` })
      expect(keyring.authenticate(KEY)).toBe('acme')
      expect(keyring.authenticate(`sha256:${digest}`)).toBeNull()
    })

    it('refuses malformed entries with a message that never shows the key', () => {
      expect(configError({ API_KEYS: 'just-a-key' })).toMatch(/API_KEYS entry 1 is not a `tenant:key` pair/)
      expect(configError({ API_KEYS: `bad tenant!:${KEY}` })).toMatch(/API_KEYS entry 1: the tenant must match/)
      const short = configError({ API_KEYS: `acme:${KEY},globex:tiny` })
      expect(short).toMatch(/API_KEYS entry 2 \(tenant globex\): the key is shorter than 16 characters/)
      expect(short).not.toContain('tiny')
      expect(configError({ API_KEYS: `acme:${KEY},globex:${KEY}` })).toMatch(/repeats a key/)
    })
  })

  describe('TOOL_EGRESS_ALLOW', () => {
    it('takes hosts, addresses and CIDR ranges', () => {
      const { egressAllow } = loadConfig({ TOOL_EGRESS_ALLOW: 'tools.internal, 10.0.0.0/8,127.0.0.1,fd12::/16' })
      expect([...egressAllow.hosts]).toEqual(['tools.internal'])
      expect(egressAllow.ranges.check('10.2.3.4', 'ipv4')).toBe(true)
      expect(egressAllow.ranges.check('127.0.0.1', 'ipv4')).toBe(true)
      expect(egressAllow.ranges.check('127.0.0.2', 'ipv4')).toBe(false)
      expect(egressAllow.ranges.check('fd12::1', 'ipv6')).toBe(true)
    })

    it('refuses entries it cannot read', () => {
      expect(configError({ TOOL_EGRESS_ALLOW: '10.0.0.0/33' })).toMatch(/TOOL_EGRESS_ALLOW entry "10.0.0.0\/33" has an invalid prefix length/)
      expect(configError({ TOOL_EGRESS_ALLOW: 'http://x' })).toMatch(/TOOL_EGRESS_ALLOW entry "http:\/\/x" is neither/)
    })
  })
})

describe('isolation from the process environment', () => {
  it('reads only the object it is given, never process.env', () => {
    const saved = { ...process.env }
    process.env.API_KEYS = 'leak:sk_leaked_from_process_env'
    process.env.DATABASE_URL = 'postgres://leak@db/x'
    process.env.PORT = '8181'
    try {
      const config = loadConfig({ LOG_LEVEL: 'silent' })
      expect(config.keyring.size).toBe(0)
      expect(config.DATABASE_URL).toBeUndefined()
      expect(config.PORT).toBe(3000)
    } finally {
      for (const name of ['API_KEYS', 'DATABASE_URL', 'PORT']) {
        if (saved[name] === undefined) delete process.env[name]
        else process.env[name] = saved[name]
      }
    }
  })
})
