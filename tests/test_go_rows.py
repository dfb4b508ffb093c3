"""Rows the Go library (or any other client) writes on SQLite: every time form it uses is read,
and a run that still cannot be decoded is failed while the pool carries on (issue #14)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from swf_pool import Client, EventType, Pool, Status
from swf_pool.errors import DatabaseError, UndecodableRun
from swf_pool.gotime import parse_time

from .helpers import sql

APP = "tests.apps:registry"
MOMENT = datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
WHOLE = MOMENT.replace(microsecond=0)
GO_NOW = "2020-01-02 03:04:05.123456789 +0000 UTC m=+60.000123457"  # a Go time.Now()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-01-02 03:04:05", WHOLE),  # SQLite datetime()
        ("2020-01-02 03:04:05.123456", MOMENT),  # swf-pool
        ("2020-01-02 03:04:05.123456789 +0000 UTC", MOMENT),  # Go String()
        (GO_NOW, MOMENT),
        ("2020-01-02 03:04:05.5 +0000 UTC m=-1.5", WHOLE.replace(microsecond=500000)),
        ("2020-01-02 03:04:05.12 +0000 UTC", WHOLE.replace(microsecond=120000)),
        ("2020-01-02 03:04:05 +0000 UTC", WHOLE),
        ("2020-01-02 03:04:05 +0000 UTC m=+0.000000001", WHOLE),
        ("2020-01-02 03:04:05.999999999 +0000 UTC", WHOLE.replace(microsecond=999999)),
        ("2020-01-02 05:04:05.123456789 +0200 CEST", MOMENT),
        ("2020-01-01 20:04:05.123456789 -0700 MST m=+3.25", MOMENT),
        ("2020-01-02 06:04:05.123456 +0300 +03", MOMENT),  # a zone without an abbreviation
        ("2020-01-02 08:34:05.123456 +0530 IST", MOMENT),
        ("2019-12-31 23:04:05 -0400 AST", datetime(2020, 1, 1, 3, 4, 5, tzinfo=UTC)),
        ("2020-01-02T03:04:05.123456789Z", MOMENT),  # RFC 3339
        ("2020-01-02T05:04:05.123456789+02:00", MOMENT),
        ("2020-01-01T23:04:05.123456-04:00", MOMENT),
        ("2020-01-02T03:04:05Z", WHOLE),
        ("0001-01-01 00:00:00 +0000 UTC", datetime(1, 1, 1, tzinfo=UTC)),  # Go's zero time
        (None, None),
    ],
)
def test_every_time_form_is_read_as_utc(text: str | None, expected: datetime | None) -> None:
    parsed = parse_time(text)
    assert parsed == expected  # the same instant...
    assert parsed is None or parsed.tzinfo is UTC  # ...in UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a time",
        "2020-13-02 03:04:05 +0000 UTC",
        "2020-01-02 03:04:05 +0000 UTC m=+soon",
        "2020-01-02 03:04:05 UTC",
        "0001-01-01 00:00:00 +0100 CET",  # before year 1 in UTC
        42,
    ],
)
def test_what_is_not_a_time_is_a_value_error(text: object) -> None:
    with pytest.raises(ValueError, match=" is not a time"):
        parse_time(text)  # type: ignore[arg-type]


def go_run(
    dsn: str, payload: str | bytes, *, times: str = GO_NOW, run_at: str | None = None
) -> str:
    """Insert a pending run as another client would, times and payload written as given."""
    run_id = str(uuid.uuid4())
    sql(
        dsn,
        "INSERT INTO workflow_run (id, type, payload, priority, run_at, max_attempts, attempt, "
        "created_at, updated_at) VALUES (?, 't.echo', ?, 100, ?, 3, 0, ?, ?)",
        (run_id, payload, run_at or times, times, times),
    )
    return run_id


def test_a_run_with_go_times_is_read_and_executed(sqlite_dsn: str) -> None:
    with Client(sqlite_dsn) as client:
        run_id = go_run(sqlite_dsn, b'{"msg": "hi"}')
        run = client.get(run_id)
        assert run is not None
        assert (run.run_at, run.created_at, run.updated_at) == (MOMENT, MOMENT, MOMENT)
        assert [r.id for r in client.list()] == [run_id]
        stats = Pool(client, APP, processes=1, executor="thread").drain()
        assert (stats.claimed, stats.succeeded) == (1, 1)
        run = client.get(run_id)
        assert run is not None and run.status is Status.SUCCEEDED
        assert run.result["payload"] == {"msg": "hi"} and run.created_at == MOMENT


@pytest.mark.parametrize(
    ("payload", "run_at", "expected"),
    [
        ("not json{", None, "payload of run {id}: 'not json{{' is not JSON (invalid literal"),
        (b"\xff\xfe{}", None, "payload of run {id}: b'\\xff\\xfe{{}}' is not JSON (str is"),
        ("[1e400]", None, "payload of run {id}: '[1e400]' is not JSON (number is infinity"),
        ("{}", "0", "run_at of run {id}: '0' is not a time in any form"),  # sorts as due
    ],
)
def test_an_undecodable_run_is_failed_and_the_pool_carries_on(
    sqlite_dsn: str, payload: str | bytes, run_at: str | None, expected: str
) -> None:
    with Client(sqlite_dsn) as client:
        good = [client.submit("t.echo", i).id for i in range(2)]
        bad = go_run(sqlite_dsn, payload, times="2020-01-02 03:04:05", run_at=run_at)
        stats = Pool(client, APP, processes=1, executor="thread").drain()  # does not raise
        assert (stats.claimed, stats.succeeded) == (2, 2)
        assert [client.get(i).status for i in good] == [Status.SUCCEEDED] * 2  # type: ignore[union-attr]
        [row] = sql(sqlite_dsn, "SELECT * FROM workflow_run WHERE id = ?", (bad,))
        assert (row["status"], row["attempt"], row["lease_until"]) == ("failed", 1, None)
        error = row["last_error"]
        assert error.startswith("UndecodableRun: " + expected.format(id=bad)), error
        failed = [e.data for e in client.events(bad) if e.event_type is EventType.FAILED]
        assert failed == [{"attempt": 1, "error": error}]
        # a second pool finds nothing left to trip over
        assert Pool(client, APP, processes=1, executor="thread").drain().claimed == 0


def test_a_payload_that_is_not_json_is_read_as_its_text(sqlite_dsn: str) -> None:
    with Client(sqlite_dsn) as client:
        run_id = go_run(sqlite_dsn, "not json{", times="2020-01-02 03:04:05")
        run = client.get(run_id)
        assert run is not None and run.payload == "not json{"
        assert [r.payload for r in client.list()] == ["not json{"]


def test_a_time_that_cannot_be_read_names_the_run(sqlite_dsn: str) -> None:
    with Client(sqlite_dsn) as client:
        run_id = go_run(sqlite_dsn, "{}", times="yesterday")
        with pytest.raises(
            UndecodableRun, match=f"run_at of run {run_id}: 'yesterday' is not a time"
        ):
            client.get(run_id)
        assert issubclass(UndecodableRun, DatabaseError)


def test_a_pending_run_whose_time_never_comes_due_does_not_stop_the_pool(sqlite_dsn: str) -> None:
    """'tomorrow' sorts after every date, so it is never due: the pool drains around it."""
    with Client(sqlite_dsn) as client:
        good = client.submit("t.echo").id
        stuck = go_run(sqlite_dsn, "{}", run_at="tomorrow")
        stats = Pool(client, APP, processes=1, executor="thread").drain()
        assert stats.succeeded == 1 and client.get(good).status is Status.SUCCEEDED  # type: ignore[union-attr]
        [row] = sql(sqlite_dsn, "SELECT status FROM workflow_run WHERE id = ?", (stuck,))
        assert row["status"] == "pending"


def test_go_times_keep_claim_order_by_string_comparison(sqlite_dsn: str) -> None:
    """A Go time in UTC sorts as its instant against ours (same prefix)."""
    before = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S")
    due = go_run(sqlite_dsn, "{}", times=f"{before}.5 +0000 UTC m=+1.0")
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    not_due = go_run(sqlite_dsn, "{}", run_at=f"{later}.5 +0000 UTC")
    with Client(sqlite_dsn) as client:
        Pool(client, APP, processes=1, executor="thread").drain()
        assert client.get(due).status is Status.SUCCEEDED  # type: ignore[union-attr]
        assert client.get(not_due).status is Status.PENDING  # type: ignore[union-attr]


@pytest.mark.parametrize("payload", ["[1e400]", "[" * 1100 + "]" * 1100])
def test_a_payload_postgresql_stores_but_this_client_cannot_decode(
    postgres_dsn: str, payload: str
) -> None:
    """Valid jsonb (so the Go library may write it) that orjson refuses: a number beyond a
    double, nesting deeper than 1024. The run is failed with UndecodableRun, the pool goes on,
    and the run can still be read."""
    with Client(postgres_dsn) as client:
        good = [client.submit("t.echo", i).id for i in range(2)]
        [row] = sql(
            postgres_dsn,
            "INSERT INTO workflow_run (type, payload) VALUES ('t.echo', %s::jsonb) RETURNING id",
            (payload,),
        )
        bad = str(row["id"])
        stats = Pool(client, APP, processes=1, executor="thread").drain()  # does not raise
        assert stats.succeeded == 2
        assert [client.get(i).status for i in good] == [Status.SUCCEEDED] * 2  # type: ignore[union-attr]
        run = client.get(bad)
        assert run is not None and run.status is Status.FAILED and run.attempt == 1
        assert run.last_error is not None
        assert run.last_error.startswith(f"UndecodableRun: payload of run {bad}:")
        assert isinstance(run.payload, str)  # its text, as stored
        failed = [e.data for e in client.events(bad) if e.event_type is EventType.FAILED]
        assert failed == [{"attempt": 1, "error": run.last_error}]


def test_good_runs_of_a_claim_survive_a_refused_failure_of_a_bad_one(postgres_dsn: str) -> None:
    """The claim has committed when its undecodable run is failed in a second statement; if
    the database refuses that one, the claim's good runs are still executed (they were lost:
    leased, their attempt spent, until their lease expired)."""
    with Client(postgres_dsn) as client:
        good = client.submit("t.echo", 1).id
        sql(
            postgres_dsn,
            "INSERT INTO workflow_run (type, payload) VALUES ('t.echo', '[1e400]'::jsonb)",
        )
        sql(
            postgres_dsn,
            "ALTER TABLE workflow_run ADD CONSTRAINT no_failures CHECK (status <> 'failed')",
        )
        claimed = client.backend.claim("w", ["t.echo"], [], 10, lease_seconds=30, audit_full=True)
        assert [run.id for run in claimed] == [good]
