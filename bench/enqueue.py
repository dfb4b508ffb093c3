"""Enqueue rate: `submit` one at a time against `submit_many` in one round trip.

python -m bench.enqueue [--dsn ...] [--quick]
"""

from __future__ import annotations

import time

from swf_pool import Client

from .common import Scratch, parser, quick, report


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    singles, bulk = (200, 5000) if quick(args) else (2000, 50000)
    with Scratch(args.dsn) as scratch, Client(scratch.dsn) as client:
        started = time.perf_counter()
        for i in range(singles):
            client.submit("bench.noop.v1", {"i": i})
        single_rate = singles / (time.perf_counter() - started)
        items = [{"type": "bench.noop.v1", "payload": {"i": i}} for i in range(bulk)]
        started = time.perf_counter()
        for chunk in range(0, bulk, 5000):
            client.submit_many(items[chunk : chunk + 5000])
        bulk_rate = bulk / (time.perf_counter() - started)
    report(
        "enqueue",
        {
            "submit runs/s": round(single_rate),
            "submit_many runs/s": round(bulk_rate),
            "ratio": round(bulk_rate / single_rate, 1),
        },
    )


if __name__ == "__main__":
    main()
