const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g

/**
 * Text the Messages API accepts: a lone UTF-16 surrogate (half an emoji, from a tool's `\ud83d`
 * escape or a careless cut) makes it refuse the whole request, and every later one with it.
 */
export function wellFormed (text: string): string {
  return text.replace(LONE_SURROGATE, '\uFFFD')
}

/** The first `max` UTF-16 units of `text`, never ending on half a surrogate pair. */
export function cutText (text: string, max: number): string {
  if (text.length <= max) return text
  const end = /[\uD800-\uDBFF]/.test(text.charAt(max - 1)) ? max - 1 : max
  return text.slice(0, end)
}

/** Whether some string inside `value` holds half a UTF-16 surrogate pair. */
export function hasLoneSurrogate (value: unknown): boolean {
  if (typeof value === 'string') return value.replace(LONE_SURROGATE, '') !== value
  if (Array.isArray(value)) return value.some(hasLoneSurrogate)
  if (typeof value === 'object' && value !== null) return Object.values(value).some(hasLoneSurrogate)
  return false
}
