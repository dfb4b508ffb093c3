"""Enqueue-to-start latency on an idle pool woken by LISTEN/NOTIFY (PostgreSQL).

Runs are submitted one at a time, a few milliseconds apart, to an idle pool whose poll
interval is far longer than any latency measured here; the handler records when it started.
Latency counts from the commit (when `submit` returned); the median from the moment `submit`
was called, the commit's own flush included, is printed too.

    python -m bench.latency [--dsn ...] [--quick] [--runs 500]
"""

from __future__ import annotations

import statistics
import threading
import time

from swf_pool import Client, Pool

from .common import Scratch, parser, quick, report


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    args = p.parse_args()
    runs = args.runs or (100 if quick(args) else 500)
    with Scratch(args.dsn) as scratch, Client(scratch.dsn) as client:
        pool = Pool(client, "bench.apps:registry", processes=2, poll_interval=30, log_interval=3600)
        thread = threading.Thread(target=pool.run, daemon=True)
        thread.start()
        while pool.executor is None or pool.claimer.wanted:
            time.sleep(0.05)  # until the pool is up and has found nothing to do
        time.sleep(0.5)
        sent: dict[str, tuple[float, float]] = {}  # id -> (submit called, submit returned)
        for i in range(runs):
            called = time.time()
            run_id = client.submit("bench.stamp.v1", i).id
            sent[run_id] = (called, time.time())
            time.sleep(0.004)
        deadline = time.monotonic() + 30
        while pool.stats.succeeded < runs and time.monotonic() < deadline:
            time.sleep(0.05)
        pool.request_stop()
        thread.join()
        started = {
            run.id: run.result for run in _all(client) if run.id in sent and run.result is not None
        }
    # from the commit (submit returned), and from the call (the commit's own flush included)
    committed = sorted((started[i] - sent[i][1]) * 1000 for i in started)
    from_call = sorted((started[i] - sent[i][0]) * 1000 for i in started)
    q = statistics.quantiles(committed, n=100)
    report(
        "latency",
        {
            "runs": len(committed),
            "p50 ms": round(q[49], 2),
            "p95 ms": round(q[94], 2),
            "p99 ms": round(q[98], 2),
            "max ms": round(committed[-1], 2),
            "p50 ms from the submit call": round(statistics.median(from_call), 2),
        },
        {"ms after the commit": [round(v, 3) for v in committed]},
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
