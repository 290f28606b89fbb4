import { expect } from 'vitest'
import { loadConfig } from '../../src/config.js'
import { ConfigError } from '../../src/errors.js'

/** The message of the ConfigError that loading `env` throws; fails the test if none is thrown. */
export function configError (env: Record<string, string>): string {
  try {
    loadConfig(env)
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return (err as Error).message
  }
  throw new Error('expected a ConfigError')
}
