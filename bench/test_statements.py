"""Micro-benchmarks of the hot statements (pytest-benchmark; `make bench`, not `make test`).

Each round works on 100 runs: one claim, one completion flush, one heartbeat of all leases.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from swf_pool import Client
from swf_pool.models import Claimed, Lease, Outcome, Status

from .common import DEFAULT_DSN, Scratch

pytestmark = pytest.mark.bench
BATCH = 100
TYPES = ["bench.noop.v1"]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with Scratch(DEFAULT_DSN) as scratch, Client(scratch.dsn) as c:
        yield c


def fill(client: Client) -> None:
    client.submit_many({"type": "bench.noop.v1"} for _ in range(BATCH))


def claim(client: Client) -> list[Claimed]:
    return client.backend.claim("bench", TYPES, [], BATCH, lease_seconds=30, audit_full=True)


def test_claim(benchmark: Any, client: Client) -> None:
    result = benchmark.pedantic(claim, args=(client,), setup=lambda: fill(client), rounds=30)
    assert len(result) == BATCH


def test_complete(benchmark: Any, client: Client) -> None:
    def setup() -> tuple[tuple[Client, list[Outcome]], dict[str, Any]]:
        fill(client)
        outcomes = [
            Outcome(r.id, r.attempt, Status.SUCCEEDED, result="null") for r in claim(client)
        ]
        return (client, outcomes), {}

    def complete(c: Client, outcomes: list[Outcome]) -> set[Lease]:
        return c.backend.complete("bench", outcomes, [], True)

    assert len(benchmark.pedantic(complete, setup=setup, rounds=30)) == BATCH


def test_heartbeat(benchmark: Any, client: Client) -> None:
    fill(client)
    leases = [Lease(r.id, r.attempt) for r in claim(client)]
    states = benchmark(client.backend.heartbeat, "bench", leases, 30.0, False)
    assert len(states) == BATCH
