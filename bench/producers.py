"""Producers where they live: submit inside the caller's transaction against a plain submit,
`AsyncClient.submit` from 50 tasks against `Client.submit` from 50 threads, and the latency
of `wait()` (from the completing flush's commit to its return). Prints numbers, asserts none.

python -m bench.producers [--dsn ...] [--quick]   (PostgreSQL)
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

from swf_pool import AsyncClient, Client, Status
from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.models import Outcome

from .common import Scratch, parser, quick, report

WORKER = "bench-producers"
CONCURRENCY = 50


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    small = quick(args)
    submits, waits = (200, 100) if small else (2000, 500)
    with Scratch(args.dsn) as scratch, Client(scratch.dsn) as client:
        target = parse_dsn(scratch.dsn)
        assert isinstance(target, PostgresTarget), "bench.producers runs on PostgreSQL"
        plain, in_tx = transactional(client, target, submits)
        alone, apart, together = with_own_write(client, target, scratch.schema, submits)
        threads = threaded(client, submits * 2)
        tasks = asyncio.run(concurrent(scratch.dsn, submits * 2))
        latencies = wait_latency(client, waits)
    print(f"submit, plain:                       {plain:8.1f} us per run")
    print(f"submit in the caller's transaction:  {in_tx:8.1f} us per run (its commit included)")
    print(f"an order alone, committed:           {alone:8.1f} us per order")
    print(f"an order, committed, then a submit:  {apart:8.1f} us per run (two commits)")
    print(f"an order and its submit, one commit: {together:8.1f} us per run")
    print(
        f"so a submit costs, after its order:  {apart - alone:8.1f} us on its own, "
        f"{together - alone:.1f} us in the order's transaction"
    )
    print(f"Client.submit, {CONCURRENCY} threads:          {threads:8.0f} runs/s")
    print(f"AsyncClient.submit, {CONCURRENCY} tasks:       {tasks:8.0f} runs/s")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"wait() after the flush's commit:     p50 {p50:.2f} ms, p99 {p99:.2f} ms ({waits} runs)")
    report(
        "producers",
        {
            "submit us": round(plain, 1),
            "submit in caller's tx us": round(in_tx, 1),
            "order alone us": round(alone, 1),
            "order committed, then submit us": round(apart, 1),
            "order and submit in one tx us": round(together, 1),
            "threads runs/s": round(threads),
            "async tasks runs/s": round(tasks),
            "wait p50 ms": round(p50, 2),
            "wait p99 ms": round(p99, 2),
        },
    )


def transactional(client: Client, target: PostgresTarget, runs: int) -> tuple[float, float]:
    """Microseconds per run: `submit` alone (its own statement, committed), and `submit`
    with `conn=` followed by the caller's commit, one transaction per run; interleaved
    rounds, so that neither gets the warmer database."""
    plain = in_tx = 0.0
    with psycopg.connect(target.conninfo) as conn:
        for _ in range(4):
            began = time.perf_counter()
            for i in range(runs // 4):
                client.submit("bench.noop.v1", {"i": i})
            plain += time.perf_counter() - began
            began = time.perf_counter()
            for i in range(runs // 4):
                client.submit("bench.noop.v1", {"i": i}, conn=conn)
                conn.commit()
            in_tx += time.perf_counter() - began
    return plain / runs * 1e6, in_tx / runs * 1e6


def with_own_write(
    client: Client, target: PostgresTarget, schema: str, runs: int
) -> tuple[float, float, float]:
    """Microseconds per run where the caller writes its own row too (the pattern the
    transactional submit is for; a durable table, as an application's orders are): the row
    alone, committed (what the application pays anyway); the row committed and then a plain
    `submit`; the row and its run in one transaction. Interleaved rounds."""
    took = {"alone": 0.0, "apart": 0.0, "together": 0.0}
    with psycopg.connect(target.conninfo) as conn:
        conn.execute(f'SET search_path TO "{schema}"'.encode())
        conn.execute("CREATE TABLE bench_orders (i int)")
        conn.commit()
        for _ in range(4):
            for way in took:
                began = time.perf_counter()
                for i in range(runs // 4):
                    conn.execute("INSERT INTO bench_orders VALUES (%s)", (i,))
                    if way == "together":
                        client.submit("bench.noop.v1", {"i": i}, conn=conn)
                    conn.commit()
                    if way == "apart":
                        client.submit("bench.noop.v1", {"i": i})
                took[way] += time.perf_counter() - began
    alone, apart, together = (took[way] / runs * 1e6 for way in ("alone", "apart", "together"))
    return alone, apart, together


def threaded(client: Client, runs: int) -> float:
    per = runs // CONCURRENCY

    def submit_some(_: int) -> None:
        for i in range(per):
            client.submit("bench.noop.v1", {"i": i})

    began = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(submit_some, range(CONCURRENCY)))
    return per * CONCURRENCY / (time.perf_counter() - began)


async def concurrent(dsn: str, runs: int) -> float:
    per = runs // CONCURRENCY
    async with AsyncClient(dsn) as client:

        async def submit_some() -> None:
            for i in range(per):
                await client.submit("bench.noop.v1", {"i": i})

        began = time.perf_counter()
        await asyncio.gather(*(submit_some() for _ in range(CONCURRENCY)))
        return per * CONCURRENCY / (time.perf_counter() - began)


def wait_latency(client: Client, runs: int) -> list[float]:
    """Milliseconds from the return of the flush that finished a run (its commit) to the
    return of the `wait()` already waiting on it; one run at a time."""
    submitted = client.submit_many([{"type": "bench.wait.v1"}] * runs)
    claimed = client.backend.claim(
        WORKER, ["bench.wait.v1"], [], runs, lease_seconds=600, audit_full=True
    )
    assert len(claimed) == len(submitted)
    latencies = []
    for run in claimed:
        returned: list[float] = []
        waiter = threading.Thread(target=_wait, args=(client, run.id, returned))
        waiter.start()
        while run.id not in client.waits._wakes:  # until it waits (it read the run unfinished)
            time.sleep(0.0005)
        client.backend.complete(WORKER, [Outcome(run.id, run.attempt, Status.SUCCEEDED)], [], True)
        committed = time.perf_counter()
        waiter.join()
        latencies.append((returned[0] - committed) * 1000)
    return latencies


def _wait(client: Client, run_id: str, returned: list[float]) -> None:
    client.wait(run_id, timeout=30)
    returned.append(time.perf_counter())


def percentile(values: list[float], p: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[p - 1] if p < 100 else max(values)
    )


if __name__ == "__main__":
    main()
