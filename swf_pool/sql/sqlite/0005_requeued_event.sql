-- The `requeued` event (an operator's retry). SQLite's event table has no CHECK on the
-- event type, so there is nothing to change; the version keeps both backends in step.

-- +goose Up
SELECT 1;

-- +goose Down
DELETE FROM workflow_event WHERE event_type = 'requeued';
