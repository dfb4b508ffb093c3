"""Signals to the real `swf-pool run` in a session of its own. A signal to its whole process
group (systemd's default KillMode=control-group, `timeout`, container runtimes, Ctrl-C in a
terminal) reaches every worker and the forkserver too: they leave it to the coordinator, which
lets the running run finish within its grace, or aborts on a second signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swf_pool import Client, Status

from .helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps:registry"
DEADLINE = 30.0


class GatedPool:
    """`swf-pool run` as the leader of a process group, running one `t.gate` run."""

    def __init__(self, dsn: str, tmp_path: Path) -> None:
        self.started, self.gate = tmp_path / "started", tmp_path / "gate"
        self.log = tmp_path / "pool.log"
        with Client(dsn) as client:
            payload = {"started": str(self.started), "gate": str(self.gate)}
            self.run_id = client.submit("t.gate", payload).id
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "swf_pool.cli", "run", "--dsn", dsn, "--app", APP,
                 "--processes", "2", "--shutdown-grace", "20", "--poll-interval", "0.05"],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.pgid = self.process.pid
        wait_until(self.started.exists, DEADLINE)  # the handler runs

    def signal_group(self, signum: int) -> None:
        os.killpg(self.pgid, signum)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> list[int]:
        """Processes of the group still alive (not zombies), from /proc."""
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == self.pgid and fields[0] != "Z":  # state, ppid, pgrp, ...
                pids.append(int(entry.name))
        return pids


@pytest.fixture
def pool(sqlite_dsn: str, tmp_path: Path) -> Iterator[GatedPool]:
    pool = GatedPool(sqlite_dsn, tmp_path)
    yield pool
    if pool.alive():  # a failed test leaves nothing behind
        pool.signal_group(signal.SIGKILL)
    pool.process.wait(DEADLINE)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_lets_the_running_run_finish(
    pool: GatedPool, sqlite_dsn: str, signum: int
) -> None:
    pool.signal_group(signum)  # the coordinator, its forkserver, its workers
    wait_until(lambda: "stopping gracefully" in pool.output(), DEADLINE)
    pool.gate.touch()  # the run may finish now, within the pool's grace
    assert pool.process.wait(DEADLINE) == 0, pool.output()
    assert "replacing it" not in pool.output()
    assert "WorkerDied" not in pool.output()
    with Client(sqlite_dsn) as client:
        run = client.get(pool.run_id)
    assert run is not None
    assert (run.status, run.attempt, run.result) == (Status.SUCCEEDED, 1, "passed"), pool.output()


def test_a_second_signal_to_the_process_group_aborts_and_leaves_nothing(
    pool: GatedPool, sqlite_dsn: str
) -> None:
    pool.signal_group(signal.SIGTERM)
    wait_until(lambda: "stopping gracefully" in pool.output(), DEADLINE)
    pool.signal_group(signal.SIGTERM)  # at once: the workers are killed, the lease expires
    assert pool.process.wait(DEADLINE) == 130, pool.output()
    wait_until(lambda: not pool.alive(), DEADLINE)  # nor did the forkserver outlive it
    assert "replacing it" not in pool.output()
    with Client(sqlite_dsn) as client:
        run = client.get(pool.run_id)
    assert run is not None and (run.status, run.attempt) == (Status.LEASED, 1)
