-- Additive: what a ticker does with missed fires, why a schedule was disabled, and a NOTIFY
-- when schedules are created or changed, so that sleeping tickers wake up.

-- +goose Up
ALTER TABLE workflow_schedule
    ADD COLUMN IF NOT EXISTS missed_policy TEXT NOT NULL DEFAULT 'skip'
        CHECK (missed_policy IN ('skip', 'catch_up')),
    ADD COLUMN IF NOT EXISTS catch_up_limit INT NOT NULL DEFAULT 10 CHECK (catch_up_limit >= 1),
    ADD COLUMN IF NOT EXISTS last_error TEXT;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION swf_notify_schedules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('swf_pool_schedules.' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
DROP TRIGGER IF EXISTS swf_notify_schedules ON workflow_schedule;
CREATE TRIGGER swf_notify_schedules
    AFTER INSERT OR UPDATE OF schedule, timezone, enabled, deleted_at ON workflow_schedule
    FOR EACH STATEMENT EXECUTE FUNCTION swf_notify_schedules();

-- +goose Down
DROP TRIGGER IF EXISTS swf_notify_schedules ON workflow_schedule;
DROP FUNCTION IF EXISTS swf_notify_schedules();
ALTER TABLE workflow_schedule
    DROP COLUMN IF EXISTS last_error,
    DROP COLUMN IF EXISTS catch_up_limit,
    DROP COLUMN IF EXISTS missed_policy;
