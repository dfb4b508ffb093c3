"""The `make run` demo: submit a few thousand runs to a database, execute them, report."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

from .client import Client
from .coordinator import Pool
from .errors import PermanentError
from .handlers import Registry, Run
from .retry import Fixed

registry = Registry()


@registry.handler("demo.hash.v1")
def hash_text(run: Run) -> str:
    """A little CPU work: hash the payload's text a few hundred times."""
    digest = str(run.payload["text"]).encode()
    for _ in range(200):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


@registry.handler("demo.flaky.v1", retry=Fixed(0))
def flaky(run: Run) -> dict[str, Any]:
    """Fails on its first attempt, succeeds on the retry."""
    if run.attempt == 1:
        raise ConnectionError("upstream timed out (demo)")
    return {"ok": True, "attempt": run.attempt}


@registry.handler("demo.validate.v1")
def validate(run: Run) -> str:
    """Rejects odd numbers for good: no retry."""
    if run.payload["n"] % 2:
        raise PermanentError(f"{run.payload['n']} is odd")
    return "valid"


def main(dsn: str, runs: int = 3000, processes: int | None = None) -> None:
    with Client(dsn, migrate=True) as client:
        items = []
        for n in range(runs):
            kind = ("demo.hash.v1", "demo.hash.v1", "demo.flaky.v1", "demo.validate.v1")[n % 4]
            items.append({"type": kind, "payload": {"n": n, "text": f"item-{n}"}})
        started = time.perf_counter()
        submitted = client.submit_many(items)
        took = time.perf_counter() - started
        print(f"swf-pool demo on {client.backend.description}")
        print(f"submitted {len(submitted)} runs in {took * 1000:.0f} ms (one round trip)")
        pool = Pool(client, "swf_pool.demo:registry", processes=processes, log_interval=3600)
        started = time.perf_counter()
        stats = pool.drain()
        took = time.perf_counter() - started
        print(
            f"executed {stats.claimed} attempts in {took:.2f} s "
            f"({stats.claimed / took:.0f}/s, {pool.processes} worker processes)"
        )
        ids = {s.id for s in submitted}
        _report(client, ids)


def _report(client: Client, ids: set[str]) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    example = None
    offset = 0
    while page := client.list(limit=1000, offset=offset):
        offset += len(page)
        for run in page:
            if run.id in ids:
                counts[run.type, run.status.value] += 1
                if run.type == "demo.flaky.v1" and example is None:
                    example = run.id
    statuses = sorted({s for _, s in counts})
    print(f"\n{'type':<20}" + "".join(f"{s:>11}" for s in statuses))
    for kind in sorted({t for t, _ in counts}):
        print(f"{kind:<20}" + "".join(f"{counts[kind, s]:>11}" for s in statuses))
    if example:
        print(f"\nthe story of one flaky run ({example}):")
        for event in client.events(example):
            data = "" if event.data is None else f"  {event.data}"
            print(f"  {event.created_at:%H:%M:%S.%f}  {event.event_type.value:<10}{data}")
