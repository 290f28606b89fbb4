import type { TestApp } from './app.js'

/** One route the app answers: a method and its URL pattern, as registered (`/runs/:id`). */
export interface AppRoute {
  readonly method: string
  readonly url: string
  /** `GET /runs/:id`: the key test tables are written against. */
  readonly key: string
}

const LINE = /^((?:│ {3}| {4})*)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/

/**
 * Every route the app has, read from the app itself (its router's `printRoutes`), so that a test
 * that must cover every route notices one added later. HEAD routes Fastify adds beside each GET
 * are left out: they answer as their GET does.
 */
export function appRoutes (app: TestApp): AppRoute[] {
  const tree = app.printRoutes({ commonPrefix: false })
  const stack: string[] = []
  const routes = new Map<string, AppRoute>()
  for (const line of tree.split('\n')) {
    if (line.trim() === '') continue
    const match = LINE.exec(line)
    if (match === null) throw new Error(`appRoutes: cannot read the route tree line ${JSON.stringify(line)}`)
    const depth = match[1]!.length / 4
    const url = (stack[depth - 1] ?? '') + match[2]!
    stack[depth] = url
    stack.length = depth + 1
    for (const method of (match[3] ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '' && m !== 'HEAD')) {
      const key = `${method} ${url}`
      routes.set(key, { method, url, key })
    }
  }
  if (routes.size === 0) throw new Error('appRoutes: found no routes at all')
  return [...routes.values()].sort((a, b) => a.key.localeCompare(b.key))
}

/** A URL with its `:params` filled in from `params`. */
export function fillRoute (url: string, params: Readonly<Record<string, string>>): string {
  return url.replace(/:(\w+)/g, (whole, name: string) => {
    const value = params[name]
    if (value === undefined) throw new Error(`fillRoute: no value for ${whole} in ${url}`)
    return encodeURIComponent(value)
  })
}
