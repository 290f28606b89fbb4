import pino from 'pino'
import { Writable } from 'node:stream'
import { loggerOptions } from '../../src/logger.js'

/** A logger that writes nowhere. */
export const silentLog = pino({ level: 'silent' })

/**
 * A logger configured as the service's (same redaction) whose lines the test can read, e.g. to
 * prove that a secret never reaches the log.
 */
export function capturingLog (level = 'trace'): { log: pino.Logger, lines: () => string[] } {
  const chunks: string[] = []
  const stream = new Writable({
    write (chunk, _encoding, done) {
      chunks.push(chunk.toString())
      done()
    }
  })
  return {
    log: pino(loggerOptions(level), stream),
    lines: () => chunks.join('').split('\n').filter((l) => l.length > 0)
  }
}
