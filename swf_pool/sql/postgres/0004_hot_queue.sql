-- A queue table is small, hot and rewritten all day: claims, heartbeats and completions each
-- write a new version of a row. Indexes that keep the claim and the idle wake-up cheap when
-- many runs wait for later or belong to other types, and vacuum settings that keep up.

-- +goose Up
-- Pending runs of one type in claim order: a pool serving some types never walks the others.
CREATE INDEX IF NOT EXISTS swf_run_pending_type_idx
    ON workflow_run (type, priority, created_at) WHERE status = 'pending' AND deleted_at IS NULL;
-- Pending runs by due time: when the next delayed run is due, without walking the queue.
CREATE INDEX IF NOT EXISTS swf_run_pending_due_idx
    ON workflow_run (run_at) WHERE status = 'pending' AND deleted_at IS NULL;
-- Vacuum after 1 % of the rows changed (the default 20 % lets a busy queue bloat for hours),
-- analyze as often, so the planner sees the queue as it is. Leave 20 % of each page free:
-- status changes touch indexed columns, so updates cannot be HOT, but the new version of a
-- row can still land on its own page.
ALTER TABLE workflow_run SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 1
);

-- +goose Down
ALTER TABLE workflow_run RESET (
    fillfactor,
    autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor,
    autovacuum_analyze_threshold,
    autovacuum_vacuum_cost_delay
);
DROP INDEX IF EXISTS swf_run_pending_due_idx;
DROP INDEX IF EXISTS swf_run_pending_type_idx;
