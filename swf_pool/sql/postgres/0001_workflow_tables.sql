-- The simple-workflow (Go) schema, unchanged: a database that the Go library already
-- created is adopted as it is (every statement is IF NOT EXISTS).

-- +goose Up
CREATE TABLE IF NOT EXISTS workflow_run (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    type            TEXT NOT NULL,
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'leased', 'succeeded', 'failed', 'cancelled')),
    priority        INT NOT NULL DEFAULT 100,
    run_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    idempotency_key TEXT UNIQUE,
    attempt         INT NOT NULL DEFAULT 0,
    max_attempts    INT NOT NULL DEFAULT 3,
    leased_by       TEXT,
    lease_until     TIMESTAMPTZ,
    last_error      TEXT,
    result          JSONB,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at      TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS workflow_event (
    id          BIGSERIAL PRIMARY KEY,
    workflow_id UUID NOT NULL REFERENCES workflow_run(id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL
                CHECK (event_type IN ('created', 'leased', 'started', 'heartbeat',
                                      'succeeded', 'failed', 'retried', 'cancelled')),
    data        JSONB,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_workflow_event_workflow_id
    ON workflow_event (workflow_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_workflow_event_type
    ON workflow_event (event_type, created_at DESC);

CREATE TABLE IF NOT EXISTS workflow_registry (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_name TEXT NOT NULL UNIQUE,
    intent_type   TEXT DEFAULT 'workflow',
    runtime       TEXT NOT NULL,
    is_enabled    BOOLEAN DEFAULT true,
    description   TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at    TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS workflow_schedule (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    type         TEXT NOT NULL,
    payload      JSONB NOT NULL DEFAULT '{}',
    schedule     TEXT NOT NULL,
    timezone     TEXT NOT NULL DEFAULT 'UTC',
    next_run_at  TIMESTAMPTZ NOT NULL,
    last_run_at  TIMESTAMPTZ,
    enabled      BOOLEAN DEFAULT true,
    priority     INT DEFAULT 100,
    max_attempts INT DEFAULT 3,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at   TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS idx_workflow_schedule_next_run
    ON workflow_schedule (next_run_at) WHERE enabled AND deleted_at IS NULL;

-- +goose Down
DROP TABLE IF EXISTS workflow_schedule;
DROP TABLE IF EXISTS workflow_registry;
DROP TABLE IF EXISTS workflow_event;
DROP TABLE IF EXISTS workflow_run;
