"""Drain rate of no-op runs: the pool (full and lean audit) against the bare SQL ceiling.

The ceiling is the durable cycle alone on the same database: claim B rows with one CTE
(FOR UPDATE SKIP LOCKED, through the pool's own swf_claimable), mark them succeeded with one
statement (its ids pinned to the primary key, as the pool's statements do); no events, no
processes. The pool prefetches twice the batch: a claim's worth of runs keeps the workers busy
while the next claim is under way.

Timings on a shared machine wander by 10 % from one run to the next, so each measurement is
repeated (ceiling, full, lean in turn, each on a fresh table) and the medians are compared.

    python -m bench.drain [--dsn ...] [--quick] [--runs N] [--batch 100,250] [--repeat 3]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

from swf_pool import Client, Pool
from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.settings import default

from .common import CpuUse, Progress, Scratch, fill, markdown, parser, quick, report

DEFAULT_BATCH_SIZE = default("batch_size")

CLAIM = """
UPDATE workflow_run r SET status = 'leased', leased_by = 'ceiling', attempt = r.attempt + 1,
       lease_until = now() + interval '30 seconds', updated_at = now()
WHERE r.id = ANY(ARRAY(SELECT id FROM swf_claimable(ARRAY[%s], '{}', %s)))
RETURNING r.id
"""
COMPLETE = """
UPDATE workflow_run SET status = 'succeeded', lease_until = NULL, updated_at = now()
WHERE id = ANY(ARRAY(SELECT unnest(%s::uuid[]))) AND status = 'leased' AND leased_by = 'ceiling'
"""


def ceiling(dsn: str, runs: int, batch: int) -> tuple[float, dict[str, float]]:
    """Runs/s, and CPU µs per run by role."""
    target = parse_dsn(dsn)
    assert isinstance(target, PostgresTarget)
    fill(dsn, runs)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{target.schema}"'.encode())
        started = time.perf_counter()
        done = [0]
        with Progress(f"ceiling, batch {batch}", runs, lambda: done[0]), CpuUse() as cpu:
            while ids := [row[0] for row in conn.execute(CLAIM, ("bench.noop.v1", batch))]:
                conn.execute(COMPLETE, (ids,))
                done[0] += len(ids)
        return done[0] / (time.perf_counter() - started), cpu.per_run(done[0])


def pool_rate(
    dsn: str, runs: int, audit: str, batch: int | None = None
) -> tuple[float, Any, dict[str, float]]:
    """Runs/s, the pool's statistics, and CPU µs per run by role. With `batch`, a prefetch of
    twice the batch; without, the pool's defaults (its batch size, automatic prefetch)."""
    fill(dsn, runs)
    with Client(dsn) as client:
        pool = Pool(
            client,
            "bench.apps:registry",
            processes=2,
            batch_size=batch or DEFAULT_BATCH_SIZE,
            prefetch=None if batch is None else 2 * batch,
            audit=audit,
            log_interval=3600,
        )
        started = time.perf_counter()
        label = f"pool, {audit} audit, " + (f"batch {batch}" if batch else "defaults")
        with Progress(label, runs, lambda: pool.stats.succeeded), CpuUse() as cpu:
            stats = pool.drain()
        rate = stats.succeeded / (time.perf_counter() - started)
        return rate, stats, cpu.per_run(stats.succeeded)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--batch", default=None, help="comma-separated batch sizes")
    p.add_argument("--repeat", type=int, default=None, help="measurements per figure (median)")
    args = p.parse_args()
    runs = args.runs or (3000 if quick(args) else 100_000)
    repeat = args.repeat or (1 if args.quick else 3)
    batches = [
        int(b) for b in (args.batch or ("100" if args.quick else "100,250,500,1000")).split(",")
    ]
    best: dict[str, Any] = {}
    rows = []
    for batch in batches:
        # per kind of measurement: (runs/s, CPU µs per run by role), one per repetition
        measured: dict[str, list[tuple[float, dict[str, float]]]] = {
            "ceiling": [],
            "full": [],
            "lean": [],
        }
        for _ in range(repeat):
            # each measurement on a fresh table: finished rows and dead tuples left by one
            # would slow the next (table-size sensitivity is a scenario of its own)
            with Scratch(args.dsn) as scratch:
                measured["ceiling"].append(ceiling(scratch.dsn, runs, batch))
            with Scratch(args.dsn) as scratch:
                rate, stats, use = pool_rate(scratch.dsn, runs, "full", batch)
                measured["full"].append((rate, use))
            with Scratch(args.dsn) as scratch:
                rate, _, use = pool_rate(scratch.dsn, runs, "failures", batch)
                measured["lean"].append((rate, use))
        top, full, lean = (
            statistics.median(r for r, _ in measured[k]) for k in ("ceiling", "full", "lean")
        )
        row = {
            "batch": batch,
            "ceiling runs/s": round(top),
            "full audit runs/s": round(full),
            "full/ceiling": round(full / top, 2),
            "lean audit runs/s": round(lean),
            "lean/ceiling": round(lean / top, 2),
            "statements/run": round((stats.claims + stats.flushes) / max(stats.claimed, 1), 3),
            # what each part of the system spends on a run (medians)
            "cpu µs/run, PostgreSQL/coordinator/workers": ", ".join(
                f"{kind} "
                + "/".join(
                    f"{statistics.median(u[role] for _, u in results):.0f}" for role in CpuUse.ROLES
                )
                for kind, results in measured.items()
            ),
        }
        rows.append(row)
        print(markdown(f"drain, batch {batch}", row), flush=True)
        if not best or row["full/ceiling"] > best["full/ceiling"]:
            best = row
    defaults = []  # what `swf-pool run --processes 2` does out of the box
    for _ in range(repeat):
        with Scratch(args.dsn) as scratch:
            defaults.append(pool_rate(scratch.dsn, runs, "full")[0])
    best["defaults, full audit runs/s"] = round(statistics.median(defaults))
    report("drain", {"runs": runs, "repeat": repeat, **best}, {"by batch": rows})


if __name__ == "__main__":
    main()
