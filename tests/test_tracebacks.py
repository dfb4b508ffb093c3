"""A handler's traceback: kept (bounded) with the failed or retried attempt, shown by
`runs show`, the REST run and the dashboard's run page; and the pool's WARNING line per failure,
rate-limited. Real pools with the process executor, on both backends."""

from __future__ import annotations

import html
import inspect
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from swf_pool import Client, EventType, Pool, Status

from . import apps
from .test_api import KEY, V1, start, stop
from .test_cli import cli
from .test_pool import APP

ERROR = "ZeroDivisionError: division by zero"
BOUND = 8 * 1024 + 100  # the kept end of a traceback, and the note that says what was cut


def _line_of(func: Any, text: str) -> int:
    """The line number of the line of `func` that contains `text`."""
    lines, first = inspect.getsourcelines(func)
    return first + next(i for i, line in enumerate(lines) if text in line)


DIVIDE_FRAME = f'File "{apps.__file__}", line {_line_of(apps.divide, "/ 0")}, in divide'


def _fail_one(client: Client, run_type: str, payload: Any, max_attempts: int = 1) -> str:
    run_id = client.submit(run_type, payload, max_attempts=max_attempts).id
    Pool(client, APP, processes=1, executor="process").drain()
    run = client.get(run_id)
    assert run is not None and run.status is Status.FAILED
    return run_id


def _failures(client: Client, run_id: str) -> list[Any]:
    kinds = (EventType.RETRIED, EventType.FAILED)
    return [e.data for e in client.events(run_id) if e.event_type in kinds]


def _warnings(caplog: pytest.LogCaptureFixture, run_type: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "swf_pool.pool" and r.levelno == logging.WARNING and run_type in r.getMessage()
    ]


def test_the_failed_attempts_keep_their_tracebacks_and_the_pool_logs_one_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="swf_pool")
    run_id = _fail_one(client, "t.divide", 1, max_attempts=2)
    run = client.get(run_id)
    assert run is not None and run.last_error == ERROR  # still the one line Go clients show
    retried, failed = _failures(client, run_id)
    for attempt, data in enumerate([retried, failed], start=1):
        assert set(data) == {"attempt", "error", "traceback"}
        assert (data["attempt"], data["error"]) == (attempt, ERROR)
        trace = data["traceback"]
        assert trace.startswith("Traceback (most recent call last):\n")
        assert DIVIDE_FRAME in trace and trace.endswith(f"{ERROR}\n")
        assert "swf_pool" not in trace  # from the handler down, not the worker's own frames
    # both attempts failed within the same 10 s: one line, naming the type, run and last frame
    [line] = _warnings(caplog, "t.divide")
    assert run_id in line and "attempt 1 of 2" in line and ERROR in line
    assert f"{apps.__file__}:{_line_of(apps.divide, '/ 0')} in divide" in line


def test_a_huge_traceback_is_bounded(client: Client) -> None:
    # 600 frames deep (two functions taking turns, which Python does not fold), and a message
    # of 100 000 characters
    run_id = _fail_one(client, "t.recurse", {"depth": 600, "pad": 100_000})
    [data] = _failures(client, run_id)
    trace = data["traceback"]
    assert len(trace) <= BOUND
    assert f"line {_line_of(apps._ping, 'raise ValueError')}, in _ping" in trace  # innermost
    assert "ValueError: bottom yyyy" in trace and "more characters cut" in trace
    assert trace.count(", in _pong") < 50  # the innermost frames only


def test_runs_show_prints_the_traceback(dsn: str) -> None:
    with Client(dsn) as client:
        run_id = _fail_one(client, "t.divide", 1)
    out = cli("runs", "show", run_id, "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    assert "traceback (attempt 1):" in out.stdout
    assert DIVIDE_FRAME in out.stdout and f"  {ERROR}\n" in out.stdout
    # printed once, as lines, not again in the event timeline's one-line JSON
    assert out.stdout.count("Traceback (most recent call last):") == 1
    assert "events:" in out.stdout.split("Traceback (most recent call last):")[1]


def test_the_rest_run_its_events_and_the_dashboard_page_show_it(dsn: str) -> None:
    with Client(dsn) as client:
        failed = _fail_one(client, "t.divide", 1)
        ok = client.submit("t.echo", 1).id
        Pool(client, APP, processes=1, executor="process").drain()
    server = start(dsn, "--api-key", KEY)
    try:
        run = server.call("GET", f"{V1}/workflows/{failed}").body
        assert run["last_error"] == ERROR and run["status"] == "failed"
        assert DIVIDE_FRAME in run["traceback"] and run["traceback"].endswith(f"{ERROR}\n")
        assert server.call("GET", f"{V1}/workflows/{ok}").body["traceback"] is None
        events = server.call("GET", f"{V1}/workflows/{failed}/events").body
        [data] = [e["data"] for e in events if e["event_type"] == "failed"]
        assert data["traceback"] == run["traceback"] and data["error"] == ERROR
        page = server.call("GET", f"/runs/{failed}")
        assert page.status == 200
        text = html.unescape(page.body)
        assert 'id="traceback"' in page.body and DIVIDE_FRAME in text
        assert f'id="last-error">{ERROR}</pre>' in text
    finally:
        stop(server)


def test_a_burst_of_failures_logs_only_a_few_lines(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="swf_pool")
    ids = [r.id for r in client.submit_many({"type": "t.divide", "payload": i} for i in range(50))]
    began = time.monotonic()
    Pool(client, APP, processes=2, executor="process").drain()
    took = time.monotonic() - began
    assert {client.get(i).status for i in ids} == {Status.FAILED}  # type: ignore[union-attr]
    lines = _warnings(caplog, "t.divide")
    assert 1 <= len(lines) <= 1 + int(took / 10) + 1  # one per type per 10 s
    assert "division by zero" in lines[0]


def test_the_rate_limit_says_how_many_lines_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from swf_pool.models import Claimed, Outcome
    from swf_pool.tracebacks import FailureLog

    now = [0.0]
    failures = FailureLog(interval=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="swf_pool.pool")
    when = datetime.fromtimestamp(0, UTC)
    for i in range(50):
        for run_type in ("a.v1", "b.v1"):
            run = Claimed(f"id-{i}", run_type, None, 1, 1, when, when)
            failures.failed(run, Outcome(run.id, 1, Status.FAILED, error="E: boom"))
        now[0] += 0.1  # 50 failures of each type in 5 s
    now[0] = 11.0
    run = Claimed("id-last", "a.v1", None, 1, 1, when, when)
    failures.failed(run, Outcome(run.id, 1, Status.FAILED, error="E: boom"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # a.v1 and b.v1 once each, then a.v1 again after 10 s
    assert lines[2].endswith("(49 more failures of a.v1 since the last line not logged)")
    assert "at " not in lines[0].split("E: boom")[1]  # no traceback: no frame to name


def test_format_traceback_keeps_the_end_of_a_long_chain() -> None:
    from swf_pool.tracebacks import TRACEBACK_CHARS, format_traceback, last_frame

    def chain(n: int) -> None:
        try:
            if n == 0:
                raise KeyError("first")
            chain(n - 1)
        except Exception as exc:
            raise RuntimeError(f"wrapped {n}") from exc

    try:
        chain(200)
    except RuntimeError as exc:
        text = format_traceback(exc, skip_caller=False)
    assert text is not None and len(text) <= TRACEBACK_CHARS + 50
    assert text.startswith("[") and " characters cut]\n" in text.splitlines()[0] + "\n"
    assert text.endswith("RuntimeError: wrapped 200\n")
    assert (last_frame(text) or "").endswith(" in chain")
