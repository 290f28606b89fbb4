/**
 * How deep a JSON document from outside (a request body, a model's stream event or tool input)
 * may nest objects and arrays. Far beyond anything real, and far short of what would overflow the
 * stack of the code that walks a document later (checks, hashing, JSON.stringify when storing).
 */
export const MAX_JSON_DEPTH = 100

/** Whether `value` nests objects and arrays more than `max` levels deep; walks it without recursion. */
export function nestsDeeperThan (value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]]
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!
    if (typeof current !== 'object' || current === null) continue
    if (depth + 1 > max) return true
    for (const child of Object.values(current)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1])
    }
  }
  return false
}
