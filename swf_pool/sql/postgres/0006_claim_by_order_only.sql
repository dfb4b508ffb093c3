-- The pending-by-type index of 0004 let the planner, misled by a queue table's stale
-- statistics, claim through a bitmap scan that read and sorted every pending run of a type
-- (0.5 s per claim with a million waiting). The claim walks swf_run_pending_idx only.

-- +goose Up
DROP INDEX IF EXISTS swf_run_pending_type_idx;

-- +goose Down
CREATE INDEX IF NOT EXISTS swf_run_pending_type_idx
    ON workflow_run (type, priority, created_at) WHERE status = 'pending' AND deleted_at IS NULL;
