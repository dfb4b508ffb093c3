-- Indexes that keep the claim and the idle wake-up cheap when many runs wait for later or
-- belong to other types (PostgreSQL's version also tunes vacuum; SQLite has none).

-- +goose Up
CREATE INDEX IF NOT EXISTS swf_run_pending_type_idx
    ON workflow_run (type, priority, created_at) WHERE status = 'pending' AND deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS swf_run_pending_due_idx
    ON workflow_run (run_at) WHERE status = 'pending' AND deleted_at IS NULL;

-- +goose Down
DROP INDEX IF EXISTS swf_run_pending_due_idx;
DROP INDEX IF EXISTS swf_run_pending_type_idx;
