-- Every statement swf-pool runs on SQLite. Blocks start with `-- name --`. Times are UTC text
-- 'YYYY-MM-DD HH:MM:SS.ffffff' bound from Python (:now), which compares correctly with the
-- Go library's 'YYYY-MM-DD HH:MM:SS'. :types and :prefixes are JSON arrays.

-- version_table_exists --
SELECT count(*) AS present FROM sqlite_master WHERE type = 'table' AND name = 'goose_db_version';

-- create_version_table --
CREATE TABLE IF NOT EXISTS goose_db_version (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    version_id INTEGER NOT NULL,
    is_applied INTEGER NOT NULL,
    tstamp     TIMESTAMP DEFAULT (datetime('now'))
);
INSERT INTO goose_db_version (version_id, is_applied)
SELECT 0, 1 WHERE NOT EXISTS (SELECT 1 FROM goose_db_version);

-- applied_versions --
SELECT version_id FROM goose_db_version WHERE version_id > 0 AND is_applied ORDER BY version_id;

-- record_version --
INSERT INTO goose_db_version (version_id, is_applied) VALUES (:version, 1);

-- forget_version --
DELETE FROM goose_db_version WHERE version_id = :version;

-- submit --
INSERT INTO workflow_run (id, type, payload, priority, max_attempts, idempotency_key, run_at,
                          created_at, updated_at)
VALUES (:id, :type, :payload, :priority, :max_attempts, :key, coalesce(:run_at, :now), :now, :now)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id;

-- id_by_key --
SELECT id FROM workflow_run WHERE idempotency_key = :key;

-- insert_event --
INSERT INTO workflow_event (workflow_id, event_type, data, created_at)
VALUES (:id, :event, :data, :now);

-- get_run --
SELECT id, type, payload, status, priority, run_at, idempotency_key, attempt, max_attempts,
       leased_by, lease_until, last_error, result, created_at, updated_at
FROM workflow_run WHERE id = :id AND deleted_at IS NULL;

-- list_runs --
SELECT id, type, payload, status, priority, run_at, idempotency_key, attempt, max_attempts,
       leased_by, lease_until, last_error, result, created_at, updated_at
FROM workflow_run
WHERE deleted_at IS NULL
  AND (:type IS NULL OR type = :type)
  AND (:status IS NULL OR status = :status)
  AND (:key IS NULL OR idempotency_key = :key)
  AND (:after IS NULL OR created_at >= :after)
  AND (:before IS NULL OR created_at < :before)
ORDER BY created_at DESC, id
LIMIT :limit OFFSET :offset;

-- list_events --
SELECT id, workflow_id, event_type, data, created_at
FROM workflow_event WHERE workflow_id = :id ORDER BY id;

-- run_status --
SELECT status FROM workflow_run WHERE id = :id AND deleted_at IS NULL;

-- cancel --
UPDATE workflow_run SET status = 'cancelled', lease_until = NULL, updated_at = :now
WHERE id = :id AND status IN ('pending', 'leased') AND deleted_at IS NULL
RETURNING id;

-- expired --
-- in claim order, as the pending runs: a rescue goes before no more urgent pending run
SELECT id, leased_by, attempt, max_attempts, priority, created_at FROM workflow_run
WHERE status = 'leased' AND deleted_at IS NULL AND lease_until < :now
  AND (workflow_run.type IN (SELECT value FROM json_each(:types))
       OR EXISTS (SELECT 1 FROM json_each(:prefixes) p WHERE workflow_run.type LIKE p.value ESCAPE '\'))
  AND workflow_run.type NOT IN (SELECT type FROM swf_type_control WHERE paused)
ORDER BY priority, created_at
LIMIT :limit;

-- pending --
-- Claim order through swf_run_pending_idx, whatever the planner guesses (see PostgreSQL's
-- swf_claimable): reading every pending run and sorting them would cost the whole queue.
SELECT id, priority, created_at FROM workflow_run INDEXED BY swf_run_pending_idx
WHERE status = 'pending' AND deleted_at IS NULL AND run_at <= :now
  AND (workflow_run.type IN (SELECT value FROM json_each(:types))
       OR EXISTS (SELECT 1 FROM json_each(:prefixes) p WHERE workflow_run.type LIKE p.value ESCAPE '\'))
ORDER BY priority, created_at
LIMIT :limit;

-- exhaust --
UPDATE workflow_run SET status = 'failed', lease_until = NULL, updated_at = :now, last_error = :error
WHERE id = :id;

-- lease --
UPDATE workflow_run
SET status = 'leased', leased_by = :worker, attempt = attempt + 1, updated_at = :now,
    lease_until = :lease_until
WHERE id = :id
RETURNING id, type, payload, attempt, max_attempts, priority, created_at, run_at;

-- complete --
UPDATE workflow_run
SET status = :status, result = :result, last_error = coalesce(:error, last_error),
    run_at = coalesce(:retry_at, run_at), lease_until = NULL, updated_at = :now
WHERE id = :id AND status = 'leased' AND leased_by = :worker AND attempt = :attempt
RETURNING id;

-- holds --
SELECT 1 FROM workflow_run
WHERE id = :id AND status = 'leased' AND leased_by = :worker AND attempt = :attempt;

-- release --
UPDATE workflow_run
SET status = 'pending', attempt = attempt - 1, leased_by = NULL, lease_until = NULL,
    updated_at = :now
WHERE id = :id AND status = 'leased' AND leased_by = :worker AND attempt = :attempt
RETURNING id;

-- extend --
-- never shortens a lease (see postgres.sql); our times compare as text, as the claim's do
UPDATE workflow_run SET lease_until = max(coalesce(lease_until, :lease_until), :lease_until),
    updated_at = :now
WHERE id = :id AND status = 'leased' AND leased_by = :worker AND attempt = :attempt
  AND deleted_at IS NULL
RETURNING id;

-- register --
INSERT INTO workflow_registry (id, workflow_name, runtime, created_at, updated_at)
VALUES (:id, :name, 'python', :now, :now)
ON CONFLICT (workflow_name) DO UPDATE
SET runtime = excluded.runtime, is_enabled = 1, deleted_at = NULL, updated_at = excluded.updated_at;

-- create_schedule --
INSERT INTO workflow_schedule (id, type, payload, schedule, timezone, next_run_at, priority,
                               max_attempts, missed_policy, catch_up_limit, created_at,
                               updated_at)
VALUES (:id, :type, :payload, :cron, :timezone, :next_run_at, :priority, :max_attempts,
        :missed_policy, :catch_up_limit, :now, :now);

-- get_schedule --
SELECT id, type, payload, schedule, timezone, next_run_at, last_run_at, enabled, priority,
       max_attempts, missed_policy, catch_up_limit, last_error
FROM workflow_schedule WHERE id = :id AND deleted_at IS NULL;

-- list_schedules --
SELECT id, type, payload, schedule, timezone, next_run_at, last_run_at, enabled, priority,
       max_attempts, missed_policy, catch_up_limit, last_error
FROM workflow_schedule WHERE deleted_at IS NULL ORDER BY created_at, id;

-- update_schedule --
UPDATE workflow_schedule
SET payload = :payload, schedule = :cron, timezone = :timezone, next_run_at = :next_run_at,
    enabled = :enabled, priority = :priority, max_attempts = :max_attempts,
    missed_policy = :missed_policy, catch_up_limit = :catch_up_limit, last_error = NULL,
    updated_at = :now
WHERE id = :id AND deleted_at IS NULL
RETURNING id;

-- delete_schedule --
UPDATE workflow_schedule SET deleted_at = :now, enabled = 0, updated_at = :now
WHERE id = :id AND deleted_at IS NULL
RETURNING id;

-- due_schedules --
SELECT id, type, payload, schedule, timezone, next_run_at, last_run_at, enabled, priority,
       max_attempts, missed_policy, catch_up_limit, last_error
FROM workflow_schedule
WHERE enabled AND deleted_at IS NULL AND next_run_at <= :now
ORDER BY next_run_at
LIMIT :limit;

-- advance_schedule --
UPDATE workflow_schedule SET next_run_at = :next_run_at, last_run_at = :last_run_at,
    updated_at = :now
WHERE id = :id;

-- disable_schedule --
UPDATE workflow_schedule SET enabled = 0, last_error = :error, updated_at = :now WHERE id = :id;

-- next_schedule_due --
SELECT min(next_run_at) AS due FROM workflow_schedule WHERE enabled AND deleted_at IS NULL;

-- queue_depth --
SELECT type, status, count(*) AS depth,
       sum(run_at <= :now) AS due,
       min(CASE WHEN run_at <= :now THEN run_at END) AS oldest_due
FROM workflow_run
WHERE status IN ('pending', 'leased') AND deleted_at IS NULL
GROUP BY type, status;

-- failures_since --
SELECT r.type, count(*) AS failed
FROM workflow_event e JOIN workflow_run r ON r.id = e.workflow_id
WHERE e.event_type = 'failed' AND e.created_at >= :since
GROUP BY r.type;

-- lease_holders --
SELECT leased_by, count(*) AS runs FROM workflow_run
WHERE status = 'leased' AND deleted_at IS NULL
GROUP BY leased_by;

-- registered_types --
SELECT workflow_name, runtime FROM workflow_registry
WHERE deleted_at IS NULL AND coalesce(is_enabled, 1)
ORDER BY workflow_name;

-- run_state --
SELECT status, attempt FROM workflow_run
WHERE id = :id AND status IN ('failed', 'cancelled') AND deleted_at IS NULL;

-- requeue_one --
-- (the attempt keeps counting and the budget grows: see PostgreSQL's requeue)
UPDATE workflow_run
SET status = 'pending', max_attempts = min(attempt + max_attempts, 2147483647), run_at = :now,
    leased_by = NULL, lease_until = NULL, result = NULL, updated_at = :now
WHERE id = :id AND status IN ('failed', 'cancelled') AND deleted_at IS NULL;

-- requeue_candidates --
SELECT id FROM workflow_run
WHERE status = :status AND deleted_at IS NULL
  AND (:type IS NULL OR type = :type)
  AND (:since IS NULL OR updated_at >= :since)
  AND id > :after
ORDER BY id
LIMIT :limit;

-- prune_scan --
SELECT id FROM workflow_run WHERE id > :after ORDER BY id LIMIT :limit;

-- prune_match --
SELECT id FROM workflow_run
WHERE id IN (SELECT value FROM json_each(:ids))
  AND status IN (SELECT value FROM json_each(:statuses)) AND updated_at < :before;

-- prune_delete --
DELETE FROM workflow_run WHERE id IN (SELECT value FROM json_each(:ids));

-- table_rows --
SELECT count(*) AS estimate FROM workflow_run;

-- throughput --
SELECT substr(created_at, 1, 16) || ':00' AS minute,
       sum(event_type = 'succeeded') AS succeeded,
       sum(event_type = 'failed') AS failed
FROM workflow_event
WHERE event_type IN ('succeeded', 'failed') AND created_at >= :since
GROUP BY 1 ORDER BY 1;
