"""CPU-bound scaling: a handler that burns ~20 ms of pure-Python CPU, with 1..N processes.

python -m bench.scaling [--dsn ...] [--quick] [--runs N] [--ms 20]
"""

from __future__ import annotations

import os
import time

from swf_pool import Client, Pool

from .common import Scratch, parser, quick, report


def rate(dsn: str, runs: int, ms: int, processes: int) -> float:
    with Client(dsn) as client:
        client.submit_many({"type": "bench.cpu.v1", "payload": {"ms": ms}} for _ in range(runs))
        pool = Pool(client, "bench.apps:registry", processes=processes, log_interval=3600)
        started = time.perf_counter()
        stats = pool.drain()
        return stats.succeeded / (time.perf_counter() - started)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--ms", type=int, default=20)
    args = p.parse_args()
    runs = args.runs or (50 if quick(args) else 200)
    rates = {}
    for processes in range(1, (os.cpu_count() or 1) + 1):
        with Scratch(args.dsn) as scratch:
            rates[processes] = rate(scratch.dsn, runs, args.ms, processes)
    report(
        "scaling",
        {
            **{f"{n} proc runs/s": round(r, 1) for n, r in rates.items()},
            "speed-up": round(rates[max(rates)] / rates[1], 2),
        },
        {"runs/s by processes": {str(n): r for n, r in rates.items()}},
    )


if __name__ == "__main__":
    main()
