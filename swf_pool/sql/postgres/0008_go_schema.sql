-- The rest of the Go library's schema, for a database that only swf-pool migrated: 0001 left
-- five columns nullable that Go declares NOT NULL (its ListSchedules scans them into plain Go
-- values, so one NULL breaks the whole list), and lacked eight of Go's indexes. NULLs become
-- Go's defaults first. Stored cron descriptors, which Go's parser refuses, become their five
-- fields. Each index is created only where it is missing (a database that Go migrated has them
-- all), and marked as created here, so that Down drops only those.

-- +goose Up
UPDATE workflow_schedule SET enabled = true WHERE enabled IS NULL;
UPDATE workflow_schedule SET priority = 100 WHERE priority IS NULL;
UPDATE workflow_schedule SET max_attempts = 3 WHERE max_attempts IS NULL;
ALTER TABLE workflow_schedule
    ALTER COLUMN enabled SET NOT NULL,
    ALTER COLUMN priority SET NOT NULL,
    ALTER COLUMN max_attempts SET NOT NULL;

UPDATE workflow_registry SET intent_type = 'workflow' WHERE intent_type IS NULL;
UPDATE workflow_registry SET is_enabled = true WHERE is_enabled IS NULL;
ALTER TABLE workflow_registry
    ALTER COLUMN intent_type SET NOT NULL,
    ALTER COLUMN is_enabled SET NOT NULL;

-- The same times: robfig/cron's own expansion of each descriptor.
UPDATE workflow_schedule SET updated_at = now(), schedule = CASE schedule
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

-- +goose StatementBegin
DO $$
DECLARE
    go_index text[];
BEGIN
    FOREACH go_index SLICE 1 IN ARRAY ARRAY[
        ['idx_workflow_run_claim',
         'workflow_run (status, run_at, priority, created_at) WHERE status = ''pending'''],
        ['idx_workflow_run_type_prefix',
         'workflow_run (type text_pattern_ops, status, run_at) WHERE status = ''pending'''],
        ['idx_workflow_run_idempotency',
         'workflow_run (idempotency_key) WHERE idempotency_key IS NOT NULL'],
        ['idx_workflow_run_type_status',
         'workflow_run (type, status, created_at DESC)'],
        ['idx_workflow_run_deleted_at',
         'workflow_run (deleted_at) WHERE deleted_at IS NULL'],
        ['idx_workflow_registry_runtime',
         'workflow_registry (runtime, is_enabled)'],
        ['idx_workflow_registry_deleted_at',
         'workflow_registry (deleted_at) WHERE deleted_at IS NULL'],
        ['idx_workflow_schedule_type',
         'workflow_schedule (type)']
    ] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_indexes
                       WHERE schemaname = current_schema() AND indexname = go_index[1]) THEN
            EXECUTE format('CREATE INDEX %I ON %s', go_index[1], go_index[2]);
            EXECUTE format('COMMENT ON INDEX %I IS %L', go_index[1], 'swf-pool 0008');
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- Only the indexes that Up created: where the Go library created one, it stays. The NOT NULLs
-- and the 5-field crons stay too: they are the Go library's schema and data, and swf-pool at
-- version 7 works with them (it adopts databases that Go created, which have both).
-- +goose StatementBegin
DO $$
DECLARE
    created text;
BEGIN
    FOR created IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'i' AND n.nspname = current_schema()
          AND obj_description(c.oid, 'pg_class') = 'swf-pool 0008'
    LOOP
        EXECUTE format('DROP INDEX %I', created);
    END LOOP;
END
$$;
-- +goose StatementEnd
