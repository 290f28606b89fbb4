import { AppError } from '../errors.js'
import { sleep } from '../lib/retry.js'
import { FINAL_STATUSES, type ToolCallResult } from '../schemas/runs.js'
import type { CallWait, Lease, RunRecord } from '../store/index.js'
import { activeSecrets } from '../tools/registry.js'
import { laterResult } from '../tools/webhook/webhook-response.js'
import { verifySignature, type SignedHeaders } from '../tools/webhook/webhook-signature.js'
import { driveFromWait, type DecideHost } from './approval-waits.js'
import type { RunDriver } from './run-driver.js'
import type { RunStop } from './run-stop.js'

/**
 * How long a result may wait for its call's wait to be stored: a tool may post it the moment it
 * answered 202, before the replica that read the 202 stored the wait (a few ms). Past this, the
 * call is unknown.
 */
const WAIT_FOR_WAIT_MS = 2000

/** A result posted to a call's result_url (SPEC §13), as received. */
export interface PostedResult {
  readonly runId: string
  readonly toolUseId: string
  /** The body as sent: the signature is over these bytes. */
  readonly rawBody: string
  readonly body: ToolCallResult
  readonly headers: SignedHeaders
}

/**
 * Takes a result a tool posts for a call it answered `202 Accepted` (SPEC §13). No API key: the
 * signature, by the secrets of the tool the call was made to (any of them during a rotation), is
 * what lets it in; a tool's secret answers only that tool's calls. An unknown call is a 404, a bad
 * signature a 401, a call that has another result already, or was given one (its
 * async_timeout_ms, a cancel, the run's end), a 409; the same result again is taken (204) as the
 * first was, so that a tool retrying a post whose answer it lost is not refused. Once stored,
 * the run goes on if that was what it waited for, here; otherwise it waits on for the rest, held
 * by no replica.
 */
export async function postResult (host: DecideHost, maxResultChars: number, posted: PostedResult): Promise<void> {
  const { store } = host
  const wait = await findWait(host, posted.runId, posted.toolUseId)
  const tool = await store.getTool(wait.tenant_id, wait.name)
  const now = Date.now()
  // The signature covers the webhook-id but not the URL: naming the call in it is what keeps a
  // result signed for one call from being posted to another call of the same tool.
  const messageId = resultMessageId(posted.runId, posted.toolUseId)
  if (tool !== null && signedId(posted.headers) !== messageId) {
    throw new AppError('TOOL_RESULT_ERR_BAD_SIGNATURE', `The result for ${posted.toolUseId} must be signed with webhook-id "${messageId}" (the call it answers, so that a signed result cannot be posted to another call).`)
  }
  if (tool === null || !verifySignature(posted.headers, posted.rawBody, activeSecrets(tool.signing_secrets, now), now)) {
    throw new AppError('TOOL_RESULT_ERR_BAD_SIGNATURE', `The result for ${posted.toolUseId} is not signed by tool ${wait.name}: sign it as Switchboard signs calls (Standard Webhooks headers webhook-id, webhook-timestamp within 5 minutes, webhook-signature) with one of the tool's signing secrets.`)
  }
  const run = await store.getRun(wait.tenant_id, posted.runId)
  if (run === null) throw unknownCall(posted)
  const result = laterResult(wait.name, posted.body, maxResultChars)
  if (result === null) {
    throw new AppError('TOOL_RESULT_ERR_INVALID', 'The result is not a tool answer: send { "content": "text" } or { "content": [text or image blocks], "is_error"?: true }, as a webhook answers a call.')
  }
  const content = JSON.stringify(result.content)
  // The result stored already, posted again (a retry whose first answer was lost): taken as it was.
  const repeat = (w: CallWait): boolean => w.state === 'answered' && w.content === content && w.is_error === result.isError
  if (!repeat(wait)) {
    if (FINAL_STATUSES.has(run.status) || wait.state !== 'pending') throw notPending(posted, wait, run)
    if (!await store.callWaits.answer(posted.runId, posted.toolUseId, content, result.isError, now)) {
      const current = await store.callWaits.get(posted.runId, posted.toolUseId) ?? wait
      if (!repeat(current)) throw notPending(posted, current, run)
    }
  }
  await wakeIfAnswered(host, await store.getRun(wait.tenant_id, posted.runId) ?? run)
}

/**
 * Takes up a run parked on pending calls (see PendingCalls.park) if one of them has its result
 * (or its deadline passed) meanwhile: taken from its wait as `run` shows it, once, and driven from
 * its step here. Null when there is nothing to do yet, or someone else took it first (that driver
 * reads every result stored before it ends its step; one stored after, it finds after it parks).
 */
export async function wakeIfAnswered (host: DecideHost, run: RunRecord): Promise<RunDriver | null> {
  const pending = run.pending_calls
  if (pending == null || run.lease_owner !== null) return null
  const ids = new Set(pending.map((c) => c.tool_use_id))
  const now = Date.now()
  const rows = await host.store.callWaits.ofStep(run.id, run.steps + 1)
  if (!rows.some((r) => ids.has(r.tool_use_id) && (r.state !== 'pending' || r.deadline_at <= now))) return null
  return await takeFromWait(host, run)
}

/**
 * Ends a run's wait on pending calls without their results (a cancel): the run is taken and
 * driven from its step, stopped with `stop`, and its pending calls are answered "cancelled" (a
 * result posted later gets 409). Null if the run moved meanwhile.
 */
export async function endPendingWait (host: DecideHost, run: RunRecord, stop: RunStop): Promise<RunDriver | null> {
  return await takeFromWait(host, run, stop)
}

/** Whether a run waits on pending calls held by no replica (see PendingCalls.park). */
export function parked (run: RunRecord): boolean {
  return run.pending_calls != null && run.lease_owner === null && run.status === 'running'
}

async function takeFromWait (host: DecideHost, waiting: RunRecord, stop?: RunStop): Promise<RunDriver | null> {
  const { store, replicaId, leaseMs } = host
  const run = await store.takeParkedRun(waiting.id, waiting.event_count, replicaId, leaseMs)
  if (run === null) return null
  const lease: Lease = { owner: replicaId, token: run.lease_token }
  const until = Math.min(...(run.pending_calls ?? []).map((c) => c.deadline_at))
  return await driveFromWait(host, run, { patch: { pending_calls: null }, ...(stop === undefined ? {} : { stop }) }, async () => { await store.parkRun(run.id, lease, until) })
}

/**
 * The call's wait, waiting a moment for one a tool answered faster than its wait was stored; at
 * once a 404 for a run that does not exist (no post for a made-up run holds a connection).
 */
async function findWait (host: DecideHost, runId: string, toolUseId: string): Promise<CallWait> {
  const giveUp = Date.now() + WAIT_FOR_WAIT_MS
  for (let delay = 25; ; delay = Math.min(delay * 2, 400)) {
    const wait = await host.store.callWaits.get(runId, toolUseId)
    if (wait !== null) return wait
    if (delay === 25 && !await host.store.callWaits.runExists(runId)) throw unknownCall({ runId, toolUseId })
    if (Date.now() + delay > giveUp) throw unknownCall({ runId, toolUseId })
    await sleep(delay)
  }
}

function unknownCall (posted: Pick<PostedResult, 'runId' | 'toolUseId'>): AppError {
  return new AppError('TOOL_RESULT_ERR_NOT_FOUND', `No call ${posted.toolUseId} of run ${posted.runId} waits for a result: post to the result_url of a call your tool answered 202 Accepted.`)
}

function notPending (posted: PostedResult, wait: CallWait, run: RunRecord): AppError {
  const why = wait.state === 'answered'
    ? 'it has its result already'
    : FINAL_STATUSES.has(run.status)
      ? `the run ended (${run.status})`
      : 'it was given another result (its async_timeout_ms passed, or the run was cancelled or reached its deadline)'
  return new AppError('TOOL_RESULT_ERR_NOT_PENDING', `Call ${posted.toolUseId} of run ${posted.runId} no longer waits for a result: ${why}.`)
}

/** The `webhook-id` a result posted later is signed with: `{run_id}:{tool_use_id}:result`, the call it answers. */
export function resultMessageId (runId: string, toolUseId: string): string {
  return `${runId}:${toolUseId}:result`
}

function signedId (headers: SignedHeaders): string | undefined {
  const id = headers['webhook-id']
  return Array.isArray(id) ? id[0] : id
}
