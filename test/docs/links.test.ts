import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

/**
 * The Markdown pages link to each other by relative paths and `#anchors`; a page moved or a heading
 * renamed breaks them silently on GitHub. Links to the running service (`/docs`) are written as code
 * or absolute URLs, so only relative links are checked here.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

interface Files {
  exists: (path: string) => boolean
  /** A Markdown file's text; called only for paths that exist. */
  read: (path: string) => string
}

const repository: Files = {
  exists: (path) => existsSync(join(ROOT, path)),
  read: (path) => readFileSync(join(ROOT, path), 'utf8')
}

/** The pages checked, as paths from the repository's root. */
function pages (): string[] {
  const docs = readdirSync(join(ROOT, 'docs')).filter((name) => name.endsWith('.md')).sort()
  return ['README.md', 'CONTRIBUTING.md', 'SECURITY.md', 'bench/README.md', ...docs.map((name) => `docs/${name}`)]
}

/** The text with fenced code blocks blanked out, line for line: a `#` or a link in them is code. */
function withoutFences (markdown: string): string {
  const lines: string[] = []
  let fence: string | null = null
  for (const line of markdown.split('\n')) {
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1]
    if (fence === null && marker !== undefined) {
      fence = marker
      lines.push('')
    } else if (fence !== null) {
      if (marker !== undefined && marker[0] === fence[0] && marker.length >= fence.length && line.trim() === marker) fence = null
      lines.push('')
    } else {
      lines.push(line)
    }
  }
  return lines.join('\n')
}

/** The text with fenced code blocks, code spans and HTML comments blanked out: links in them are not links. */
function withoutCode (markdown: string): string {
  return withoutFences(markdown)
    .replace(/<!--[\s\S]*?-->/g, ' ')
    .replace(/``[\s\S]*?``|`[^`]*`/g, ' ')
}

/** The targets of inline links and images, and of reference definitions, in document order. */
function linkTargets (markdown: string): string[] {
  const text = withoutCode(markdown)
  const targets: string[] = []
  for (const match of text.matchAll(/\[(?:[^[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g)) {
    targets.push(match[1]!.replace(/^<|>$/g, ''))
  }
  for (const match of text.matchAll(/^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)/gm)) {
    targets.push(match[1]!.replace(/^<|>$/g, ''))
  }
  return targets
}

/** GitHub's anchor of a heading: lower-case, only letters, digits, spaces, `-` and `_` kept, spaces to `-`. */
function slug (heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-')
}

/** Every anchor a page has: its headings' slugs (repeats numbered as GitHub does) and explicit HTML ids. */
function anchors (markdown: string): Set<string> {
  const found = new Set<string>()
  const seen = new Map<string, number>()
  for (const match of withoutFences(markdown).matchAll(/^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/gm)) {
    // A link in a heading counts by its text only.
    const base = slug(match[1]!.replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1'))
    const count = seen.get(base) ?? 0
    seen.set(base, count + 1)
    found.add(count === 0 ? base : `${base}-${count}`)
  }
  for (const match of markdown.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) found.add(match[1]!)
  return found
}

/** Whether a link leaves the repository: a scheme (`https:`, `mailto:`) or a protocol-relative URL. */
function isExternal (target: string): boolean {
  return /^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')
}

/** The file a relative link points at, from the repository's root, and its anchor. */
function resolveLink (page: string, target: string): { path: string, anchor: string | null } {
  const hash = target.indexOf('#')
  const file = decodeURI(hash === -1 ? target : target.slice(0, hash))
  const anchor = hash === -1 ? null : decodeURIComponent(target.slice(hash + 1))
  const path = file === '' ? page : file.startsWith('/') ? posix.normalize(file.slice(1)) : posix.normalize(posix.join(posix.dirname(page), file))
  return { path, anchor }
}

/** What is wrong with a page's relative links, one line per broken link. */
function brokenLinks (page: string, files: Files): string[] {
  const problems: string[] = []
  for (const target of linkTargets(files.read(page))) {
    if (isExternal(target)) continue
    const { path, anchor } = resolveLink(page, target)
    if (path.startsWith('../') || !files.exists(path)) {
      problems.push(`${page}: (${target}) points at ${path}, which does not exist`)
    } else if (anchor !== null && anchor !== '' && path.endsWith('.md') && !anchors(files.read(path)).has(anchor)) {
      problems.push(`${page}: (${target}) points at #${anchor}, which is no heading of ${path}`)
    }
  }
  return problems
}

/** The files a page links to, from the repository's root. */
function linkedFiles (page: string, files: Files): Set<string> {
  return new Set(linkTargets(files.read(page)).filter((t) => !isExternal(t)).map((t) => resolveLink(page, t).path))
}

describe('links between the Markdown pages', () => {
  it('checks every page, docs/ included', () => {
    const all = pages()
    expect(all.filter((page) => page.startsWith('docs/')).length).toBeGreaterThan(0)
    for (const page of all) expect(repository.exists(page), page).toBe(true)
  })

  it('has no relative link to a missing file or heading', () => {
    const problems = pages().flatMap((page) => brokenLinks(page, repository))
    expect(problems).toEqual([])
  })

  it('links every page of docs/ from the README', () => {
    const linked = linkedFiles('README.md', repository)
    const missing = pages().filter((page) => page.startsWith('docs/') && !linked.has(page))
    expect(missing, 'docs pages the README does not link').toEqual([])
  })
})

describe('the link checker', () => {
  const fixture = (texts: Record<string, string>): Files => ({
    exists: (path) => path in texts,
    read: (path) => texts[path]!
  })

  it('finds a missing file, a missing heading, and nothing else', () => {
    const files = fixture({
      'README.md': [
        '# Title',
        'See [api](docs/api.md#start-a-run), [gone](docs/gone.md), [bad](docs/api.md#no-such-part),',
        '[here](#title), [up](docs/api.md#tools-your-backend-runs-itself), [web](https://example.com/x.md),',
        '[mail](mailto:a@example.com), `[code](docs/in-code.md)` and [ref][r].',
        '```',
        '[fenced](docs/in-fence.md)',
        '```',
        '[r]: docs/api.md#start-each-run-once'
      ].join('\n'),
      'docs/api.md': '# Using the API\n## Start a run\n## Tools your backend runs itself\n### Start each run once\n'
    })
    expect(brokenLinks('README.md', files)).toEqual([
      'README.md: (docs/gone.md) points at docs/gone.md, which does not exist',
      'README.md: (docs/api.md#no-such-part) points at #no-such-part, which is no heading of docs/api.md'
    ])
  })

  it('resolves links relative to the page that holds them', () => {
    const files = fixture({
      'docs/a.md': '[b](b.md#b) [readme](../README.md#top) [out](../../elsewhere.md)',
      'docs/b.md': '# B',
      'README.md': '# Top'
    })
    expect(brokenLinks('docs/a.md', files)).toEqual([
      'docs/a.md: (../../elsewhere.md) points at ../elsewhere.md, which does not exist'
    ])
  })

  it('makes the anchors GitHub makes', () => {
    expect([...anchors('# Several replicas, crashes and restarts\n## `TOOLS_FILE` and **more**\n## Node versions\n## Node versions\n')])
      .toEqual(['several-replicas-crashes-and-restarts', 'tools_file-and-more', 'node-versions', 'node-versions-1'])
  })
})
