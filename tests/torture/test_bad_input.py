"""Bad input, table-driven across the Python API, the CLI and the REST server: every case is a
typed error (or a 4xx, or a clear CLI error) and changes nothing in the database. Then
property tests fuzz submit and the DSN parser."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from swf_pool import (
    Client,
    ConfigError,
    ConnectError,
    InvalidDsn,
    InvalidPayload,
    InvalidSchedule,
    Pool,
    RunNotFound,
    ScheduleNotFound,
    SchemaNotReady,
    SwfError,
    ValidationError,
)
from swf_pool.codec import MAX_JSON_BYTES
from swf_pool.dsn import parse_dsn

from ..helpers import count
from ..test_api import start, stop
from .apps import registry
from .harness import SCALE

ROOT = Path(__file__).resolve().parents[2]
SQL = "x'); DROP TABLE workflow_run; --"


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def other_schema(dsn: str, schema: str) -> str:
    """The same database under another schema name (SQLite has none: a missing file)."""
    if dsn.startswith("sqlite"):
        return "sqlite:////nonexistent/dir/x.db"
    return f"{dsn} schema={schema}"


# (what, call on a client and its dsn, the exception expected)
API: list[tuple[str, Callable[[Client, str], object], type[Exception]]] = [
    ("unknown scheme", lambda c, d: Client("mysql://root@localhost/db"), InvalidDsn),
    ("empty dsn", lambda c, d: Client(""), InvalidDsn),
    ("schema with a quote", lambda c, d: Client('postgres://h/db?schema=a"b'), InvalidDsn),
    ("schema with SQL", lambda c, d: Client(f"postgres://h/db?schema={SQL}"), InvalidDsn),
    ("port not a number", lambda c, d: Client("postgres://h:port/db"), InvalidDsn),
    ("sqlite without a path", lambda c, d: Client("sqlite://"), InvalidDsn),
    ("unreachable server", lambda c, d: Client("postgres://127.0.0.1:9/db"), ConnectError),
    ("schema not migrated", lambda c, d: Client(other_schema(d, "nothing_here")), SwfError),
    ("empty type", lambda c, d: c.submit(""), ValidationError),
    ("type too long", lambda c, d: c.submit("t" * 256), ValidationError),
    ("NUL in type", lambda c, d: c.submit("a\x00b"), ValidationError),
    ("lone surrogate in type", lambda c, d: c.submit("a\udc80"), ValidationError),
    ("NaN payload", lambda c, d: c.submit("a", {"x": math.nan}), InvalidPayload),
    ("infinite payload", lambda c, d: c.submit("a", [-math.inf]), InvalidPayload),
    ("huge payload", lambda c, d: c.submit("a", "x" * (MAX_JSON_BYTES + 1)), InvalidPayload),
    ("deeply nested payload", lambda c, d: c.submit("a", nested(300)), InvalidPayload),
    ("integer keys", lambda c, d: c.submit("a", {1: 2}), InvalidPayload),
    ("integer beyond 64 bits", lambda c, d: c.submit("a", 2**70), InvalidPayload),
    ("bytes payload", lambda c, d: c.submit("a", b"\xff\xfe"), InvalidPayload),
    ("negative enormous priority", lambda c, d: c.submit("a", priority=-(2**40)), ValidationError),
    ("enormous priority", lambda c, d: c.submit("a", priority=2**63), ValidationError),
    (
        "priority as text",
        lambda c, d: c.submit("a", priority="1"),  # type: ignore[arg-type]
        ValidationError,
    ),
    ("zero attempts", lambda c, d: c.submit("a", max_attempts=0), ValidationError),
    ("naive run_at", lambda c, d: c.submit("a", run_at=datetime(2030, 1, 1)), ValidationError),
    ("negative run_in", lambda c, d: c.submit("a", run_in=-5), ValidationError),
    (
        "one bad item of many",
        lambda c, d: c.submit_many([{"type": "a"}, {"type": ""}]),
        ValidationError,
    ),
    ("bad cron", lambda c, d: c.schedule("r", cron="61 * * * *"), InvalidSchedule),
    ("cron that never fires", lambda c, d: c.schedule("r", cron="0 0 30 2 *"), InvalidSchedule),
    (
        "unknown zone",
        lambda c, d: c.schedule("r", cron="@daily", timezone="Mars/X"),
        InvalidSchedule,
    ),
    (
        "zone as a path",
        lambda c, d: c.schedule("r", cron="@daily", timezone="../../etc/passwd"),
        InvalidSchedule,
    ),
    ("cancel a non-UUID", lambda c, d: c.cancel(SQL), RunNotFound),
    (
        "retry a missing run",
        lambda c, d: c.retry("00000000-0000-0000-0000-000000000000"),
        RunNotFound,
    ),
    ("pause a non-UUID schedule", lambda c, d: c.schedules.pause(SQL), ScheduleNotFound),
    ("negative limit", lambda c, d: c.list(limit=-1), ValidationError),
    ("unknown status", lambda c, d: c.list(status=SQL), ValidationError),
    ("negative retention", lambda c, d: c.prune(timedelta(days=-1)), ValidationError),
    ("retention of millennia", lambda c, d: c.prune(timedelta(days=10**6)), ValidationError),
    (
        "retry since millennia",
        lambda c, d: c.retry_many(since=timedelta(days=10**6)),
        ValidationError,
    ),
    ("negative processes", lambda c, d: Pool(c, registry, processes=-1), ConfigError),
    ("zero batch", lambda c, d: Pool(c, registry, batch_size=0), ConfigError),
    ("negative lease", lambda c, d: Pool(c, registry, lease_seconds=-5), ConfigError),
    ("type without a handler", lambda c, d: Pool(c, registry, types=[SQL]), ConfigError),
]

# (what, argv after `swf-pool`; "{dsn}" is the test database), the exit status expected
CLI: list[tuple[str, list[str | bytes], int]] = [
    ("payload not JSON", ["submit", "a.v1", "{bad", "--dsn", "{dsn}"], 1),
    ("payload not UTF-8", ["submit", "a.v1", b'"\xff\xfe"', "--dsn", "{dsn}"], 1),
    ("priority too big", ["submit", "a.v1", "--priority", "99999999999", "--dsn", "{dsn}"], 1),
    ("priority not a number", ["submit", "a.v1", "--priority", "high", "--dsn", "{dsn}"], 2),
    ("negative processes", ["run", "--dsn", "{dsn}", "--app", "x:y", "--processes", "-1"], 2),
    ("missing app", ["run", "--dsn", "{dsn}", "--app", "no_such_module:registry"], 1),
    ("bad cron", ["schedule", "add", "r.v1", "--cron", "bad", "--dsn", "{dsn}"], 1),
    (
        "bad zone",
        ["schedule", "add", "r.v1", "--cron", "@daily", "--timezone", "X/Y", "--dsn", "{dsn}"],
        1,
    ),
    ("malformed dsn", ["status", "--dsn", "sqlite://"], 1),
    ("schema with a quote", ["status", "--dsn", 'postgres://h/db?schema=a"b'], 1),
    ("negative age", ["prune", "--older-than", "-1d", "--dsn", "{dsn}"], 2),
    ("age beyond the calendar", ["prune", "--older-than", "3000000d", "--dsn", "{dsn}"], 2),
    ("negative watch", ["status", "--watch", "-1", "--dsn", "{dsn}"], 2),
    ("empty API key", ["serve", "--api-key", " ", "--dsn", "{dsn}"], 1),
    ("cancel a non-UUID", ["runs", "cancel", SQL, "--dsn", "{dsn}"], 1),
    ("retry with a bad status", ["runs", "retry", "--status", "succeeded", "--dsn", "{dsn}"], 2),
]

# (what, method, path, raw body), all must be 4xx
REST: list[tuple[str, str, str, bytes | None]] = [
    ("body not UTF-8", "POST", "/workflows", b'{"type": "\xff"}'),
    ("NaN literal", "POST", "/workflows", b'{"type": "a", "payload": NaN}'),
    (
        "nested too deep",
        "POST",
        "/workflows",
        b'{"type": "a", "payload": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    ),
    ("body too large", "POST", "/workflows", b'{"type": "' + b"x" * 2_000_000 + b'"}'),
    ("enormous priority", "POST", "/workflows", b'{"type": "a", "priority": 1e300}'),
    ("negative priority beyond int32", "POST", "/workflows", b'{"type": "a", "priority": -3e9}'),
    ("SQL as an id", "GET", "/workflows/x'%20OR%201=1--", None),
    ("bad zone", "POST", "/schedules", b'{"type": "a", "cron": "@daily", "timezone": "A/B"}'),
    ("bad cron", "POST", "/schedules", b'{"type": "a", "cron": "* * *"}'),
    ("non-UUID schedule", "DELETE", "/schedules/abc", None),
]


def snapshot(dsn: str) -> tuple[int, int, int]:
    return (count(dsn), count(dsn, "workflow_event"), count(dsn, "workflow_schedule"))


def test_bad_input_through_the_api(client: Client, dsn: str) -> None:
    before = snapshot(dsn)
    for what, call, expected in API:
        with pytest.raises(expected) as caught:
            made = call(client, dsn)
            if isinstance(made, Client):
                made.close()
        assert isinstance(caught.value, SwfError | ValueError), what
        assert str(caught.value), what  # it says what is wrong
    assert snapshot(dsn) == before
    assert len(API) + len(CLI) + len(REST) >= 40


def test_bad_input_through_the_cli(dsn: str) -> None:
    before = snapshot(dsn)
    for what, argv, status in CLI:
        args = [dsn if a == "{dsn}" else a for a in argv]
        out = subprocess.run(
            [sys.executable, "-m", "swf_pool.cli", *args],
            capture_output=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        stderr = out.stderr.decode(errors="replace")
        assert out.returncode == status, (what, stderr)
        assert "error:" in stderr and "Traceback" not in stderr, (what, stderr)
    assert snapshot(dsn) == before


def test_bad_input_through_rest(dsn: str) -> None:
    before = snapshot(dsn)
    server = start(dsn)
    try:
        for what, method, path, body in REST:
            reply = server.call(method, "/api/v1" + path, raw=body)
            assert 400 <= reply.status < 500, (what, reply.status, reply.body)
            assert isinstance(reply.body, dict) and reply.body.get("error"), what
    finally:
        assert stop(server) == 0
    assert snapshot(dsn) == before


def test_sql_in_type_prefixes_is_only_text(client: Client, dsn: str) -> None:
    """A prefix full of SQL and LIKE wildcards matches literally: it claims nothing here."""
    client.submit("torture.noop")
    before = snapshot(dsn)
    stats = Pool(client, registry, executor="inline", prefixes=[SQL, "%_%'"]).drain()
    assert stats.claimed == 0 and snapshot(dsn) == before


# -- property tests -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(exclude_categories=())),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=()), max_size=8), inner, max_size=4
        )
    ),
    max_leaves=12,
)
FUZZ = settings(
    max_examples=60 if SCALE.runs < 10_000 else 1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(payload=JSON, priority=st.integers(min_value=-(2**40), max_value=2**40))
def test_submit_stores_exactly_or_refuses_cleanly(
    client: Client, dsn: str, payload: Any, priority: int
) -> None:
    before = snapshot(dsn)
    try:
        submitted = client.submit("fuzz.v1", payload, priority=priority)
    except (InvalidPayload, ValidationError):
        assert snapshot(dsn) == before
        return
    run = client.get(submitted.id)
    assert run is not None and same_json(run.payload, payload) and run.priority == priority


def same_json(got: Any, sent: Any) -> bool:
    """Equal as JSON: numbers by value (jsonb keeps 2.6e16 as the integer it denotes)."""
    number = (int, float)
    if isinstance(got, number) and isinstance(sent, number):
        if isinstance(got, bool) or isinstance(sent, bool):
            return got is sent
        return got == sent or float(got) == float(sent)
    if isinstance(got, list) and isinstance(sent, list):
        return len(got) == len(sent) and all(map(same_json, got, sent))
    if isinstance(got, dict) and isinstance(sent, dict):
        return got.keys() == sent.keys() and all(same_json(got[k], sent[k]) for k in got)
    return bool(got == sent) and type(got) is type(sent)


@FUZZ
@given(
    text=st.text()
    | st.from_regex(r"(postgres(ql)?|sqlite3?|mysql)://[^\s]{0,40}", fullmatch=True)
    | st.from_regex(r"(host|port|dbname|schema|user)=[^\s]{0,12}( \w+=\S{0,8}){0,3}")
)
def test_the_dsn_parser_returns_a_target_or_says_why(text: str) -> None:
    try:
        target = parse_dsn(text)
    except InvalidDsn as exc:
        assert str(exc)
        return
    assert target is not None


def test_schema_not_ready_is_typed(pg_empty: str) -> None:
    with pytest.raises(SchemaNotReady, match="migrate up"):
        Client(pg_empty)
