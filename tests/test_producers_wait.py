"""Waiting for a run's end: `Client.wait`, `GET /workflows/{id}?wait=`, `swf-pool runs wait`;
the completion NOTIFY (once per flush) that wakes the waits on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from swf_pool import Client, RunNotFound, Status, ValidationError, WaitTimeout
from swf_pool.backends.postgres import finished_channel
from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.models import Outcome
from swf_pool.waiting import LISTENING_POLL_SECONDS, POLL_MAX_SECONDS, Pace

from .helpers import sql, wait_until
from .test_api import KEY, V1, Server, start, stop
from .test_cli import cli

WORKER = "test-worker"


def claim(client: Client, count: int) -> list[tuple[str, int]]:
    claimed = client.backend.claim(WORKER, ["t.echo"], [], count, lease_seconds=60, audit_full=True)
    return [(run.id, run.attempt) for run in claimed]


def finish(client: Client, leases: list[tuple[str, int]]) -> None:
    """One flush, as a pool writes it: every run succeeded."""
    outcomes = [Outcome(run_id, attempt, Status.SUCCEEDED, "1") for run_id, attempt in leases]
    assert len(client.backend.complete(WORKER, outcomes, [], True)) == len(leases)


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    return thread, result


def test_a_wait_returns_as_soon_as_a_flush_finishes_the_run(client: Client) -> None:
    run = client.submit("t.echo")
    leases = claim(client, 1)
    thread, result = in_thread(lambda: client.wait(run.id, timeout=60))
    wait_until(lambda: run.id in client.waits._wakes)  # it has read the run unfinished
    finish(client, leases)
    thread.join(60)
    assert result[0].id == run.id and result[0].status is Status.SUCCEEDED
    assert client.wait(run.id, timeout=0) == client.get(run.id)  # finished: at once


def test_a_wait_ends_with_a_cancel(client: Client) -> None:
    run = client.submit("t.echo")
    thread, result = in_thread(lambda: client.wait(run.id))  # no limit
    wait_until(lambda: run.id in client.waits._wakes)
    client.cancel(run.id)
    thread.join(60)
    assert result[0].status is Status.CANCELLED


def test_a_wait_has_its_limits(client: Client) -> None:
    run = client.submit("t.echo")
    with pytest.raises(WaitTimeout, match="still pending"):
        client.wait(run.id, timeout=0.05)
    for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        with pytest.raises(RunNotFound):
            client.wait(missing, timeout=1)
    with pytest.raises(ValidationError):
        client.wait(run.id, timeout=-1)
    assert not client.waits._wakes  # every waiter gone


def test_the_completion_notify_is_one_per_flush(postgres_dsn: str) -> None:
    target = parse_dsn(postgres_dsn)
    assert isinstance(target, PostgresTarget)
    with Client(postgres_dsn) as client, psycopg.connect(target.conninfo, autocommit=True) as conn:
        channel = pgsql.Identifier(finished_channel(target.schema))
        conn.execute(pgsql.SQL("LISTEN {}").format(channel))
        client.submit_many([{"type": "t.echo"}] * 3)
        marker = client.submit("t.other")
        leases = claim(client, 3)
        finish(client, leases)
        client.cancel(marker.id)  # notifies after the flush, alone
        payloads: list[str] = []

        def heard(wanted: int) -> bool:
            payloads.extend(n.payload for n in conn.notifies(timeout=0.05))
            return len(payloads) >= wanted

        wait_until(lambda: heard(2))
        assert len(payloads) == 2
        assert set(payloads[0].split(",")) == {run_id for run_id, _ in leases}
        assert payloads[1] == marker.id


@pytest.mark.parametrize("ending", ["lease expired on the last attempt", "undecodable payload"])
def test_runs_a_claim_fails_wake_their_waits(postgres_dsn: str, ending: str) -> None:
    """Not only a flush finishes runs: a claim fails those whose last lease expired and those
    whose payload this client cannot decode, and their waits hear of it at once."""
    target = parse_dsn(postgres_dsn)
    assert isinstance(target, PostgresTarget)
    with Client(postgres_dsn) as client, psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute(
            pgsql.SQL("LISTEN {}").format(pgsql.Identifier(finished_channel(target.schema)))
        )
        if ending == "undecodable payload":
            [row] = sql(
                postgres_dsn,
                "INSERT INTO workflow_run (type, payload) VALUES ('t.echo', '[1e400]')"
                " RETURNING id",
            )
        else:
            [row] = sql(
                postgres_dsn,
                "INSERT INTO workflow_run (type, payload, status, attempt, max_attempts,"
                " leased_by, lease_until) VALUES ('t.echo', '{}', 'leased', 1, 1, 'gone',"
                " now() - interval '1s')"
                " RETURNING id",
            )
        run_id = str(row["id"])
        assert claim(client, 10) == []
        assert client.get(run_id).status is Status.FAILED  # type: ignore[union-attr]
        payloads: list[str] = []

        def heard() -> bool:
            payloads.extend(n.payload for n in conn.notifies(timeout=0.05))
            return bool(payloads)

        wait_until(heard)
        assert payloads == [run_id]
        assert claim(client, 10) == []  # a claim that fails nothing notifies nobody
        assert list(conn.notifies(timeout=0.2)) == []


def test_many_waits_hold_no_connection_each(postgres_dsn: str) -> None:
    with Client(postgres_dsn) as client:
        runs = client.submit_many([{"type": "t.echo"}] * 20)
        threads = [in_thread(partial(client.wait, r.id, timeout=60)) for r in runs]
        wait_until(lambda: len(client.waits._wakes) == 20)
        [row] = sql(
            postgres_dsn,
            "SELECT count(*) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'swf-pool'",
        )
        assert row["n"] <= 6 + 1  # the pool at most, and one listener
        for run in runs:
            client.cancel(run.id)
        for thread, result in threads:
            thread.join(60)
            assert result[0].status is Status.CANCELLED


def test_the_pace_of_a_wait() -> None:
    pace = Pace(None)
    polls = [pace.next(listening=False) or 0.0 for _ in range(8)]
    assert polls[0] == 0.005 and polls[-1] == POLL_MAX_SECONDS
    assert polls == sorted(polls)
    assert pace.next(listening=True) == LISTENING_POLL_SECONDS
    assert Pace(0).next(listening=True) is None  # the deadline has passed
    limited = Pace(0.5).next(listening=True)
    assert limited is not None and limited <= 0.5


@pytest.fixture
def server(dsn: str) -> Iterator[Server]:
    running = start(dsn, "--api-key", KEY)
    try:
        yield running
    finally:
        stop(running)


def test_rest_long_poll(server: Server, dsn: str) -> None:
    with Client(dsn) as client:
        run = client.submit("t.echo")
        pending = server.call("GET", f"{V1}/workflows/{run.id}?wait=0.05")
        assert (pending.status, pending.body["status"]) == (200, "pending")
        for bad in ("x", "-1", "61", "nan"):
            assert server.call("GET", f"{V1}/workflows/{run.id}?wait={bad}").status == 400
        missing = "00000000-0000-0000-0000-000000000000"
        assert server.call("GET", f"{V1}/workflows/{missing}?wait=5").status == 404
        thread, result = in_thread(
            lambda: server.call("GET", f"{V1}/workflows/{run.id}?wait=30", key=KEY)
        )
        client.cancel(run.id)
        thread.join(60)
        assert (result[0].status, result[0].body["status"]) == (200, "cancelled")


def test_cli_runs_wait(dsn: str) -> None:
    with Client(dsn) as client:
        ok = client.submit("t.echo")
        still = cli("runs", "wait", ok.id, "--timeout", "0.05", "--dsn", dsn)
        assert still.returncode == 124 and "still pending" in still.stderr
        finish(client, claim(client, 1))
        done = cli("runs", "wait", ok.id, "--dsn", dsn)
        assert (done.returncode, done.stdout) == (0, f"{ok.id} succeeded\n")
        cancelled = client.submit("t.echo")
        client.cancel(cancelled.id)
        ended = cli("runs", "wait", cancelled.id, "--json", "--dsn", dsn)
        assert ended.returncode == 1 and '"status":"cancelled"' in ended.stdout
        gone = cli("runs", "wait", "00000000-0000-0000-0000-000000000000", "--dsn", dsn)
        assert gone.returncode == 1 and "not found" in gone.stderr
