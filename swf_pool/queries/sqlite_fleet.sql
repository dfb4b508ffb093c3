-- The fleet's statements on SQLite (see postgres_fleet.sql). Times are UTC text bound from
-- Python (:now); ages are compared in seconds through julianday.

-- join_pool --
INSERT INTO swf_pool (id, host, pid, version, processes, executor, types, beat_seconds,
                      in_flight, per_second, started_at, last_seen)
VALUES (:pool_id, :host, :pid, :version, :processes, :executor, :types, :beat_seconds,
        :in_flight, :per_second, :now, :now)
ON CONFLICT (id) DO UPDATE
SET host = excluded.host, pid = excluded.pid, version = excluded.version,
    processes = excluded.processes, executor = excluded.executor, types = excluded.types,
    beat_seconds = excluded.beat_seconds, in_flight = excluded.in_flight,
    per_second = excluded.per_second, started_at = excluded.started_at,
    last_seen = excluded.last_seen;

-- pool_beat --
-- A heartbeat renews the pool's row (written again if it was forgotten meanwhile).
INSERT INTO swf_pool (id, host, pid, version, processes, executor, types, beat_seconds,
                      in_flight, per_second, started_at, last_seen)
VALUES (:pool_id, :host, :pid, :version, :processes, :executor, :types, :beat_seconds,
        :in_flight, :per_second, :now, :now)
ON CONFLICT (id) DO UPDATE
SET in_flight = excluded.in_flight, per_second = excluded.per_second,
    last_seen = excluded.last_seen;

-- forget_pools --
DELETE FROM swf_pool
WHERE (julianday(:now) - julianday(last_seen)) * 86400.0 > beat_seconds * :forget_after;

-- leave_pool --
DELETE FROM swf_pool WHERE id = :pool_id;

-- list_pools --
SELECT id, host, pid, version, processes, executor, types, beat_seconds, started_at,
       last_seen, in_flight, per_second,
       (julianday(:now) - julianday(last_seen)) * 86400.0 > beat_seconds * :lost_after AS lost
FROM swf_pool
WHERE (julianday(:now) - julianday(last_seen)) * 86400.0 <= beat_seconds * :forget_after
ORDER BY host, id;

-- type_controls --
SELECT type, paused, concurrency, rate_limit, rate_seconds FROM swf_type_control
WHERE paused OR concurrency IS NOT NULL OR rate_limit IS NOT NULL
ORDER BY type;

-- control_type --
INSERT INTO swf_type_control AS t (type, paused, concurrency, rate_limit, rate_seconds,
                                   tokens, refilled_at, updated_at)
VALUES (:type, coalesce(:paused, 0), :concurrency, :rate_limit, :rate_seconds, 0, :now, :now)
ON CONFLICT (type) DO UPDATE
SET paused = coalesce(:paused, t.paused),
    concurrency = CASE WHEN :set_concurrency THEN :concurrency ELSE t.concurrency END,
    rate_limit = CASE WHEN :set_rate THEN :rate_limit ELSE t.rate_limit END,
    rate_seconds = CASE WHEN :set_rate THEN :rate_seconds ELSE t.rate_seconds END,
    tokens = CASE WHEN :set_rate THEN 0 ELSE t.tokens END,
    refilled_at = CASE WHEN :set_rate THEN :now ELSE t.refilled_at END,
    updated_at = :now
RETURNING type, paused, concurrency, rate_limit, rate_seconds;

-- held_types --
-- The paused or limited types among those a claim asks for (see PostgreSQL's swf_claimable).
SELECT type, paused, concurrency, rate_limit, rate_seconds, tokens, refilled_at
FROM swf_type_control
WHERE (paused OR concurrency IS NOT NULL OR rate_limit IS NOT NULL)
  AND (swf_type_control.type IN (SELECT value FROM json_each(:types))
       OR EXISTS (SELECT 1 FROM json_each(:prefixes) p
                  WHERE swf_type_control.type LIKE p.value ESCAPE '\'))
ORDER BY type;

-- leased_count --
SELECT count(*) AS leased FROM workflow_run
WHERE type = :type AND status = 'leased' AND deleted_at IS NULL;

-- pending_free --
-- The claim's pending runs of the types that are neither paused nor limited.
SELECT id, type, priority, created_at FROM workflow_run INDEXED BY swf_run_pending_idx
WHERE status = 'pending' AND deleted_at IS NULL AND run_at <= :now
  AND (workflow_run.type IN (SELECT value FROM json_each(:types))
       OR EXISTS (SELECT 1 FROM json_each(:prefixes) p WHERE workflow_run.type LIKE p.value ESCAPE '\'))
  AND workflow_run.type NOT IN (SELECT value FROM json_each(:held))
ORDER BY priority, created_at
LIMIT :limit;

-- next_due --
-- the types held back (paused, at a limit) are left out: sqlite_fleet.next_due; runs due
-- before :since came with the claim that came back short (a held backlog is not walked)
SELECT min(run_at) AS due FROM workflow_run
WHERE status = 'pending' AND deleted_at IS NULL AND run_at > :since
  AND (workflow_run.type IN (SELECT value FROM json_each(:types))
       OR EXISTS (SELECT 1 FROM json_each(:prefixes) p
                  WHERE workflow_run.type LIKE p.value ESCAPE '\'))
  AND workflow_run.type NOT IN (SELECT value FROM json_each(:blocked));

-- waiting_of_type --
-- whether a run of the type waits (due now, or at all)
SELECT EXISTS (SELECT 1 FROM workflow_run INDEXED BY swf_run_pending_type_idx
               WHERE status = 'pending' AND deleted_at IS NULL AND type = :type
                 AND run_at <= :now) AS due,
       EXISTS (SELECT 1 FROM workflow_run INDEXED BY swf_run_pending_type_idx
               WHERE status = 'pending' AND deleted_at IS NULL AND type = :type) AS waiting;

-- pending_of_type --
SELECT id, type, priority, created_at FROM workflow_run INDEXED BY swf_run_pending_type_idx
WHERE status = 'pending' AND deleted_at IS NULL AND run_at <= :now AND type = :type
ORDER BY priority, created_at
LIMIT :limit;

-- spend_tokens --
UPDATE swf_type_control SET tokens = :tokens, refilled_at = :now WHERE type = :type;
