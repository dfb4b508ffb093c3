-- Every statement swf-pool runs on PostgreSQL. Blocks start with `-- name --`; the code refers
-- to them by name. The search_path is set to the workflow schema on every connection.
-- `%(types)s` / `%(prefixes)s` select the runs a worker serves: exact types, or LIKE patterns
-- whose literal parts are already escaped.

-- version_table_exists --
SELECT to_regclass('goose_db_version') IS NOT NULL AS present;

-- create_version_table --
CREATE TABLE IF NOT EXISTS goose_db_version (
    id         SERIAL PRIMARY KEY,
    version_id BIGINT NOT NULL,
    is_applied BOOLEAN NOT NULL,
    tstamp     TIMESTAMP DEFAULT now()
);
INSERT INTO goose_db_version (version_id, is_applied)
SELECT 0, true WHERE NOT EXISTS (SELECT 1 FROM goose_db_version);

-- applied_versions --
SELECT version_id FROM goose_db_version WHERE version_id > 0 AND is_applied ORDER BY version_id;

-- record_version --
INSERT INTO goose_db_version (version_id, is_applied) VALUES (%(version)s, true);

-- forget_version --
DELETE FROM goose_db_version WHERE version_id = %(version)s;

-- submit --
-- The runs arrive as one JSON array (cheaper to send and parse than seven arrays). `created`
-- is the data of the run's `created` event (a schedule's fire names its schedule).
WITH runs AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(runs)s::jsonb)
         AS t (id uuid, type text, payload jsonb, priority int, max_attempts int,
               idempotency_key text, run_at timestamptz, created jsonb)
), inserted AS (
    INSERT INTO workflow_run (id, type, payload, priority, max_attempts, idempotency_key, run_at)
    -- (a JSON null payload comes out of the recordset as SQL NULL: put it back)
    SELECT id, type, coalesce(payload, 'null'), priority, max_attempts, idempotency_key,
           coalesce(run_at, now())
    FROM runs
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
), events AS (
    INSERT INTO workflow_event (workflow_id, event_type, data)
    SELECT i.id, 'created', r.created FROM inserted i JOIN runs r ON r.id = i.id
    WHERE %(audit_full)s OR r.created IS NOT NULL
)
-- only the runs NOT inserted (their key exists): usually none, so nothing to send back
SELECT array(SELECT r.id::text FROM runs r WHERE r.id NOT IN (SELECT id FROM inserted))
       AS skipped;

-- ids_by_key --
SELECT idempotency_key, id FROM workflow_run WHERE idempotency_key = ANY(%(keys)s::text[]);

-- get_run --
SELECT id, type, payload, status, priority, run_at, idempotency_key, attempt, max_attempts,
       leased_by, lease_until, last_error, result, created_at, updated_at
FROM workflow_run WHERE id = %(id)s AND deleted_at IS NULL;

-- list_runs --
SELECT id, type, payload, status, priority, run_at, idempotency_key, attempt, max_attempts,
       leased_by, lease_until, last_error, result, created_at, updated_at
FROM workflow_run
WHERE deleted_at IS NULL
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(key)s::text IS NULL OR idempotency_key = %(key)s::text)
  AND (%(after)s::timestamptz IS NULL OR created_at >= %(after)s::timestamptz)
  AND (%(before)s::timestamptz IS NULL OR created_at < %(before)s::timestamptz)
ORDER BY created_at DESC, id
LIMIT %(limit)s OFFSET %(offset)s;

-- list_events --
SELECT id, workflow_id, event_type, data, created_at
FROM workflow_event WHERE workflow_id = %(id)s ORDER BY id;

-- run_status --
SELECT status FROM workflow_run WHERE id = %(id)s AND deleted_at IS NULL;

-- cancel --
WITH cancelled AS (
    UPDATE workflow_run SET status = 'cancelled', lease_until = NULL, updated_at = now()
    WHERE id = %(id)s AND status IN ('pending', 'leased') AND deleted_at IS NULL
    RETURNING id
), events AS (
    INSERT INTO workflow_event (workflow_id, event_type) SELECT id, 'cancelled' FROM cancelled
)
-- its waits are woken (see `complete`); in a caller's transaction, at its commit
SELECT id, (SELECT pg_notify('swf_pool_done.' || current_schema(), id::text)) IS NULL AS woken
FROM cancelled;

-- claim --
-- One statement: pick pending runs in claim order and runs whose lease expired, lease them
-- (attempt + 1), fail expired runs that have no attempt left, and write the events.
WITH expired AS (
    SELECT id, leased_by, attempt, max_attempts, priority, created_at FROM workflow_run
    WHERE status = 'leased' AND deleted_at IS NULL AND lease_until < now()
      AND (type = ANY(%(types)s::text[]) OR type LIKE ANY(%(prefixes)s::text[]))
      AND type NOT IN (SELECT type FROM swf_type_control WHERE paused)
    ORDER BY priority, created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), pending AS (
    -- due pending runs in claim order, through swf_run_pending_idx whatever the statistics
    -- say (migration 0007)
    SELECT id, priority, created_at
    FROM swf_claimable(%(types)s::text[], %(prefixes)s::text[], %(limit)s::int)
), exhausted AS (
    UPDATE workflow_run r
    SET status = 'failed', lease_until = NULL, updated_at = now(),
        last_error = format('lease expired on attempt %%s of %%s: worker %%s stopped without '
                            'completing it', r.attempt, r.max_attempts, r.leased_by)
    FROM expired e WHERE r.id = e.id AND e.attempt >= e.max_attempts
    RETURNING r.id, r.attempt, r.last_error, e.leased_by
), notified AS (
    -- the waits of runs failed here are woken, as `complete` wakes them
    SELECT pg_notify('swf_pool_done.' || current_schema(),
                     CASE WHEN length(ids) < 7900 THEN ids ELSE '' END)
    FROM (SELECT string_agg(id::text, ',') AS ids FROM exhausted) f WHERE ids IS NOT NULL
), picked AS (
    -- rescues and pending runs together in claim order (the Go library's): a rescue goes
    -- before no more urgent pending run (the tokens of a rate-limited type left out here were
    -- spent all the same: under its limit, never over)
    SELECT id, expired_from, rescued FROM (
        SELECT id, leased_by AS expired_from, true AS rescued, priority, created_at
        FROM expired WHERE attempt < max_attempts
        UNION ALL
        SELECT id, NULL, false, priority, created_at FROM pending
    ) candidate
    ORDER BY priority, created_at
    LIMIT %(limit)s
), claimed AS (
    UPDATE workflow_run r
    SET status = 'leased', leased_by = %(worker)s, attempt = r.attempt + 1, updated_at = now(),
        lease_until = now() + make_interval(secs => %(lease)s)
    -- pinned to the primary key, as in `complete`: stale statistics made this a hash join
    -- over every row of the table
    FROM picked p WHERE r.id = ANY(ARRAY(SELECT id FROM picked)) AND r.id = p.id
    RETURNING r.id, r.type, r.payload, r.attempt, r.max_attempts, r.priority, r.created_at,
              r.run_at, p.rescued, p.expired_from
), events AS (
    INSERT INTO workflow_event (workflow_id, event_type, data)
    SELECT id, 'lease_expired', jsonb_build_object('worker_id', leased_by, 'attempt', attempt)
    FROM exhausted
    UNION ALL
    SELECT id, 'failed', jsonb_build_object('attempt', attempt, 'error', last_error)
    FROM exhausted WHERE (SELECT count(*) FROM notified) >= 0  -- (runs `notified`)
    UNION ALL
    SELECT id, 'lease_expired', jsonb_build_object('worker_id', expired_from, 'attempt', attempt - 1)
    FROM claimed WHERE rescued
    UNION ALL
    SELECT id, 'leased', jsonb_build_object('worker_id', %(worker)s::text, 'attempt', attempt)
    FROM claimed WHERE %(audit_full)s
), durable AS (
    -- A claim is durable, whatever the server's default: one undone by a crash would be
    -- claimed again under the same worker id and attempt, and the fence could not tell the
    -- first execution's result from the second's.
    SELECT set_config('synchronous_commit', CASE current_setting('synchronous_commit')
                      WHEN 'off' THEN 'on' ELSE current_setting('synchronous_commit') END, true)
)
-- the columns of `Claimed`, in its order
SELECT id::text, type, payload, attempt, max_attempts, created_at, run_at, rescued
FROM claimed CROSS JOIN durable ORDER BY priority, created_at;

-- complete --
-- One flush: the outcomes of finished attempts and the `started` events of attempts begun since
-- the last flush (those of attempts this flush completes come with their outcome, fenced by
-- it; the others are fenced here). Fenced: nothing applies unless this worker still holds
-- that attempt's lease.
-- `r.id = ANY(ARRAY(...))` pins every lookup to the primary key: a queue table's statistics
-- are always stale, and a misestimate here would mean a scan of every finished row.
WITH outcome AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb)
         AS o (id uuid, attempt int, status text, result jsonb, error text, retry_at timestamptz,
               started float8, traceback text)
), started AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(started)s::jsonb)
         AS s (id uuid, attempt int, at timestamptz)
), done AS (
    UPDATE workflow_run r
    SET status = o.status, result = o.result, last_error = coalesce(o.error, r.last_error),
        run_at = coalesce(o.retry_at, r.run_at), lease_until = NULL, updated_at = now()
    FROM outcome o
    WHERE r.id = ANY(ARRAY(SELECT id FROM outcome)) AND r.id = o.id AND r.status = 'leased'
      AND r.leased_by = %(worker)s AND r.attempt = o.attempt
    RETURNING r.id, o.status, o.attempt, o.error, o.started, o.traceback
), worker AS (
    SELECT jsonb_build_object('worker_id', %(worker)s::text) AS data
), events AS (
    INSERT INTO workflow_event (workflow_id, event_type, data, created_at)
    SELECT id, event_type, data, at FROM (
        SELECT d.id, 'started' AS event_type, w.data, to_timestamp(d.started) AS at, 0 AS step
        FROM done d CROSS JOIN worker w WHERE %(audit_full)s AND d.started IS NOT NULL
        UNION ALL
        SELECT s.id, 'started', w.data, s.at, 0
        FROM started s JOIN workflow_run r ON r.id = s.id CROSS JOIN worker w
        WHERE %(audit_full)s AND r.id = ANY(ARRAY(SELECT id FROM started))
          AND r.status = 'leased' AND r.leased_by = %(worker)s AND r.attempt = s.attempt
        UNION ALL
        SELECT id, CASE status WHEN 'pending' THEN 'retried' ELSE status END,
               CASE WHEN status <> 'succeeded'
                    THEN jsonb_build_object('attempt', attempt, 'error', error)
                         || CASE WHEN traceback IS NOT NULL
                                 THEN jsonb_build_object('traceback', traceback)
                                 ELSE '{}' END END,
               now(), 1
        FROM done WHERE %(audit_full)s OR status <> 'succeeded'
    ) e ORDER BY step
), finished AS (
    SELECT string_agg(id::text, ',') AS ids FROM done WHERE status <> 'pending'
), notified AS (
    -- One NOTIFY per flush for the waits (`Client.wait`), not one per run: the ids of the
    -- runs that finished, or nothing when they do not fit a payload (every waiter reads).
    SELECT pg_notify('swf_pool_done.' || current_schema(),
                     CASE WHEN length(ids) < 7900 THEN ids ELSE '' END)
    FROM finished WHERE ids IS NOT NULL
)
-- (the subquery runs `notified` once, at the first row: a flush that finished nothing
-- notifies nobody)
SELECT id::text, attempt FROM done WHERE (SELECT count(*) FROM notified) >= 0;  -- `Lease`s

-- fail_undecodable --
-- Claimed runs whose payload this client cannot decode (valid jsonb no JSON parser here takes:
-- a number beyond a double, nesting deeper than 1024): failed at once, saying why, so that
-- they cannot stop the pool; fenced like a completion.
WITH bad AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(runs)s::jsonb) AS b (id uuid, attempt int, error text)
), failed AS (
    UPDATE workflow_run r
    SET status = 'failed', lease_until = NULL, last_error = b.error, updated_at = now()
    FROM bad b
    WHERE r.id = ANY(ARRAY(SELECT id FROM bad)) AND r.id = b.id AND r.status = 'leased'
      AND r.leased_by = %(worker)s AND r.attempt = b.attempt
    RETURNING r.id, b.attempt, b.error
), events AS (
    INSERT INTO workflow_event (workflow_id, event_type, data)
    SELECT id, 'failed', jsonb_build_object('attempt', attempt, 'error', error) FROM failed
), notified AS (
    -- their waits are woken, as `complete` wakes them
    SELECT pg_notify('swf_pool_done.' || current_schema(),
                     CASE WHEN length(ids) < 7900 THEN ids ELSE '' END)
    FROM (SELECT string_agg(id::text, ',') AS ids FROM failed) f WHERE ids IS NOT NULL
)
SELECT id FROM failed WHERE (SELECT count(*) FROM notified) >= 0;

-- release --
-- Give back runs that were claimed but never started: pending again, the attempt not spent.
WITH leases AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(leases)s::jsonb) AS l (id uuid, attempt int)
), released AS (
    UPDATE workflow_run r
    SET status = 'pending', attempt = r.attempt - 1, leased_by = NULL, lease_until = NULL,
        updated_at = now()
    FROM leases l
    WHERE r.id = ANY(ARRAY(SELECT id FROM leases)) AND r.id = l.id AND r.status = 'leased'
      AND r.leased_by = %(worker)s AND r.attempt = l.attempt
    RETURNING r.id, l.attempt
), events AS (
    INSERT INTO workflow_event (workflow_id, event_type, data)
    SELECT id, 'released', jsonb_build_object('worker_id', %(worker)s::text, 'attempt', attempt)
    FROM released
)
SELECT id, attempt FROM released;

-- next_due --
-- When a run of ours comes due next (`due`), when a rate-limited type with runs waiting gets its
-- next token (`token_at`), and whether a due run is `held_back` by its type's concurrency
-- limit. A paused type's runs are never due (a drain does not wait for them); a type at its
-- concurrency limit's are not due until a place frees (our completions wake the claimer,
-- other pools' the next poll); a rate-limited type's not before its next token. (Due at once,
-- a type the claim just skipped for its limit made the pool claim in a loop.) Asked after a
-- claim came back short, which took every free run due then: `due` looks only at runs due
-- since a moment before it, so the backlog of a type held back is never walked.
WITH control AS (
    SELECT t.type, t.paused,
           t.concurrency <= (SELECT count(*) FROM workflow_run l
                             WHERE l.type = t.type AND l.status = 'leased'
                               AND l.deleted_at IS NULL) AS at_limit,
           now() + make_interval(secs => greatest(0.0, 1.0 - swf_tokens(
               t.tokens, t.refilled_at, t.rate_limit, t.rate_seconds))
               * t.rate_seconds / t.rate_limit) AS token_at
    FROM swf_type_control t
    WHERE (t.paused OR t.concurrency IS NOT NULL OR t.rate_limit IS NOT NULL)
      AND (t.type = ANY(%(types)s::text[]) OR t.type LIKE ANY(%(prefixes)s::text[]))
)
SELECT
    -- a limited type with a place or a token free since the claim, and a run due: due now
    (SELECT now() FROM control c
     WHERE NOT c.paused AND c.at_limit IS NOT TRUE AND coalesce(c.token_at <= now(), true)
       AND EXISTS (SELECT 1 FROM workflow_run w
                   WHERE w.type = c.type AND w.status = 'pending'
                     AND w.deleted_at IS NULL AND w.run_at <= now())
     LIMIT 1) AS ready,
    -- the first in run_at order (through swf_run_pending_due_idx; with min(), a planner
    -- misled by stale statistics read the whole backlog through swf_run_pending_type_idx)
    (SELECT run_at FROM workflow_run
     WHERE status = 'pending' AND deleted_at IS NULL
       AND run_at > now() - make_interval(secs => %(since)s)
       AND (type = ANY(%(types)s::text[]) OR type LIKE ANY(%(prefixes)s::text[]))
       AND type NOT IN (SELECT type FROM control
                        WHERE paused OR at_limit IS TRUE OR token_at > now())
     ORDER BY run_at LIMIT 1) AS due,
    (SELECT min(token_at) FROM control c
     WHERE NOT c.paused AND c.at_limit IS NOT TRUE AND c.token_at > now()
       AND EXISTS (SELECT 1 FROM workflow_run w
                   WHERE w.type = c.type AND w.status = 'pending'
                     AND w.deleted_at IS NULL)) AS token_at,
    EXISTS (SELECT 1 FROM control c
            WHERE NOT c.paused AND c.at_limit
              AND EXISTS (SELECT 1 FROM workflow_run w
                          WHERE w.type = c.type AND w.status = 'pending'
                            AND w.deleted_at IS NULL AND w.run_at <= now())) AS held_back;

-- heartbeat --
-- Extend the leases this worker still holds (never shorten one: a handler's `run.heartbeat()`
-- asking for less than the pool's lease must not let it expire between two renewals); report
-- every run's status in the same trip.
-- SKIP LOCKED: a row locked now is being completed, cancelled or released, and waiting for it
-- could deadlock with a flush (the two lock rows in no common order). Such a row is reported
-- as held if it was ours when the statement began; the next beat tells what became of it.
WITH held AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(leases)s::jsonb) AS h (id uuid, attempt int)
), mine AS (
    SELECT r.id FROM workflow_run r JOIN held h ON r.id = h.id AND r.attempt = h.attempt
    WHERE r.id = ANY(ARRAY(SELECT id FROM held)) AND r.status = 'leased'
      AND r.leased_by = %(worker)s AND r.deleted_at IS NULL
    FOR UPDATE OF r SKIP LOCKED
), extended AS (
    UPDATE workflow_run r
    SET lease_until = greatest(r.lease_until, now() + make_interval(secs => %(extend)s)),
        updated_at = now()
    WHERE r.id = ANY(ARRAY(SELECT id FROM mine))
    RETURNING r.id, r.attempt
), events AS (
    INSERT INTO workflow_event (workflow_id, event_type, data)
    SELECT id, 'heartbeat', jsonb_build_object('extended_by_seconds', %(extend)s)
    FROM extended WHERE %(record)s
), pool AS (
    -- the pool's row in the fleet (swf_pool/fleet.py), renewed in the same trip; written
    -- again if it was forgotten meanwhile
    INSERT INTO swf_pool (id, host, pid, version, processes, executor, types, beat_seconds,
                          in_flight, per_second)
    SELECT %(pool_id)s, %(host)s, %(pid)s, %(version)s, %(processes)s, %(executor)s,
           %(types)s::jsonb, %(beat_seconds)s, %(in_flight)s, %(per_second)s
    WHERE %(pool_id)s::text IS NOT NULL
    ON CONFLICT (id) DO UPDATE
    SET in_flight = excluded.in_flight, per_second = excluded.per_second, last_seen = now()
), forgotten AS (
    DELETE FROM swf_pool
    WHERE %(pool_id)s::text IS NOT NULL
      AND last_seen < now() - make_interval(secs => beat_seconds * %(forget_after)s)
), async_commit AS (
    -- losing a renewal to a crash is safe: the lease may expire early, and then the run is
    -- claimed again under a new attempt, which the fence tells apart
    SELECT set_config('synchronous_commit', 'off', true)
)
SELECT h.id, h.attempt,
       e.id IS NOT NULL OR coalesce(r.status = 'leased' AND r.leased_by = %(worker)s
                                    AND r.attempt = h.attempt, false) AS held,
       r.status
FROM held h CROSS JOIN async_commit
LEFT JOIN extended e ON e.id = h.id AND e.attempt = h.attempt
LEFT JOIN workflow_run r
       ON r.id = h.id AND r.id = ANY(ARRAY(SELECT id FROM held)) AND r.deleted_at IS NULL;

-- register --
INSERT INTO workflow_registry (workflow_name, runtime)
SELECT name, 'python' FROM unnest(%(names)s::text[]) AS name
ON CONFLICT (workflow_name) DO UPDATE
SET runtime = excluded.runtime, is_enabled = true, deleted_at = NULL, updated_at = now();

-- create_schedule --
INSERT INTO workflow_schedule (id, type, payload, schedule, timezone, next_run_at, priority,
                               max_attempts, missed_policy, catch_up_limit)
VALUES (%(id)s, %(type)s, %(payload)s::jsonb, %(cron)s, %(timezone)s, %(next_run_at)s,
        %(priority)s, %(max_attempts)s, %(missed_policy)s, %(catch_up_limit)s);

-- get_schedule --
SELECT id, type, payload, schedule, timezone, next_run_at, last_run_at, enabled, priority,
       max_attempts, missed_policy, catch_up_limit, last_error
FROM workflow_schedule WHERE id = %(id)s AND deleted_at IS NULL;

-- list_schedules --
SELECT id, type, payload, schedule, timezone, next_run_at, last_run_at, enabled, priority,
       max_attempts, missed_policy, catch_up_limit, last_error
FROM workflow_schedule WHERE deleted_at IS NULL ORDER BY created_at, id;

-- update_schedule --
UPDATE workflow_schedule
SET payload = %(payload)s::jsonb, schedule = %(cron)s, timezone = %(timezone)s,
    next_run_at = %(next_run_at)s, enabled = %(enabled)s, priority = %(priority)s,
    max_attempts = %(max_attempts)s, missed_policy = %(missed_policy)s,
    catch_up_limit = %(catch_up_limit)s, last_error = NULL, updated_at = now()
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING id;

-- delete_schedule --
UPDATE workflow_schedule SET deleted_at = now(), enabled = false, updated_at = now()
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING id;

-- due_schedules --
SELECT id, type, payload, schedule, timezone, next_run_at, last_run_at, enabled, priority,
       max_attempts, missed_policy, catch_up_limit, last_error
FROM workflow_schedule
WHERE enabled AND deleted_at IS NULL AND next_run_at <= %(now)s
ORDER BY next_run_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- advance_schedule --
UPDATE workflow_schedule
SET next_run_at = %(next_run_at)s, last_run_at = %(last_run_at)s, updated_at = now()
WHERE id = %(id)s;

-- disable_schedule --
UPDATE workflow_schedule SET enabled = false, last_error = %(error)s, updated_at = now()
WHERE id = %(id)s;

-- next_schedule_due --
SELECT min(next_run_at) AS due FROM workflow_schedule WHERE enabled AND deleted_at IS NULL;

-- queue_depth --
-- Depth and lag per type, from the partial indexes on pending and leased runs: the work is
-- proportional to the queue, never to the history. Run periodically, not per poll.
SELECT type, status, count(*) AS depth,
       count(*) FILTER (WHERE run_at <= now()) AS due,
       min(run_at) FILTER (WHERE run_at <= now()) AS oldest_due
FROM workflow_run
WHERE status IN ('pending', 'leased') AND deleted_at IS NULL
GROUP BY type, status;

-- failures_since --
SELECT r.type, count(*) AS failed
FROM workflow_event e JOIN workflow_run r ON r.id = e.workflow_id
WHERE e.event_type = 'failed' AND e.created_at >= %(since)s
GROUP BY r.type;

-- lease_holders --
SELECT leased_by, count(*) AS runs FROM workflow_run
WHERE status = 'leased' AND deleted_at IS NULL
GROUP BY leased_by;

-- registered_types --
SELECT workflow_name, runtime FROM workflow_registry
WHERE deleted_at IS NULL AND is_enabled IS NOT FALSE
ORDER BY workflow_name;

-- dead_tuples --
SELECT n_dead_tup AS dead FROM pg_stat_user_tables WHERE relid = 'workflow_run'::regclass;

-- db_now --
SELECT now() AS now;

-- requeue --
-- Put failed or cancelled runs back to pending with a fresh attempt budget; wake the pools.
-- The attempt number keeps counting (the budget grows instead): a cancelled run's handler
-- may still be running under its attempt, and the fence must tell it from the next one.
WITH old AS MATERIALIZED (
    SELECT id, status, attempt FROM workflow_run
    WHERE id = ANY(%(ids)s::uuid[]) AND status IN ('failed', 'cancelled') AND deleted_at IS NULL
    FOR UPDATE
), requeued AS (
    UPDATE workflow_run r
    SET status = 'pending', max_attempts = least(r.attempt + r.max_attempts, 2147483647),
        run_at = now(), leased_by = NULL, lease_until = NULL, result = NULL, updated_at = now()
    FROM old o WHERE r.id = o.id
    RETURNING r.id, o.status AS was, o.attempt
), events AS (
    INSERT INTO workflow_event (workflow_id, event_type, data)
    SELECT id, 'requeued', jsonb_build_object('from', was, 'attempts_used', attempt)
    FROM requeued
)
SELECT id, (SELECT pg_notify('swf_pool.' || current_schema(), '')) IS NULL AS notified
FROM requeued;

-- requeue_candidates --
SELECT id FROM workflow_run
WHERE status = %(status)s AND deleted_at IS NULL
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s::timestamptz)
  AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s;

-- prune --
-- One batch of retention: look at the next `limit` runs in primary-key order (one pass over
-- the table in all, no index needed on finished rows) and delete the finished ones older
-- than `before`; their events go with them (ON DELETE CASCADE). Short, bounded locks.
WITH scanned AS MATERIALIZED (
    SELECT id FROM workflow_run WHERE id > %(after)s::uuid ORDER BY id LIMIT %(limit)s
), doomed AS (
    SELECT id FROM workflow_run
    WHERE id = ANY(ARRAY(SELECT id FROM scanned)) AND status = ANY(%(statuses)s::text[])
      AND updated_at < %(before)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM workflow_run WHERE id IN (SELECT id FROM doomed) AND NOT %(dry_run)s
)
SELECT (SELECT id::text FROM scanned ORDER BY id DESC LIMIT 1) AS last,
       (SELECT count(*) FROM scanned) AS scanned,
       (SELECT count(*) FROM doomed) AS matched;

-- table_rows --
-- the planner's estimate, or a count if the table was never analyzed
SELECT CASE WHEN reltuples < 0 THEN (SELECT count(*) FROM workflow_run)
            ELSE reltuples::bigint END AS estimate
FROM pg_class WHERE oid = 'workflow_run'::regclass;

-- throughput --
-- Runs that ended, per minute, from their events (idx_workflow_event_type). With the lean
-- audit level `succeeded` events are not written, so only failures show.
SELECT date_trunc('minute', created_at) AS minute,
       count(*) FILTER (WHERE event_type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE event_type = 'failed') AS failed
FROM workflow_event
WHERE event_type IN ('succeeded', 'failed') AND created_at >= %(since)s
GROUP BY 1 ORDER BY 1;
