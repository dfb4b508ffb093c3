"""The real `swf-pool` command, in a subprocess."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swf_pool import Client, Status, argtypes

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swf_pool.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_migrate_status_up_down(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path}/m.db"
    names = sorted(p.stem for p in (ROOT / "sql" / "sqlite").glob("*.sql"))
    assert len(names) >= 4
    for action in ("status", "down"):  # a mistyped path: no file made (only `up` makes one)
        out = cli("migrate", action, "--dsn", dsn)
        assert out.returncode == 1 and "no SQLite database at" in out.stderr, out.stderr
        assert not (tmp_path / "m.db").exists()
    out = cli("migrate", "up", "--dsn", dsn)
    assert out.returncode == 0 and f"applied {len(names)} migration(s)" in out.stdout
    out = cli("migrate", "down", "--dsn", dsn, "--steps", "2")
    assert f"reverted 2 migration(s)\n  {names[-1]}\n  {names[-2]}" in out.stdout
    status = cli("migrate", "status", "--dsn", dsn).stdout.split()
    assert status[-4:] == ["pending", names[-2], "pending", names[-1]]
    assert status[:2] == ["applied", names[0]]


def test_submit_and_run_drain(dsn: str) -> None:
    out = cli("submit", "greet.v1", '{"name": "Ada"}', "--dsn", dsn, "--idempotency-key", "g1")
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    again = cli("submit", "greet.v1", '{"name": "Ada"}', "--dsn", dsn, "--idempotency-key", "g1")
    assert again.stdout.strip() == f"{run_id} (already existed)"
    out = cli("run", "--app", "examples.hello:registry", "--drain", env={"SWF_DSN": dsn})
    assert out.returncode == 0, out.stderr
    assert "1 succeeded" in out.stderr  # the exit summary, logged once
    with Client(dsn) as client:
        run = client.get(run_id)
        assert run is not None and run.status is Status.SUCCEEDED
        assert run.result == {"greeting": "Hello, Ada!"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["migrate", "up", "--dsn", "mysql://x"], "unsupported scheme 'mysql'"),
        (["submit", "t", "{not json", "--dsn", "sqlite://:memory:"], "payload is not valid JSON"),
        (["submit", "t", "--dsn", "sqlite://:memory:"], "swf-pool migrate up"),
        (
            ["run", "--dsn", "sqlite://:memory:", "--app", "nope.nothing:registry"],
            "cannot import 'nope.nothing'",
        ),
        (
            ["run", "--dsn", "sqlite://:memory:", "--app", "examples.hello:missing"],
            "has no attribute 'missing'",
        ),
        (
            ["run", "--dsn", "sqlite://:memory:", "--app", "examples.hello"],
            "--app must look like package.module:registry",
        ),
        (
            [
                "run",
                "--dsn",
                "sqlite://:memory:",
                "--app",
                "examples.hello:registry",
                "--auto-migrate",
                "--types",
                "unknown.v1",
            ],
            "no handler for the requested type(s): unknown.v1",
        ),
        (
            ["migrate", "up", "--dsn", "postgres://u:topsecret@127.0.0.1:1/db"],
            "cannot connect to PostgreSQL",
        ),
    ],
)
def test_errors_are_one_clear_line(args: list[str], message: str) -> None:
    out = cli(*args)
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr and "topsecret" not in out.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "--app", "a:b", "--batch-size", "0", "--dsn", "x"], {}, "must be >= 1"),
        (["run", "--app", "a:b", "--dsn", "x"], {"SWF_LEASE": "-3"}, "must be > 0"),
        (["run", "--app", "a:b", "--dsn", "x"], {"SWF_BATCH_SIZE": "many"}, "invalid"),
        (["run", "--app", "a:b"], {}, "--dsn"),
        (["run", "--app", "a:b", "--dsn", "x", "--metrics-port", "70000"], {}, "0 to 65535"),
        (["status", "--dsn", "x", "--watch", "nan"], {}, "must be a finite number"),
        (["runs", "wait", "x", "--dsn", "x", "--timeout", "inf"], {}, "must be a finite number"),
        (["run", "--app", "a:b", "--dsn", "x"], {"SWF_DRAIN": "maybe"}, "SWF_DRAIN must be"),
        (["run", "--app", "a:b", "--dsn", "x"], {"SWF_SCHEDULES": "2"}, "SWF_SCHEDULES must be"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], env: dict[str, str], message: str) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SWF_")}
    out = subprocess.run(
        [sys.executable, "-m", "swf_pool.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**environment, **env},
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_help_names_the_environment_variables() -> None:
    text = cli("run", "--help").stdout
    for name in ("SWF_DSN", "SWF_APP", "SWF_LEASE", "SWF_BATCH_SIZE", "SWF_POLL_INTERVAL"):
        assert name in text


def test_demo_reports_what_happened(tmp_path: Path) -> None:
    out = cli("demo", "--dsn", f"sqlite:///{tmp_path}/demo.db", "--runs", "40")
    assert out.returncode == 0, out.stderr
    assert "submitted 40 runs" in out.stdout
    assert "demo.flaky.v1" in out.stdout and "retried" in out.stdout


@pytest.mark.parametrize(
    ("text", "seconds", "shown"),
    [
        ("30d", 2592000, "30d"),
        ("1h30m", 5400, "1h30m"),
        ("90s", 90, "1m30s"),
        ("2w", 1209600, "14d"),
    ],
)
def test_durations(text: str, seconds: float, shown: str) -> None:
    value = argtypes.parse_duration(text)
    assert value.total_seconds() == seconds and argtypes.format_duration(value) == shown


@pytest.mark.parametrize("text", ["", "30", "d", "1x", "0s", "-1h", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        argtypes.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "on"), [("1", True), ("TRUE", True), ("On", True), ("no", False), ("", False)]
)
def test_switches_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str, on: bool
) -> None:
    monkeypatch.setenv("SWF_DRAIN", text)
    assert argtypes.env_switch("DRAIN") is on


def test_a_bad_switch_in_the_environment_stops_only_the_commands_that_read_it(
    tmp_path: Path,
) -> None:
    """SWF_DRAIN=maybe is refused by `run`, and read by no other command: it stopped them all."""
    env = {"SWF_DRAIN": "maybe", "SWF_AUTO_MIGRATE": "perhaps"}
    out = cli("migrate", "up", "--dsn", f"sqlite:///{tmp_path}/m.db", env=env)
    assert out.returncode == 0, out.stderr
    assert cli("run", "--app", "a:b", "--dsn", "x", env=env).returncode == 2
