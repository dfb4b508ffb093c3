"""Handlers for the benchmarks (importable by name, so worker processes can load them)."""

from __future__ import annotations

import time

from swf_pool import Registry, Run

registry = Registry()


@registry.handler("bench.noop.v1")
def noop(run: Run) -> None:
    return None


# the same no-op, for a type that bench.limits limits
registry.register("bench.limited.v1", noop)


@registry.handler("bench.cpu.v1")
def burn(run: Run) -> int:
    """About `ms` milliseconds of pure-Python CPU work."""
    deadline = time.process_time() + run.payload.get("ms", 20) / 1000
    n = 0
    while time.process_time() < deadline:
        n += 1
    return n


@registry.handler("bench.stamp.v1")
def stamp(run: Run) -> float:
    """When the handler started (wall clock), for enqueue-to-start latency."""
    return time.time()
