"""Interoperability with the Go library: its rows run here, our rows read through its SQL."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from psycopg.conninfo import conninfo_to_dict

from swf_pool import Client, Pool, Registry, Status

from .helpers import sql, wait_until

GO_CLAIM_PG = """
UPDATE workflow_run SET status = 'leased', leased_by = %s, lease_until = NOW() + %s::interval,
       updated_at = NOW()
WHERE id = (
    SELECT id FROM workflow_run
    WHERE ((status = 'pending' AND run_at <= NOW()) OR (status = 'leased' AND lease_until < NOW()))
      AND deleted_at IS NULL AND (type LIKE %s)
    ORDER BY priority ASC, created_at ASC LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, type, payload, attempt, max_attempts
"""
GO_CLAIM_SQLITE = """
UPDATE workflow_run SET status = 'leased', leased_by = ?,
       lease_until = datetime('now', '+30 seconds'), updated_at = datetime('now')
WHERE id = (
    SELECT id FROM workflow_run
    WHERE ((status = 'pending' AND run_at <= datetime('now'))
           OR (status = 'leased' AND lease_until < datetime('now')))
      AND deleted_at IS NULL AND (type LIKE ?)
    ORDER BY priority ASC, created_at ASC LIMIT 1)
RETURNING id, type, payload, attempt, max_attempts
"""


def go_insert(dsn: str, type_: str, payload: bytes, attempt: int = 0) -> str:
    """Insert a run the way the Go library does (its SQLite driver binds the payload as bytes)."""
    if dsn.startswith("sqlite"):
        run_id = str(uuid.uuid4())
        sql(
            dsn,
            "INSERT INTO workflow_run (id, type, payload, priority, run_at, max_attempts, "
            "attempt, created_at, updated_at) VALUES (?, ?, ?, 100, datetime('now'), 3, ?, "
            "datetime('now'), datetime('now'))",
            (run_id, type_, payload, attempt),
        )
        return run_id
    rows = sql(
        dsn,
        "INSERT INTO workflow_run (type, payload, priority, run_at, max_attempts, "
        "attempt) VALUES (%s, %s, 100, NOW(), 3, %s) RETURNING id",
        (type_, payload.decode(), attempt),
    )
    return str(rows[0]["id"])


def test_a_go_written_run_is_executed_here(client: Client, dsn: str) -> None:
    run_id = go_insert(dsn, "go.hello.v1", b'{"msg": "hi"}')
    registry = Registry()
    registry.register("go.hello.v1", lambda run: {"echo": run.payload["msg"]})
    assert Pool(client, registry, executor="inline").drain().claimed == 1
    run = client.get(run_id)
    assert run is not None
    assert (run.status, run.result, run.attempt) == (Status.SUCCEEDED, {"echo": "hi"}, 1)


def test_a_go_retried_run_continues_its_attempt_count(client: Client, dsn: str) -> None:
    """Go counts failures in `attempt`; a run it failed once is at its second attempt here."""
    run_id = go_insert(dsn, "go.retry.v1", b"{}", attempt=1)
    registry = Registry()
    registry.register("go.retry.v1", lambda run: run.attempt)
    Pool(client, registry, executor="inline").drain()
    assert client.get(run_id).result == 2  # type: ignore[union-attr]


def test_our_run_is_claimed_by_the_go_query(client: Client, dsn: str) -> None:
    submitted = client.submit("billing.invoice.v1", {"amount": 12.5}, priority=1).id
    if dsn.startswith("sqlite"):
        # the Go library compares with datetime('now'): due within its one-second resolution
        rows = wait_until(lambda: sql(dsn, GO_CLAIM_SQLITE, ("go-worker", "billing.%")))
    else:
        rows = sql(dsn, GO_CLAIM_PG, ("go-worker", "30 seconds", "billing.%"))
    assert len(rows) == 1 and str(rows[0]["id"]) == submitted
    payload = rows[0]["payload"]
    assert (payload if isinstance(payload, dict) else json.loads(payload)) == {"amount": 12.5}
    run = client.get(submitted)
    assert run is not None and run.status is Status.LEASED and run.leased_by == "go-worker"


def test_sqlite_times_are_utc_text_with_microseconds(sqlite_dsn: str) -> None:
    with Client(sqlite_dsn) as client:
        run_id = client.submit("t.v1", run_at=datetime(2031, 5, 6, 7, 8, 9, 123, tzinfo=UTC)).id
        go_id = go_insert(sqlite_dsn, "t.v1", b"null")
        [row] = sql(
            sqlite_dsn, "SELECT run_at, created_at FROM workflow_run WHERE id = ?", (run_id,)
        )
        assert row["run_at"] == "2031-05-06 07:08:09.000123"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", row["created_at"])
        go_run = client.get(go_id)
        assert go_run is not None and go_run.created_at.tzinfo is not None
        assert abs(go_run.created_at - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.fixture
def host_timezone() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"  # UTC+14
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_times_are_correct_whatever_the_host_and_server_zone(dsn: str, host_timezone: None) -> None:
    if not dsn.startswith("sqlite"):
        dbname = conninfo_to_dict(dsn)["dbname"]
        sql(dsn, f"ALTER DATABASE \"{dbname}\" SET timezone TO 'America/Los_Angeles'")
    when = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    with Client(dsn) as client:
        run_id = client.submit("tz.v1", run_at=when).id
        due_now = client.submit("tz.v1", run_in=0).id
        registry = Registry()
        registry.register("tz.v1", lambda run: None)
        Pool(client, registry, executor="inline").drain()
        run = client.get(run_id)
        assert run is not None and run.run_at == when and run.status is Status.PENDING
        assert client.get(due_now).status is Status.SUCCEEDED  # type: ignore[union-attr]
