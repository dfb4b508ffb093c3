-- Additive: what a ticker does with missed fires, and why a schedule was disabled.

-- +goose Up
ALTER TABLE workflow_schedule
    ADD COLUMN IF NOT EXISTS missed_policy TEXT NOT NULL DEFAULT 'skip'
        CHECK (missed_policy IN ('skip', 'catch_up')),
    ADD COLUMN IF NOT EXISTS catch_up_limit INT NOT NULL DEFAULT 10 CHECK (catch_up_limit >= 1),
    ADD COLUMN IF NOT EXISTS last_error TEXT;

-- +goose Down
ALTER TABLE workflow_schedule
    DROP COLUMN IF EXISTS last_error,
    DROP COLUMN IF EXISTS catch_up_limit,
    DROP COLUMN IF EXISTS missed_policy;
