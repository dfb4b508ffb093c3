"""Table-size sensitivity: the claim with 0, 1M and 5M finished runs in the table.

Finished rows are written straight in SQL (generate_series), as years of history would be,
then vacuumed and analyzed as autovacuum would; then the pool drains fresh pending runs
(lean audit) and the claim statement is timed alone. The partial indexes keep both flat.

    python -m bench.table_size [--dsn ...] [--quick] [--runs N]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

from swf_pool import Client, Pool
from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.models import Lease

from .common import Progress, Scratch, fill, parser, quick, report

HISTORY = """
INSERT INTO workflow_run (id, type, payload, status, attempt, max_attempts, result,
                          created_at, updated_at, run_at)
SELECT gen_random_uuid(), 'bench.old.v' || (i %% 7), '{"n": 1}', 'succeeded', 1, 3, 'null',
       now() - interval '30 days', now() - interval '30 days', now() - interval '30 days'
FROM generate_series(1, %s) AS i
"""
CHUNK = 500_000


def history(dsn: str, rows: int) -> None:
    target = parse_dsn(dsn)
    assert isinstance(target, PostgresTarget)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{target.schema}"'.encode())
        done = [0]
        with Progress(f"{rows:,} finished rows", rows, lambda: done[0]):
            while done[0] < rows:
                step = min(CHUNK, rows - done[0])
                conn.execute(HISTORY, (step,))
                done[0] += step
        conn.execute("VACUUM ANALYZE workflow_run")


def claim_ms(dsn: str) -> float:
    """The median time of one claim of 100 (a fresh batch each time, released after)."""
    with Client(dsn) as client:
        times = []
        for _ in range(20):
            began = time.perf_counter()
            batch = client.backend.claim(
                "bench", ["bench.noop.v1"], [], 100, lease_seconds=30, audit_full=False
            )
            times.append((time.perf_counter() - began) * 1000)
            client.backend.release("bench", [Lease(r.id, r.attempt) for r in batch])
        return statistics.median(times)


def measure(dsn: str, finished: int, runs: int) -> dict[str, Any]:
    if finished:
        history(dsn, finished)
    fill(dsn, runs)
    one = claim_ms(dsn)
    with Client(dsn) as client:
        pool = Pool(
            client, "bench.apps:registry", processes=2, batch_size=250, prefetch=250,
            audit="failures", log_interval=3600,
        )  # fmt: skip
        began = time.perf_counter()
        with Progress(f"drain over {finished:,}", runs, lambda: pool.stats.succeeded):
            stats = pool.drain()
        rate = stats.succeeded / (time.perf_counter() - began)
    return {
        "finished rows": finished,
        "claim of 100 ms": round(one, 2),
        "drain runs/s": round(rate),
    }


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    args = p.parse_args()
    sizes = (0, 100_000) if quick(args) else (0, 1_000_000, 5_000_000)
    runs = args.runs or (2000 if args.quick else 20_000)
    rows = []
    for finished in sizes:
        with Scratch(args.dsn) as scratch:
            rows.append(measure(scratch.dsn, finished, runs))
    base = rows[0]
    summary: dict[str, Any] = {"runs": runs}
    for row in rows:
        label = f"{row['finished rows'] // 1000}k" if row["finished rows"] else "empty"
        summary[f"{label}: claim ms"] = row["claim of 100 ms"]
        summary[f"{label}: runs/s"] = row["drain runs/s"]
    summary["largest/empty rate"] = round(rows[-1]["drain runs/s"] / base["drain runs/s"], 2)
    report("table-size", summary, {"by size": rows})


if __name__ == "__main__":
    main()
