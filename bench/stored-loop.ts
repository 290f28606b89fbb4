/**
 * What storing a run in PostgreSQL costs by itself, on this machine: the storage of a hand-written
 * loop (bench/throughput.ts) that keeps what the SPEC has a run keep (its state, its transcript and
 * every event, each step as it ends, in one transaction), written as cheaply as we know how. It is
 * the floor for storing each step of each run as its own write, as Switchboard does, on this
 * machine and its test cluster (fsync off), and so tells apart what the database costs here from
 * what Switchboard adds to it. A design that stored less often, or put several runs' steps in one
 * commit, could go under it.
 *
 * Cheaper than Switchboard's storage on purpose: tables of its own with a primary key each and no
 * other index, no foreign key, no tenant, no lease; one statement per write (the run's row updated,
 * the step's messages and events inserted only if it matched, as Switchboard does it), kept
 * prepared. SQL lives in src/store/ only; this is the baseline's code, written apart from
 * Switchboard's like the rest of it.
 */
import { randomUUID } from 'node:crypto'
import type Anthropic from '@anthropic-ai/sdk'
import pg from 'pg'

export interface StoredEvent {
  readonly type: string
  readonly data: unknown
}

const SCHEMA = [
  'DROP TABLE IF EXISTS hand_runs, hand_messages, hand_events',
  `CREATE TABLE hand_runs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, steps INTEGER NOT NULL, usage TEXT NOT NULL,
    message_count INTEGER NOT NULL, event_count INTEGER NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL
  )`,
  'CREATE TABLE hand_messages (run_id TEXT NOT NULL, seq INTEGER NOT NULL, message TEXT NOT NULL, PRIMARY KEY (run_id, seq))',
  'CREATE TABLE hand_events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, at BIGINT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, seq))'
]

/**
 * The step's messages and events go as one JSON array each, inserted as the text of each element,
 * only if `after` (the run's insert or update) gave a row.
 */
function inserts (after: string): string {
  return `
  new_messages AS (INSERT INTO hand_messages (run_id, seq, message)
    SELECT $1, CAST($2 AS INTEGER) + CAST(m.n AS INTEGER) - 1, CAST(m.message AS TEXT) FROM json_array_elements($3) WITH ORDINALITY AS m (message, n)
    WHERE EXISTS (SELECT 1 FROM ${after})),
  new_events AS (INSERT INTO hand_events (run_id, seq, type, at, data)
    SELECT $1, CAST($4 AS INTEGER) + CAST(e.n AS INTEGER) - 1, e.type, $5, CAST(e.data AS TEXT)
    FROM ROWS FROM (unnest(CAST($6 AS TEXT[])), json_array_elements($7)) WITH ORDINALITY AS e (type, data, n)
    WHERE EXISTS (SELECT 1 FROM ${after}))`
}

const CREATE = `WITH new_run AS (INSERT INTO hand_runs (id, status, steps, usage, message_count, event_count, created_at, updated_at)
    VALUES ($1, 'running', 0, '{}', $8, $9, $5, $5) RETURNING id), ${inserts('new_run')}
  SELECT id FROM new_run`

const WRITE = `WITH run AS (UPDATE hand_runs SET status = $8, steps = $9, usage = $10, message_count = CAST($2 AS INTEGER) + CAST($11 AS INTEGER), event_count = CAST($4 AS INTEGER) + CAST($12 AS INTEGER) - 1, updated_at = $5
    WHERE id = $1 RETURNING id), ${inserts('run')}
  SELECT id FROM run`

export class HandStore {
  readonly #pool: pg.Pool

  private constructor (pool: pg.Pool) {
    this.#pool = pool
  }

  /** Connects (a pool of 10, like Switchboard's) and makes its tables afresh. */
  static async open (connectionString: string): Promise<HandStore> {
    const pool = new pg.Pool({ connectionString, max: 10 })
    // An idle connection that fails is dropped by the pool; the next query says what went wrong.
    pool.on('error', () => {})
    try {
      for (const sql of SCHEMA) await pool.query(sql)
    } catch (err) {
      await pool.end()
      throw err
    }
    return new HandStore(pool)
  }

  /** Stores a new run: its row, its first messages and events. */
  async create (runId: string, messages: readonly Anthropic.MessageParam[], events: readonly StoredEvent[]): Promise<void> {
    await this.#pool.query({ name: 'hand_create', text: CREATE, values: [...insertValues(runId, 0, messages, 1, events), messages.length, events.length] })
  }

  /** Stores a step in one statement: the run's new state, the step's messages and events. */
  async write (runId: string, state: { status: string, steps: number, usage: unknown }, first: { message: number, event: number }, messages: readonly Anthropic.MessageParam[], events: readonly StoredEvent[]): Promise<void> {
    const { rowCount } = await this.#pool.query({
      name: 'hand_write',
      text: WRITE,
      values: [...insertValues(runId, first.message, messages, first.event, events), state.status, state.steps, JSON.stringify(state.usage), messages.length, events.length]
    })
    if (rowCount !== 1) throw new Error(`run ${runId} is not stored`)
  }

  async close (): Promise<void> {
    await this.#pool.end()
  }
}

function insertValues (runId: string, firstMessage: number, messages: readonly Anthropic.MessageParam[], firstEvent: number, events: readonly StoredEvent[]): unknown[] {
  return [runId, firstMessage, JSON.stringify(messages), firstEvent, Date.now(), events.map((e) => e.type), JSON.stringify(events.map((e) => e.data))]
}

/**
 * The hand-written loop of bench/throughput.ts, storing as it goes what the SPEC has a run store:
 * its creation, then each step (the assistant message, the tool results, the step's events:
 * step.started, step.completed, tool_call.started and tool_call.completed for each call) in one
 * write, the last with run.completed. Answers the number of tool calls made.
 */
export async function storedHandLoop (
  store: HandStore,
  input: string,
  create: (messages: Anthropic.MessageParam[]) => Promise<Anthropic.Message>,
  callTool: (use: Anthropic.ToolUseBlock) => Promise<string>
): Promise<number> {
  const runId = `run_${randomUUID()}`
  const messages: Anthropic.MessageParam[] = [{ role: 'user', content: input }]
  const run = { id: runId, object: 'run', status: 'queued', model: 'bench', input, tools: ['echo'], max_tokens: 1024, created_at: new Date().toISOString() }
  await store.create(runId, messages, [{ type: 'run.created', data: run }, { type: 'run.started', data: { ...run, status: 'running' } }])
  let storedMessages = messages.length
  let storedEvents = 2
  let calls = 0
  for (let step = 1; ; step++) {
    const message = await create(messages)
    messages.push({ role: 'assistant', content: message.content })
    const events: StoredEvent[] = [
      { type: 'step.started', data: { step } },
      { type: 'step.completed', data: { step, stop_reason: message.stop_reason, usage: message.usage, content: message.content } }
    ]
    const uses = message.content.filter((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use')
    if (uses.length > 0) {
      for (const use of uses) events.push({ type: 'tool_call.started', data: { step, tool_use_id: use.id, name: use.name, input: use.input, attempt: 1 } })
      const started = performance.now()
      const results = await Promise.all(uses.map(callTool))
      const durationMs = Math.round(performance.now() - started)
      calls += uses.length
      for (const [i, use] of uses.entries()) {
        events.push({ type: 'tool_call.completed', data: { step, tool_use_id: use.id, name: use.name, is_error: false, duration_ms: durationMs, attempts: 1, status: 200, content: results[i] } })
      }
      messages.push({ role: 'user', content: uses.map((u, i) => ({ type: 'tool_result' as const, tool_use_id: u.id, content: results[i]! })) })
    } else {
      events.push({ type: 'run.completed', data: { ...run, status: 'completed', steps: step } })
    }
    const status = uses.length > 0 ? 'running' : 'completed'
    await store.write(runId, { status, steps: step, usage: message.usage }, { message: storedMessages, event: storedEvents + 1 }, messages.slice(storedMessages), events)
    storedMessages = messages.length
    storedEvents += events.length
    if (uses.length === 0) return calls
  }
}
