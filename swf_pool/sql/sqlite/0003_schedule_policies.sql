-- Additive: what a ticker does with missed fires, and why a schedule was disabled.

-- +goose Up
ALTER TABLE workflow_schedule ADD COLUMN missed_policy TEXT NOT NULL DEFAULT 'skip'
    CHECK (missed_policy IN ('skip', 'catch_up'));
ALTER TABLE workflow_schedule ADD COLUMN catch_up_limit INTEGER NOT NULL DEFAULT 10
    CHECK (catch_up_limit >= 1);
ALTER TABLE workflow_schedule ADD COLUMN last_error TEXT;

-- +goose Down
ALTER TABLE workflow_schedule DROP COLUMN last_error;
ALTER TABLE workflow_schedule DROP COLUMN catch_up_limit;
ALTER TABLE workflow_schedule DROP COLUMN missed_policy;
