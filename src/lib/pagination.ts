import { AppError } from '../errors.js'

/** Encodes a list position as an opaque cursor: callers must not build or read them. */
export function encodeCursor (position: readonly unknown[]): string {
  return Buffer.from(JSON.stringify(position), 'utf8').toString('base64url')
}

/**
 * Decodes a cursor made by {@link encodeCursor}, checking each part against `shape`
 * (`'string'` or `'number'`). A cursor that is not one of ours is a 400, not a 500.
 */
export function decodeCursor (cursor: string, shape: ReadonlyArray<'string' | 'number'>): unknown[] {
  let position: unknown
  try {
    position = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    position = undefined
  }
  if (!Array.isArray(position) || position.length !== shape.length || position.some((v, i) => !hasType(v, shape[i]!))) {
    throw new AppError('REQUEST_ERR_INVALID_CURSOR', '`after` is not a cursor this list handed out: pass the `next_cursor` of the previous page unchanged, or leave `after` out to start from the top.')
  }
  return position
}

function hasType (value: unknown, type: 'string' | 'number'): boolean {
  // Numbers in cursors are ids and timestamps: whole, and within what every database stores;
  // strings are ids and names, which never hold NUL (that PostgreSQL text cannot hold either).
  return type === 'string' ? typeof value === 'string' && !value.includes('\u0000') : Number.isSafeInteger(value)
}
