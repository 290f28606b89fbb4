import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LeaseLostError, type Lease, type NewRun, type RunRecord, type RunWrite, type Store } from '../../src/store/index.js'
import { backends, openTestStore } from '../support/backends.js'
import { newRun } from '../support/runs.js'

// Many runs store their steps at the same moment on a busy replica; on SQLite those writes are
// committed together (group commit). Each must still succeed or fail on its own.

/** A run being driven by replica-a, with a lease that outlasts the test. */
const drivenRun = (tenant: string): NewRun => newRun(tenant, { status: 'running', started_at: Date.now(), metadata: {}, lease_expires_at: Date.now() + 60_000 })

const step = (seq: number): Pick<RunWrite, 'messages' | 'events'> => ({
  messages: [{ role: 'assistant', content: `step at ${seq}` }],
  events: [{ seq, type: 'step.completed', at: Date.now(), data: { step: 1 } }]
})

for (const backend of backends) {
  describe.skipIf(backend.skip)(`Writes of several runs at once: ${backend.name}`, () => {
    let store: Store
    let close: () => Promise<void>

    beforeAll(async () => {
      ({ store, close } = await openTestStore(backend))
    })
    afterAll(async () => close?.())

    it('stores each write made at the same moment, and refuses only the ones that are wrong', async () => {
      const runs = await Promise.all(Array.from({ length: 5 }, async () => (await store.createRun(drivenRun('cw'))).run))
      const lease: Lease = { owner: 'replica-a', token: 1 }
      const stale: Lease = { owner: 'replica-a', token: 0 }
      // All at once: two good writes, one with a lost lease, one repeating an event number the
      // run already has (refused by the database after its run row was already updated), and
      // another good one, in between.
      const outcomes = await Promise.allSettled([
        store.writeRun(runs[0]!, lease, { ...step(2), patch: { steps: 1 } }),
        store.writeRun(runs[1]!, stale, { ...step(2), patch: { steps: 1 } }),
        store.writeRun(runs[2]!, lease, { ...step(1), patch: { steps: 1 } }),
        store.writeRun(runs[3]!, lease, { ...step(2), patch: { steps: 1 } }),
        store.createRun(drivenRun('cw'))
      ])
      expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled', 'fulfilled'])
      expect((outcomes[1] as PromiseRejectedResult).reason).toBeInstanceOf(LeaseLostError)

      for (const i of [0, 3]) {
        const stored = await store.getRun('cw', runs[i]!.id)
        expect(stored).toMatchObject({ steps: 1, event_count: 2, message_count: 2 })
        expect((await store.listEvents(runs[i]!.id, 0, 10)).map((e) => e.type)).toEqual(['run.created', 'step.completed'])
        expect(await store.getMessages(runs[i]!.id)).toHaveLength(2)
      }
      // The refused writes left nothing behind, not even the run row's new counts.
      for (const i of [1, 2]) {
        expect(await store.getRun('cw', runs[i]!.id)).toMatchObject({ steps: 0, event_count: 1, message_count: 1 })
        expect(await store.listEvents(runs[i]!.id, 0, 10)).toHaveLength(1)
        expect(await store.getMessages(runs[i]!.id)).toHaveLength(1)
      }
      const created = (outcomes[4] as PromiseFulfilledResult<{ run: RunRecord }>).value.run
      expect(await store.getRun('cw', created.id)).not.toBeNull()
    })

    it('stores a burst of writes from many runs, each in order', async () => {
      const runs = await Promise.all(Array.from({ length: 50 }, async () => (await store.createRun(drivenRun('burst'))).run))
      const lease: Lease = { owner: 'replica-a', token: 1 }
      await Promise.all(runs.map(async (run) => {
        let current = run
        for (let seq = 2; seq <= 6; seq++) current = (await store.writeRun(current, lease, { events: [{ seq, type: 'tool_call.started', at: Date.now(), data: { seq } }] })).run
      }))
      for (const run of runs) {
        expect((await store.listEvents(run.id, 0, 10)).map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6])
        expect((await store.getRun('burst', run.id))!.event_count).toBe(6)
      }
    })
  })
}
