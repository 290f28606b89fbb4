import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { ConfigSchema } from '../src/config.js'

const read = (name: string) => readFileSync(new URL(`../${name}`, import.meta.url), 'utf8')
const SETTINGS = Object.keys(ConfigSchema.properties).sort()

describe('docker-compose.yml and .env.example', () => {
  const compose = parse(read('docker-compose.yml'), { merge: true }) as { services: Record<string, { environment?: Record<string, unknown> }> }
  const example = read('.env.example')

  it('pass every setting of Switchboard to both replicas, so the stack can be configured like the service', () => {
    for (const replica of ['switchboard-1', 'switchboard-2']) {
      const passed = Object.keys(compose.services[replica]!.environment ?? {})
      const missing = SETTINGS.filter((name) => !passed.includes(name))
      expect(missing, `${replica}: add each as \`NAME:\` to the environment of x-switchboard in docker-compose.yml`).toEqual([])
    }
  })

  it('.env.example lists every variable the stack reads, and every setting', () => {
    const listed = new Set([...example.matchAll(/^#? ?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]))
    const used = [...read('docker-compose.yml').matchAll(/\$\{([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!)
    // Set by the stack itself, from the variables above: named in .env.example's closing note.
    const setByStack = ['NODE_ENV', 'HOST', 'PORT', 'DATABASE_URL']
    const missing = [...used, ...SETTINGS.filter((s) => !setByStack.includes(s))].filter((name) => !listed.has(name))
    expect(missing, 'add each to .env.example, commented out at its default').toEqual([])
    for (const name of setByStack) expect(example).toContain(name)
  })
})

describe('Dockerfile', () => {
  it('starts the service as `npm start` does, with the same node settings', () => {
    const start = JSON.parse(read('package.json')).scripts.start.split(/\s+/)
    const commands = [...read('Dockerfile').matchAll(/^CMD (\[.*\])$/gm)].map((m) => JSON.parse(m[1]!) as string[])
    const service = commands.filter((c) => c.includes('dist/server.js'))
    expect(service, 'one CMD of the Dockerfile runs dist/server.js').toHaveLength(1)
    expect(service[0], 'the image\'s CMD and package.json\'s start script must run node with the same arguments').toEqual(start)
  })
})
