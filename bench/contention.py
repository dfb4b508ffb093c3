"""Contention: 1, 2 and 4 pools draining one table at once (each in a process of its own,
with two worker threads, so that the database is what they share): the aggregate rate, and
the claims that came back empty because another pool had taken the runs.

    python -m bench.contention [--dsn ...] [--quick] [--runs N]
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from swf_pool import Client, Pool

from .common import Progress, Scratch, fill, parser, quick, report

POOLS = (1, 2, 4)


def drain(dsn: str, name: str, start: Any, out: Any) -> None:
    with Client(dsn) as client:
        pool = Pool(
            client,
            "bench.apps:registry",
            executor="thread",
            processes=2,
            worker_id=name,
            batch_size=100,
            prefetch=100,
            audit="failures",
            poll_interval=0.05,
            log_interval=3600,
        )
        start.wait()
        stats = pool.drain()
        out.put((stats.succeeded, stats.claims, stats.empty_claims))


def measure(dsn: str, runs: int, pools: int) -> dict[str, Any]:
    fill(dsn, runs)
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    workers = [
        context.Process(target=drain, args=(dsn, f"pool-{i}", start, out)) for i in range(pools)
    ]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # all connected and idle at the start line
    with Client(dsn) as client:
        began = time.perf_counter()
        start.set()
        left = lambda: runs - client.stats().totals().pending  # noqa: E731
        with Progress(f"{pools} pool(s)", runs, left):
            results = [out.get(timeout=600) for _ in workers]
        elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join()
    done = sum(r[0] for r in results)
    claims = sum(r[1] for r in results)
    empty = sum(r[2] for r in results)
    return {
        "pools": pools,
        "runs/s": round(done / elapsed),
        "claims": claims,
        "empty claims": empty,
        "wasted": round(empty / max(claims, 1), 3),
    }


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    args = p.parse_args()
    runs = args.runs or (3000 if quick(args) else 30_000)
    rows = []
    for pools in POOLS:
        with Scratch(args.dsn) as scratch:
            rows.append(measure(scratch.dsn, runs, pools))
    one = rows[0]["runs/s"]
    summary = {f"{r['pools']} pools runs/s": r["runs/s"] for r in rows}
    summary |= {f"{r['pools']} pools wasted": r["wasted"] for r in rows}
    summary["4 pools / 1"] = round(rows[-1]["runs/s"] / one, 2)
    report("contention", {"runs": runs, **summary}, {"by pools": rows})


if __name__ == "__main__":
    main()
