-- Additive: the `requeued` event, written when an operator puts a failed or cancelled run
-- back to pending (`swf-pool runs retry`).

-- +goose Up
ALTER TABLE workflow_event DROP CONSTRAINT IF EXISTS workflow_event_event_type_check;
ALTER TABLE workflow_event ADD CONSTRAINT workflow_event_event_type_check
    CHECK (event_type IN ('created', 'leased', 'started', 'heartbeat', 'succeeded', 'failed',
                          'retried', 'cancelled', 'lease_expired', 'released', 'requeued'));

-- +goose Down
DELETE FROM workflow_event WHERE event_type = 'requeued';
ALTER TABLE workflow_event DROP CONSTRAINT IF EXISTS workflow_event_event_type_check;
ALTER TABLE workflow_event ADD CONSTRAINT workflow_event_event_type_check
    CHECK (event_type IN ('created', 'leased', 'started', 'heartbeat', 'succeeded', 'failed',
                          'retried', 'cancelled', 'lease_expired', 'released'));
