"""Enqueue-to-start latency on an idle pool woken by LISTEN/NOTIFY (PostgreSQL).

Runs are submitted one at a time, a few milliseconds apart, to an idle pool whose poll
interval is far longer than any latency measured here; the handler records when it started.

    python -m bench.latency [--dsn ...] [--quick] [--runs 500]
"""

from __future__ import annotations

import statistics
import threading
import time

from swf_pool import Client, Pool

from .common import Scratch, parser, report


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    args = p.parse_args()
    runs = args.runs or (100 if args.quick else 500)
    with Scratch(args.dsn) as scratch, Client(scratch.dsn) as client:
        pool = Pool(client, "bench.apps:registry", processes=2, poll_interval=30, log_interval=3600)
        thread = threading.Thread(target=pool.run, daemon=True)
        thread.start()
        while pool.executor is None or pool.wanted:
            time.sleep(0.05)  # until the pool is up and has found nothing to do
        time.sleep(0.5)
        sent = {}
        for i in range(runs):
            sent[client.submit("bench.stamp.v1", i).id] = time.time()
            time.sleep(0.004)
        deadline = time.monotonic() + 30
        while pool.stats.succeeded < runs and time.monotonic() < deadline:
            time.sleep(0.05)
        pool.request_stop()
        thread.join()
        latencies = sorted(
            (run.result - sent[run.id]) * 1000
            for run in _all(client)
            if run.id in sent and run.result is not None
        )
    q = statistics.quantiles(latencies, n=100)
    report(
        "latency",
        {
            "runs": len(latencies),
            "p50 ms": round(q[49], 2),
            "p95 ms": round(q[94], 2),
            "p99 ms": round(q[98], 2),
            "max ms": round(latencies[-1], 2),
        },
    )


def _all(client: Client) -> list:  # type: ignore[type-arg]
    out = []
    offset = 0
    while page := client.list(limit=1000, offset=offset):
        out += page
        offset += len(page)
    return out


if __name__ == "__main__":
    main()
