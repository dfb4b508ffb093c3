"""Latency from an idle pool, measured the users' way: `swf-pool run --processes 2` with its
defaults, in its own process, and runs submitted one at a time with `--gap` seconds between
them (the pool idles in between). Latency is the handler's start minus the moment `submit` was
called (so the submit's own commit is in it), p50/p95/p99.

python -m bench.wakeup [--dsn ...] [--quick] [--runs N] [--gap S]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg

from swf_pool import Client, EventType, Status

from .common import Scratch, parser, quick, report

ROOT = Path(__file__).resolve().parent.parent
READY_SECONDS = 60.0
ALONE = "bench.alone.v1"  # a type no pool serves


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--gap", type=float, default=None, help="seconds between submits")
    args = p.parse_args()
    runs = args.runs or (20 if quick(args) else 200)
    gap = args.gap or (0.1 if args.quick else 0.5)
    with Scratch(args.dsn) as scratch, Client(scratch.dsn) as client:
        pool = subprocess.Popen(
            [sys.executable, "-m", "swf_pool.cli", "run", "--dsn", scratch.dsn,
             "--app", "bench.apps:registry", "--processes", "2"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            # ready: a first run done (the workers are up and the pool has gone idle)
            first = client.submit("bench.stamp.v1", -1).id
            deadline = time.monotonic() + READY_SECONDS
            while (run := client.get(first)) is None or run.status is not Status.SUCCEEDED:
                if time.monotonic() > deadline or pool.poll() is not None:
                    raise RuntimeError("the pool did not start")
                time.sleep(0.05)
            called: dict[str, float] = {}
            returned: dict[str, float] = {}
            for i in range(runs):
                time.sleep(gap)
                now = time.time()
                run_id = client.submit("bench.stamp.v1", i).id
                called[run_id], returned[run_id] = now, time.time()
            deadline = time.monotonic() + READY_SECONDS
            started: dict[str, float] = {}
            while len(started) < runs and time.monotonic() < deadline:
                for run_id in called.keys() - started.keys():
                    run = client.get(run_id)
                    if run is not None and run.status is Status.SUCCEEDED:
                        started[run_id] = float(run.result)
                time.sleep(0.05)
        finally:
            pool.terminate()
            pool.wait(60)
        # where the time goes, p50 of each step (ms from the `submit` call): the server's
        # clock stamps the submit's and the claim's transactions
        ids = list(started)
        steps: dict[str, list[datetime | float]] = {
            "submit's transaction starts": [created_at(client, i) for i in ids],
            "submit returns": [returned[i] for i in ids],
            "claim's transaction starts": [leased_at(client, i) for i in ids],
            "handler starts": [started[i] for i in ids],
        }
        breakdown = {
            step: round(statistics.median(ms(t) - called[i] * 1000 for t, i in pairs), 2)
            for step, times in steps.items()
            if (pairs := list(zip(times, ids, strict=True)))
        }
        alone = statements_alone(client, runs)
        idle = statements_after_idle(client, scratch.admin, max(runs // 4, 5), gap)
    latencies = sorted((started[i] - called[i]) * 1000 for i in started)
    q = statistics.quantiles(latencies, n=100)
    report(
        "wakeup",
        {
            "runs": len(latencies),
            "gap s": gap,
            "p50 ms": round(q[49], 2),
            "p95 ms": round(q[94], 2),
            "p99 ms": round(q[98], 2),
            "max ms": round(latencies[-1], 2),
            "p50 ms from the submit call, by step": breakdown,
            "p50 ms of each statement alone": alone,
            f"p50 ms of each statement after {gap} s idle": idle,
        },
        {"ms from the submit call": [round(v, 3) for v in latencies]},
    )


def ms(moment: datetime | float) -> float:
    return (moment.timestamp() if isinstance(moment, datetime) else moment) * 1000


def created_at(client: Client, run_id: str) -> datetime:
    run = client.get(run_id)
    assert run is not None
    return run.created_at


def leased_at(client: Client, run_id: str) -> datetime:
    return next(e.created_at for e in client.events(run_id) if e.event_type is EventType.LEASED)


def statements_alone(client: Client, runs: int) -> dict[str, float]:
    """The two durable commits in the path, each alone on a warm connection: a submit, and a
    claim of that one run (of a type no pool serves), `runs` times."""
    submits, claims = [], []
    for _ in range(runs):
        began = time.perf_counter()
        client.submit(ALONE)
        submitted = time.perf_counter()
        client.backend.claim("bench-wakeup", [ALONE], [], 100, lease_seconds=60, audit_full=True)
        submits.append(submitted - began)
        claims.append(time.perf_counter() - submitted)
    return {
        "submit": round(statistics.median(submits) * 1000, 2),
        "claim of one run": round(statistics.median(claims) * 1000, 2),
    }


def statements_after_idle(
    client: Client, server: str | None, runs: int, gap: float
) -> dict[str, float]:
    """The same statements, and a bare `SELECT 1` (PostgreSQL: `server`), each after `gap`
    seconds of idleness, as in the path measured above: what waking the processes involved
    costs on this machine."""
    with contextlib.ExitStack() as stack:
        steps: dict[str, Callable[[], object]] = {}
        if server is not None:
            conn = stack.enter_context(psycopg.connect(server, autocommit=True))
            steps["SELECT 1"] = lambda: conn.execute("SELECT 1")
        steps["submit"] = lambda: client.submit(ALONE)
        steps["claim of one run"] = lambda: client.backend.claim(
            "bench-wakeup", [ALONE], [], 100, lease_seconds=60, audit_full=True
        )
        timed: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(runs):
            for name, step in steps.items():
                time.sleep(gap)
                began = time.perf_counter()
                step()
                timed[name].append(time.perf_counter() - began)
    return {name: round(statistics.median(values) * 1000, 2) for name, values in timed.items()}


if __name__ == "__main__":
    main()
