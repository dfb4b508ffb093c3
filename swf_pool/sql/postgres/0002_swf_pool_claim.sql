-- swf-pool's additions, all additive: the partial indexes that keep every hot-path query off
-- finished rows, the lease_expired and released events, and a NOTIFY on insert that wakes idle
-- workers (the Go library's inserts included).

-- +goose Up
-- Runnable runs in claim order; finished rows are not in the index at all.
CREATE INDEX IF NOT EXISTS swf_run_pending_idx
    ON workflow_run (priority, created_at) WHERE status = 'pending' AND deleted_at IS NULL;
-- Leases by expiry, for rescuing the runs of dead workers.
CREATE INDEX IF NOT EXISTS swf_run_leased_idx
    ON workflow_run (lease_until) WHERE status = 'leased' AND deleted_at IS NULL;
-- Listing newest first, optionally by type.
CREATE INDEX IF NOT EXISTS swf_run_type_created_idx ON workflow_run (type, created_at DESC);

ALTER TABLE workflow_event DROP CONSTRAINT IF EXISTS workflow_event_event_type_check;
ALTER TABLE workflow_event ADD CONSTRAINT workflow_event_event_type_check
    CHECK (event_type IN ('created', 'leased', 'started', 'heartbeat', 'succeeded', 'failed',
                          'retried', 'cancelled', 'lease_expired', 'released'));

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION swf_notify_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One notification per statement, on the channel named after the schema.
    IF EXISTS (SELECT 1 FROM new_runs) THEN
        PERFORM pg_notify('swf_pool.' || TG_TABLE_SCHEMA, '');
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
DROP TRIGGER IF EXISTS swf_notify_runs ON workflow_run;
CREATE TRIGGER swf_notify_runs AFTER INSERT ON workflow_run
    REFERENCING NEW TABLE AS new_runs FOR EACH STATEMENT EXECUTE FUNCTION swf_notify_runs();

-- +goose Down
DROP TRIGGER IF EXISTS swf_notify_runs ON workflow_run;
DROP FUNCTION IF EXISTS swf_notify_runs();
DELETE FROM workflow_event WHERE event_type IN ('lease_expired', 'released');
ALTER TABLE workflow_event DROP CONSTRAINT IF EXISTS workflow_event_event_type_check;
ALTER TABLE workflow_event ADD CONSTRAINT workflow_event_event_type_check
    CHECK (event_type IN ('created', 'leased', 'started', 'heartbeat', 'succeeded', 'failed',
                          'retried', 'cancelled'));
DROP INDEX IF EXISTS swf_run_type_created_idx;
DROP INDEX IF EXISTS swf_run_leased_idx;
DROP INDEX IF EXISTS swf_run_pending_idx;
