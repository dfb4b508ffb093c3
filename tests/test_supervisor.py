"""`swf-pool run --coordinators N`: one command, several coordinators with their share of the
workers; one signal stops them all gracefully, whether it reaches the whole process group or
only the supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from swf_pool import Client, ConfigError, Status
from swf_pool.supervisor import shares

from .helpers import sql, wait_until

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.apps:registry"


def pool(dsn: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "swf_pool", "run", "--dsn", dsn, "--app", APP,
             "--poll-interval", "0.05", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def test_workers_are_shared_evenly() -> None:
    assert shares(15, 2) == [8, 7]
    assert shares(4, 4) == [1, 1, 1, 1]
    with pytest.raises(ConfigError, match="at least as many --processes"):
        shares(2, 3)


def test_two_coordinators_drain_one_queue(postgres_dsn: str, tmp_path: Path) -> None:
    with Client(postgres_dsn) as client:
        # runs that take a while: the first coordinator up cannot take them all
        client.submit_many({"type": "t.nap", "payload": 0.02} for _ in range(200))
    log = tmp_path / "pool.log"
    proc = pool(postgres_dsn, log, "--processes", "2", "--coordinators", "2", "--drain")
    assert proc.wait(120) == 0, log.read_text()
    holders = sql(
        postgres_dsn,
        "SELECT count(DISTINCT data->>'worker_id') AS n FROM workflow_event "
        "WHERE event_type = 'leased'",
    )
    assert holders[0]["n"] == 2  # both took part
    done = sql(postgres_dsn, "SELECT count(*) AS n FROM workflow_run WHERE status = 'succeeded'")
    assert done[0]["n"] == 200


@pytest.mark.parametrize("to", ["supervisor", "group"])
def test_one_signal_stops_every_coordinator_gracefully(
    postgres_dsn: str, tmp_path: Path, to: str
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    with Client(postgres_dsn) as client:
        run_id = client.submit("t.gate", {"started": str(started), "gate": str(gate)}).id
    log = tmp_path / "pool.log"
    proc = pool(postgres_dsn, log, "--processes", "2", "--coordinators", "2")
    wait_until(started.exists, 30)  # a handler runs in one of the coordinators
    if to == "group":
        os.killpg(proc.pid, signal.SIGTERM)  # each process gets it once
    else:
        proc.send_signal(signal.SIGTERM)  # the supervisor alone: it tells the coordinators
    wait_until(lambda: log.read_text().count("stopping gracefully") >= 1, 30)
    gate.write_text("open")
    assert proc.wait(60) == 0, log.read_text()
    with Client(postgres_dsn) as client:
        run = client.get(run_id)
        assert run is not None and (run.status, run.attempt) == (Status.SUCCEEDED, 1)
    assert "replacing it" not in log.read_text()
