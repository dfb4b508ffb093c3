"""swf-pool against PgQueuer, its nearest peer (a PostgreSQL job queue for Python on asyncio
and asyncpg), on the same database in the same run: drains of no-op jobs, each side through its
own way of running. swf-pool: `swf-pool run --drain --processes 2` with its defaults (full
audit), as bench.remote runs it. PgQueuer: what `pgqueuer run --mode drain --batch-size B` runs
(pgqueuer.run on uvloop), in 1, 2 and 4 processes, batches of 200 and 1,000, each process with
one asyncpg connection and an async no-op entrypoint, on tables made by
`pgqueuer install` (durable, its default; it logs every transition, queued, picked and done, as
swf-pool's full audit does). Each measurement is on a fresh schema, the configurations in turn,
for several rounds; the rate is read from each side's table between 10 % and 90 % done (start-up
and the last stragglers excluded), and the medians are compared: swf-pool against PgQueuer's
best configuration.

CPU per job, in the same 10 %-90 % window, comes from /proc: the queue's processes (swf-pool's
coordinator and workers, or PgQueuer's processes) and every PostgreSQL process. "Others" is the
rest of the machine, in cores: what else ran meanwhile (each measurement first waits, a while,
for a quiet machine); PostgreSQL's figure includes whatever other clients made it do. With
--quick the window is shorter than the sampling, and the CPU figures mean little. Once a
round, bench.drain's bare SQL ceiling (swf-pool's claim and a plain `succeeded` update, batch
100, nothing else) gives what PostgreSQL spends on a job's two updates alone.

PgQueuer is an optional extra: pip install 'swf-pool[peers]' (or make bench-peers).

python -m bench.peers [--dsn ...] [--quick] [--runs N] [--rounds N] [--processes 1,2,4]
                      [--batches 200,1000]
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg.conninfo import conninfo_to_dict

from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.threads import Background

from .common import Scratch, _cpu_by_pid, marks, middle_rate, parser, quick, report, swf_finished
from .drain import DEFAULT_BATCH_SIZE, ceiling
from .remote import drain

if TYPE_CHECKING:
    from pgqueuer import Job, PgQueuer

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = "bench_noop"
INSTALL = "pip install 'swf-pool[peers]'"
QUIET_CORES = 0.3  # the rest of the machine counts as quiet below this
QUIET_WAIT = 300.0  # seconds to wait for it before measuring anyway


@contextlib.asynccontextmanager
async def factory() -> AsyncIterator[PgQueuer]:
    """PgQueuer's app in each of its processes: one asyncpg connection (the PG* variables of the
    environment; PGQUEUER_SCHEMA names the schema) and an async no-op entrypoint."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, PgQueuer

    conn = await asyncpg.connect()
    pgq = PgQueuer(AsyncpgDriver(conn))
    pgq.entrypoint(ENTRYPOINT)(noop)
    try:
        yield pgq
    finally:
        await conn.close()


async def noop(job: Job) -> None:
    return None


def worker(batch: int) -> None:
    """One PgQueuer process: what `pgqueuer run bench.peers:factory --mode drain --batch-size
    {batch}` does once its options are parsed (pgqueuer.run on uvloop). That command line fails
    before it starts, at its logging set-up, in PgQueuer 1.6.0 with typer 0.29 ("'str' object
    has no attribute 'name'")."""
    import uvloop
    from pgqueuer import run
    from pgqueuer.types import QueueExecutionMode

    uvloop.run(run(factory, batch_size=batch, mode=QueueExecutionMode.drain))


def have_pgqueuer() -> bool:
    return all(importlib.util.find_spec(name) for name in ("pgqueuer", "asyncpg"))


def pg_env(conninfo: str, schema: str) -> dict[str, str]:
    """The environment for PgQueuer's processes: libpq's variables, and the schema."""
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}
    names |= {"password": "PGPASSWORD", "sslmode": "PGSSLMODE"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PGQUEUER_SCHEMA": schema}
    for key, value in conninfo_to_dict(conninfo).items():
        if key in names and value is not None:
            env[names[key]] = str(value)
    return env


def quiet(cores: float = QUIET_CORES, patience: float = QUIET_WAIT) -> float:
    """Waits (up to `patience` seconds) until the machine's busy cores, over 2 s, fall below
    `cores`; returns the last figure."""
    deadline = time.monotonic() + patience
    said = False
    while True:
        before, started = _busy_seconds(), time.monotonic()
        time.sleep(2.0)
        busy = (_busy_seconds() - before) / (time.monotonic() - started)
        if busy < cores or time.monotonic() > deadline:
            return busy
        if not said:
            print(f"  waiting for a quiet machine ({busy:.2f} cores busy)", flush=True)
            said = True


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuSeries(Background):
    """Cumulative CPU seconds by role (`postgres`, `coordinator`: this process, `workers`: its
    descendants, `machine`: everything), sampled every 0.2 s from /proc, so that the CPU of any
    window inside the block can be read afterwards."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.seen: dict[int, tuple[str, float]] = {}
        super().__init__("bench-cpu-series")

    def loop(self) -> None:
        self._sample()
        while not self.stopping.wait(0.2):
            self._sample()
        self._sample()

    def _sample(self) -> None:
        self.seen.update(_cpu_by_pid())  # processes that ended keep their last figure
        totals = {"postgres": 0.0, "coordinator": 0.0, "workers": 0.0}
        for role, seconds in self.seen.values():
            totals[role] += seconds
        totals["machine"] = _busy_seconds()
        self.samples.append((time.time(), totals))

    def at(self, moment: float) -> dict[str, float]:
        """The cumulative figures at `moment` (epoch seconds), interpolated."""
        earlier = [s for s in self.samples if s[0] <= moment] or self.samples[:1]
        later = [s for s in self.samples if s[0] >= moment] or self.samples[-1:]
        (t0, a), (t1, b) = earlier[-1], later[0]
        share = (moment - t0) / (t1 - t0) if t1 > t0 else 0.0
        return {role: a[role] + (b[role] - a[role]) * share for role in a}

    def window(self, start: float, end: float, jobs: int) -> dict[str, float]:
        """CPU µs per job by role between `start` and `end`, and the cores the rest of the
        machine kept busy meanwhile."""
        a, b = self.at(start), self.at(end)
        used = {role: b[role] - a[role] for role in a}
        others = used["machine"] - used["postgres"] - used["coordinator"] - used["workers"]
        return {
            "queue µs/job": round(used["workers"] / jobs * 1e6, 1),
            "postgres µs/job": round(used["postgres"] / jobs * 1e6, 1),
            "others cores": round(max(others, 0.0) / (end - start), 2),
        }


def swf_drain(dsn: str, runs: int) -> tuple[float, dict[str, float]]:
    """swf-pool's rate (bench.remote's drain: the CLI with its defaults, `--processes 2`),
    and CPU per job between 10 % and 90 % done."""
    with Scratch(dsn) as scratch, CpuSeries() as cpu:
        rate = drain(scratch.dsn, scratch.dsn, runs, 1, [])
        target = parse_dsn(scratch.dsn)
        assert isinstance(target, PostgresTarget)
        start, end = marks(target.conninfo, swf_finished(target.schema), runs)
    return rate, cpu.window(start, end, runs - 2 * (runs // 10))


def pgq_drain(
    conninfo: str, runs: int, processes: int, batch: int
) -> tuple[float, dict[str, float]]:
    """PgQueuer's rate: `processes` x `pgqueuer run --mode drain --batch-size batch` on `runs`
    no-op jobs in a fresh schema, read from its log as bench.remote reads swf-pool's table; and
    CPU per job between 10 % and 90 % done."""
    schema = f"pgq_bench_{uuid.uuid4().hex[:8]}"
    env = pg_env(conninfo, schema)
    command = [sys.executable, "-m", "pgqueuer"]
    try:
        subprocess.run(
            [*command, "install"], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL
        )
        enqueue(conninfo, schema, runs)
        query = (
            f'SELECT extract(epoch FROM created) FROM "{schema}".pgqueuer_log '  # noqa: S608
            "WHERE status = 'successful' ORDER BY created, id OFFSET %s LIMIT 1"
        )
        with CpuSeries() as cpu:
            rate = _pgq_run(conninfo, query, env, runs, processes, batch)
        start, end = marks(conninfo, query, runs)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())
    return rate, cpu.window(start, end, runs - 2 * (runs // 10))


def enqueue(conninfo: str, schema: str, runs: int) -> None:
    """`runs` no-op jobs through PgQueuer's own batch enqueue, 5,000 per statement."""
    from pgqueuer.adapters.persistence.qb import QueryQueueBuilder
    from pgqueuer.db import SyncPsycopgDriver
    from pgqueuer.domain.settings import DBSettings
    from pgqueuer.queries import SyncQueries

    with psycopg.connect(conninfo, autocommit=True) as conn:
        queries = SyncQueries(
            SyncPsycopgDriver(conn), qbq=QueryQueueBuilder(settings=DBSettings(db_schema=schema))
        )
        for start in range(0, runs, 5000):
            count = min(5000, runs - start)
            queries.enqueue([ENTRYPOINT] * count, [None] * count, [0] * count)


def _pgq_run(
    conninfo: str, query: str, env: dict[str, str], runs: int, processes: int, batch: int
) -> float:
    command = [sys.executable, "-c", f"from bench.peers import worker; worker({batch})"]
    procs = [
        subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    return middle_rate(procs, "a PgQueuer process", conninfo, query, runs)


def checkpoint(conninfo: str) -> None:
    """The same start for every measurement: no dirty pages left by the one before."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


SWF = "swf-pool"
REFERENCE = "PgQueuer, 2 processes, batch 200"  # the configuration the first comparison used


def plan(processes: str, batches: str) -> tuple[dict[str, tuple[int, int] | None], list[str]]:
    """The configurations (name -> PgQueuer's processes and batch, None for swf-pool) and the
    order of one round: swf-pool after every second PgQueuer configuration, so that drift over
    the run (other work on this machine) falls on both sides."""
    configs: dict[str, tuple[int, int] | None] = {
        f"PgQueuer, {procs} processes, batch {batch}": (int(procs), int(batch))
        for batch in batches.split(",")
        for procs in processes.split(",")
    }
    order: list[str] = []
    for i, name in enumerate(configs):
        order += [name, SWF] if i % 2 else [name]
    if order[-1] != SWF:
        order.append(SWF)
    configs[SWF] = None
    return configs, order


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--processes", default="1,2,4", help="PgQueuer processes to try")
    p.add_argument("--batches", default="200,1000", help="PgQueuer batch sizes to try")
    args = p.parse_args()
    if not have_pgqueuer():
        print(f"bench.peers: PgQueuer (and asyncpg) are not installed: {INSTALL}; skipped")
        return
    target = parse_dsn(args.dsn)
    if not isinstance(target, PostgresTarget):
        print("bench.peers: PgQueuer runs on PostgreSQL only; give a PostgreSQL --dsn; skipped")
        return
    runs = args.runs or (2000 if quick(args) else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    configs, order = plan(args.processes, args.batches)
    # by round, each configuration's measurements (swf-pool has several a round)
    rates: list[dict[str, list[float]]] = []
    cpu: list[dict[str, list[dict[str, float]]]] = []
    bare: list[float] = []  # PostgreSQL µs/job of bench.drain's ceiling, once a round
    for r in range(rounds):
        print(f"round {r + 1} of {rounds}", flush=True)
        rates.append({name: [] for name in configs})
        cpu.append({name: [] for name in configs})
        for name in order:
            checkpoint(target.conninfo)
            before = 0.0 if args.quick else quiet()
            config = configs[name]
            if config is None:
                rate, used = swf_drain(args.dsn, runs)
            else:
                rate, used = pgq_drain(target.conninfo, runs, *config)
            rates[r][name].append(rate)
            cpu[r][name].append({**used, "others cores before": round(before, 2)})
            print(f"  {name}: {rate:,.0f} jobs/s; {used}", flush=True)
        with Scratch(args.dsn) as scratch:
            bare.append(ceiling(scratch.dsn, runs, DEFAULT_BATCH_SIZE)[1]["postgres"])
        print(f"  swf-pool's bare SQL ceiling: PostgreSQL {bare[-1]} µs/job", flush=True)

    def median(name: str) -> float:
        return statistics.median(x for one in rates for x in one[name])

    def cost(name: str, role: str) -> float:
        return round(statistics.median(c[role] for one in cpu for c in one[name]), 1)

    best = max((name for name in configs if name != SWF), key=median)
    swf = median(SWF)
    by_round = [statistics.median(one[SWF]) / statistics.median(one[best]) for one in rates]
    report(
        "peers",
        {
            "runs": runs,
            "rounds": rounds,
            "swf-pool jobs/s": round(swf),
            "PgQueuer best": best,
            "PgQueuer best jobs/s": round(median(best)),
            "swf/PgQueuer best": round(swf / median(best), 2),
            "by round": [round(x, 2) for x in by_round],
            **(
                {f"swf/{REFERENCE}": round(swf / median(REFERENCE), 2)}
                if REFERENCE in configs
                else {}
            ),
            "swf-pool CPU µs/job (pool, postgres)": [
                cost(SWF, "queue µs/job"),
                cost(SWF, "postgres µs/job"),
            ],
            "PgQueuer best CPU µs/job (processes, postgres)": [
                cost(best, "queue µs/job"),
                cost(best, "postgres µs/job"),
            ],
            "swf-pool bare SQL ceiling, postgres µs/job": statistics.median(bare),
        },
        {
            "order of a round": order,
            "jobs/s median": {name: round(median(name)) for name in configs},
            "jobs/s by round": rates,
            "cpu by round": cpu,
            "pgqueuer": _version("pgqueuer"),
            "asyncpg": _version("asyncpg"),
        },
    )


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
