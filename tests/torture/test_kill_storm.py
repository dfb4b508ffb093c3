"""Kill storm: drain while a chaos loop SIGKILLs worker processes every ~0.5 s and the
coordinator itself twice. Nothing may be lost or completed twice, re-executions stay bounded
by the kills, and the events tell the story of every rescued run."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

from swf_pool import Client

from ..helpers import sql
from .apps import read_effects
from .harness import SCALE, Coordinator, finished

BATCH, PROCESSES, PREFETCH = 50, 2, 2
MAX_ATTEMPTS = 25
# what one coordinator death can cost: outcomes buffered and being flushed, plus in flight
PER_COORDINATOR_KILL = 2 * BATCH + PROCESSES + PREFETCH


def test_kill_storm(dsn: str, effects: str, tmp_path: Path) -> None:
    runs = SCALE.runs
    with Client(dsn) as client:
        for start in range(0, runs, 5000):
            batch = min(5000, runs - start)
            client.submit_many(
                {"type": "torture.effect", "max_attempts": MAX_ATTEMPTS} for _ in range(batch)
            )
    coordinator = Coordinator(
        dsn, effects, tmp_path / "pool.log",
        "--processes", str(PROCESSES), "--prefetch", str(PREFETCH), "--batch-size", str(BATCH),
        "--lease", "1.5", "--poll-interval", "0.2", "--log-interval", "5",
    )  # fmt: skip
    rand = random.Random(7)
    worker_kills = coordinator_kills = 0
    began = time.monotonic()
    next_kill = began + SCALE.kill_every
    try:
        while (done := finished(dsn)) < runs:
            assert time.monotonic() - began < SCALE.deadline, coordinator.output()
            assert coordinator.process.poll() is None, coordinator.output()
            if coordinator_kills < 2 and done >= runs * (coordinator_kills + 1) / 3:
                coordinator.kill()
                coordinator_kills += 1
                coordinator.restart()
            elif time.monotonic() >= next_kill:
                worker_kills += coordinator.kill_a_worker(rand)
                next_kill = time.monotonic() + SCALE.kill_every * rand.uniform(0.5, 1.5)
            time.sleep(0.05)
    finally:
        code = coordinator.stop()
    elapsed = time.monotonic() - began
    assert code == 0, coordinator.output()

    statuses = sql(dsn, "SELECT status, count(*) AS n FROM workflow_run GROUP BY status")
    assert {r["status"]: r["n"] for r in statuses} == {"succeeded": runs}
    # exactly one completion per run
    completions = sql(
        dsn,
        "SELECT count(*) AS n, count(DISTINCT workflow_id) AS runs FROM workflow_event "
        "WHERE event_type = 'succeeded'",
    )[0]
    assert (completions["n"], completions["runs"]) == (runs, runs)
    # side effects: at least one per run, never two for the same attempt, extras bounded
    found = read_effects(effects)
    per_attempt = Counter(found)
    assert max(per_attempt.values()) == 1, "an attempt executed twice"
    assert len({run for run, _ in found}) == runs
    extra = len(found) - runs
    bound = worker_kills + coordinator_kills * PER_COORDINATOR_KILL
    # every attempt after the first is explained by an event: a worker death or a lease rescue
    story = sql(
        dsn,
        "SELECT r.id, r.attempt, count(e.id) FILTER (WHERE e.event_type = 'retried') AS retried, "
        "count(e.id) FILTER (WHERE e.event_type = 'lease_expired') AS rescued "
        "FROM workflow_run r LEFT JOIN workflow_event e ON e.workflow_id = r.id "
        "GROUP BY r.id, r.attempt",
    )
    unexplained = [r for r in story if r["attempt"] - 1 != r["retried"] + r["rescued"]]
    rescued = sum(r["rescued"] for r in story)
    died = sum(r["retried"] for r in story)
    print(
        f"\nkill storm ({'sqlite' if dsn.startswith('sqlite') else 'postgres'}): {runs} runs in "
        f"{elapsed:.1f}s; {worker_kills} worker kills, {coordinator_kills} coordinator kills; "
        f"{died} attempts lost with their worker, {rescued} rescued after a lease expired; "
        f"{extra} re-executions (bound {bound})"
    )
    assert not unexplained, unexplained[:5]
    assert worker_kills >= 1 and coordinator_kills == 2
    assert extra <= bound
