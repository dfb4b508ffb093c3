"""Shared benchmark plumbing: a database to run on, progress on long runs, and one way to
print and keep results (`bench/results/<scenario>.json`, read by `bench.report`)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import psycopg

from swf_pool import Client
from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.threads import Background

DEFAULT_DSN = os.environ.get("SWF_BENCH_DSN", "host=127.0.0.1 user=postgres dbname=postgres")
RESULTS = Path(__file__).resolve().parent / "results"
QUICK = False  # set by parser(): quick results go to results/quick/, never into the report


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--dsn",
        default=DEFAULT_DSN,
        help="server to benchmark on; a fresh schema is created and dropped (env SWF_BENCH_DSN)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for CI")
    return p


def quick(args: argparse.Namespace) -> bool:
    global QUICK
    QUICK = bool(args.quick)
    return QUICK


class Scratch:
    """A fresh schema (PostgreSQL) or file (SQLite), migrated, removed afterwards."""

    def __init__(self, dsn: str) -> None:
        target = parse_dsn(dsn)
        self.schema = f"swf_bench_{uuid.uuid4().hex[:8]}"
        if isinstance(target, PostgresTarget):
            self.admin: str | None = target.conninfo
            self.dsn = f"{target.conninfo} schema={self.schema}"
        else:
            self.admin = None
            self.dsn = dsn
        Client(self.dsn, migrate=True).close()

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.admin:
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE'.encode())


def fill(dsn: str, runs: int, type_: str = "bench.noop.v1", label: str = "submitting") -> None:
    """`runs` no-op runs, 5,000 per statement."""
    done = [0]
    with Client(dsn) as client, Progress(label, runs, lambda: done[0]):
        for start in range(0, runs, 5000):
            count = min(5000, runs - start)
            client.submit_many({"type": type_, "payload": None} for _ in range(count))
            done[0] += count


class Progress(Background):
    """A progress bar on stderr while a long step runs (redrawn in place on a terminal, a
    line every 10 s otherwise); `done()` is polled from a thread of its own."""

    def __init__(self, label: str, total: int, done: Callable[[], int]) -> None:
        self.label, self.total, self.done = label, max(total, 1), done
        self.tty = sys.stderr.isatty()
        self.began = time.monotonic()
        super().__init__("bench-progress")

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self.tty:
            print(file=sys.stderr)

    def loop(self) -> None:
        every = 0.25 if self.tty else 10.0
        while not self.stopping.wait(every):
            self._draw()
        self._draw()

    def _draw(self) -> None:
        fraction = min(self.done() / self.total, 1.0)
        filled = int(fraction * 30)
        line = (
            f"{self.label:<28} [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
            f"{time.monotonic() - self.began:6.1f}s"
        )
        print(("\r" if self.tty else "") + line, end="" if self.tty else "\n", file=sys.stderr)
        sys.stderr.flush()


class CpuUse(Background):
    """CPU seconds used while the block runs, by role: `postgres` (every server process),
    `coordinator` (this process) and `workers` (its descendants), from /proc, sampled every
    0.2 s so that processes which end before the block does still count (but for their last
    moments)."""

    ROLES = ("postgres", "coordinator", "workers")

    def __init__(self) -> None:
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}
        super().__init__("bench-cpu")

    def __enter__(self) -> Self:
        self.first = _cpu_by_pid()
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.last.update(_cpu_by_pid())

    def loop(self) -> None:
        while not self.stopping.wait(0.2):
            self.last.update(_cpu_by_pid())

    def per_run(self, runs: int) -> dict[str, float]:
        """Microseconds of CPU per run, by role."""
        used = dict.fromkeys(self.ROLES, 0.0)
        for pid, (role, seconds) in self.last.items():
            used[role] += seconds - self.first.get(pid, (role, 0.0))[1]
        return {role: round(s / max(runs, 1) * 1e6, 1) for role, s in used.items()}


def _cpu_by_pid() -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds so far) for the processes `CpuUse` counts."""
    me = os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    seen: dict[int, tuple[bytes, int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue  # ended meanwhile
        head, _, rest = stat.rpartition(b")")
        fields = rest.split()  # state, ppid, ..., utime (12th), stime (13th)
        comm = head.split(b"(", 1)[1]
        seen[int(name)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)

    def descends(pid: int) -> bool:
        for _ in range(16):
            pid = seen[pid][1] if pid in seen else 0
            if pid == me:
                return True
        return False

    out = {}
    for pid, (comm, _, seconds) in seen.items():
        if pid == me:
            out[pid] = ("coordinator", seconds)
        elif comm == b"postgres":
            out[pid] = ("postgres", seconds)
        elif descends(pid):
            out[pid] = ("workers", seconds)
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    memory = _proc_field("/proc/meminfo", "MemTotal:")
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu": _proc_field("/proc/cpuinfo", "model name", ":"),
        "memory GiB": round(int(memory.split()[0]) / 1024**2) if memory else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _commit(),
    }
    try:
        with psycopg.connect(DEFAULT_DSN) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = row[0] if row else None
    except psycopg.Error:
        info["postgresql"] = None
    return info


def _proc_field(path: str, prefix: str, separator: str | None = None) -> str | None:
    """The value of the first line of /proc/... that starts with `prefix`."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(prefix):
            value = line.split(separator, 1)[1] if separator else line[len(prefix) :]
            return value.strip()
    return None


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=RESULTS.parent,
        )
    except OSError:
        return None
    commit = out.stdout.strip()
    if not commit:
        return None
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
        capture_output=True,
        text=True,
        check=False,
        cwd=RESULTS.parent.parent,
    )
    return f"{commit}+changes" if changed.stdout.strip() else commit


def marks(conninfo: str, query: str, runs: int) -> tuple[float, float]:
    """When (epoch seconds, from the table) the job at 10 % and the one at 90 % finished;
    `query` returns the finish times in order, with an OFFSET and a LIMIT to fill in."""
    low, high = max(runs // 10, 1), runs - runs // 10
    with psycopg.connect(conninfo, autocommit=True) as conn:
        found = [conn.execute(query.encode(), (n - 1,)).fetchone() for n in (low, high)]
    if not (found[0] and found[1]):
        raise RuntimeError("fewer jobs finished than were submitted")
    return float(found[0][0]), float(found[1][0])


def swf_finished(schema: str) -> str:
    """`marks`' query for swf-pool: the times its runs succeeded (a flush's `updated_at`)."""
    return (
        f'SELECT extract(epoch FROM updated_at) FROM "{schema}".workflow_run '  # noqa: S608
        "WHERE status = 'succeeded' ORDER BY updated_at OFFSET %s LIMIT 1"
    )


def middle_rate(
    procs: list[subprocess.Popen[bytes]], what: str, conninfo: str, query: str, runs: int
) -> float:
    """Jobs/s of the processes `procs` draining `runs` jobs, between 10 % and 90 % done
    (start-up and the tail left out): each process must exit 0, then `marks` reads the
    moments from the table. Nothing polls the database meanwhile: on two cores an observer's
    queries would take CPU from the drain it measures (and the more so, the bigger the table
    it counts)."""
    deadline = time.monotonic() + 600
    try:
        for proc in procs:
            try:
                code = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{what} did not drain {runs} jobs in 10 minutes") from None
            if code != 0:
                raise RuntimeError(f"{what} exited with status {code}")
    finally:  # none left draining into the next measurement
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    start, end = marks(conninfo, query, runs)
    low, high = max(runs // 10, 1), runs - runs // 10
    return (high - low) / max(end - start, 1e-6)


def markdown(name: str, results: dict[str, Any]) -> str:
    cells = " | ".join(f"{k}: {v}" for k, v in results.items())
    return f"| {name} | {cells} |"


def report(name: str, results: dict[str, Any], samples: dict[str, Any] | None = None) -> None:
    """Print one JSON line and one markdown row, and keep them (with `samples`, raw data for
    the plots) in bench/results/ (results/quick/ for --quick runs)."""
    record = {
        "scenario": name,
        **results,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": QUICK,
    }
    described = machine()
    print(json.dumps({**record, "machine": described}))
    print(markdown(name, results), flush=True)
    folder = RESULTS / "quick" if QUICK else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    kept = {"results": record, "machine": described, "samples": samples or {}}
    (folder / f"{name}.json").write_text(json.dumps(kept, indent=1) + "\n")
