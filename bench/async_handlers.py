"""Async handlers: one worker process with an event loop, `--concurrency 200`, each run an
`await asyncio.sleep(0.05)` (an I/O-bound handler waiting on another service). One process
can then finish at most 200 / 0.05 = 4,000 runs/s; the rate says how close the pool comes.

Each round is `swf-pool run --drain --processes 1 --concurrency 200` on a fresh table, full
audit; the rate is read from the table between 10 % and 90 % done (start-up excluded), and
CPU per run is counted by role. Rounds are repeated and the median reported.

    python -m bench.async_handlers [--dsn ...] [--quick] [--runs N] [--rounds N]
        [--concurrency 200] [--sleep 0.05]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys

from swf_pool import Registry, Run
from swf_pool.dsn import PostgresTarget, parse_dsn

from .common import CpuUse, Scratch, fill, middle_rate, parser, quick, report, swf_finished
from .remote import ROOT

TYPE = "bench.async_sleep.v1"
APP = "bench.async_handlers:registry"  # what the pool imports (this module is __main__ here)
SLEEP_SECONDS = float(os.environ.get("SWF_BENCH_SLEEP", "0.05"))  # the pool's, from --sleep

registry = Registry()


@registry.handler(TYPE)
async def nap(run: Run) -> None:
    await asyncio.sleep(SLEEP_SECONDS)


def drain(dsn: str, runs: int, concurrency: int, sleep: float) -> tuple[float, dict[str, float]]:
    """Runs/s of one `swf-pool run` draining `runs` runs, and CPU µs per run: PostgreSQL's,
    and the pool's (its coordinator and worker processes, descendants of this one)."""
    fill(dsn, runs, TYPE)
    command = [sys.executable, "-m", "swf_pool.cli", "run", "--app", APP]
    options = ["--processes", "1", "--concurrency", str(concurrency), "--drain"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SWF_BENCH_SLEEP": str(sleep)}
    with CpuUse() as cpu:
        proc = subprocess.Popen(
            [*command, "--dsn", dsn, *options, "--log-interval", "3600"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        target = parse_dsn(dsn)
        assert isinstance(target, PostgresTarget)
        query = swf_finished(target.schema)
        rate = middle_rate([proc], "the pool", target.conninfo, query, runs)
    return rate, cpu.per_run(runs)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--sleep", type=float, default=SLEEP_SECONDS, help="seconds each run awaits")
    args = p.parse_args()
    runs = args.runs or (3000 if quick(args) else 30_000)
    rounds = args.rounds or (1 if args.quick else 3)
    rates, uses = [], []
    for _ in range(rounds):
        with Scratch(args.dsn) as scratch:
            rate, use = drain(scratch.dsn, runs, args.concurrency, args.sleep)
        rates.append(rate)
        uses.append(use)
        print(f"  {rate:,.0f} runs/s", flush=True)
    ceiling = args.concurrency / args.sleep
    rate = statistics.median(rates)
    report(
        "async_handlers",
        {
            "runs": runs,
            "rounds": rounds,
            "concurrency": args.concurrency,
            "sleep s": args.sleep,
            "runs/s": round(rate),
            "of the ceiling": round(rate / ceiling, 2),
            "cpu µs/run, PostgreSQL/pool": "/".join(
                f"{statistics.median(u[role] for u in uses):.0f}"
                for role in ("postgres", "workers")
            ),
        },
        {"runs/s by round": rates},
    )


if __name__ == "__main__":
    main()
