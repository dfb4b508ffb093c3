"""The producer API, on PostgreSQL and SQLite."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from swf_pool import (
    Client,
    ClientClosed,
    EventType,
    InvalidPayload,
    RunAlreadyFinished,
    RunNotFound,
    Status,
    ValidationError,
)

from .helpers import count, sql, wait_until


def test_submit_and_get_round_trip(client: Client) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    payload = {"n": 1, "s": "é✓", "nested": [1, 2.5, None, True, {"k": []}]}
    submitted = client.submit(
        "a.v1", payload, priority=-5, max_attempts=7, run_at=when, idempotency_key="key-1"
    )
    assert submitted.created
    run = client.get(submitted.id)
    assert run is not None
    assert (run.id, run.type, run.payload, run.status) == (
        submitted.id,
        "a.v1",
        payload,
        Status.PENDING,
    )
    assert (run.priority, run.max_attempts, run.attempt, run.idempotency_key) == (-5, 7, 0, "key-1")
    assert run.run_at == when and run.run_at.tzinfo is not None
    assert run.result is None and run.leased_by is None and run.last_error is None
    assert [e.event_type for e in client.events(submitted.id)] == [EventType.CREATED]


def test_defaults_follow_the_go_library(client: Client) -> None:
    run = client.get(client.submit("a.v1").id)
    assert run is not None
    assert (run.priority, run.max_attempts, run.payload) == (100, 3, None)
    assert abs(run.run_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_idempotency_key_returns_the_existing_run(client: Client, dsn: str) -> None:
    first = client.submit("a.v1", {"x": 1}, idempotency_key="same")
    second = client.submit("a.v1", {"x": 2}, idempotency_key="same")
    assert first.created and not second.created
    assert second.id == first.id
    assert count(dsn) == 1
    assert count(dsn, "workflow_event") == 1


def test_empty_idempotency_key_means_no_key(client: Client, dsn: str) -> None:
    a, b = client.submit("a.v1", idempotency_key=""), client.submit("a.v1", idempotency_key="")
    assert a.created and b.created and a.id != b.id
    assert client.get(a.id).idempotency_key is None  # type: ignore[union-attr]


def test_submit_many_keeps_order_and_idempotency(client: Client, dsn: str) -> None:
    existing = client.submit("a.v1", idempotency_key="k0")
    items: list[dict[str, Any]] = [
        {"type": "a.v1", "payload": {"i": 0}},
        {"type": "a.v1", "payload": {"i": 1}, "idempotency_key": "k0"},
        {"type": "b.v1", "payload": {"i": 2}, "idempotency_key": "k2", "priority": 1},
        {"type": "b.v1", "payload": {"i": 3}, "idempotency_key": "k2"},
        {"type": "c.v1", "payload": {"i": 4}, "run_in": 60},
    ]
    results = client.submit_many(items)
    assert [r.created for r in results] == [True, False, True, False, True]
    assert results[1].id == existing.id
    assert results[3].id == results[2].id
    assert client.get(results[4].id).payload == {"i": 4}  # type: ignore[union-attr]
    assert count(dsn) == 4
    assert client.submit_many([]) == []


def test_submit_many_in_bulk(client: Client, dsn: str) -> None:
    results = client.submit_many({"type": "bulk.v1", "payload": i} for i in range(2000))
    assert len({r.id for r in results}) == 2000 and all(r.created for r in results)
    assert count(dsn) == 2000


BAD_SUBMITS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"type": ""}, ValidationError, "type must not be empty"),
    ({"type": "   "}, ValidationError, "type must not be empty"),
    ({"type": None}, ValidationError, "type must be a string"),
    ({"type": "x" * 256}, ValidationError, "longer than 255"),
    ({"type": "a\x00b"}, ValidationError, "NUL"),
    ({"type": "a\udcff"}, ValidationError, "not valid UTF-8"),
    ({"type": "a", "payload": object()}, InvalidPayload, "not JSON-serializable"),
    ({"type": "a", "payload": {1: "int key"}}, InvalidPayload, "not JSON-serializable"),
    ({"type": "a", "payload": {"x": math.nan}}, InvalidPayload, "nan"),
    ({"type": "a", "payload": [math.inf]}, InvalidPayload, "inf"),
    ({"type": "a", "payload": "nul\x00inside"}, InvalidPayload, "NUL"),
    ({"type": "a", "payload": "\ud800"}, InvalidPayload, "not JSON-serializable"),
    ({"type": "a", "priority": "1"}, ValidationError, "priority must be an integer"),
    ({"type": "a", "priority": 1.5}, ValidationError, "priority must be an integer"),
    ({"type": "a", "priority": True}, ValidationError, "priority must be an integer"),
    ({"type": "a", "priority": 2**31}, ValidationError, "priority must be between"),
    ({"type": "a", "max_attempts": 0}, ValidationError, "max_attempts must be between"),
    ({"type": "a", "max_attempts": -1}, ValidationError, "max_attempts must be between"),
    ({"type": "a", "idempotency_key": 5}, ValidationError, "idempotency_key must be a string"),
    ({"type": "a", "idempotency_key": "é" * 501}, ValidationError, "longer than 1000 bytes"),
    ({"type": "a", "run_at": datetime(2030, 1, 1)}, ValidationError, "timezone-aware"),
    ({"type": "a", "run_at": "tomorrow"}, ValidationError, "run_at must be a datetime"),
    (
        {"type": "a", "run_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=20)))},
        ValidationError,
        "out of range",
    ),
    ({"type": "a", "run_in": -1}, ValidationError, "must not be negative"),
    ({"type": "a", "run_in": "soon"}, ValidationError, "run_in must be a timedelta"),
    ({"type": "a", "run_in": 5, "run_at": datetime.now(UTC)}, ValidationError, "not both"),
    ({"type": "a", "unknown": 1}, ValidationError, "unexpected keyword"),
]


@pytest.mark.parametrize(("item", "error", "message"), BAD_SUBMITS)
def test_bad_input_is_typed_and_writes_nothing(
    client: Client, dsn: str, item: dict[str, Any], error: type[Exception], message: str
) -> None:
    good = {"type": "ok.v1"}
    with pytest.raises(error, match=message):
        client.submit_many([good, item])
    if "unknown" not in item:
        with pytest.raises(error, match=message):
            client.submit(**item)
    assert count(dsn) == 0
    assert count(dsn, "workflow_event") == 0


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("abc", "iterable of mappings .* got str"),
        ({"type": "a"}, "got dict"),
        (["a"], "item 0: a run"),
    ],
)
def test_submit_many_names_what_it_takes(
    client: Client, dsn: str, items: Any, message: str
) -> None:
    """A string was read as runs one character each ('argument after ** must be a mapping')."""
    with pytest.raises(ValidationError, match=message):
        client.submit_many(items)
    assert count(dsn) == 0


def test_a_closed_client_says_so(dsn: str) -> None:
    """It said 'lost the database' (PostgreSQL) or 'Cannot operate on a closed database'."""
    client = Client(dsn)
    client.close()
    with pytest.raises(ClientClosed, match="client is closed"):
        client.submit("a.v1")
    with pytest.raises(ClientClosed):
        client.list()


def test_deeply_nested_payload_is_refused(client: Client, dsn: str) -> None:
    payload: Any = []
    for _ in range(300):
        payload = [payload]
    with pytest.raises(InvalidPayload, match="nested too deeply"):
        client.submit("a.v1", payload)
    assert count(dsn) == 0


def test_cancel(client: Client) -> None:
    run = client.submit("a.v1")
    client.cancel(run.id)
    assert client.get(run.id).status is Status.CANCELLED  # type: ignore[union-attr]
    with pytest.raises(RunAlreadyFinished, match="already cancelled"):
        client.cancel(run.id)
    with pytest.raises(RunNotFound):
        client.cancel("00000000-0000-0000-0000-000000000000")
    with pytest.raises(RunNotFound):
        client.cancel("not-a-uuid")
    assert [e.event_type for e in client.events(run.id)] == [EventType.CREATED, EventType.CANCELLED]


def test_get_and_events_of_unknown_or_malformed_ids(client: Client) -> None:
    assert client.get("00000000-0000-0000-0000-000000000000") is None
    assert client.get("'; DROP TABLE workflow_run; --") is None
    assert client.events("nope") == []


def test_soft_deleted_runs_are_invisible(client: Client, dsn: str) -> None:
    run = client.submit("a.v1")
    marker = "%s" if client.backend.kind == "postgres" else "?"
    sql(dsn, f"UPDATE workflow_run SET deleted_at = created_at WHERE id = {marker}", (run.id,))  # noqa: S608
    assert client.get(run.id) is None
    assert client.list() == []
    with pytest.raises(RunNotFound):
        client.cancel(run.id)


def test_list_filters_newest_first(client: Client) -> None:
    ids = [
        client.submit("a.v1" if i % 2 else "b.v1", i, idempotency_key=f"k{i}").id for i in range(6)
    ]
    assert [r.id for r in client.list()] == ids[::-1]
    assert [r.payload for r in client.list(type="a.v1")] == [5, 3, 1]
    assert [r.payload for r in client.list(idempotency_key="k2")] == [2]
    assert [r.payload for r in client.list(limit=2, offset=1)] == [4, 3]
    client.cancel(ids[0])
    assert [r.id for r in client.list(status="cancelled")] == [ids[0]]
    assert client.list(status=Status.SUCCEEDED) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "done"}, "unknown status"),
    ],
)
def test_list_rejects_bad_arguments(client: Client, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        client.list(**kwargs)


def test_bad_audit_level(dsn: str) -> None:
    with pytest.raises(ValidationError, match="audit must be one of"):
        Client(dsn, audit="everything")


def test_submit_notifies_once_per_statement(postgres_dsn: str) -> None:
    with Client(postgres_dsn) as client, psycopg.connect(postgres_dsn, autocommit=True) as listener:
        listener.execute('LISTEN "swf_pool.workflow"')
        client.submit_many({"type": "a.v1", "payload": i} for i in range(50))
        client.submit("a.v1")
        seen: list[str] = []

        def drained() -> bool:
            seen.extend(n.channel for n in listener.notifies(timeout=0.05, stop_after=10))
            return len(seen) >= 2

        wait_until(drained)
        drained()  # anything more would show up here
        assert seen == ["swf_pool.workflow", "swf_pool.workflow"]


def test_run_ids_are_time_ordered_uuids(client: Client) -> None:
    """Version 7 ids: bulk inserts append to the primary key instead of splitting pages."""
    import uuid

    ids = [s.id for s in client.submit_many({"type": "a.v1"} for _ in range(50))]
    parsed = [uuid.UUID(i) for i in ids]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps)
    assert abs(stamps[0] / 1000 - datetime.now(UTC).timestamp()) < 60
