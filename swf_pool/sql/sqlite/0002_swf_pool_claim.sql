-- swf-pool's additions: partial indexes that keep the claim off finished rows.

-- +goose Up
CREATE INDEX IF NOT EXISTS swf_run_pending_idx
    ON workflow_run (priority, created_at) WHERE status = 'pending' AND deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS swf_run_leased_idx
    ON workflow_run (lease_until) WHERE status = 'leased' AND deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS swf_run_type_created_idx ON workflow_run (type, created_at DESC);

-- +goose Down
DROP INDEX IF EXISTS swf_run_type_created_idx;
DROP INDEX IF EXISTS swf_run_leased_idx;
DROP INDEX IF EXISTS swf_run_pending_idx;
