"""What the torture tests share: their scale, a pool in a process of its own that can be
killed and restarted, and the processes it owns."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ..helpers import sql
from .apps import EFFECTS

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.torture.apps:registry"


@dataclass(frozen=True)
class Scale:
    """`make test` runs the short version; `make torture` (SWF_TORTURE=full) the real one."""

    runs: int
    kill_every: float  # seconds between worker kills
    soak_runs: int
    deadline: float


SCALE = (
    Scale(runs=50_000, kill_every=0.5, soak_runs=1_000_000, deadline=900)
    if os.environ.get("SWF_TORTURE") == "full"
    else Scale(runs=1_500, kill_every=0.25, soak_runs=20_000, deadline=180)
)


class Coordinator:
    """`swf-pool run` in a subprocess, its output in a file."""

    def __init__(self, dsn: str, effects: str, log: Path, *args: str) -> None:
        self.dsn, self.effects, self.log, self.args = dsn, effects, log, args
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "swf_pool.cli", "run", "--dsn", self.dsn, "--app", APP,
                 *self.args],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, EFFECTS: self.effects},
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; its workers notice and exit by themselves."""
        self.process.kill()
        self.process.wait(30)

    def restart(self) -> None:
        self.process = self._start()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)

    def workers(self) -> list[int]:
        """The worker processes: children of the forkserver, the coordinator's child."""
        return [w for child in children(self.process.pid) for w in children(child)]

    def kill_a_worker(self, rand: random.Random) -> bool:
        workers = self.workers()
        if not workers:
            return False
        try:
            os.kill(rand.choice(workers), signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


def finished(dsn: str) -> int:
    """How many runs succeeded; fails at once if any ended otherwise (nothing here should)."""
    try:
        rows = sql(dsn, "SELECT status, count(*) AS n FROM workflow_run GROUP BY status")
    except psycopg.OperationalError:  # the server is restarting: ask again
        return 0
    counts = {row["status"]: row["n"] for row in rows}
    assert not counts.get("failed") and not counts.get("cancelled"), counts
    return int(counts.get("succeeded", 0))


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
