"""What per-type controls cost (#16): the drain of an unlimited type with and without a limited
type queued alongside it, and the claim's cost with 100 limited types defined, or a paused
type's backlog ahead of the runs it takes.

Drain: `--runs` no-op runs of bench.noop.v1; "alongside" adds a quarter as many runs of
bench.limited.v1 (concurrency 2, the same no-op handler), interleaved in claim order; the rate
counts the unlimited type's runs only, in interleaved rounds (medians). Claim cost: one
statement claiming 100 of `--runs` pending runs, repeated until the table is drained, through
the backend (no pool), PostgreSQL only.

    python -m bench.limits [--dsn ...] [--quick] [--runs N] [--repeat 3]
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from swf_pool import Client, Pool
from swf_pool.fleet import Fleet

from .common import Progress, Scratch, markdown, parser, quick, report

NOOP = "bench.noop.v1"
LIMITED = "bench.limited.v1"
CLAIM_BATCH = 100


def submit(dsn: str, runs: int, alongside: bool) -> None:
    """`runs` no-op runs (and with `alongside` a quarter as many limited ones, interleaved)."""
    with Client(dsn) as client:
        for start in range(0, runs, 5000):
            count = min(5000, runs - start)
            items = [{"type": NOOP, "payload": None} for _ in range(count)]
            if alongside:
                limited = [{"type": LIMITED, "payload": None} for _ in range(count // 4)]
                items = [x for pair in zip(items[::4], limited, strict=False) for x in pair]
                items += [{"type": NOOP, "payload": None} for _ in range(count - count // 4)]
            client.submit_many(items)


def drain_rate(dsn: str, runs: int, alongside: bool) -> float:
    """The unlimited type's runs/s while the pool serves both types."""
    submit(dsn, runs, alongside)
    with Client(dsn) as client:
        Fleet(client.backend).limit(LIMITED, concurrency=2)
        pool = Pool(client, "bench.apps:registry", processes=2, log_interval=3600)
        done = threading.Event()
        thread = threading.Thread(target=pool.run, args=(done,))
        started = time.perf_counter()
        thread.start()
        label = "alongside a limited type" if alongside else "alone"
        with Progress(label, runs, lambda: finished(client, runs)):
            while finished(client, runs) < runs:
                time.sleep(0.05)
        rate = runs / (time.perf_counter() - started)
        done.set()
        thread.join()
        return rate


def finished(client: Client, runs: int) -> int:
    """The unlimited type's runs no longer pending or leased."""
    waiting = sum(t.pending + t.leased for t in client.stats().types if t.type == NOOP)
    return runs - waiting


def claim_cost(dsn: str, runs: int, setup: str) -> float:
    """Microseconds per claim statement of 100 runs, until the table is drained."""
    with Client(dsn) as client:
        client.submit_many({"type": NOOP, "payload": None} for _ in range(runs))
        fleet = Fleet(client.backend)
        types = [NOOP]
        if setup == "100 limited types":
            types += [f"bench.limited{i}.v1" for i in range(100)]
            for name in types[1:]:
                fleet.limit(name, concurrency=5)
        elif setup == "a paused backlog ahead":
            ahead = ({"type": LIMITED, "payload": None, "priority": 0} for _ in range(runs))
            client.submit_many(ahead)
            fleet.pause(LIMITED)
            types.append(LIMITED)
        times = []
        while True:
            started = time.perf_counter()
            claimed = client.backend.claim(
                "bench", types, [], CLAIM_BATCH, lease_seconds=300, audit_full=True
            )
            times.append(time.perf_counter() - started)
            if not claimed:
                return statistics.median(times) * 1e6


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--repeat", type=int, default=None)
    args = p.parse_args()
    runs = args.runs or (2000 if quick(args) else 20_000)
    repeat = args.repeat or (1 if args.quick else 3)
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeat):
        for alongside in (False, True):
            with Scratch(args.dsn) as scratch:
                rates[alongside].append(drain_rate(scratch.dsn, runs, alongside))
    alone, beside = (statistics.median(rates[k]) for k in (False, True))
    row: dict[str, Any] = {
        "runs": runs,
        "repeat": repeat,
        "unlimited alone runs/s": round(alone),
        "alongside a limited type runs/s": round(beside),
        "ratio": round(beside / alone, 2),
    }
    print(markdown("limits, drain", row), flush=True)
    for setup in ("no controls", "100 limited types", "a paused backlog ahead"):
        with Scratch(args.dsn) as scratch:
            row[f"claim µs, {setup}"] = round(claim_cost(scratch.dsn, runs, setup))
    report("limits", row, {"drain runs/s": {str(k): v for k, v in rates.items()}})


if __name__ == "__main__":
    main()
