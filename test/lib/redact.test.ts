import { describe, expect, it } from 'vitest'
import pino from 'pino'
import { Writable } from 'node:stream'
import { APIError } from '@anthropic-ai/sdk'
import { Redactor, REDACTED, secretForms } from '../../src/lib/redact.js'
import { loggerOptions, redactLogs } from '../../src/logger.js'

const KEY = 'sk-ant-api03-SECRET-7d1f0c2b9e'
const TOKEN = 'tok_9f8e7d6c5b4a'

describe('redactor', () => {
  const redactor = new Redactor([KEY, TOKEN])

  it('replaces every secret, as it is and in the forms it is echoed in', () => {
    expect(redactor.redact(`x-api-key: ${KEY}, again ${KEY}; token=${TOKEN}`)).toBe(`x-api-key: ${REDACTED}, again ${REDACTED}; token=${REDACTED}`)
    const odd = 'p@ss/w "rd" +1'
    const oddOne = new Redactor([odd])
    // URL-encoded (a query string), escaped in JSON (an echoed body).
    expect(oddOne.redact(`?key=${encodeURIComponent(odd)}&x=1`)).toBe(`?key=${REDACTED}&x=1`)
    expect(oddOne.redact(JSON.stringify({ headers: { authorization: odd } }))).toBe(`{"headers":{"authorization":"${REDACTED}"}}`)
    // Inside base64, whatever comes before it: Basic auth of any user, a base64 dump of a request.
    for (const user of ['', 'a', 'ab', 'abc', 'someone']) {
      for (const encoding of ['base64', 'base64url'] as const) {
        const basic = Buffer.from(`${user}:${KEY}`).toString(encoding)
        const out = redactor.redact(`Authorization: Basic ${basic}`)
        expect(out, `${user} ${encoding}`).toContain(REDACTED)
        // What is left is the user's part and a group either side, which holds at most 2 bytes of the key.
        const userChars = Math.ceil((user.length + 1) / 3) * 4
        expect(out.replace('Authorization: Basic ', '').replace(REDACTED, '').length).toBeLessThanOrEqual(userChars + 8)
      }
    }
  })

  it('takes a header value\'s credential apart: a bearer token alone, what a Basic value encodes', () => {
    const bearer = new Redactor([`Bearer ${TOKEN}`])
    expect(bearer.redact(`invalid token ${TOKEN}`)).toBe(`invalid token ${REDACTED}`)
    const basic = new Redactor([`Basic ${Buffer.from('alice:correct-horse-battery').toString('base64')}`])
    expect(basic.redact('no user alice:correct-horse-battery here')).toBe(`no user ${REDACTED} here`)
    expect(basic.redact('password correct-horse-battery refused')).toBe(`password ${REDACTED} refused`)
    // A Standard Webhooks secret's key without its prefix.
    const whsec = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
    expect(new Redactor([whsec]).redact('key MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')).toBe(`key ${REDACTED}`)
  })

  it('leaves ordinary text alone: short values are not looked for, and text without a secret is the same string', () => {
    const short = new Redactor(['eu', 'json', '1234567', '', undefined, null])
    expect(short.empty).toBe(true)
    expect(short.redact('region eu, json, 1234567')).toBe('region eu, json, 1234567')
    const text = 'the Messages API answered 529 overloaded_error: Overloaded'
    expect(redactor.redact(text)).toBe(text)
    expect(secretForms('1234567')).toEqual([])
  })

  it('a longer secret holding a shorter one is replaced whole', () => {
    const nested = new Redactor(['abcdefgh', 'abcdefgh-and-more'])
    expect(nested.redact('abcdefgh-and-more abcdefgh')).toBe(`${REDACTED} ${REDACTED}`)
  })

  it('adds secrets with `with`, keeping its own', () => {
    const tool = redactor.with(['tool-header-value-42', KEY])
    expect(tool.redact(`${KEY} tool-header-value-42`)).toBe(`${REDACTED} ${REDACTED}`)
    expect(redactor.redact('tool-header-value-42')).toBe('tool-header-value-42')
    expect(redactor.with(['short'])).toBe(redactor)
  })

  it('redacts text decoded from any bytes, leaving the rest as it was', () => {
    const bytes = Buffer.concat([Buffer.from([0xff, 0xe2, 0x82]), Buffer.from(` ${KEY} café`), Buffer.from([0x00, 0xc3])])
    expect(redactor.redact(bytes.toString('utf8'))).toBe(Buffer.concat([Buffer.from([0xff, 0xe2, 0x82]), Buffer.from(` ${REDACTED} café`), Buffer.from([0x00, 0xc3])]).toString('utf8'))
    const clean = 'nothing to see'
    expect(redactor.redact(clean)).toBe(clean)
    // A secret that is not ASCII is found too.
    expect(new Redactor(['clé-secrète-ü']).redact(Buffer.from('a clé-secrète-ü b').toString('utf8'))).toBe(`a ${REDACTED} b`)
  })

  it('redacts values through objects and errors, their causes included, copying only what changes', () => {
    const cause = new Error(`401 {"error":{"message":"bad key ${KEY}"}}`)
    const err = new TypeError('the call failed', { cause })
    Object.assign(err, { code: 'X', body: { echoed: [KEY, 'fine'] } })
    const out = redactor.redactValue({ err, runId: 'run_1' })
    expect(out.err).toBeInstanceOf(TypeError)
    expect(out.err).not.toBe(err)
    expect(JSON.stringify({ ...out.err, cause: (out.err.cause as Error).message, stack: out.err.stack })).not.toContain(KEY)
    expect((out.err.cause as Error).message).toBe(`401 {"error":{"message":"bad key ${REDACTED}"}}`)
    expect((out.err as unknown as { body: unknown }).body).toEqual({ echoed: [REDACTED, 'fine'] })
    // The original is untouched; what held nothing is the same object.
    expect(cause.message).toContain(KEY)
    const clean = { err: new Error('nothing'), n: 1 }
    expect(redactor.redactValue(clean)).toBe(clean)
  })
})

describe('log redaction', () => {
  function logger (): { log: pino.Logger, text: () => string } {
    const chunks: string[] = []
    const stream = new Writable({ write (chunk, _encoding, done) { chunks.push(String(chunk)); done() } })
    return { log: pino(loggerOptions('trace'), stream), text: () => chunks.join('') }
  }

  it('a line that carries an error has the secrets taken out of its values, causes and message included', () => {
    const { log, text } = logger()
    redactLogs(log, new Redactor([KEY]))
    // The SDK's error for a gateway that echoed the key: its message and its body both hold it.
    const apiError = APIError.generate(401, { error: { type: 'authentication_error', message: `invalid x-api-key ${KEY}` } }, undefined, new Headers())
    const err = new Error('the Messages API answered 401', { cause: apiError })
    log.warn({ err, step: 1 }, 'model call failed; retrying')
    log.error(apiError)
    const child = log.child({ runId: 'run_1' })
    child.error({ err: apiError, detail: `said ${KEY}` }, 'from a child')
    const lines = text()
    expect(lines).toContain('model call failed; retrying')
    expect(lines).toContain('authentication_error')
    expect(lines).toContain(REDACTED)
    expect(lines).not.toContain(KEY)
    expect(text().trim().split('\n')).toHaveLength(3)
    // The error keeps its class in the line.
    expect(JSON.parse(lines.split('\n')[1]!).err.type).toBe(apiError.constructor.name)
  })

  it('without the secrets, or for a line without an error, the line is written as it is', () => {
    const { log, text } = logger()
    log.warn({ err: new Error(`said ${KEY}`) }, 'before the secrets are known')
    redactLogs(log, new Redactor([KEY]))
    log.info({ note: `said ${KEY}` }, 'no error here')
    const lines = text().trim().split('\n')
    expect(lines).toHaveLength(2)
    for (const line of lines) expect(line).toContain(KEY)
  })
})
