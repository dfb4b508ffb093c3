"""Soak: a million runs through one pool (`make torture`; 20,000 in `make test`) while the
memory of the coordinator and of its workers is sampled. It must stay flat."""

from __future__ import annotations

import time
from pathlib import Path

from swf_pool import Client

from .harness import SCALE, Coordinator, rss_kib

CHUNK = 10_000
WARM = 0.25  # memory is compared from this fraction of the work on


def test_memory_stays_flat_over_a_long_drain(postgres_dsn: str, tmp_path: Path) -> None:
    runs = SCALE.soak_runs
    with Client(postgres_dsn, audit="failures") as client:
        for start in range(0, runs, CHUNK):
            client.submit_many({"type": "torture.noop"} for _ in range(min(CHUNK, runs - start)))
        coordinator = Coordinator(
            postgres_dsn, postgres_dsn, tmp_path / "pool.log",
            "--processes", "2", "--batch-size", "200", "--prefetch", "200",
            "--audit", "failures", "--poll-interval", "0.5", "--log-interval", "30",
        )  # fmt: skip
        curve: list[tuple[int, int, int]] = []  # (runs done, coordinator KiB, worker KiB)
        began = time.monotonic()
        try:
            while True:
                totals = client.stats().totals()
                done = runs - totals.pending - totals.leased
                workers = coordinator.workers()
                curve.append(
                    (done, rss_kib(coordinator.process.pid), max(map(rss_kib, workers), default=0))
                )
                if done >= runs:
                    break
                assert time.monotonic() - began < SCALE.deadline, coordinator.output()
                assert coordinator.process.poll() is None, coordinator.output()
                time.sleep(5.0 if runs > 100_000 else 1.0)  # stats() reads the queue
        finally:
            code = coordinator.stop()
    elapsed = time.monotonic() - began
    assert code == 0, coordinator.output()
    print(f"\nsoak: {runs} runs in {elapsed:.0f}s ({runs / elapsed:.0f}/s); RSS in MiB:")
    print("   runs done  coordinator  worker (largest)")
    step = max(1, len(curve) // 12)
    for done, mine, theirs in [*curve[::step], curve[-1]]:
        print(f"  {done:>10}  {mine / 1024:>11.1f}  {theirs / 1024:>16.1f}")
    warm = [c for c in curve if c[0] >= runs * WARM and c[1] and c[2]]
    assert warm, "no samples after warm-up"
    coordinator_growth = (warm[-1][1] - warm[0][1]) / 1024
    worker_growth = (max(c[2] for c in warm) - warm[0][2]) / 1024
    print(f"  growth after warm-up: coordinator {coordinator_growth:+.1f} MiB, "
          f"worker {worker_growth:+.1f} MiB")  # fmt: skip
    assert coordinator_growth < 32 and worker_growth < 32
