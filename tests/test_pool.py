"""The multiprocessing pool: real worker processes, real signals, real databases."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from swf_pool import Client, ConfigError, EventType, Pool, PoolStats, Status

from . import helpers, pgserver
from .helpers import wait_until

APP = "tests.apps:registry"
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running(pool: Pool) -> Iterator[list[PoolStats]]:
    """Run `pool` in a thread; stop it gracefully on exit."""
    out: list[PoolStats] = []
    thread = threading.Thread(target=lambda: out.append(pool.run()), daemon=True)
    thread.start()
    try:
        yield out
    finally:
        pool.request_stop()
        thread.join(60)
        assert not thread.is_alive(), "the pool did not stop"


def statuses(client: Client, ids: list[str]) -> list[Status]:
    return [client.get(i).status for i in ids]  # type: ignore[union-attr]


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_pool_drains_with_every_executor(client: Client, executor: str) -> None:
    ids = [s.id for s in client.submit_many({"type": "t.echo", "payload": i} for i in range(60))]
    stats = Pool(client, APP, processes=2, executor=executor, batch_size=16).drain()
    assert (stats.claimed, stats.succeeded) == (60, 60)
    runs = [client.get(i) for i in ids]
    assert [r.result["payload"] for r in runs] == list(range(60))  # type: ignore[union-attr]
    pids = {r.result["pid"] for r in runs}  # type: ignore[union-attr]
    if executor == "process":
        assert os.getpid() not in pids and len(pids) == 2
    else:
        assert pids == {os.getpid()}
    trail = [EventType.CREATED, EventType.LEASED, EventType.STARTED, EventType.SUCCEEDED]
    assert all([e.event_type for e in client.events(i)] == trail for i in ids)


@pytest.mark.parametrize("how", ["exit", "segv"])
def test_a_dying_worker_loses_only_its_run(client: Client, how: str) -> None:
    victim = client.submit("t.die", {"on": [1], "how": how}).id
    others = [s.id for s in client.submit_many({"type": "t.echo"} for _ in range(20))]
    stats = Pool(client, APP, processes=2, batch_size=30).drain()
    run = client.get(victim)
    assert run is not None and (run.status, run.attempt) == (Status.SUCCEEDED, 2)
    expected = "killed by SIGSEGV" if how == "segv" else "exited with status 3"
    retried = [e for e in client.events(victim) if e.event_type is EventType.RETRIED]
    assert len(retried) == 1 and expected in retried[0].data["error"]
    assert retried[0].data["error"].startswith("WorkerDied: the worker process")
    assert statuses(client, others) == [Status.SUCCEEDED] * 20
    assert all(client.get(i).attempt == 1 for i in others)  # type: ignore[union-attr]
    assert stats.succeeded == 21 and stats.retried == 1


def test_a_run_past_its_timeout_is_killed_and_recorded(client: Client) -> None:
    run_id = client.submit("t.hang", max_attempts=2).id
    stats = Pool(client, APP, processes=1).drain()
    run = client.get(run_id)
    assert run is not None and (run.status, run.attempt) == (Status.FAILED, 2)
    assert run.last_error == (
        "Timeout: the run exceeded its timeout of 0.5s; its worker process was killed"
    )
    assert stats.timed_out == 2


def test_max_tasks_per_child_recycles_processes(client: Client) -> None:
    ids = [s.id for s in client.submit_many({"type": "t.echo"} for _ in range(9))]
    Pool(client, APP, processes=1, max_tasks_per_child=3, batch_size=9, prefetch=8).drain()
    pids = {client.get(i).result["pid"] for i in ids}  # type: ignore[union-attr]
    assert len(pids) == 3
    assert statuses(client, ids) == [Status.SUCCEEDED] * 9


def test_a_worker_busy_in_a_long_handler_holds_up_no_other(client: Client, tmp_path: Path) -> None:
    """Its share of big runs waits in the coordinator (its pipe is full, no write blocks)
    while the other process works through its own share."""
    gated = client.submit("t.gate", gate_payload(tmp_path), priority=0).id
    big = "x" * 150_000  # 30 of them: 4.5 MB, far more than a pipe holds
    ids = [s.id for s in client.submit_many({"type": "t.echo", "payload": big} for _ in range(60))]
    pool = Pool(client, APP, processes=2, prefetch=200, batch_size=201)
    with running(pool):
        wait_until((tmp_path / "started").exists, timeout=30)
        # half the runs went to the gated process: only the other half can finish now
        wait_until(lambda: pool.stats.succeeded == 30, timeout=30)
        (tmp_path / "gate").touch()
        wait_until(lambda: pool.stats.succeeded == 61, timeout=30)
    assert client.get(gated).result == "passed"  # type: ignore[union-attr]
    assert all(client.get(i).result["payload"] == big for i in ids)  # type: ignore[union-attr]


def test_without_a_prefetch_short_runs_come_in_big_claims_and_long_ones_do_not(
    client: Client,
) -> None:
    client.submit_many({"type": "t.echo", "payload": i} for i in range(1000))
    short = Pool(client, APP, processes=2, batch_size=100, db_concurrency=3)
    stats = short.drain()
    assert stats.succeeded == 1000
    # a batch beyond what the claims in flight may bring (3 on PostgreSQL, 1 on SQLite)
    assert short.prefetch.value == (1 + short.claimer.most_at_once) * 100
    assert stats.claims < 100  # with the default of one per process: one claim per 3 runs
    client.submit_many({"type": "t.nap", "payload": 0.2} for _ in range(6))
    long = Pool(client, APP, processes=2, batch_size=100)
    assert long.drain().succeeded == 6
    assert long.prefetch.value == 2  # no more than the workers: other pools may take the rest


def test_runs_killed_at_their_timeout_count_as_long_for_the_prefetch(client: Client) -> None:
    """A run killed at its timeout taught the prefetch that runs take no time: the pool then
    held a batch of them, which other pools could have run."""
    client.submit("t.hang", max_attempts=2)
    pool = Pool(client, APP, processes=1, batch_size=100, shutdown_grace=0.1)
    assert pool.drain().failed == 1
    assert pool.prefetch.value == 1  # the retry's claim had learned it: no more than the worker


def test_cancel_reaches_a_running_worker_process(client: Client) -> None:
    run_id = client.submit("t.until_cancelled").id
    pool = Pool(client, APP, processes=1, heartbeat_interval=0.05)
    with running(pool) as result:
        wait_until(lambda: client.get(run_id).status is Status.LEASED)  # type: ignore[union-attr]
        client.cancel(run_id)
        wait_until(lambda: pool.stats.discarded == 1)
    assert result[0].discarded == 1
    run = client.get(run_id)
    assert run is not None and run.status is Status.CANCELLED and run.result is None


def test_heartbeat_from_a_worker_process(client: Client) -> None:
    run_id = client.submit("t.beat", {"seconds": 120}).id
    Pool(client, APP, processes=1).drain()
    run = client.get(run_id)
    assert run is not None and run.result is True
    beats = [e.data for e in client.events(run_id) if e.event_type is EventType.HEARTBEAT]
    assert beats == [{"extended_by_seconds": 120}]


def test_an_app_that_cannot_load_in_workers_stops_the_pool(client: Client) -> None:
    client.submit("t.never")
    with pytest.raises(
        ConfigError,
        match=r"a worker process could not start: .*this app cannot load inside a worker process",
    ):
        Pool(client, "tests.apps_broken:registry", processes=2).drain()


def test_notify_wakes_an_idle_pool(postgres_dsn: str) -> None:
    with Client(postgres_dsn) as client:
        pool = Pool(client, APP, processes=1, poll_interval=60)
        with running(pool):
            wait_until(lambda: pool.stats.claims == 0 and pool.executor is not None)
            run_id = client.submit("t.echo").id
            # far sooner than the 60 s poll: the NOTIFY woke the pool
            wait_until(
                lambda: client.get(run_id).status is Status.SUCCEEDED,  # type: ignore[union-attr]
                timeout=10,
            )


def test_delayed_runs_start_on_time_without_polling(dsn: str) -> None:
    with Client(dsn) as client:
        pool = Pool(client, APP, processes=1, poll_interval=60)
        with running(pool):
            run_id = client.submit("t.echo", run_in=1.0).id
            wait_until(
                lambda: client.get(run_id).status is Status.SUCCEEDED,  # type: ignore[union-attr]
                timeout=15,
            )


def cli_pool(dsn: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "swf_pool.cli", "run", "--dsn", dsn, "--app", APP, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> None:
    """Make sure the process is gone and its pipes are closed."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def gate_payload(tmp_path: Path) -> dict[str, Any]:
    return {"started": str(tmp_path / "started"), "gate": str(tmp_path / "gate")}


def test_sigterm_releases_unstarted_runs_and_lets_running_ones_finish(
    dsn: str, tmp_path: Path
) -> None:
    with Client(dsn) as client:
        gated = client.submit("t.gate", gate_payload(tmp_path), priority=0).id
        waiting = [s.id for s in client.submit_many({"type": "t.echo"} for _ in range(10))]
        proc = cli_pool(dsn, "--processes", "1", "--prefetch", "10", "--batch-size", "11")
        try:
            wait_until((tmp_path / "started").exists, timeout=30)
            wait_until(lambda: all(r.status is Status.LEASED for r in map(client.get, waiting)))  # type: ignore[union-attr]
            proc.send_signal(signal.SIGTERM)
            # unstarted runs go back at once, not after a lease expiry
            wait_until(lambda: statuses(client, waiting) == [Status.PENDING] * 10)
            assert all(client.get(i).attempt == 0 for i in waiting)  # type: ignore[union-attr]
            assert client.get(gated).status is Status.LEASED  # type: ignore[union-attr]
            (tmp_path / "gate").touch()
            _, err = proc.communicate(timeout=30)
        finally:
            finish(proc)
        assert proc.returncode == 0, err
        run = client.get(gated)
        assert run is not None and (run.status, run.result) == (Status.SUCCEEDED, "passed")
        released = [e for e in client.events(waiting[0]) if e.event_type is EventType.RELEASED]
        assert len(released) == 1
        assert "10 released" in err  # the exit summary, logged


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_stopping_pool_stores_each_outcome_as_it_comes(
    client: Client, tmp_path: Path, executor: str
) -> None:
    """During the grace, a run that finishes is stored at once, not when the slowest one has
    finished: a kill when a platform's grace runs out (Kubernetes': 30 s) loses none of them.
    Before, every outcome waited for the last handler."""
    quick, slow = gate_payload(tmp_path / "quick"), gate_payload(tmp_path / "slow")
    for folder in ("quick", "slow"):
        (tmp_path / folder).mkdir()
    quick_id, slow_id = (client.submit("t.gate", p).id for p in (quick, slow))
    pool = Pool(client, APP, processes=2, executor=executor, prefetch=0)
    with running(pool) as out:
        wait_until(lambda: all(Path(p["started"]).exists() for p in (quick, slow)), timeout=30)
        pool.request_stop()
        Path(quick["gate"]).touch()
        wait_until(lambda: statuses(client, [quick_id]) == [Status.SUCCEEDED])
        assert statuses(client, [slow_id]) == [Status.LEASED]  # still in its grace
        Path(slow["gate"]).touch()
        wait_until(lambda: out)
    assert statuses(client, [quick_id, slow_id]) == [Status.SUCCEEDED] * 2
    assert out[0].succeeded == 2


def test_a_long_run_shows_as_started_while_it_runs(client: Client, tmp_path: Path) -> None:
    """Its `started` event is written within about a second or two of its start, not only
    with its outcome: "leased, not started" must not describe a run that is running."""
    run_id = client.submit("t.gate", gate_payload(tmp_path)).id
    with running(Pool(client, APP, processes=1)):
        wait_until(lambda: EventType.STARTED in kinds(client, run_id), timeout=15)
        assert client.get(run_id).status is Status.LEASED  # type: ignore[union-attr]
        (tmp_path / "gate").touch()
        wait_until(lambda: EventType.SUCCEEDED in kinds(client, run_id))
    assert kinds(client, run_id).count(EventType.STARTED) == 1


def test_a_run_killed_at_shutdown_has_its_started_event(client: Client, tmp_path: Path) -> None:
    run_id = client.submit("t.gate", gate_payload(tmp_path)).id
    pool = Pool(client, APP, processes=1, shutdown_grace=0)
    with running(pool):
        wait_until((tmp_path / "started").exists, timeout=30)
    trail = kinds(client, run_id)
    assert trail[-2:] == [EventType.STARTED, EventType.RETRIED], trail
    assert client.get(run_id).last_error.startswith("WorkerShutdown")  # type: ignore[union-attr]


def kinds(client: Client, run_id: str) -> list[EventType]:
    return [e.event_type for e in client.events(run_id)]


def test_a_second_signal_exits_at_once(sqlite_dsn: str, tmp_path: Path) -> None:
    with Client(sqlite_dsn) as client:
        gated = client.submit("t.gate", gate_payload(tmp_path)).id
        proc = cli_pool(sqlite_dsn, "--processes", "1", "--shutdown-grace", "60")
        try:
            wait_until((tmp_path / "started").exists, timeout=30)
            proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "stopping gracefully" in _peek(proc), timeout=10)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)  # far less than the 60 s grace
        finally:
            finish(proc)
        assert proc.returncode == 130
        assert client.get(gated).status is Status.LEASED  # type: ignore[union-attr]


def _peek(proc: subprocess.Popen[str]) -> str:
    """Read what the process logged so far (stderr is line-buffered text)."""
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    chunk = proc.stderr.read() or ""
    _peek.seen = getattr(_peek, "seen", "") + chunk  # type: ignore[attr-defined]
    return _peek.seen  # type: ignore[attr-defined,no-any-return]


def test_a_killed_coordinator_loses_nothing(dsn: str, tmp_path: Path) -> None:
    with Client(dsn) as client:
        gated = client.submit("t.gate", gate_payload(tmp_path)).id
        proc = cli_pool(dsn, "--processes", "1", "--lease", "1")
        try:
            wait_until((tmp_path / "started").exists, timeout=30)
            proc.kill()  # SIGKILL: no cleanup at all
            proc.wait(timeout=10)
        finally:
            finish(proc)
        (tmp_path / "gate").touch()
        # its lease expires; another pool rescues the run
        wait_until(lambda: Pool(client, APP, processes=1).drain().claimed, timeout=30)
        run = client.get(gated)
        assert run is not None and (run.status, run.attempt) == (Status.SUCCEEDED, 2)
        kinds = [e.event_type for e in client.events(gated)]
        assert EventType.LEASE_EXPIRED in kinds


@pytest.mark.skipif(shutil.which("initdb") is None, reason="PostgreSQL binaries not on PATH")
def test_the_pool_survives_a_database_restart() -> None:
    with pgserver.throwaway_cluster() as cluster:
        with Client(cluster.conninfo, migrate=True) as client:
            ids = [s.id for s in client.submit_many({"type": "t.echo"} for _ in range(3000))]
            pool = Pool(client, APP, processes=2, batch_size=50)
            done: list[PoolStats] = []
            thread = threading.Thread(target=lambda: done.append(pool.drain()), daemon=True)
            thread.start()
            wait_until(lambda: pool.stats.succeeded >= 300, timeout=60)
            cluster.restart()
            thread.join(120)
            assert done, "the pool did not finish after the restart"
            assert done[0].db_errors >= 1
            assert statuses(client, ids) == [Status.SUCCEEDED] * 3000
        rows = helpers.sql(
            cluster.conninfo,
            "SELECT workflow_id, count(*) AS n FROM "
            "workflow_event WHERE event_type = 'succeeded' GROUP BY 1",
        )
        assert len(rows) == 3000 and {r["n"] for r in rows} == {1}


def test_the_pool_survives_terminated_connections(postgres_dsn: str) -> None:
    with Client(postgres_dsn) as client:
        ids = [s.id for s in client.submit_many({"type": "t.echo"} for _ in range(2000))]
        pool = Pool(client, APP, processes=2, batch_size=50)
        done: list[PoolStats] = []
        thread = threading.Thread(target=lambda: done.append(pool.drain()), daemon=True)
        thread.start()
        for target in (200, 800, 1400):
            wait_until(lambda t=target: pool.stats.succeeded >= t, timeout=60)  # type: ignore[misc]
            helpers.sql(
                postgres_dsn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> "
                "pg_backend_pid()",
            )
        thread.join(120)
        assert done, "the pool did not finish"
    with Client(postgres_dsn) as fresh:  # the shared one's idle connections were terminated
        assert statuses(fresh, ids) == [Status.SUCCEEDED] * 2000


def test_error_text_a_database_would_refuse_is_stored_cleaned(client: Client) -> None:
    run_id = client.submit("t.nasty_error", {"pad": 100_000}, max_attempts=1).id
    others = [s.id for s in client.submit_many({"type": "t.echo"} for _ in range(5))]
    stats = Pool(client, APP, processes=1, batch_size=10).drain()
    run = client.get(run_id)
    assert run is not None and run.status is Status.FAILED and run.last_error is not None
    assert run.last_error.startswith("ValueError: nul and a lone surrogate ? xxx")
    assert run.last_error.endswith("more characters cut]") and len(run.last_error) < 70_000
    assert statuses(client, others) == [Status.SUCCEEDED] * 5
    assert (stats.failed, stats.succeeded, stats.db_errors) == (1, 5, 0)


REFUSE_POISON = {
    "postgres": "ALTER TABLE workflow_run ADD CONSTRAINT no_poison "
    "CHECK (result IS NULL OR result::text NOT LIKE '%poison%')",
    "sqlite": "CREATE TRIGGER no_poison BEFORE UPDATE OF result ON workflow_run "
    "WHEN NEW.result LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'no poison'); END",
}


def test_an_outcome_the_database_refuses_holds_back_no_other(client: Client, dsn: str) -> None:
    """One result the server rejects (here a constraint) fails its own run, with the reason;
    the outcomes flushed with it are stored one by one."""
    helpers.sql(dsn, REFUSE_POISON[helpers.kind(client)])
    ids = [s.id for s in client.submit_many({"type": "t.echo", "payload": i} for i in range(20))]
    poisoned = client.submit("t.echo", "poison").id
    stats = Pool(client, APP, executor="inline", batch_size=50).drain()
    run = client.get(poisoned)
    assert run is not None and run.status is Status.FAILED and run.result is None
    assert run.last_error is not None and run.last_error.startswith("OutcomeRefused:")
    assert "poison" in run.last_error
    assert statuses(client, ids) == [Status.SUCCEEDED] * 20
    assert (stats.succeeded, stats.failed, stats.db_errors) == (20, 1, 1)


CUT_ONCE = """
CREATE SEQUENCE cut_once;
CREATE FUNCTION cut_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM changed) = 1
       AND EXISTS (SELECT 1 FROM changed WHERE result::text LIKE '%cut%')
       AND nextval('cut_once') = 1 THEN
        PERFORM pg_terminate_backend(pg_backend_pid());  -- the connection dies mid-statement
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER cut_once AFTER UPDATE ON workflow_run REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION cut_once();
"""


def test_a_flush_one_by_one_that_loses_the_database_counts_each_outcome_once(
    postgres_dsn: str,
) -> None:
    """After a refused outcome the flush goes one statement per outcome; the connection dies
    at one of them (once). What was stored before is counted as stored, not as discarded
    when the rest is flushed again."""
    helpers.sql(postgres_dsn, REFUSE_POISON["postgres"])
    helpers.sql(postgres_dsn, CUT_ONCE)
    with Client(postgres_dsn) as client:
        ids = [s.id for s in client.submit_many({"type": "t.echo", "payload": i} for i in range(5))]
        ids.append(client.submit("t.echo", "cut").id)
        ids += [
            s.id for s in client.submit_many({"type": "t.echo", "payload": i} for i in range(5))
        ]
        poisoned = client.submit("t.echo", "poison").id
        # all twelve claimed at once and flushed together
        pool = Pool(client, APP, executor="inline", batch_size=20, prefetch=20, flush_interval=60)
        stats = pool.drain()
        assert statuses(client, ids) == [Status.SUCCEEDED] * 11
        assert client.get(poisoned).status is Status.FAILED  # type: ignore[union-attr]
    assert (stats.succeeded, stats.failed, stats.discarded) == (11, 1, 0)
    assert stats.db_errors == 2  # the refused flush, and the lost connection


def test_cancelling_a_queued_run_does_not_hide_the_running_ones_cancel(
    client: Client, dsn: str, tmp_path: Path
) -> None:
    """One worker process holds a running task and a queued one; both are cancelled in the
    same heartbeat. The running handler still sees its cancellation."""
    files = [{"started": str(tmp_path / f"s{i}"), "seen": str(tmp_path / f"c{i}")} for i in (0, 1)]
    running_id = client.submit("t.watch_cancel", files[0], priority=0).id
    queued_id = client.submit("t.watch_cancel", files[1], priority=1).id
    pool = Pool(client, APP, processes=1, prefetch=1, heartbeat_interval=0.05)
    with running(pool):
        wait_until(lambda: Path(files[0]["started"]).exists())
        wait_until(lambda: statuses(client, [queued_id]) == [Status.LEASED])
        helpers.sql(
            dsn,
            "UPDATE workflow_run SET status = 'cancelled' WHERE type = 't.watch_cancel'",
        )
        wait_until(lambda: Path(files[0]["seen"]).exists())
        wait_until(lambda: pool.stats.discarded == 2)
    assert not Path(files[1]["started"]).exists()  # the queued one never ran
    assert statuses(client, [running_id, queued_id]) == [Status.CANCELLED] * 2


def test_a_notify_during_an_idle_claim_is_not_lost(client: Client) -> None:
    """The NOTIFY for a run committed just after the claim's snapshot arrives while the
    claim is under way: the pool claims again at once instead of waiting out the poll."""
    claimer = Pool(client, APP, executor="inline", poll_interval=60).claimer
    claim_id, _ = claimer._begin(room=10)
    claimer.want()  # arrives mid-claim
    claimer._claimed((claim_id, [], 0.0), now=0.0)
    assert claimer.wanted and claimer.next_poll == 0.0
    claim_id, _ = claimer._begin(room=10)
    claimer._claimed((claim_id, [], 0.0), now=0.0)  # no NOTIFY this time: idle until the poll
    assert not claimer.wanted and claimer.next_poll == 60.0
