import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import { createStore, LeaseLostError, type RunRecord, type Store, type ToolRecord } from '../../src/store/index.js'
import { backends, openTestStore, type StorageLocation } from '../support/backends.js'
import { silentLog } from '../support/log.js'
import { newRun } from '../support/runs.js'
import { newId } from '../../src/lib/ids.js'

function tool (tenant: string, name: string, overrides: Partial<ToolRecord> = {}): ToolRecord {
  return {
    tenant_id: tenant,
    name,
    description: `the ${name} tool`,
    input_schema: { type: 'object', properties: { q: { type: 'string' } } },
    url: 'https://tools.example.com/' + name,
    headers: { authorization: 'Bearer tool-secret' },
    timeout_ms: 30_000,
    effect: 'side_effecting',
    parallel: true,
    max_concurrency: null,
    max_attempts: 3,
    circuit_breaker: { failures: 5, window_ms: 60_000, open_ms: 30_000 },
    cache_ttl_ms: 0,
    approval: 'never',
    async_timeout_ms: 3_600_000,
    model_options: { strict: true, input_examples: [{ city: 'Paris' }] },
    signing_secrets: [{ secret: `whsec_${newId('s')}`, expires_at: null }],
    source: 'api',
    revision: newId('rev'),
    created_at: Date.now(),
    updated_at: Date.now(),
    ...overrides
  }
}

for (const backend of backends) {
  describe.skipIf(backend.skip)(`Store contract: ${backend.name}`, () => {
    let store: Store
    let location: StorageLocation
    let close: () => Promise<void>

    beforeAll(async () => {
      ({ store, location, close } = await openTestStore(backend))
    })
    afterAll(async () => close?.())

    it('answers ping', async () => {
      await expect(store.ping()).resolves.toBeUndefined()
    })

    // PostgreSQL's alone: SQLite has no such setting.
    if (backend.name === 'postgres') {
      /** The rows of one statement on the store's database, over a connection of its own. */
      async function catalog (sql: string): Promise<any[]> {
        const client = new pg.Client({ connectionString: location.databaseUrl })
        await client.connect()
        try {
          return (await client.query(sql)).rows
        } finally {
          await client.end()
        }
      }

      it('leaves room in the pages of runs, so that a step\'s write does not touch the indexes', async () => {
        const rows = await catalog("SELECT reloptions FROM pg_class WHERE relname = 'runs'")
        expect(rows[0].reloptions).toEqual(['fillfactor=70'])
      })

      it('checks no foreign key row by row on a step\'s messages and events', async () => {
        // regclass refuses a table that is not there, so the test cannot pass for want of them.
        const rows = await catalog("SELECT conname FROM pg_constraint WHERE contype = 'f' AND conrelid IN ('run_messages'::regclass, 'run_events'::regclass)")
        expect(rows).toEqual([])
      })
    }

    describe('tools', () => {
      it('creates a tool, then replaces its definition but keeps its secret and creation time', async () => {
        const first = tool('t1', 'weather', { created_at: 1000, updated_at: 1000 })
        const created = await store.putTool(first)
        expect(created.created).toBe(true)
        expect(created.tool).toEqual(first)

        const second = tool('t1', 'weather', { description: 'new', created_at: 2000, updated_at: 2000, parallel: false, max_concurrency: 4 })
        const replaced = await store.putTool(second)
        expect(replaced.created).toBe(false)
        expect(replaced.tool.description).toBe('new')
        expect(replaced.tool.parallel).toBe(false)
        expect(replaced.tool.max_concurrency).toBe(4)
        expect(replaced.tool.signing_secrets).toEqual(first.signing_secrets)
        expect(replaced.tool.created_at).toBe(1000)
        expect(replaced.tool.updated_at).toBe(2000)
      })

      it('keeps tools to their tenant', async () => {
        await store.putTool(tool('t2', 'private'))
        expect(await store.getTool('t2', 'private')).not.toBeNull()
        expect(await store.getTool('t3', 'private')).toBeNull()
        expect(await store.getTools('t3', ['private'])).toEqual([])
        expect(await store.deleteTool('t3', 'private')).toBe(false)
        expect(await store.getTool('t2', 'private')).not.toBeNull()
      })

      it('lists newest first, page by page, without repeating or skipping', async () => {
        for (let i = 0; i < 7; i++) await store.putTool(tool('lister', `tool_${i}`, { created_at: 5000 + Math.floor(i / 2) }))
        const seen: string[] = []
        let after: string | undefined
        let pages = 0
        do {
          const page = await store.listTools('lister', { limit: 3, after })
          seen.push(...page.items.map((t) => t.name))
          after = page.nextCursor ?? undefined
          pages++
        } while (after !== undefined)
        expect(pages).toBe(3)
        expect(seen).toEqual(['tool_6', 'tool_5', 'tool_4', 'tool_3', 'tool_2', 'tool_1', 'tool_0'])
      })

      it('refuses a cursor it did not make', async () => {
        await expect(store.listTools('lister', { limit: 3, after: 'not-a-cursor' })).rejects.toMatchObject({ code: 'REQUEST_ERR_INVALID_CURSOR' })
      })

      it('gets several tools by name and deletes one', async () => {
        await store.putTool(tool('t4', 'a'))
        await store.putTool(tool('t4', 'b'))
        const found = await store.getTools('t4', ['a', 'b', 'missing'])
        expect(found.map((t) => t.name).sort()).toEqual(['a', 'b'])
        expect(await store.deleteTool('t4', 'a')).toBe(true)
        expect(await store.getTool('t4', 'a')).toBeNull()
      })

      it('reads a run\'s tools as they are now, a definition it read before as much as a changed one', async () => {
        const tenant = `held-${newId('t')}`
        const first = tool(tenant, 'lookup', { description: 'first', input_schema: { type: 'object', properties: { id: { type: 'integer' } } } })
        await store.putTool(first)
        const { run } = await store.createRun({ ...newRun(tenant), admit: { tools: ['lookup'], limit: 10, reserved: 0 } })
        const lease = { owner: 'replica-a', token: run.lease_token }
        expect((await store.getTools(tenant, ['lookup']))).toEqual([first])
        // Read again, unchanged: the same definition, whichever way it was read.
        let written = await store.writeRun(run, lease, { patch: { steps: 1 }, readTools: ['lookup'] })
        expect(written.tools).toEqual([first])
        expect(await store.getTools(tenant, ['lookup'])).toEqual([first])

        // A rotation changes the secrets, not the revision: the new secrets show.
        const secrets = [{ secret: 'whsec_rotated', expires_at: null }, { ...first.signing_secrets[0]!, expires_at: 5000 }]
        expect(await store.setToolSecrets(tenant, 'lookup', secrets, 7777, first.signing_secrets)).not.toBeNull()
        written = await store.writeRun(written.run, lease, { patch: { steps: 2 }, readTools: ['lookup'] })
        expect(written.tools).toEqual([{ ...first, signing_secrets: secrets, updated_at: 7777 }])

        // A new definition shows whole at the next read, whoever wrote it: on PostgreSQL, another
        // replica (a store of its own on the same database) writes it.
        const other = location.databaseUrl === undefined ? undefined : await createStore({ dataDir: location.dataDir, databaseUrl: location.databaseUrl, log: silentLog })
        try {
          const second = tool(tenant, 'lookup', { description: 'second', url: 'https://tools.example.com/v2', timeout_ms: 999, effect: 'read_only', input_schema: { type: 'object', properties: { key: { type: 'string' } } } })
          await (other ?? store).putTool(second)
          written = await store.writeRun(written.run, lease, { patch: { steps: 3 }, readTools: ['lookup', 'missing'] })
          const now = { ...second, signing_secrets: secrets, created_at: first.created_at }
          expect(written.tools).toEqual([now])
          expect(await store.getTools(tenant, ['lookup'])).toEqual([now])
          expect((await store.createRun({ ...newRun(tenant), admit: { tools: ['lookup'], limit: 10, reserved: 0 } })).tools).toEqual([now])
          // Deleted, it is gone, however it was read before.
          expect(await (other ?? store).deleteTool(tenant, 'lookup')).toBe(true)
          expect(await store.getTools(tenant, ['lookup'])).toEqual([])
          expect((await store.writeRun(written.run, lease, { patch: { steps: 4 }, readTools: ['lookup'] })).tools).toEqual([])
        } finally {
          await other?.close()
        }
      })

      it('replaces the signing secrets only if they are still the ones read (compare-and-set)', async () => {
        const { tool: created } = await store.putTool(tool('t5', 'rot'))
        const secrets = [{ secret: 'whsec_new', expires_at: null }, { secret: 'whsec_old', expires_at: 99 }]
        const updated = await store.setToolSecrets('t5', 'rot', secrets, 12345, created.signing_secrets)
        expect(updated?.signing_secrets).toEqual(secrets)
        expect(updated?.updated_at).toBe(12345)
        // A second writer that read the old secrets loses, and changes nothing.
        expect(await store.setToolSecrets('t5', 'rot', [{ secret: 'whsec_other', expires_at: null }], 1, created.signing_secrets)).toBeNull()
        expect((await store.getTool('t5', 'rot'))!.signing_secrets).toEqual(secrets)
        expect(await store.setToolSecrets('t6', 'rot', secrets, 1, secrets)).toBeNull()
      })
    })

    describe('runs', () => {
      it('creates a run with its messages and first event, held by its creator', async () => {
        const input = newRun('r1')
        const { run, created } = await store.createRun(input)
        expect(created).toBe(true)
        expect(run).toMatchObject({ id: input.run.id, status: 'queued', message_count: 1, event_count: 1, lease_owner: 'replica-a', lease_token: 1 })
        expect(run.metadata).toEqual({ customer: 'c1' })
        expect(await store.getMessages(run.id)).toEqual([{ role: 'user', content: 'hello' }])
        const events = await store.listEvents(run.id, 0, 10)
        expect(events).toEqual([{ run_id: run.id, seq: 1, type: 'run.created', at: input.event.at, data: { id: run.id } }])
        // The lease runs on the database's clock: set in the same transaction, a lease ahead.
        const read = await store.getRun('r1', run.id)
        expect({ ...read, lease_expires_at: 0 }).toEqual({ ...run, lease_expires_at: 0 })
        expect(read!.lease_expires_at).toBeGreaterThan(Date.now() + 5_000)
        expect(await store.getRun('other', run.id)).toBeNull()
      })

      it('creates a run already started, with run.created and run.started, in one write', async () => {
        const base = newRun('r1s', { status: 'running', started_at: Date.now(), event_count: 2 })
        const started = { seq: 2, type: 'run.started', at: base.event.at, data: { id: base.run.id, status: 'running' } }
        const { run } = await store.createRun({ ...base, started })
        expect(run).toMatchObject({ status: 'running', event_count: 2, started_at: base.run.started_at })
        expect((await store.listEvents(run.id, 0, 10)).map((e) => [e.seq, e.type])).toEqual([[1, 'run.created'], [2, 'run.started']])
        // The driver's first write numbers its events after both.
        const written = (await store.writeRun(run, { owner: 'replica-a', token: 1 }, { events: [{ seq: 3, type: 'step.started', at: Date.now(), data: { step: 1 } }] })).run
        expect(written.event_count).toBe(3)
      })

      it('returns the first run for a repeated idempotency key, per tenant', async () => {
        const first = await store.createRun(newRun('r2', { idempotency_key: 'k1', request_hash: 'h1' }))
        const again = await store.createRun(newRun('r2', { idempotency_key: 'k1', request_hash: 'h2' }))
        expect(again.created).toBe(false)
        expect(again.run.id).toBe(first.run.id)
        expect(again.run.request_hash).toBe('h1')
        const otherTenant = await store.createRun(newRun('r3', { idempotency_key: 'k1' }))
        expect(otherTenant.created).toBe(true)
      })

      it('writes a step under its lease: messages appended, state patched, events numbered', async () => {
        const { run } = await store.createRun(newRun('r4'))
        const lease = { owner: 'replica-a', token: run.lease_token }
        const written = (await store.writeRun(run, lease, {
          messages: [{ role: 'assistant', content: [{ type: 'text', text: 'hi' }] }, { role: 'user', content: 'more' }],
          patch: { status: 'running', steps: 1, usage: { input_tokens: 5, output_tokens: 7, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 }, output: [{ type: 'text', text: 'hi' }] },
          events: [{ seq: 2, type: 'step.started', at: 1, data: { step: 1 } }, { seq: 3, type: 'step.completed', at: 2, data: { step: 1 } }]
        })).run
        expect(written).toMatchObject({ status: 'running', steps: 1, message_count: 3, event_count: 3, output: [{ type: 'text', text: 'hi' }] })
        expect(written.usage.output_tokens).toBe(7)
        const messages = await store.getMessages(run.id)
        expect(messages.map((m) => m.role)).toEqual(['user', 'assistant', 'user'])
        const after = (await store.writeRun(written, lease, { messages: [{ role: 'assistant', content: 'bye' }], patch: { status: 'completed', stop_reason: 'end_turn', completed_at: 3 } })).run
        expect(after.message_count).toBe(4)
        // What the write answers is the run as stored: the driver goes on from it without reading.
        expect(after).toEqual(await store.getRun(run.tenant_id, run.id))
        expect((await store.getMessages(run.id))[3]).toEqual({ role: 'assistant', content: 'bye' })
        expect((await store.listEvents(run.id, 1, 10)).map((e) => e.seq)).toEqual([2, 3])
        expect((await store.listEvents(run.id, 0, 2)).map((e) => e.seq)).toEqual([1, 2])
      })

      it('answers a write with what another replica changed meanwhile: a cancel asked of it', async () => {
        const { run } = await store.createRun(newRun('r4c'))
        const lease = { owner: 'replica-a', token: run.lease_token }
        await store.requestCancel(run.tenant_id, run.id, 1234)
        const written = (await store.writeRun(run, lease, { events: [{ seq: 2, type: 'step.started', at: 1, data: { step: 1 } }] })).run
        expect(written.cancel_requested_at).toBe(1234)
        expect(written).toEqual(await store.getRun(run.tenant_id, run.id))
      })

      it('reads the tools a write asks for with it: the tenant\'s own, as they are now', async () => {
        const { run } = await store.createRun(newRun('r4t'))
        const lease = { owner: 'replica-a', token: run.lease_token }
        await store.putTool(tool(run.tenant_id, 'search', { url: 'http://127.0.0.1:1/v1', timeout_ms: 1234, max_concurrency: 3 }))
        await store.putTool(tool(run.tenant_id, 'unrelated'))
        await store.putTool(tool('another-tenant', 'fetch'))
        const step = { messages: [{ role: 'assistant' as const, content: 'a step' }], patch: { steps: 1 } }
        const written = await store.writeRun(run, lease, { ...step, readTools: ['search', 'fetch', 'missing'] })
        // Another tenant's tool of a listed name is not this run's; a missing one is simply absent.
        expect(written.tools).toEqual([await store.getTool(run.tenant_id, 'search')])
        expect(written.run).toEqual(await store.getRun(run.tenant_id, run.id))
        // What is read is the tool as it is at the write: a change made since the last read shows.
        await store.putTool(tool(run.tenant_id, 'search', { url: 'http://127.0.0.1:2/v2', updated_at: 99 }))
        const again = await store.writeRun(written.run, lease, { events: [{ seq: 2, type: 'step.started', at: 1, data: { step: 2 } }], readTools: ['search'] })
        expect(again.tools.map((t) => t.url)).toEqual(['http://127.0.0.1:2/v2'])
        expect((await store.writeRun(again.run, lease, { patch: { steps: 2 } })).tools).toEqual([])
        // A lost lease reads nothing and writes nothing.
        await expect(store.writeRun(again.run, { ...lease, token: lease.token + 7 }, { patch: { steps: 3 }, readTools: ['search'] })).rejects.toBeInstanceOf(LeaseLostError)
        expect((await store.getRun(run.tenant_id, run.id))!.steps).toBe(2)
      })

      it('refuses a write with a stale lease and stores none of it', async () => {
        const { run } = await store.createRun(newRun('r5', {}, null))
        const first = await store.claimRun(run.id, 'replica-a', 60_000)
        expect(first).not.toBeNull()
        // Nobody else can claim it while the lease lives.
        expect(await store.claimRun(run.id, 'replica-b', 60_000)).toBeNull()
        await store.releaseRun(run.id, first!)
        const second = await store.claimRun(run.id, 'replica-b', 60_000)
        expect(second!.token).toBeGreaterThan(first!.token)
        await expect(store.writeRun(run, first!, {
          messages: [{ role: 'assistant', content: 'stale' }],
          events: [{ seq: 2, type: 'step.started', at: 1, data: {} }]
        })).rejects.toBeInstanceOf(LeaseLostError)
        expect(await store.getMessages(run.id)).toHaveLength(1)
        expect(await store.listEvents(run.id, 0, 10)).toHaveLength(1)
      })

      it('takes abandoned runs, each once, oldest lease first, and lets a lone process drop stale leases', async () => {
        const queued = (await store.createRun(newRun('ab', {}, null))).run
        const stale = (await store.createRun(newRun('ab', {}, null))).run
        expect(await store.claimRun(stale.id, 'replica-x', 1)).not.toBeNull() // held for a millisecond
        await new Promise((resolve) => setTimeout(resolve, 10))
        const live = (await store.createRun(newRun('ab', { lease_expires_at: Date.now() + 60_000 }))).run
        const taken = await store.claimAbandonedRuns('replica-y', 60_000, 100)
        const ids = taken.map((r) => r.id)
        expect(ids).toEqual(expect.arrayContaining([queued.id, stale.id]))
        expect(ids).not.toContain(live.id)
        expect(taken.every((r) => r.lease_owner === 'replica-y')).toBe(true)
        expect((await store.claimAbandonedRuns('replica-z', 60_000, 100)).map((r) => r.id)).not.toContain(queued.id)
        // Every lease but the caller's own is dropped: those runs are claimable at once.
        await store.releaseAllLeases('replica-y')
        expect((await store.getRun('ab', live.id))!.lease_owner).toBeNull()
        expect((await store.getRun('ab', queued.id))!.lease_owner).toBe('replica-y')
      })

      it('marks where each step\'s events begin', async () => {
        const { run } = await store.createRun(newRun('se'))
        const lease = { owner: 'replica-a', token: run.lease_token }
        const mid = (await store.writeRun(run, lease, { events: [{ seq: 2, type: 'step.started', at: 1, data: { step: 1 } }] })).run
        expect(mid.step_events_after).toBe(run.step_events_after)
        const committed = (await store.writeRun(mid, lease, {
          messages: [{ role: 'assistant', content: 'a' }],
          events: [{ seq: 3, type: 'step.completed', at: 2, data: { step: 1 } }]
        })).run
        expect(committed.step_events_after).toBe(3)
      })

      it('lets an expired lease be claimed, and renews live ones', async () => {
        const { run } = await store.createRun(newRun('r6', {}, null))
        const lease = await store.claimRun(run.id, 'replica-a', 1)
        await new Promise((resolve) => setTimeout(resolve, 20))
        expect(await store.renewLeases('replica-a', [run.id], 60_000)).toEqual([run.id])
        expect(await store.claimRun(run.id, 'replica-b', 60_000)).toBeNull()
        expect(await store.renewLeases('replica-b', [run.id], 60_000)).toEqual([])
        expect(lease).not.toBeNull()
      })

      it('resumes a waiting run once, and only from the wait that was read', async () => {
        const { run } = await store.createRun(newRun('w1'))
        const lease = { owner: 'replica-a', token: run.lease_token }
        const waiting = (await store.writeRun(run, lease, { patch: { status: 'requires_action' }, events: [{ seq: 2, type: 'run.requires_action', at: 1, data: {} }] })).run
        await store.releaseRun(run.id, lease)
        // A stale read (an earlier wait) cannot take it.
        expect(await store.resumeWaitingRun(run.id, waiting.event_count - 1, 'replica-b', 60_000)).toBeNull()
        const taken = await store.resumeWaitingRun(run.id, waiting.event_count, 'replica-b', 60_000)
        expect(taken).toMatchObject({ status: 'running', lease_owner: 'replica-b' })
        expect(await store.resumeWaitingRun(run.id, waiting.event_count, 'replica-c', 60_000)).toBeNull()
        // And if resuming fails, it waits again, free for the next attempt.
        await store.returnToWaiting(run.id, { owner: 'replica-b', token: taken!.lease_token })
        expect(await store.getRun('w1', run.id)).toMatchObject({ status: 'requires_action', lease_owner: null })
      })

      it('lists runs newest first, filtered by status and metadata', async () => {
        const ids: string[] = []
        for (let i = 0; i < 5; i++) {
          const { run } = await store.createRun(newRun('lister', { metadata: { batch: i % 2 === 0 ? 'even' : 'odd' }, status: i === 4 ? 'completed' : 'queued' }))
          ids.push(run.id)
        }
        const all: string[] = []
        let after: string | undefined
        do {
          const page = await store.listRuns('lister', { limit: 2, after })
          all.push(...page.items.map((r) => r.id))
          after = page.nextCursor ?? undefined
        } while (after !== undefined)
        expect(all).toEqual([...ids].reverse())
        const even = await store.listRuns('lister', { limit: 10, metadata: { batch: 'even' } })
        expect(even.items.map((r) => r.id)).toEqual([ids[4], ids[2], ids[0]])
        const completed = await store.listRuns('lister', { limit: 10, status: 'completed' })
        expect(completed.items.map((r) => r.id)).toEqual([ids[4]])
        const evenQueued = await store.listRuns('lister', { limit: 10, status: 'queued', metadata: { batch: 'even' } })
        expect(evenQueued.items.map((r: RunRecord) => r.id)).toEqual([ids[2], ids[0]])
        expect((await store.listRuns('nobody', { limit: 10 })).items).toEqual([])
      })

      it('claims due callbacks once, and records their outcome', async () => {
        const { run } = await store.createRun(newRun('cb', { callback_url: 'https://hooks.example.com/x' }))
        const lease = { owner: 'replica-a', token: run.lease_token }
        await store.writeRun(run, lease, { patch: { status: 'completed', callback_status: 'pending', callback_next_at: 1000 } })
        const [claimed] = await store.claimDueCallbacks(2000, 62_000, 10)
        expect(claimed).toMatchObject({ id: run.id, callback_next_at: 62_000 })
        // Claimed: not due again until the claim runs out.
        expect((await store.claimDueCallbacks(3000, 63_000, 10)).map((r) => r.id)).not.toContain(run.id)
        // An outcome recorded under a claim that is no longer the current one changes nothing.
        expect(await store.recordCallback(run.id, 1234, { status: 'delivered', attempts: 9, next_at: null, error: null })).toBe(false)
        expect(await store.recordCallback(run.id, 62_000, { status: 'pending', attempts: 1, next_at: 5000, error: 'HTTP 500' })).toBe(true)
        expect((await store.claimDueCallbacks(6000, 66_000, 10)).map((r) => r.id)).toContain(run.id)
        expect(await store.recordCallback(run.id, 66_000, { status: 'delivered', attempts: 2, next_at: null, error: null })).toBe(true)
        expect(await store.getRun('cb', run.id)).toMatchObject({ callback_status: 'delivered', callback_attempts: 2, callback_next_at: null, callback_error: null })
        expect(await store.claimDueCallbacks(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 10)).toEqual([])
      })

      it('keeps odd text intact: NUL characters, emoji, lone quotes, halves of surrogate pairs', async () => {
        const input = newRun('r7')
        const text = 'a\u0000b 🎉 \'"\\ \u2028'
        const { run } = await store.createRun({ ...input, messages: [{ role: 'user', content: text }] })
        expect(await store.getMessages(run.id)).toEqual([{ role: 'user', content: text }])
        // The same through a run's writes (on PostgreSQL, rows travel as arrays and JSON: quotes,
        // backslashes and braces must survive their quoting, and a lone half of a surrogate pair,
        // which a model's answer may hold, the JSON), and through a write of its state alone.
        const lease = { owner: 'replica-a', token: run.lease_token }
        // Event types are Switchboard's own words: odd, but never a NUL (which PostgreSQL text cannot hold).
        const symbols = ['{', '}', ',', '"', '\\', 'NULL', '', '🎉'].join(' ')
        const odd = `${symbols} ${text} \ud800 \udc00x`
        const written = (await store.writeRun(run, lease, {
          messages: [{ role: 'assistant', content: [{ type: 'text', text: odd }] }, { role: 'user', content: 'NULL' }],
          events: [{ seq: 2, type: `odd ${symbols}`, at: 2, data: { text: odd, list: ['{}', '"', null] } }, { seq: 3, type: 'empty', at: 3, data: {} }]
        })).run
        const patched = (await store.writeRun(written, lease, { patch: { status: 'running', output: [{ type: 'text', text: odd }] } })).run
        expect((await store.getMessages(run.id)).slice(1)).toEqual([{ role: 'assistant', content: [{ type: 'text', text: odd }] }, { role: 'user', content: 'NULL' }])
        expect((await store.listEvents(run.id, 1, 10)).map((e) => [e.seq, e.type, e.data])).toEqual([[2, `odd ${symbols}`, { text: odd, list: ['{}', '"', null] }], [3, 'empty', {}]])
        expect(patched).toEqual(await store.getRun(run.tenant_id, run.id))
        expect(patched).toMatchObject({ status: 'running', message_count: 3, event_count: 3, output: [{ type: 'text', text: odd }] })
      })

      it('stores a run only if its tools are the tenant\'s and the tenant is under its limit of active runs', async () => {
        const tenant = `admit-${newId('t')}`
        const { tool: a } = await store.putTool(tool(tenant, 'a'))
        await store.putTool(tool(tenant, 'b'))
        await store.putTool(tool('someone-else', 'c'))
        // Three runs not yet final, two final, and another tenant's.
        for (const status of ['queued', 'running', 'requires_action', 'completed', 'failed'] as const) {
          await store.createRun(newRun(tenant, { status }))
        }
        await store.createRun(newRun('someone-else'))
        const stored = async (): Promise<number> => (await store.listRuns(tenant, { limit: 100 })).items.length

        const admitted = await store.createRun({ ...newRun(tenant), admit: { tools: ['a', 'b'], limit: 4, reserved: 0 } })
        expect(admitted.created).toBe(true)
        expect(admitted.tools.map((t) => t.name).sort()).toEqual(['a', 'b'])
        expect(admitted.tools.find((t) => t.name === 'a')).toEqual(a)
        expect(await stored()).toBe(6)

        // Four active now: a fifth waits, whatever its tools, and is told how many the insert saw;
        // creates under way elsewhere count too; the limit may be as large as it likes.
        await expect(store.createRun({ ...newRun(tenant), admit: { tools: [], limit: 4, reserved: 0 } })).rejects.toMatchObject({ reason: 'too_many_active', active: 4 })
        await expect(store.createRun({ ...newRun(tenant), admit: { tools: [], limit: 6, reserved: 2 } })).rejects.toMatchObject({ reason: 'too_many_active', active: 4 })
        expect((await store.createRun({ ...newRun(tenant), admit: { tools: [], limit: 2 ** 40, reserved: 0 } })).created).toBe(true)
        expect(await stored()).toBe(7)

        // A tool that is not the tenant's (missing, or another's): refused for it first, with
        // nothing stored, not its messages nor its events.
        const unknown = newRun(tenant)
        await expect(store.createRun({ ...unknown, admit: { tools: ['a', 'c', 'missing', 'missing'], limit: 1, reserved: 0 } }))
          .rejects.toMatchObject({ name: 'CreateRefusedError', reason: 'unknown_tools', missing: ['c', 'missing'] })
        expect(await store.getRun(tenant, unknown.run.id)).toBeNull()
        expect(await store.getMessages(unknown.run.id)).toEqual([])
        expect(await store.listEvents(unknown.run.id, 0, 10)).toEqual([])
        expect(await stored()).toBe(7)
      })
    })
  })
}
