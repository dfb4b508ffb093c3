-- The fleet (see the PostgreSQL file): a row per live pool and per-type controls (a pause, a
-- concurrency limit, a rate limit as a token bucket) that the claim honours. Times are text
-- as everywhere in this schema. SQLite's claim applies the controls in its transaction.

-- +goose Up
CREATE TABLE IF NOT EXISTS swf_pool (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT NOT NULL,
    processes    INTEGER NOT NULL,
    executor     TEXT NOT NULL,
    types        TEXT NOT NULL DEFAULT '[]',
    started_at   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    beat_seconds REAL NOT NULL CHECK (beat_seconds > 0),
    in_flight    INTEGER NOT NULL DEFAULT 0,
    per_second   REAL NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS swf_type_control (
    type         TEXT PRIMARY KEY,
    paused       INTEGER NOT NULL DEFAULT 0,
    concurrency  INTEGER CHECK (concurrency > 0),
    rate_limit   INTEGER CHECK (rate_limit > 0),
    rate_seconds REAL CHECK (rate_seconds > 0),
    tokens       REAL NOT NULL DEFAULT 0,
    refilled_at  TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    CHECK ((rate_limit IS NULL) = (rate_seconds IS NULL))
);

-- Pending runs by type in claim order, for claims that skip paused or limited types (see the
-- PostgreSQL file). Only those claims name it (INDEXED BY).
CREATE INDEX IF NOT EXISTS swf_run_pending_type_idx
    ON workflow_run (type, priority, created_at) WHERE status = 'pending' AND deleted_at IS NULL;

-- +goose Down
DROP INDEX IF EXISTS swf_run_pending_type_idx;
DROP TABLE IF EXISTS swf_type_control;
DROP TABLE IF EXISTS swf_pool;
