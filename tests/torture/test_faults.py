"""Database faults and lease races: the pool recovers by itself, and fencing holds."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

from swf_pool import Client, EventType, Pool, PoolStats, Status

from .. import pgserver
from ..helpers import sql, wait_until
from .apps import create_effects_table, read_effects, registry
from .harness import SCALE, Coordinator, finished

TERMINATE = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND application_name = 'swf-pool'"
)


def test_terminated_connections_and_a_restart_lose_nothing(tmp_path: Path) -> None:
    """pg_terminate_backend on the pool's connections at random, then a full restart of the
    server, while a pool in its own process drains."""
    runs = SCALE.runs
    with pgserver.throwaway_cluster() as cluster:
        dsn = cluster.conninfo
        with Client(dsn, migrate=True) as client:
            for start in range(0, runs, 5000):
                client.submit_many(
                    {"type": "torture.effect", "max_attempts": 25}
                    for _ in range(min(5000, runs - start))
                )
        create_effects_table(dsn)
        coordinator = Coordinator(
            dsn, dsn, tmp_path / "pool.log",
            "--processes", "2", "--batch-size", "50", "--lease", "3", "--poll-interval", "0.2",
        )  # fmt: skip
        rand = random.Random(11)
        terminations = restarts = 0
        began = time.monotonic()
        try:
            while (done := finished(dsn)) < runs:
                assert time.monotonic() - began < SCALE.deadline, coordinator.output()
                assert coordinator.process.poll() is None, coordinator.output()
                if restarts == 0 and done >= runs / 2:
                    cluster.restart()
                    restarts += 1
                elif rand.random() < 0.1:  # about once a second
                    terminations += len(sql(dsn, TERMINATE))
                time.sleep(0.1)
        finally:
            code = coordinator.stop()
        assert code == 0, coordinator.output()
        completions = sql(
            dsn,
            "SELECT workflow_id, count(*) AS n FROM workflow_event "
            "WHERE event_type = 'succeeded' GROUP BY workflow_id",
        )
        assert len(completions) == runs and {r["n"] for r in completions} == {1}
        found = read_effects(dsn)
        assert max(Counter(found).values()) == 1 and len({r for r, _ in found}) == runs
        print(
            f"\ndatabase faults: {runs} runs in {time.monotonic() - began:.1f}s, "
            f"{terminations} connections terminated, {restarts} restart(s), "
            f"{len(found) - runs} re-executions"
        )
        assert terminations >= 1


def test_fencing_holds_when_leases_run_out(dsn: str) -> None:
    """Leases shorter than the handler's first attempt, heartbeats off, two pools: each run is
    rescued by the other pool, the late result of the first attempt is never written, and the
    events name the worker whose lease ran out."""
    count = 40 if SCALE.runs < 10_000 else 400
    with Client(dsn) as client:
        ids = [
            s.id
            for s in client.submit_many(
                {"type": "torture.slow_first", "payload": {"first": 1.2, "later": 0.0}}
                for _ in range(count)
            )
        ]
        pools = [
            Pool(
                client,
                registry,
                executor="thread",
                processes=count,
                prefetch=0,
                worker_id=name,
                lease_seconds=0.4,
                heartbeat_interval=3600,  # no renewals: leases run out mid-handler
                poll_interval=0.05,
                types=["torture.slow_first"],
            )
            for name in ("pool-a", "pool-b")
        ]
        stop = threading.Event()
        stats: list[PoolStats] = []
        threads = [
            threading.Thread(target=lambda p=pool: stats.append(p.run(stop)), daemon=True)
            for pool in pools
        ]
        threads[0].start()  # pool-a takes everything first
        wait_until(lambda: pools[0].stats.claimed == count)
        threads[1].start()
        wait_until(
            lambda: (
                sum(p.stats.discarded for p in pools) >= count
                and all(r.status is Status.SUCCEEDED for r in map(client.get, ids) if r)
            ),
            timeout=60,
        )
        stop.set()
        for thread in threads:
            thread.join(60)
        for run_id in ids:
            run = client.get(run_id)
            assert run is not None and run.status is Status.SUCCEEDED
            assert run.result["attempt"] >= 2  # never the late first attempt
            events = client.events(run_id)
            expired = [e.data for e in events if e.event_type is EventType.LEASE_EXPIRED]
            assert {"worker_id": "pool-a", "attempt": 1} in expired
            assert [e.event_type for e in events].count(EventType.SUCCEEDED) == 1
        discarded = sum(s.discarded for s in stats)
        print(f"\nlease races: {count} runs, {discarded} late outcomes fenced out")
        assert discarded >= count
