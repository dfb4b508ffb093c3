"""Async handlers: an event loop in each worker process, up to `--concurrency` runs at once,
with cancellation, timeouts, retries and crashes as for sync ones; and on the inline and
thread executors, a loop per run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swf_pool import Client, ConfigError, EventType, Pool, Status
from swf_pool.settings import MAX_CONCURRENCY, PoolSettings

from .helpers import wait_until
from .test_pool import ROOT, running, statuses

APP = "tests.apps_async:registry"


def barrier(group: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "a.barrier", "payload": {"group": group, "n": n, **extra}}


def files(tmp_path: Path, name: str) -> dict[str, str]:
    return {key: str(tmp_path / f"{name}-{key}") for key in ("started", "gate", "seen")}


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_async_handlers_run_with_every_executor(client: Client, executor: str) -> None:
    ids = [s.id for s in client.submit_many({"type": "a.echo", "payload": i} for i in range(20))]
    doubled = client.submit("a.double", 21).id
    stats = Pool(client, APP, processes=2, executor=executor, concurrency=4).drain()
    assert (stats.claimed, stats.succeeded) == (21, 21)
    results = [client.get(i).result for i in ids]  # type: ignore[union-attr]
    assert [r["payload"] for r in results] == list(range(20))
    pids = {r["pid"] for r in results}
    assert (os.getpid() not in pids) if executor == "process" else pids == {os.getpid()}
    assert client.get(doubled).result == 42  # type: ignore[union-attr]
    trail = [EventType.CREATED, EventType.LEASED, EventType.STARTED, EventType.SUCCEEDED]
    assert all([e.event_type for e in client.events(i)] == trail for i in ids)


def test_one_process_runs_concurrency_runs_at_once_and_no_more(client: Client) -> None:
    """Each run waits for 8 of its group to arrive: they finish only if 8 run at once; 24 of
    them, with room for 8, never have more than 8 under way."""
    ids = [s.id for s in client.submit_many(barrier("g", 8) for _ in range(24))]
    pool = Pool(client, APP, processes=1, concurrency=8)
    assert pool.prefetch.slots == 8  # the pool's capacity: processes x concurrency
    stats = pool.drain()
    assert stats.succeeded == 24
    results = [client.get(i).result for i in ids]  # type: ignore[union-attr]
    assert {r["peak"] for r in results} == {8}
    assert len({r["pid"] for r in results}) == 1


def test_capacity_is_processes_times_concurrency_only_for_async_handlers(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Where `concurrency` cannot apply, a warning says so rather than leaving the user to
    wonder why 50 runs at once turned into one."""
    assert Pool(client, APP, processes=3, concurrency=50).prefetch.slots == 150
    assert not caplog.records
    assert Pool(client, APP, processes=3, concurrency=50, executor="thread").prefetch.slots == 3
    [warning] = caplog.records
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith("--concurrency 50 has no effect: the thread executor")
    caplog.clear()
    sync_only = Pool(client, "tests.apps:registry", processes=3, concurrency=50)
    assert sync_only.prefetch.slots == 3  # a worker of sync handlers runs one at a time
    [warning] = caplog.records
    assert "has no effect: no async handler is served" in warning.getMessage()
    caplog.clear()
    Pool(client, "tests.apps:registry", processes=3)  # the default, 1: nothing to say
    assert not caplog.records


def test_cancel_cancels_the_task_and_spares_the_others(client: Client, tmp_path: Path) -> None:
    watched = files(tmp_path, "w")
    run_id = client.submit("a.watch_cancel", watched).id
    other = client.submit("a.gate", files(tmp_path, "o")).id
    pool = Pool(client, APP, processes=1, concurrency=4, heartbeat_interval=0.05)
    with running(pool):
        wait_until(Path(watched["started"]).exists)
        wait_until((tmp_path / "o-started").exists)
        client.cancel(run_id)
        seen = Path(watched["seen"])
        wait_until(seen.exists)
        wait_until(lambda: pool.stats.discarded == 1)
        (tmp_path / "o-gate").touch()
        wait_until(lambda: pool.stats.succeeded == 1)
    assert seen.read_text() == "cancelled, is_cancelled() True"
    assert statuses(client, [run_id, other]) == [Status.CANCELLED, Status.SUCCEEDED]
    assert pool.executor is not None and pool.executor.restarts == 0


def test_a_run_past_its_timeout_has_its_task_cancelled(client: Client, tmp_path: Path) -> None:
    """The other runs of its process go on: the process was not killed."""
    run_id = client.submit("a.hang", max_attempts=2).id
    other = client.submit("a.gate", files(tmp_path, "o")).id
    pool = Pool(client, APP, processes=1, concurrency=4)
    with running(pool):
        wait_until(lambda: pool.stats.failed == 1, timeout=30)
        (tmp_path / "o-gate").touch()
        wait_until(lambda: pool.stats.succeeded == 1)
    run = client.get(run_id)
    assert run is not None and (run.status, run.attempt) == (Status.FAILED, 2)
    assert run.last_error == "Timeout: the run exceeded its timeout of 0.5s; its task was cancelled"
    assert pool.stats.timed_out == 2
    assert client.get(other).attempt == 1  # type: ignore[union-attr]
    assert pool.executor is not None and pool.executor.restarts == 0


def test_a_run_that_blocks_the_loop_past_its_timeout_has_its_process_killed(
    client: Client,
) -> None:
    run_id = client.submit("a.block", max_attempts=1).id
    stats = Pool(client, APP, processes=1, concurrency=4).drain()
    run = client.get(run_id)
    assert run is not None and run.status is Status.FAILED
    assert run.last_error == (
        "Timeout: the run exceeded its timeout of 0.3s; its worker process was killed"
    )
    assert stats.timed_out == 1


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_an_exception_is_retried_with_its_traceback(client: Client, executor: str) -> None:
    run_id = client.submit("a.fail", max_attempts=2).id
    stats = Pool(client, APP, processes=1, concurrency=4, executor=executor).drain()
    run = client.get(run_id)
    assert run is not None and (run.status, run.attempt) == (Status.FAILED, 2)
    assert run.last_error == "ValueError: async boom 2"
    [retried] = [e for e in client.events(run_id) if e.event_type is EventType.RETRIED]
    assert retried.data["error"] == "ValueError: async boom 1"
    trace = retried.data["traceback"]
    assert ", in fail\n" in trace and trace.endswith("ValueError: async boom 1\n")
    assert "swf_pool" not in trace and "asyncio" not in trace  # the handler's frames only
    assert (stats.retried, stats.failed) == (1, 1)


def test_a_crash_fails_every_run_under_way_in_the_process(client: Client) -> None:
    """Six runs under way at once in one process; one of them kills it. All six are retried
    (with the process's death as their error) and succeed in its replacement."""
    ids = [s.id for s in client.submit_many(barrier("c", 6) for _ in range(5))]
    ids.append(client.submit(**barrier("c", 6, die_on=[1])).id)
    stats = Pool(client, APP, processes=1, concurrency=8).drain()
    assert statuses(client, ids) == [Status.SUCCEEDED] * 6
    assert {client.get(i).attempt for i in ids} == {2}  # type: ignore[union-attr]
    for run_id in ids:
        [retried] = [e for e in client.events(run_id) if e.event_type is EventType.RETRIED]
        error = retried.data["error"]
        assert error == "WorkerDied: the worker process exited with status 3 while running this run"
    assert (stats.retried, stats.succeeded) == (6, 6)


def test_sync_handlers_beside_async_ones_run_one_at_a_time_off_the_loop(
    client: Client, tmp_path: Path
) -> None:
    first, second = files(tmp_path, "s1"), files(tmp_path, "s2")
    second["gate"] = first["gate"]
    sync_ids = [client.submit("s.gate", first, priority=0).id]
    sync_ids.append(client.submit("s.gate", second, priority=1).id)
    async_ids = [s.id for s in client.submit_many(barrier("m", 3) for _ in range(3))]
    pool = Pool(client, APP, processes=1, concurrency=6)
    with running(pool):
        wait_until(Path(first["started"]).exists)
        # the async runs finish while the sync handler blocks its thread: not the loop
        wait_until(lambda: pool.stats.succeeded == 3)
        assert not Path(second["started"]).exists()  # one sync run at a time
        Path(first["gate"]).touch()
        wait_until(lambda: pool.stats.succeeded == 5)
    assert statuses(client, sync_ids + async_ids) == [Status.SUCCEEDED] * 5
    pids = {client.get(i).result for i in sync_ids}  # type: ignore[union-attr]
    assert pids == {client.get(async_ids[0]).result["pid"]}  # type: ignore[union-attr]


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_heartbeats_from_an_async_handler(client: Client, executor: str) -> None:
    run_id = client.submit("a.beat", {"seconds": 120}).id
    Pool(client, APP, processes=1, concurrency=2, executor=executor).drain()
    run = client.get(run_id)
    assert run is not None and run.result == [True, True]
    beats = [e.data for e in client.events(run_id) if e.event_type is EventType.HEARTBEAT]
    assert beats == [{"extended_by_seconds": 120}]  # the second within the minute: no event


def test_stopping_lets_the_async_runs_under_way_finish(client: Client, tmp_path: Path) -> None:
    gated = [files(tmp_path, f"g{i}") for i in range(3)]
    for payload in gated[1:]:
        payload["gate"] = gated[0]["gate"]
    ids = [client.submit("a.gate", payload).id for payload in gated]
    pool = Pool(client, APP, processes=1, concurrency=3)
    with running(pool) as result:
        wait_until(lambda: all(Path(p["started"]).exists() for p in gated))
        pool.request_stop()
        Path(gated[0]["gate"]).touch()
        wait_until(lambda: result)
    assert result[0].succeeded == 3
    assert statuses(client, ids) == [Status.SUCCEEDED] * 3


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (0, "must be >= 1"),
        (-5, "must be >= 1"),
        (2.5, "must be a whole number"),
        (MAX_CONCURRENCY + 1, f"must be at most {MAX_CONCURRENCY}"),
    ],
)
def test_concurrency_is_checked(value: Any, why: str) -> None:
    with pytest.raises(ConfigError, match=f"^concurrency {why}, got {value!r}$"):
        PoolSettings.build(concurrency=value)


def swf_pool(dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swf_pool.cli", "run", "--dsn", dsn, "--app", APP, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def test_the_command_line_takes_concurrency(sqlite_dsn: str) -> None:
    with Client(sqlite_dsn) as client:
        ids = [s.id for s in client.submit_many(barrier("cli", 10) for _ in range(10))]
        done = swf_pool(sqlite_dsn, "--drain", "--processes", "1", "--concurrency", "10")
        assert done.returncode == 0, done.stderr
        assert statuses(client, ids) == [Status.SUCCEEDED] * 10
        client.submit_many(barrier("env", 4) for _ in range(4))
        done = swf_pool(sqlite_dsn, "--drain", "--processes", "1", SWF_CONCURRENCY="4")
        assert done.returncode == 0, done.stderr
        assert all(r.status is Status.SUCCEEDED for r in client.list())
    refused = swf_pool(sqlite_dsn, "--concurrency", "0")
    assert refused.returncode == 2
    assert "--concurrency: must be >= 1, got '0'" in refused.stderr
    assert "Traceback" not in refused.stderr
