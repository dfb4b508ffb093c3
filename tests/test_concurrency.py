"""One pool, several statements in flight: claims and flushes on connections of their own.

Each statement is slowed down on the server (a trigger that sleeps), so the pool has reason to
start another beside it; a sampler counts the pool's statements running at once in
pg_stat_activity, as an operator would see them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from swf_pool import Client, Pool, PoolStats, Status
from swf_pool.settings import OPTIONS, Option, PoolSettings

from .helpers import sql

APP = "tests.apps:registry"
SLOW = """
CREATE FUNCTION slow_{event}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
CREATE TRIGGER slow_{event} AFTER INSERT ON workflow_event FOR EACH STATEMENT
EXECUTE FUNCTION slow_{event}();
"""
RUNNING = """
SELECT count(*) FILTER (WHERE query LIKE %s) AS n FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND application_name = 'swf-pool'
"""


def slow_statements(dsn: str, seconds: float) -> None:
    """Every statement that writes events (claims and flushes, in full audit) takes longer."""
    sql(dsn, SLOW.format(event="events", seconds=seconds))


@contextmanager
def most_at_once(dsn: str, like: str) -> Iterator[list[int]]:
    """Sample how many of the pool's statements matching `like` run at once; the largest
    count seen is in the list when the block ends."""
    seen = [0]
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(RUNNING, (like,)).fetchone()
                seen[0] = max(seen[0], int(row[0]) if row else 0)
                stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(10)


def drain(pool: Pool) -> PoolStats:
    return pool.drain()


def test_several_claims_are_in_flight_at_once(postgres_dsn: str) -> None:
    with Client(postgres_dsn) as client:
        client.submit_many({"type": "t.echo", "payload": i} for i in range(600))
        slow_statements(postgres_dsn, 0.2)
        pool = Pool(client, APP, processes=2, batch_size=50, prefetch=300, db_concurrency=4)
        with most_at_once(postgres_dsn, "%swf_claimable%") as seen:
            stats = pool.drain()
        assert stats.succeeded == 600
        assert seen[0] >= 2  # one statement at a time before
        assert [r.status for r in client.list(limit=600)] == [Status.SUCCEEDED] * 600


def test_claims_in_flight_follow_the_runs_executed_at_once(postgres_dsn: str) -> None:
    """One process running 40 async runs at once has room for 8 claims of 5: by default they
    are all in flight together (the default followed --processes alone: 4)."""
    with Client(postgres_dsn) as client:
        client.submit_many({"type": "a.echo", "payload": i} for i in range(400))
        slow_statements(postgres_dsn, 0.2)
        pool = Pool(
            client, "tests.apps_async:registry", processes=1, concurrency=40, batch_size=5,
            prefetch=0,
        )  # fmt: skip
        with most_at_once(postgres_dsn, "%swf_claimable%") as seen:
            stats = pool.drain()
        assert stats.succeeded == 400
        assert seen[0] > 4


def test_a_flush_refused_beside_one_that_succeeds(postgres_dsn: str) -> None:
    """Two flushes in flight; the database refuses one for its data. The other's outcomes are
    stored once, and the refused one is retried outcome by outcome: only the bad outcome
    fails."""
    with Client(postgres_dsn) as client:
        ids = [
            s.id for s in client.submit_many({"type": "t.echo", "payload": i} for i in range(200))
        ]
        poisoned = client.submit("t.echo", "poison").id
        sql(
            postgres_dsn,
            "ALTER TABLE workflow_run ADD CONSTRAINT no_poison "
            "CHECK (status <> 'succeeded' OR payload <> '\"poison\"')",
        )
        slow_statements(postgres_dsn, 0.05)
        pool = Pool(client, APP, processes=2, batch_size=20, prefetch=100, db_concurrency=4)
        with most_at_once(postgres_dsn, "%WITH outcome AS MATERIALIZED%") as seen:
            stats = pool.drain()
        assert seen[0] >= 2
        assert [client.get(i).status for i in ids] == [Status.SUCCEEDED] * 200  # type: ignore[union-attr]
        assert client.get(poisoned).status is Status.FAILED  # type: ignore[union-attr]
        assert (stats.succeeded, stats.failed, stats.discarded) == (200, 1, 0)
        counts = sql(
            postgres_dsn,
            "SELECT count(*) AS n FROM workflow_event WHERE event_type = 'succeeded'",
        )
        assert counts[0]["n"] == 200  # each once


def test_stopping_with_statements_in_flight_loses_nothing(postgres_dsn: str) -> None:
    """The pool is told to stop while claims and flushes are under way: the claims that come
    back during the shutdown give their runs back, every outcome is flushed, and no run is
    left leased."""
    with Client(postgres_dsn) as client:
        client.submit_many({"type": "t.echo", "payload": i} for i in range(2000))
        slow_statements(postgres_dsn, 0.05)
        pool = Pool(client, APP, processes=2, batch_size=50, prefetch=200, db_concurrency=4)
        out: list[PoolStats] = []
        thread = threading.Thread(target=lambda: out.append(pool.run()), daemon=True)
        with most_at_once(postgres_dsn, "%swf_claimable%") as seen:
            thread.start()
            while seen[0] < 2 and thread.is_alive():
                threading.Event().wait(0.005)
            pool.request_stop()  # with claims in flight
            thread.join(60)
        assert out, "the pool did not stop"
        stats = out[0]
        rows = sql(
            postgres_dsn, "SELECT status, attempt, count(*) AS n FROM workflow_run GROUP BY 1, 2"
        )
        by = {(r["status"], r["attempt"]): r["n"] for r in rows}
        assert set(by) <= {("succeeded", 1), ("pending", 0)}, by
        assert by.get(("succeeded", 1), 0) == stats.succeeded
        assert stats.claimed == stats.succeeded + stats.released


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_every_option_is_a_setting_and_has_help(option: Option) -> None:
    """Declared once: each option of settings.OPTIONS is a PoolSettings field with help text,
    and each flag's environment variable follows from its name."""
    names = list(PoolSettings.__dataclass_fields__)
    assert option.name in names and option.help
    assert len(names) == len(OPTIONS)


def test_a_heartbeat_slower_than_the_lease_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    PoolSettings.build(lease_seconds=30, heartbeat_interval=10)
    assert not caplog.records
    PoolSettings.build(lease_seconds=30, heartbeat_interval=30)
    [warning] = caplog.records
    assert warning.levelname == "WARNING"
    assert "leases expire between renewals" in warning.getMessage()
