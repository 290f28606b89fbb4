import { createHmac, timingSafeEqual } from 'node:crypto'

/** How far a signed message's timestamp may be from now, either way (as Standard Webhooks libraries allow). */
export const SIGNATURE_TOLERANCE_MS = 5 * 60_000

/** The headers of a signed request, as received: those of Standard Webhooks are read. */
export type SignedHeaders = Readonly<Record<string, string | string[] | undefined>>

/**
 * Checks a Standard Webhooks signature (HMAC-SHA256 over `id.timestamp.body`, `v1,<base64>`
 * entries separated by spaces) against `secrets` (`whsec_<base64>`): true when one entry matches
 * one secret and the timestamp is within {@link SIGNATURE_TOLERANCE_MS} of `now`. What a tool
 * posting a result later signs with its own secret (SPEC §13).
 */
export function verifySignature (headers: SignedHeaders, body: string, secrets: readonly string[], now: number = Date.now()): boolean {
  const id = one(headers['webhook-id'])
  const timestamp = one(headers['webhook-timestamp'])
  const signature = one(headers['webhook-signature'])
  if (id === '' || !/^\d{1,15}$/.test(timestamp) || signature === '') return false
  if (Math.abs(now - Number(timestamp) * 1000) > SIGNATURE_TOLERANCE_MS) return false
  const given = signature.split(' ').filter((s) => s.startsWith('v1,')).map((s) => Buffer.from(s.slice(3), 'base64'))
  if (given.length === 0) return false
  const signed = `${id}.${timestamp}.${body}`
  return secrets.some((secret) => {
    const expected = createHmac('sha256', Buffer.from(secret.startsWith('whsec_') ? secret.slice(6) : secret, 'base64')).update(signed).digest()
    return given.some((g) => g.length === expected.length && timingSafeEqual(g, expected))
  })
}

function one (value: string | string[] | undefined): string {
  return (Array.isArray(value) ? value[0] : value) ?? ''
}
