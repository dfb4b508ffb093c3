-- The fleet: a row per live pool (written when it starts, renewed by its heartbeat, removed
-- when it stops cleanly) and per-type controls that every pool's claim honours: a pause, a
-- concurrency limit (runs leased at once, over all pools) and a rate limit (starts per
-- period, over all pools, as a token bucket). swf-pool's own tables: the Go library neither
-- reads nor writes them, and its claim does not honour them.

-- +goose Up
CREATE TABLE IF NOT EXISTS swf_pool (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    version      text NOT NULL,
    processes    integer NOT NULL,
    executor     text NOT NULL,
    types        jsonb NOT NULL DEFAULT '[]',
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    beat_seconds double precision NOT NULL CHECK (beat_seconds > 0),
    in_flight    integer NOT NULL DEFAULT 0,
    per_second   double precision NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS swf_type_control (
    type         text PRIMARY KEY,
    paused       boolean NOT NULL DEFAULT false,
    concurrency  integer CHECK (concurrency > 0),
    rate_limit   integer CHECK (rate_limit > 0),
    rate_seconds double precision CHECK (rate_seconds > 0),
    tokens       double precision NOT NULL DEFAULT 0,
    refilled_at  timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_limit IS NULL) = (rate_seconds IS NULL))
);

-- Pending runs by type in claim order, for the claims that skip paused or limited types: a
-- walk of swf_run_pending_idx past a paused type's backlog would cost every claim that whole
-- backlog. (0006 dropped it because a misled planner read it through a bitmap scan; only
-- swf_claimable, which forbids bitmap scans and sorts, walks it now.)
CREATE INDEX IF NOT EXISTS swf_run_pending_type_idx
    ON workflow_run (type, priority, created_at) WHERE status = 'pending' AND deleted_at IS NULL;

-- A rate-limited type's tokens now: refilled at the limit's pace since the last claim, up to
-- three seconds' worth (at least one).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION swf_tokens(tokens double precision, refilled_at timestamptz,
                                      rate_limit int, rate_seconds double precision)
RETURNS double precision LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN rate_limit IS NULL THEN NULL ELSE least(
        greatest(1.0, 3.0 * rate_limit / rate_seconds),
        tokens + rate_limit / rate_seconds
                 * greatest(0.0, extract(epoch FROM now() - refilled_at)::double precision))
    END
$$;
-- +goose StatementEnd

-- The claim's choice of pending runs (0007), now honouring the controls. Types that are
-- neither paused nor limited take the fast path of 0007 unchanged. A limited type's control
-- row is locked (in type order: no deadlock between claims) for the rest of the claim's
-- transaction, so claims of that type queue up across pools while other types flow; each
-- statement after the lock reads a fresh snapshot, so the leases counted include those of
-- the claim that held the lock before. Rate limits are token buckets refilled at the limit's
-- pace and holding at most three seconds' worth (at least one token): after an idle spell a
-- burst of three seconds' worth at most, so a minute never sees more than 5 % over the limit.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION swf_claimable(types text[], prefixes text[], lim int)
RETURNS TABLE (id uuid, priority int, created_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off
SET enable_sort = off
SET enable_seqscan = off
-- (the costs that enable_seqscan = off puts on the controls' small table would pass the JIT's
-- threshold: 0.1 s of compiling per claim)
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    held text[];
    allowed text[] := '{}';
    allowances int[] := '{}';
    rated text[] := '{}';
    taken text[] := '{}';
    allowance bigint;
    c record;
    r record;
BEGIN
    SELECT array_agg(t.type) INTO held FROM swf_type_control t
    WHERE (t.paused OR t.concurrency IS NOT NULL OR t.rate_limit IS NOT NULL)
      AND (t.type = ANY(types) OR t.type LIKE ANY(prefixes));
    IF held IS NULL THEN
        RETURN QUERY
        SELECT w.id, w.priority, w.created_at FROM workflow_run w
        WHERE w.status = 'pending' AND w.deleted_at IS NULL AND w.run_at <= now()
          AND (w.type = ANY(types) OR w.type LIKE ANY(prefixes))
        ORDER BY w.priority, w.created_at
        LIMIT lim
        FOR UPDATE SKIP LOCKED;
        RETURN;
    END IF;
    FOR c IN
        SELECT t.type, t.concurrency, t.rate_limit,
               swf_tokens(t.tokens, t.refilled_at, t.rate_limit, t.rate_seconds) AS tokens
        FROM swf_type_control t
        WHERE t.type = ANY(held) AND NOT t.paused
          -- a limited type with nothing due is neither locked nor counted
          AND EXISTS (SELECT 1 FROM workflow_run w
                      WHERE w.type = t.type AND w.status = 'pending' AND w.deleted_at IS NULL
                        AND w.run_at <= now())
        ORDER BY t.type
        FOR UPDATE OF t
    LOOP
        allowance := lim;
        IF c.concurrency IS NOT NULL THEN
            allowance := least(allowance, c.concurrency - (
                SELECT count(*) FROM workflow_run w
                WHERE w.type = c.type AND w.status = 'leased' AND w.deleted_at IS NULL));
        END IF;
        IF c.rate_limit IS NOT NULL THEN
            allowance := least(allowance, floor(c.tokens)::bigint);
            rated := rated || c.type;
        END IF;
        IF allowance > 0 THEN
            allowed := allowed || c.type;
            allowances := allowances || allowance::int;
        END IF;
    END LOOP;
    FOR r IN
        WITH free AS (
            -- the other types: one walk in claim order where the pool names its types
            -- (each through swf_run_pending_type_idx), the whole queue's where it claims
            -- by prefix
            SELECT f.id, f.priority, f.created_at, f.type
            FROM unnest(types) AS a (type)
            CROSS JOIN LATERAL (
                SELECT w.id, w.priority, w.created_at, w.type FROM workflow_run w
                WHERE w.status = 'pending' AND w.deleted_at IS NULL AND w.run_at <= now()
                  AND w.type = a.type
                ORDER BY w.priority, w.created_at
                LIMIT lim
                FOR UPDATE SKIP LOCKED
            ) f
            WHERE cardinality(prefixes) = 0 AND a.type <> ALL(held)
        ), free_by_prefix AS (
            SELECT w.id, w.priority, w.created_at, w.type FROM workflow_run w
            WHERE cardinality(prefixes) > 0 AND w.status = 'pending' AND w.deleted_at IS NULL
              AND w.run_at <= now() AND w.type <> ALL(held)
              AND (w.type = ANY(types) OR w.type LIKE ANY(prefixes))
            ORDER BY w.priority, w.created_at
            LIMIT lim
            FOR UPDATE SKIP LOCKED
        ), limited AS (
            SELECT l.id, l.priority, l.created_at, l.type
            FROM unnest(allowed, allowances) AS a (type, n)
            CROSS JOIN LATERAL (
                SELECT w.id, w.priority, w.created_at, w.type FROM workflow_run w
                WHERE w.status = 'pending' AND w.deleted_at IS NULL AND w.run_at <= now()
                  AND w.type = a.type
                ORDER BY w.priority, w.created_at
                LIMIT a.n
                FOR UPDATE SKIP LOCKED
            ) l
        )
        SELECT p.id, p.priority, p.created_at, p.type
        FROM (SELECT * FROM free UNION ALL SELECT * FROM free_by_prefix
              UNION ALL SELECT * FROM limited) p
        ORDER BY p.priority, p.created_at
        LIMIT lim
    LOOP
        id := r.id;
        priority := r.priority;
        created_at := r.created_at;
        taken := taken || r.type;
        RETURN NEXT;
    END LOOP;
    UPDATE swf_type_control t
    SET tokens = swf_tokens(t.tokens, t.refilled_at, t.rate_limit, t.rate_seconds)
                 - (SELECT count(*) FROM unnest(taken) AS x WHERE x = t.type),
        refilled_at = greatest(t.refilled_at, now())
    WHERE t.type = ANY(rated);
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP INDEX IF EXISTS swf_run_pending_type_idx;
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION swf_claimable(types text[], prefixes text[], lim int)
RETURNS TABLE (id uuid, priority int, created_at timestamptz)
LANGUAGE sql VOLATILE
SET enable_bitmapscan = off
SET enable_sort = off
SET enable_seqscan = off
AS $$
    SELECT r.id, r.priority, r.created_at FROM workflow_run r
    WHERE r.status = 'pending' AND r.deleted_at IS NULL AND r.run_at <= now()
      AND (r.type = ANY(types) OR r.type LIKE ANY(prefixes))
    ORDER BY r.priority, r.created_at
    LIMIT lim
    FOR UPDATE SKIP LOCKED
$$;
-- +goose StatementEnd
DROP FUNCTION IF EXISTS swf_tokens(double precision, timestamptz, int, double precision);
DROP TABLE IF EXISTS swf_type_control;
DROP TABLE IF EXISTS swf_pool;
