"""What a new user meets first: the command as installed (not `python -m` from the source
tree), bad values refused in one line, pipes closed early, `--version`."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from swf_pool import Client, Status, ValidationError

from .helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
SWF_POOL = str(Path(sys.executable).parent / "swf-pool")  # the installed entry point


def command(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """The installed `swf-pool`, without PYTHONPATH, as a user runs it."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [SWF_POOL, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**environment, **(env or {})},
        timeout=60,
        check=False,
    )


def test_app_is_imported_from_the_current_directory(sqlite_dsn: str) -> None:
    """`swf-pool run --app examples.hello:registry` from the project's root, as written in
    examples/hello.py: the coordinator and the worker processes find the module."""
    with Client(sqlite_dsn) as client:
        run_id = client.submit("greet.v1", {"name": "Ada"}).id
    out = command("run", "--app", "examples.hello:registry", "--dsn", sqlite_dsn, "--drain")
    assert out.returncode == 0, out.stderr
    with Client(sqlite_dsn) as client:
        run = client.get(run_id)
        assert run is not None and run.status is Status.SUCCEEDED, run


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "list"],
        ["status", "--json"],
    ],
)
def test_a_reader_that_stops_early_gets_no_traceback(sqlite_dsn: str, args: list[str]) -> None:
    """`swf-pool runs list | head -1`: the reader closes the pipe; the command ends quietly."""
    with Client(sqlite_dsn) as client:
        client.submit_many({"type": "t.v1", "payload": "x" * 500} for _ in range(200))
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with subprocess.Popen(
        [SWF_POOL, *args, "--dsn", sqlite_dsn, *(["--limit", "1000"] if "list" in args else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=environment,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before anything was written
        error = proc.stderr.read().decode()
        assert proc.wait(60) == 0, error
    assert "Traceback" not in error and "BrokenPipe" not in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "a", "--run-in", "nan"], "--run-in: must be between 0 and"),
        (["submit", "a", "--run-in", "inf"], "--run-in: must be between 0 and"),
        (["submit", "a", "--run-in", "1e300"], "--run-in: must be between 0 and"),
        (["serve", "--port", "70000"], "--port: must be a port number"),
        (["run", "--app", "examples.hello:registry", "--lease", "nan"], "--lease: must be"),
        (["run", "--app", "examples.hello:registry", "--lease", "inf"], "--lease: must be"),
        (["run", "--app", "examples.hello:registry", "--timeout", "nan"], "--timeout: must be"),
        (["run", "--app", "examples.hello:registry", "--processes", "100000"], "at most 1024"),
    ],
)
def test_values_that_would_hang_or_crash_are_refused_in_one_line(
    sqlite_dsn: str, args: list[str], message: str
) -> None:
    out = command(*args, "--dsn", sqlite_dsn)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    with Client(sqlite_dsn) as client:
        assert client.list() == []  # nothing was written


def test_submit_takes_a_duration_like_the_other_commands(sqlite_dsn: str) -> None:
    out = command("submit", "a.v1", "--run-in", "1h", "--dsn", sqlite_dsn)
    assert out.returncode == 0, out.stderr
    with Client(sqlite_dsn) as client:
        run = client.get(out.stdout.strip())
        assert run is not None
        due = datetime.now(UTC) + timedelta(hours=1)
        assert abs((run.run_at - due).total_seconds()) < 60


@pytest.mark.parametrize("run_in", [float("nan"), float("inf"), 1e300])
def test_the_api_refuses_a_delay_it_cannot_store(client: Client, run_in: float) -> None:
    with pytest.raises(ValidationError, match="run_in must be between 0 and"):
        client.submit("a.v1", None, run_in=run_in)
    assert client.list() == []


def test_a_filter_the_database_cannot_take_is_a_validation_error(client: Client) -> None:
    with pytest.raises(ValidationError, match="type is not valid UTF-8"):
        client.list(type="\udc80")
    with pytest.raises(ValidationError, match="idempotency_key is not valid UTF-8"):
        client.list(idempotency_key="\udc80")


def test_version_and_python_dash_m() -> None:
    out = command("--version")
    assert out.returncode == 0 and out.stdout.startswith("swf-pool ")
    module = subprocess.run(
        [sys.executable, "-m", "swf_pool", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert module.returncode == 0 and module.stdout == out.stdout


def test_drain_from_the_environment_and_one_summary(sqlite_dsn: str) -> None:
    with Client(sqlite_dsn) as client:
        client.submit("greet.v1", {"name": "Ada"})
    out = command(
        "run", "--app", "examples.hello:registry", env={"SWF_DSN": sqlite_dsn, "SWF_DRAIN": "1"}
    )
    assert out.returncode == 0, out.stderr
    assert (out.stdout + out.stderr).count("1 succeeded") == 1


def test_update_help_does_not_claim_defaults_it_does_not_apply() -> None:
    out = command("schedule", "update", "--help")
    assert out.returncode == 0
    assert "default 100" not in out.stdout and "default: unchanged" in out.stdout


def test_a_plain_install_brings_a_libpq_of_its_own() -> None:
    """`pip install swf-pool` without extras must work on a host with no PostgreSQL client
    library: psycopg's binary build is a dependency (the C build is the `c` extra)."""
    requires = importlib.metadata.requires("swf-pool") or []
    plain = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("psycopg[binary]") for r in plain), plain


def test_drain_waits_for_retries_due_soon_and_says_what_is_left(sqlite_dsn: str) -> None:
    """The hello example's retry comes 1 s after the first attempt: a drain finishes it. A
    run an hour away is left, and the exit line says so."""
    with Client(sqlite_dsn) as client:
        soon = client.submit("sometimes.v1").id  # fails once, retried after 1 s
        client.submit("greet.v1", {"name": "Ada"}, run_in=3600)
    out = command("run", "--app", "examples.hello:registry", "--dsn", sqlite_dsn, "--drain")
    assert out.returncode == 0, out.stderr
    with Client(sqlite_dsn) as client:
        run = client.get(soon)
        assert run is not None and (run.status, run.attempt) == (Status.SUCCEEDED, 2)
    assert re.search(
        r"1 run\(s\) left scheduled for later; the next is due in (60\.0m|1\.0h)", out.stderr
    )


def test_status_on_a_mistyped_sqlite_path_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    out = command("status", "--dsn", f"sqlite:///{missing}")
    assert out.returncode == 1 and "no SQLite database at" in out.stderr
    assert not missing.exists()


def test_runs_list_has_a_header_and_aligned_columns(sqlite_dsn: str) -> None:
    with Client(sqlite_dsn) as client:
        client.submit("a.v1")
        client.submit("a.much.longer.type.v1")
    lines = command("runs", "list", "--dsn", sqlite_dsn).stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "STATUS", "TYPE", "ATTEMPT"]
    starts = {line.index("0/3") for line in lines[1:]}  # the attempt column lines up
    assert len(starts) == 1 and lines[0].index("ATTEMPT") in starts


def test_status_watch_into_a_file_writes_no_screen_codes(sqlite_dsn: str, tmp_path: Path) -> None:
    out_file = tmp_path / "status.txt"
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with (
        out_file.open("w") as out,
        subprocess.Popen(
            [SWF_POOL, "status", "--watch", "0.05", "--dsn", sqlite_dsn],
            stdout=out,
            stderr=subprocess.PIPE,
            env=environment,
        ) as proc,
    ):
        wait_until(lambda: out_file.read_text().count(" UTC") >= 2, 30)
        proc.terminate()
    text = out_file.read_text()
    assert "\x1b" not in text and "TYPE" in text
