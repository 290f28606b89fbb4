import type { Migration } from './sql-driver.js'

/**
 * The schema, as versioned migrations applied in order at start-up. A released migration is never
 * edited: a change is a new version. The two dialects differ only in their types; timestamps are
 * milliseconds since the epoch in both; JSON documents are text, except run metadata, which
 * PostgreSQL keeps as jsonb to filter on it.
 */
function schema (dialect: 'sqlite' | 'postgres'): Migration[] {
  const big = dialect === 'postgres' ? 'BIGINT' : 'INTEGER'
  const metadata = dialect === 'postgres' ? 'JSONB' : 'TEXT'
  return [
    {
      version: 1,
      name: 'tools, runs, messages and events',
      statements: [
        `CREATE TABLE tools (
          tenant_id TEXT NOT NULL,
          name TEXT NOT NULL,
          description TEXT NOT NULL,
          input_schema TEXT NOT NULL,
          url TEXT NOT NULL,
          headers TEXT NOT NULL,
          timeout_ms INTEGER NOT NULL,
          effect TEXT NOT NULL,
          parallel INTEGER NOT NULL,
          max_concurrency INTEGER,
          max_attempts INTEGER NOT NULL,
          signing_secrets TEXT NOT NULL,
          source TEXT NOT NULL,
          revision TEXT NOT NULL,
          created_at ${big} NOT NULL,
          updated_at ${big} NOT NULL,
          PRIMARY KEY (tenant_id, name)
        )`,
        'CREATE INDEX tools_by_age ON tools (tenant_id, created_at, name)',
        `CREATE TABLE runs (
          id TEXT PRIMARY KEY,
          tenant_id TEXT NOT NULL,
          status TEXT NOT NULL,
          stop_reason TEXT,
          model TEXT NOT NULL,
          params TEXT NOT NULL,
          metadata ${metadata} NOT NULL,
          created_at ${big} NOT NULL,
          started_at ${big},
          completed_at ${big},
          deadline_at ${big} NOT NULL,
          steps INTEGER NOT NULL DEFAULT 0,
          tool_calls_total INTEGER NOT NULL DEFAULT 0,
          tool_calls_errors INTEGER NOT NULL DEFAULT 0,
          usage TEXT NOT NULL,
          output TEXT NOT NULL,
          required_action TEXT,
          error TEXT,
          message_count INTEGER NOT NULL DEFAULT 0,
          event_count INTEGER NOT NULL DEFAULT 0,
          idempotency_key TEXT,
          request_hash TEXT,
          trace_id TEXT NOT NULL,
          lease_owner TEXT,
          lease_token ${big} NOT NULL DEFAULT 0,
          lease_expires_at ${big}
        )`,
        'CREATE INDEX runs_by_tenant ON runs (tenant_id, id)',
        'CREATE INDEX runs_by_status ON runs (tenant_id, status, id)',
        'CREATE UNIQUE INDEX runs_by_idempotency_key ON runs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL',
        "CREATE INDEX runs_active ON runs (lease_expires_at) WHERE status IN ('queued', 'running')",
        `CREATE TABLE run_messages (
          run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
          seq INTEGER NOT NULL,
          tenant_id TEXT NOT NULL,
          message TEXT NOT NULL,
          PRIMARY KEY (run_id, seq)
        )`,
        `CREATE TABLE run_events (
          run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
          seq INTEGER NOT NULL,
          tenant_id TEXT NOT NULL,
          type TEXT NOT NULL,
          at ${big} NOT NULL,
          data TEXT NOT NULL,
          PRIMARY KEY (run_id, seq)
        )`
      ]
    },
    {
      version: 2,
      name: 'cancel requests, caller-run tools, completion callbacks',
      statements: [
        // Results of a step's webhook calls, kept while the run waits for the caller's outputs.
        'ALTER TABLE runs ADD COLUMN pending_results TEXT',
        `ALTER TABLE runs ADD COLUMN cancel_requested_at ${big}`,
        'ALTER TABLE runs ADD COLUMN callback_url TEXT',
        'ALTER TABLE runs ADD COLUMN callback_status TEXT',
        'ALTER TABLE runs ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0',
        `ALTER TABLE runs ADD COLUMN callback_next_at ${big}`,
        'ALTER TABLE runs ADD COLUMN callback_error TEXT',
        "CREATE INDEX runs_waiting ON runs (deadline_at) WHERE status = 'requires_action'",
        "CREATE INDEX runs_callbacks_due ON runs (callback_next_at) WHERE callback_status = 'pending'",
        'CREATE INDEX runs_cancel_requested ON runs (lease_owner) WHERE cancel_requested_at IS NOT NULL',
        `CREATE TABLE callback_secrets (
          tenant_id TEXT PRIMARY KEY,
          signing_secrets TEXT NOT NULL,
          updated_at ${big} NOT NULL
        )`
      ]
    },
    {
      version: 3,
      name: 'where the current step\'s events begin, for resuming a run',
      statements: [
        'ALTER TABLE runs ADD COLUMN step_events_after INTEGER NOT NULL DEFAULT 0',
        // A run nobody holds has lease_expires_at 0, not null: "expired" is then one range scan.
        'UPDATE runs SET lease_expires_at = 0 WHERE lease_expires_at IS NULL'
      ]
    },
    {
      version: 4,
      name: 'secrets of the service itself, shared by its replicas',
      statements: [
        `CREATE TABLE service_secrets (
          name TEXT PRIMARY KEY,
          secret TEXT NOT NULL,
          created_at ${big} NOT NULL
        )`
      ]
    },
    {
      version: 5,
      name: 'room in the pages of runs for their updates',
      // A run's row is written at every step, and a step's write (its counts, usage, output)
      // changes no column an index covers: PostgreSQL can then write the new version beside the
      // old one without touching the indexes (a HOT update), but only if the page has room. Pages
      // filled to 70% leave it: a step's write then costs the server about a fifth less in our
      // measure. Pages written from now on; SQLite writes in place and has no such setting.
      statements: dialect === 'postgres' ? ['ALTER TABLE runs SET (fillfactor = 70)'] : []
    },
    {
      version: 6,
      name: 'no foreign key check per message and event on PostgreSQL',
      // PostgreSQL checks a foreign key row by row: each message and event inserted looked its run
      // up again and locked it, in the statement that had just updated that very run. A step
      // inserts about twenty rows; the checks were a quarter of its write's time and a seventh of
      // the server's CPU per run in our measure. They guarded nothing the writes do not: messages
      // and events are only ever inserted by the statement that inserts their run or fences it by
      // its lease, and only when that matched a row; runs are never deleted. SQLite's check is an
      // index lookup and stays. The tables are locked first, in one order, so that the drops
      // cannot deadlock with the writes of replicas still running the previous version (which
      // wait for the migration, at most for their lock_timeout, and are retried).
      statements: dialect === 'postgres'
        ? [
            'LOCK TABLE runs, run_messages, run_events IN ACCESS EXCLUSIVE MODE',
            'ALTER TABLE run_messages DROP CONSTRAINT run_messages_run_id_fkey',
            'ALTER TABLE run_events DROP CONSTRAINT run_events_run_id_fkey'
          ]
        : []
    },
    {
      version: 7,
      name: 'MCP servers as a tool source',
      // The registration is one JSON document (its secrets among it, as tools' headers are), and
      // the tool list as last read another: both are only ever read and written whole.
      statements: [
        `CREATE TABLE mcp_servers (
          tenant_id TEXT NOT NULL,
          name TEXT NOT NULL,
          definition TEXT NOT NULL,
          listed TEXT NOT NULL,
          listed_at ${big} NOT NULL,
          created_at ${big} NOT NULL,
          updated_at ${big} NOT NULL,
          PRIMARY KEY (tenant_id, name)
        )`,
        'CREATE INDEX mcp_servers_by_age ON mcp_servers (tenant_id, created_at, name)'
      ]
    },
    {
      version: 8,
      name: 'tool health: circuit breakers, calls for statistics, cached results',
      statements: [
        // The defaults are a tool's until it is written again: a breaker of 5 failures in 60 s, no cache.
        'ALTER TABLE tools ADD COLUMN circuit_breaker TEXT NOT NULL DEFAULT \'{"failures":5,"window_ms":60000,"open_ms":30000}\'',
        'ALTER TABLE tools ADD COLUMN cache_ttl_ms INTEGER NOT NULL DEFAULT 0',
        // One row per tool call that ended, from every replica: what GET /tools/{name}/stats reads.
        // The index holds every column the statistics read, so a window is one range of it.
        `CREATE TABLE tool_calls (
          tenant_id TEXT NOT NULL,
          name TEXT NOT NULL,
          at ${big} NOT NULL,
          outcome TEXT NOT NULL,
          status INTEGER,
          duration_ms INTEGER NOT NULL,
          attempts INTEGER NOT NULL
        )`,
        'CREATE INDEX tool_calls_by_tool ON tool_calls (tenant_id, name, at, outcome, status, duration_ms, attempts)',
        'CREATE INDEX tool_calls_by_age ON tool_calls (at)',
        // Results of read_only tools, reused for the same input until they expire.
        `CREATE TABLE tool_results (
          tenant_id TEXT NOT NULL,
          name TEXT NOT NULL,
          revision TEXT NOT NULL,
          input_hash TEXT NOT NULL,
          content TEXT NOT NULL,
          status INTEGER,
          stored_at ${big} NOT NULL,
          expires_at ${big} NOT NULL,
          PRIMARY KEY (tenant_id, name, revision, input_hash)
        )`,
        'CREATE INDEX tool_results_by_expiry ON tool_results (expires_at)',
        // Each replica's circuit breaker of a tool, as it last changed: the statistics show them all.
        `CREATE TABLE tool_circuits (
          tenant_id TEXT NOT NULL,
          name TEXT NOT NULL,
          replica TEXT NOT NULL,
          state TEXT NOT NULL,
          failures INTEGER NOT NULL,
          retry_at ${big},
          updated_at ${big} NOT NULL,
          PRIMARY KEY (tenant_id, name, replica)
        )`
      ]
    },
    {
      version: 9,
      name: 'cost control: what each step used, per tenant',
      // One row per step (keyed by its step and its model's answer): the model call's tokens and
      // cost, the step's tool calls as counts (`tools`, a JSON object of each tool's [calls, errors],
      // expanded by GET /usage?group_by=tool at read time). One row whatever the number of calls: it
      // is written with every step. What GET /usage reads and what tenant budgets add up, on every
      // replica. Costs are whole billionths of a dollar, so that sums are exact. Its only index
      // besides the key is the one reports read by.
      statements: [
        `CREATE TABLE usage_entries (
          tenant_id TEXT NOT NULL,
          run_id TEXT NOT NULL,
          entry_key TEXT NOT NULL,
          at ${big} NOT NULL,
          model TEXT NOT NULL,
          input_tokens ${big} NOT NULL,
          output_tokens ${big} NOT NULL,
          cache_write_5m_tokens ${big} NOT NULL,
          cache_write_1h_tokens ${big} NOT NULL,
          cache_read_tokens ${big} NOT NULL,
          cost_nano_usd ${big},
          tool_calls INTEGER NOT NULL,
          tool_errors INTEGER NOT NULL,
          tools TEXT NOT NULL,
          PRIMARY KEY (run_id, entry_key)
        )`,
        'CREATE INDEX usage_entries_by_tenant ON usage_entries (tenant_id, at)',
        // What each tenant's model calls cost per UTC day, added to as each line is stored: a
        // tenant's budget is read from a month's rows at the most, before every model call. A day
        // is kept in slots (the last character of the run's id), so that a tenant's runs writing
        // steps at once do not all wait for one row's lock.
        `CREATE TABLE usage_days (
          tenant_id TEXT NOT NULL,
          day ${big} NOT NULL,
          slot TEXT NOT NULL,
          cost_nano_usd ${big} NOT NULL,
          PRIMARY KEY (tenant_id, day, slot)
        )`
      ]
    },
    {
      version: 10,
      name: 'approvals: a tool whose every call waits for a reviewer',
      statements: ["ALTER TABLE tools ADD COLUMN approval TEXT NOT NULL DEFAULT 'never'"]
    },
    {
      version: 11,
      name: 'tools: fields passed through to the Messages API (strict, input_examples, defer_loading, eager_input_streaming)',
      // One JSON object: the API adds such fields often, and none of them is ever queried.
      statements: ["ALTER TABLE tools ADD COLUMN model_options TEXT NOT NULL DEFAULT '{}'"]
    },
    {
      version: 12,
      name: 'tools that answer later: pending calls and their results',
      statements: [
        // How long a call answered 202 may wait for its result (SPEC §13).
        'ALTER TABLE tools ADD COLUMN async_timeout_ms INTEGER NOT NULL DEFAULT 3600000',
        // While a run waits on pending calls with no replica holding it: what it waits for (shown).
        'ALTER TABLE runs ADD COLUMN pending_calls TEXT',
        // One row per call answered 202: its tool (whose secrets sign its result), its deadline,
        // and once posted, its result. A row is answered or closed once: the first wins.
        `CREATE TABLE tool_call_waits (
          run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
          tool_use_id TEXT NOT NULL,
          tenant_id TEXT NOT NULL,
          name TEXT NOT NULL,
          step INTEGER NOT NULL,
          state TEXT NOT NULL,
          accepted_at ${big} NOT NULL,
          deadline_at ${big} NOT NULL,
          content TEXT,
          is_error INTEGER NOT NULL DEFAULT 0,
          answered_at ${big},
          PRIMARY KEY (run_id, tool_use_id)
        )`
      ]
    },
    {
      version: 13,
      name: 'programmatic tool calling: the container a run\'s code runs in',
      // Sent with every model request of the run after the first that named it, by whichever replica drives it.
      statements: ['ALTER TABLE runs ADD COLUMN container_id TEXT']
    },
    {
      version: 14,
      name: 'programmatic tool calling: when the run\'s container expires',
      // The API's expires_at of the last answer (ISO text, as the API gives it): shown on the run.
      statements: ['ALTER TABLE runs ADD COLUMN container_expires_at TEXT']
    }
  ]
}

export const SQLITE_MIGRATIONS = schema('sqlite')
export const POSTGRES_MIGRATIONS = schema('postgres')
