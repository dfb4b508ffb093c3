-- The simple-workflow (Go) schema for SQLite: UUID strings, JSON as TEXT, UTC times as text.

-- +goose Up
CREATE TABLE IF NOT EXISTS workflow_run (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'leased', 'succeeded', 'failed', 'cancelled')),
    priority        INTEGER NOT NULL DEFAULT 100,
    run_at          TEXT NOT NULL DEFAULT (datetime('now')),
    idempotency_key TEXT UNIQUE,
    attempt         INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL DEFAULT 3,
    leased_by       TEXT,
    lease_until     TEXT,
    last_error      TEXT,
    result          TEXT,
    created_at      TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at      TEXT NOT NULL DEFAULT (datetime('now')),
    deleted_at      TEXT
);

CREATE TABLE IF NOT EXISTS workflow_event (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL REFERENCES workflow_run(id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL,
    data        TEXT,
    created_at  TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_workflow_event_workflow_id
    ON workflow_event (workflow_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_workflow_event_type
    ON workflow_event (event_type, created_at DESC);

CREATE TABLE IF NOT EXISTS workflow_registry (
    id            TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL UNIQUE,
    intent_type   TEXT DEFAULT 'workflow',
    runtime       TEXT NOT NULL,
    is_enabled    INTEGER DEFAULT 1,
    description   TEXT,
    created_at    TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at    TEXT NOT NULL DEFAULT (datetime('now')),
    deleted_at    TEXT
);

CREATE TABLE IF NOT EXISTS workflow_schedule (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    schedule     TEXT NOT NULL,
    timezone     TEXT NOT NULL DEFAULT 'UTC',
    next_run_at  TEXT NOT NULL,
    last_run_at  TEXT,
    enabled      INTEGER DEFAULT 1,
    priority     INTEGER DEFAULT 100,
    max_attempts INTEGER DEFAULT 3,
    created_at   TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at   TEXT NOT NULL DEFAULT (datetime('now')),
    deleted_at   TEXT
);
CREATE INDEX IF NOT EXISTS idx_workflow_schedule_next_run
    ON workflow_schedule (next_run_at) WHERE enabled = 1 AND deleted_at IS NULL;

-- +goose Down
DROP TABLE IF EXISTS workflow_schedule;
DROP TABLE IF EXISTS workflow_registry;
DROP TABLE IF EXISTS workflow_event;
DROP TABLE IF EXISTS workflow_run;
