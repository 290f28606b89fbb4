import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends, openTestStore } from '../support/backends.js'
import { newRun } from '../support/runs.js'
import type { Store } from '../../src/store/index.js'

// The store's part of tools that answer later (SPEC §13), on both databases: a call's wait is
// answered or closed once, and a parked run is held by nobody until one take, fenced by its event count.

for (const backend of backends) {
  describe.skipIf(backend.skip)(`calls that answer later, in storage: ${backend.name}`, () => {
    let store: Store
    let close: () => Promise<void>
    beforeAll(async () => {
      ({ store, close } = await openTestStore(backend))
    })
    afterAll(async () => close?.())

    const wait = (runId: string, toolUseId: string, deadline: number) => ({ run_id: runId, tool_use_id: toolUseId, tenant_id: 't1', name: 'build', step: 1, accepted_at: Date.now(), deadline_at: deadline })

    it('answers a wait once, never past its deadline, and never once it is closed', async () => {
      const { run } = await store.createRun(newRun('t1'))
      const soon = Date.now() + 60_000
      await store.callWaits.add(wait(run.id, 'toolu_a', soon))
      await store.callWaits.add(wait(run.id, 'toolu_b', soon))
      await store.callWaits.add(wait(run.id, 'toolu_c', Date.now() - 1))
      // Added again (a step taken over): kept as it was.
      await store.callWaits.add({ ...wait(run.id, 'toolu_a', soon + 1) })
      expect(await store.callWaits.answer(run.id, 'toolu_a', '"done"', false, Date.now())).toBe(true)
      expect(await store.callWaits.answer(run.id, 'toolu_a', '"again"', false, Date.now())).toBe(false)
      // Past its deadline: too late.
      expect(await store.callWaits.answer(run.id, 'toolu_c', '"late"', false, Date.now())).toBe(false)
      // Closing takes only those still pending; a closed one takes no result.
      expect((await store.callWaits.close(run.id, ['toolu_a', 'toolu_b'])).sort()).toEqual(['toolu_b'])
      expect(await store.callWaits.answer(run.id, 'toolu_b', '"late"', true, Date.now())).toBe(false)
      const rows = await store.callWaits.ofStep(run.id, 1)
      const states = rows.map((r) => [r.tool_use_id, r.state, r.content]).sort((x, y) => String(x[0]).localeCompare(String(y[0])))
      expect(states).toEqual([['toolu_a', 'answered', '"done"'], ['toolu_b', 'closed', null], ['toolu_c', 'pending', null]])
      expect(await store.callWaits.get(run.id, 'toolu_a')).toMatchObject({ deadline_at: soon, is_error: false, name: 'build', tenant_id: 't1' })
      expect(await store.callWaits.get(run.id, 'toolu_nope')).toBeNull()
      // A result for a run that exists may wait a moment for its call; one for no run is refused at once.
      expect(await store.callWaits.runExists(run.id)).toBe(true)
      expect(await store.callWaits.runExists('run_00000000000000000000000000')).toBe(false)
    })

    it('parks a run with no lease until its first deadline, and lets one take it, from the wait that was read', async () => {
      const { run } = await store.createRun(newRun('t1', { status: 'running' }))
      const lease = { owner: 'replica-a', token: run.lease_token }
      const until = Date.now() + 60_000
      // Only a run that waits on pending calls is parked.
      expect(await store.parkRun(run.id, lease, until)).toBe(false)
      const pending = [{ tool_use_id: 'toolu_a', name: 'build', deadline_at: until }]
      const written = (await store.writeRun(run, lease, { patch: { pending_calls: pending }, events: [{ seq: 2, type: 'tool_call.accepted', at: 1, data: {} }] })).run
      expect(await store.parkRun(run.id, lease, until)).toBe(true)
      const parked = (await store.getRun('t1', run.id))!
      expect(parked).toMatchObject({ status: 'running', lease_owner: null, lease_expires_at: until, pending_calls: pending })
      // Its old lease writes nothing more, and no takeover claims it before its deadline.
      await expect(store.writeRun(written, lease, { patch: { steps: 1 } })).rejects.toThrow()
      expect((await store.claimAbandonedRuns('replica-z', 60_000, 10)).map((r) => r.id)).not.toContain(run.id)
      // A stale read cannot take it; the first take wins.
      expect(await store.takeParkedRun(run.id, parked.event_count - 1, 'replica-b', 60_000)).toBeNull()
      const taken = await store.takeParkedRun(run.id, parked.event_count, 'replica-b', 60_000)
      expect(taken).toMatchObject({ lease_owner: 'replica-b', pending_calls: pending })
      expect(await store.takeParkedRun(run.id, parked.event_count, 'replica-c', 60_000)).toBeNull()
    })

    it('lets the sweep take a parked run over once its first deadline has passed', async () => {
      const { run } = await store.createRun(newRun('t2', { status: 'running' }))
      const lease = { owner: 'replica-a', token: run.lease_token }
      await store.writeRun(run, lease, { patch: { pending_calls: [{ tool_use_id: 'toolu_a', name: 'build', deadline_at: 1 }] } })
      expect(await store.parkRun(run.id, lease, Date.now() - 5000)).toBe(true)
      expect((await store.claimAbandonedRuns('replica-z', 60_000, 100)).map((r) => r.id)).toContain(run.id)
    })
  })
}
