-- The rest of the Go library's schema (see the PostgreSQL file): its NOT NULL columns and its
-- indexes. SQLite cannot change a column's nullability, so workflow_schedule and
-- workflow_registry are rebuilt as the Go library's SQLite DDL declares them (plus 0003's
-- columns), their NULLs becoming Go's defaults on the way; neither table is referenced by a
-- foreign key. Stored cron descriptors, which Go's parser refuses, become their five fields.

-- +goose Up
CREATE TABLE workflow_schedule_0008 (
    id             TEXT PRIMARY KEY,
    type           TEXT NOT NULL,
    payload        TEXT NOT NULL DEFAULT '{}',
    schedule       TEXT NOT NULL,
    timezone       TEXT NOT NULL DEFAULT 'UTC',
    next_run_at    TEXT NOT NULL,
    last_run_at    TEXT,
    enabled        INTEGER NOT NULL DEFAULT 1,
    priority       INTEGER NOT NULL DEFAULT 100,
    max_attempts   INTEGER NOT NULL DEFAULT 3,
    created_at     TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at     TEXT NOT NULL DEFAULT (datetime('now')),
    deleted_at     TEXT,
    missed_policy  TEXT NOT NULL DEFAULT 'skip' CHECK (missed_policy IN ('skip', 'catch_up')),
    catch_up_limit INTEGER NOT NULL DEFAULT 10 CHECK (catch_up_limit >= 1),
    last_error     TEXT
);
INSERT INTO workflow_schedule_0008 (
    id, type, payload, schedule, timezone, next_run_at, last_run_at, enabled, priority,
    max_attempts, created_at, updated_at, deleted_at, missed_policy, catch_up_limit, last_error
)
SELECT id, type, payload, schedule, timezone, next_run_at, last_run_at, coalesce(enabled, 1),
       coalesce(priority, 100), coalesce(max_attempts, 3), created_at, updated_at, deleted_at,
       missed_policy, catch_up_limit, last_error
FROM workflow_schedule;
DROP TABLE workflow_schedule;
ALTER TABLE workflow_schedule_0008 RENAME TO workflow_schedule;
CREATE INDEX IF NOT EXISTS idx_workflow_schedule_next_run
    ON workflow_schedule (next_run_at) WHERE enabled = 1 AND deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_schedule_type ON workflow_schedule (type);

CREATE TABLE workflow_registry_0008 (
    id            TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL UNIQUE,
    intent_type   TEXT NOT NULL DEFAULT 'workflow',
    runtime       TEXT NOT NULL,
    is_enabled    INTEGER NOT NULL DEFAULT 1,
    description   TEXT,
    created_at    TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at    TEXT NOT NULL DEFAULT (datetime('now')),
    deleted_at    TEXT
);
INSERT INTO workflow_registry_0008 (
    id, workflow_name, intent_type, runtime, is_enabled, description, created_at, updated_at,
    deleted_at
)
SELECT id, workflow_name, coalesce(intent_type, 'workflow'), runtime, coalesce(is_enabled, 1),
       description, created_at, updated_at, deleted_at
FROM workflow_registry;
DROP TABLE workflow_registry;
ALTER TABLE workflow_registry_0008 RENAME TO workflow_registry;
CREATE INDEX IF NOT EXISTS idx_workflow_registry_runtime
    ON workflow_registry (runtime, is_enabled);
CREATE INDEX IF NOT EXISTS idx_workflow_registry_deleted_at
    ON workflow_registry (deleted_at) WHERE deleted_at IS NULL;

-- The same times: robfig/cron's own expansion of each descriptor.
UPDATE workflow_schedule SET updated_at = datetime('now'), schedule = CASE schedule
        WHEN '@yearly' THEN '0 0 1 1 *'
        WHEN '@annually' THEN '0 0 1 1 *'
        WHEN '@monthly' THEN '0 0 1 * *'
        WHEN '@weekly' THEN '0 0 * * 0'
        WHEN '@daily' THEN '0 0 * * *'
        WHEN '@midnight' THEN '0 0 * * *'
        WHEN '@hourly' THEN '0 * * * *'
    END
WHERE schedule IN ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight',
                   '@hourly');

-- The Go library's indexes on workflow_run, with the PostgreSQL predicates (SQLite has no
-- text_pattern_ops).
CREATE INDEX IF NOT EXISTS idx_workflow_run_claim
    ON workflow_run (status, run_at, priority, created_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_workflow_run_type_prefix
    ON workflow_run (type, status, run_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_workflow_run_idempotency
    ON workflow_run (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workflow_run_type_status
    ON workflow_run (type, status, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_workflow_run_deleted_at
    ON workflow_run (deleted_at) WHERE deleted_at IS NULL;

-- +goose Down
-- Nothing: the NOT NULLs, the 5-field crons and the indexes are the Go library's schema, and
-- swf-pool at version 7 works with them (it adopts databases that Go created, which have them
-- all). Unlike PostgreSQL, SQLite has no comment to mark the indexes that Up created, and a
-- migration cannot tell them from those the Go library created.
SELECT 1;
