-- The fleet's statements on PostgreSQL (see swf_pool/fleet.py): the pools' rows and the
-- per-type controls. A pool's row is renewed by its heartbeat (`heartbeat` in postgres.sql).

-- join_pool --
INSERT INTO swf_pool (id, host, pid, version, processes, executor, types, beat_seconds,
                      in_flight, per_second)
VALUES (%(pool_id)s, %(host)s, %(pid)s, %(version)s, %(processes)s, %(executor)s,
        %(types)s::jsonb, %(beat_seconds)s, %(in_flight)s, %(per_second)s)
ON CONFLICT (id) DO UPDATE
SET host = excluded.host, pid = excluded.pid, version = excluded.version,
    processes = excluded.processes, executor = excluded.executor, types = excluded.types,
    beat_seconds = excluded.beat_seconds, in_flight = excluded.in_flight,
    per_second = excluded.per_second, started_at = now(), last_seen = now();

-- leave_pool --
DELETE FROM swf_pool WHERE id = %(pool_id)s;

-- list_pools --
-- Pools seen within FORGET_AFTER_BEATS of their heartbeats; lost after LOST_AFTER_BEATS.
SELECT id, host, pid, version, processes, executor, types, beat_seconds, started_at,
       last_seen, in_flight, per_second,
       last_seen < now() - make_interval(secs => beat_seconds * %(lost_after)s) AS lost
FROM swf_pool
WHERE last_seen >= now() - make_interval(secs => beat_seconds * %(forget_after)s)
ORDER BY host, id;

-- type_controls --
SELECT type, paused, concurrency, rate_limit, rate_seconds FROM swf_type_control
WHERE paused OR concurrency IS NOT NULL OR rate_limit IS NOT NULL
ORDER BY type;

-- control_type --
-- Change what is given (`set_*`), keep the rest; a new rate starts with an empty bucket.
-- Pools are woken: a resumed type, or a raised limit, is claimed at once.
WITH changed AS (
    INSERT INTO swf_type_control AS t (type, paused, concurrency, rate_limit, rate_seconds)
    VALUES (%(type)s, coalesce(%(paused)s, false), %(concurrency)s, %(rate_limit)s,
            %(rate_seconds)s)
    ON CONFLICT (type) DO UPDATE
    SET paused = coalesce(%(paused)s, t.paused),
        concurrency = CASE WHEN %(set_concurrency)s THEN %(concurrency)s ELSE t.concurrency END,
        rate_limit = CASE WHEN %(set_rate)s THEN %(rate_limit)s ELSE t.rate_limit END,
        rate_seconds = CASE WHEN %(set_rate)s THEN %(rate_seconds)s ELSE t.rate_seconds END,
        tokens = CASE WHEN %(set_rate)s THEN 0 ELSE t.tokens END,
        refilled_at = CASE WHEN %(set_rate)s THEN now() ELSE t.refilled_at END,
        updated_at = now()
    RETURNING t.type, t.paused, t.concurrency, t.rate_limit, t.rate_seconds
)
SELECT c.*, (SELECT pg_notify('swf_pool.' || current_schema(), '')) IS NULL AS notified
FROM changed c;
