"""Database errors by what they mean (issue #14): only a lost connection is a `ConnectError`
(503); data the database refuses is a `DataRejected`, which is a `ValidationError` (400); a
deadlock is run again, not reported as an outage. Every error here comes from a real server."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from swf_pool import (
    AsyncClient,
    Client,
    ConnectError,
    DatabaseError,
    DataRejected,
    Submitted,
    ValidationError,
)
from swf_pool.backends import postgres as pg_backend
from swf_pool.backends import sqlite as sqlite_backend
from swf_pool.backends.pg_async import AsyncPostgresBackend
from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.models import RunFilter

from .helpers import count, kind, sql, wait_until
from .test_api import KEY as API_KEY
from .test_api import V1, start, stop

# A payload the database refuses past validation: PostgreSQL through a CHECK the test adds,
# SQLite through a lowered length limit.
REFUSED = {"refuse": secrets.token_hex(3000)}


def _refuse(dsn: str) -> None:
    if isinstance(parse_dsn(dsn), PostgresTarget):
        sql(dsn, "ALTER TABLE workflow_run ADD CONSTRAINT refused CHECK (NOT payload ? 'refuse')")


def test_data_the_database_refuses_is_invalid_input(dsn: str) -> None:
    with Client(dsn) as client:
        backend = client.backend
        if isinstance(backend, sqlite_backend.SqliteBackend):
            # SQLite stores text of any length: lower its limit so that it refuses the key too
            backend._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 5000)
        _refuse(dsn)
        opened = _connections_opened(client)
        with pytest.raises(ValidationError) as caught:
            client.submit("t", REFUSED)
        assert isinstance(caught.value, DataRejected)
        assert not isinstance(caught.value, ConnectError)
        assert count(dsn) == 0
        # the same client goes on, on the same connection (nothing was purged)
        client.submit("t", {})
        assert count(dsn) == 1
        assert _connections_opened(client) == opened


def test_data_the_database_refuses_is_a_400_over_rest(postgres_dsn: str) -> None:
    server = start(postgres_dsn, "--api-key", API_KEY)
    try:
        _refuse(postgres_dsn)
        body = {"type": "t", "payload": REFUSED}
        reply = server.call("POST", f"{V1}/workflows", body)
        assert reply.status == 400, reply.body
        assert "violates check constraint" in reply.body["error"]
        assert count(postgres_dsn) == 0
        reply = server.call("POST", f"{V1}/workflows", {"type": "t", "payload": {}})
        assert reply.status == 201, reply.body
    finally:
        stop(server)


# -- PostgreSQL: a real deadlock ------------------------------------------------------------


@pytest.fixture
def other(postgres_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A second session, in a transaction, that never detects a deadlock itself: when it is
    in one with the backend, the backend's statement (1s, the server's default) is the victim."""
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("SET search_path TO workflow")
        conn.execute("SET deadlock_timeout = '1min'")
        conn.execute("SET lock_timeout = '30s'")  # a test gone wrong fails instead of hanging
        yield conn


def _insert(conn: psycopg.Connection[tuple[object, ...]], key: str) -> str:
    query = "INSERT INTO workflow_run (type, payload, idempotency_key) VALUES ('t', '{}', %s)"
    row = conn.execute(query + " RETURNING id::text", (key,)).fetchone()
    assert row is not None
    return str(row[0])


def _deadlocked_submit(
    client: Client, other: psycopg.Connection[tuple[object, ...]], postgres_dsn: str
) -> tuple[list[Submitted] | BaseException, list[str]]:
    """The client submits keys a then b while `other` inserts b then a, both uncommitted: a
    deadlock, whose victim is the client's statement. What the client got, and other's ids."""
    b = _insert(other, "b")
    items: list[dict[str, object]] = [
        {"type": "t", "payload": {}, "idempotency_key": key} for key in ("a", "b")
    ]
    with ThreadPoolExecutor(1) as pool, psycopg.connect(postgres_dsn, autocommit=True) as watcher:
        submitted = pool.submit(client.submit_many, items)  # inserts a, then waits for b
        waiting = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        wait_until(lambda: watcher.execute(waiting).fetchall()[0][0] > 0)
        a = _insert(other, "a")  # waits for the client's a: the server breaks the deadlock
        other.commit()
        try:
            outcome: list[Submitted] | BaseException = submitted.result(timeout=30)
        except BaseException as exc:
            outcome = exc
    return outcome, [a, b]


def test_a_deadlock_victim_is_run_again(
    postgres_dsn: str, other: psycopg.Connection[tuple[object, ...]]
) -> None:
    with Client(postgres_dsn) as client:
        outcome, ids = _deadlocked_submit(client, other, postgres_dsn)
        # tried again once other committed: both keys exist, nothing was created twice
        assert outcome == [Submitted(ids[0], False), Submitted(ids[1], False)]
        assert count(postgres_dsn) == 2


def test_a_deadlock_that_persists_is_no_lost_database(
    postgres_dsn: str,
    other: psycopg.Connection[tuple[object, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pg_backend, "TRANSIENT_TRIES", 1)
    with Client(postgres_dsn) as client:
        outcome, _ = _deadlocked_submit(client, other, postgres_dsn)
        assert type(outcome) is DatabaseError, repr(outcome)
        assert "deadlock detected" in str(outcome)
        assert count(postgres_dsn) == 2  # other's two; none of the client's


# -- PostgreSQL: the classification, with errors a real server raised ------------------------


def _pg_error(conninfo: str, *statements: str) -> psycopg.Error:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            for statement in statements:
                conn.execute(statement.encode())
        return caught.value


LONG_ROW = "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 320) AS i"
PG_CASES = [
    ("refused", ["SELECT 1/0"]),  # 22012
    ("refused", ["CREATE TEMP TABLE n (v int NOT NULL)", "INSERT INTO n VALUES (NULL)"]),
    ("refused", ["CREATE TEMP TABLE k (k text PRIMARY KEY)", f"INSERT INTO k {LONG_ROW}"]),
    ("lost", ["SELECT pg_terminate_backend(pg_backend_pid())"]),  # 57P01
    ("other", ["SET statement_timeout = '10ms'", "SELECT pg_sleep(5)"]),  # 57014
    ("no_schema", ["SELECT * FROM no_such_table"]),
    ("other", ["SELEC 1"]),
]


@pytest.mark.parametrize(("expected", "statements"), PG_CASES)
def test_postgres_failure_kinds(postgres_dsn: str, expected: str, statements: list[str]) -> None:
    assert pg_backend.failure_kind(_pg_error(postgres_dsn, *statements)) == expected


def test_postgres_lost_connections(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        with pytest.raises(psycopg.OperationalError) as closed:
            conn.execute("SELECT 1")
    assert closed.value.sqlstate is None  # libpq's own: the connection is closed
    assert pg_backend.failure_kind(closed.value) == "lost"
    refused = postgres_dsn + " port=1 connect_timeout=5"
    with pytest.raises(psycopg.OperationalError) as unreachable:
        psycopg.connect(refused)
    assert pg_backend.failure_kind(unreachable.value) == "lost"


def test_postgres_serialization_failure_is_transient(postgres_dsn: str) -> None:
    with (
        psycopg.connect(postgres_dsn, autocommit=True) as one,
        psycopg.connect(postgres_dsn) as two,
    ):
        one.execute("CREATE TABLE s (v int)")
        one.execute("INSERT INTO s VALUES (1)")
        two.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        two.execute("SELECT v FROM s")  # its snapshot
        one.execute("UPDATE s SET v = 2")
        with pytest.raises(psycopg.Error) as caught:
            two.execute("UPDATE s SET v = 3")
    assert caught.value.sqlstate == "40001"
    assert pg_backend.failure_kind(caught.value) == "transient"


def test_postgres_backend_maps_real_errors(postgres_dsn: str) -> None:
    with Client(postgres_dsn) as client:
        backend = client.backend
        assert isinstance(backend, pg_backend.PostgresBackend)
        with pytest.raises(DataRejected), backend._conn() as conn:
            conn.execute("SELECT 1/0")
        with pytest.raises(DataRejected):  # refused by psycopg, before the server sees it
            nul = RunFilter(idempotency_key="a\x00b")  # past the client's checks
            backend.list_runs(nul)
        with pytest.raises(DatabaseError) as timeout, backend._conn() as conn:
            conn.execute("SET statement_timeout = '10ms'")
            conn.execute("SELECT pg_sleep(5)")
        assert not isinstance(timeout.value, ConnectError | DataRejected)
        with pytest.raises(ConnectError), backend._conn() as conn:
            conn.execute("RESET statement_timeout")
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        run = client.get(client.submit("t", {}).id)  # on a new connection
        assert run is not None


def _terminate_others(dsn: str) -> None:
    """pg_terminate_backend for every other connection to the test database (a restart, as
    far as a client's idle pooled connections can tell), once they are gone."""
    query = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query)
        left = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        wait_until(lambda: conn.execute(left).fetchone() == (1,))


@pytest.mark.parametrize("side", ["sync", "async"])
def test_idle_connections_cost_no_round_trip_and_closed_ones_are_replaced(
    postgres_dsn: str, side: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection handed out after a spell idle (an idle pool waking up to a NOTIFY)
    is not checked with a round trip unless the server closed it; one it closed is replaced
    before the statement is sent, so the caller never sees the restart."""
    checked: list[object] = []

    def counted(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def check_connection(conn: Any) -> Any:
            checked.append(conn)
            return check(conn)  # (the async pool's: a coroutine, awaited by the caller)

        return check_connection

    for pool in (ConnectionPool, AsyncConnectionPool):
        checking = staticmethod(counted(pool.check_connection))
        monkeypatch.setattr(pool, "check_connection", checking)

    def scenario(submit: Callable[[], object], grow: Callable[[], object]) -> None:
        for _ in range(3):
            submit()
        grow()  # four connections idle in the pool
        time.sleep(1.2)  # idle a while (the scenario itself, not a synchronisation)
        for _ in range(3):
            submit()
        assert checked == []
        _terminate_others(postgres_dsn)
        for _ in range(6):
            submit()  # no error, no wait: the closed connections were found and replaced
        assert checked
        assert count(postgres_dsn) == 12

    if side == "sync":
        with Client(postgres_dsn) as client:
            backend = client.backend
            assert isinstance(backend, pg_backend.PostgresBackend)

            def grow() -> None:
                with contextlib.ExitStack() as stack:
                    for _ in range(4):
                        stack.enter_context(backend._conn())

            scenario(lambda: client.submit("t.echo"), grow)
        return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with AsyncClient(postgres_dsn) as client:
            backend = client._backend
            assert isinstance(backend, AsyncPostgresBackend)

            async def hold_four() -> None:
                async with contextlib.AsyncExitStack() as stack:
                    for _ in range(4):
                        await stack.enter_async_context(backend._checked_out())

            def run(work: Coroutine[Any, Any, object]) -> object:
                return asyncio.run_coroutine_threadsafe(work, loop).result(60)

            await loop.run_in_executor(
                None, scenario, lambda: run(client.submit("t.echo")), lambda: run(hold_four())
            )

    asyncio.run(main())


# -- SQLite ---------------------------------------------------------------------------------


def _sqlite_error(db: sqlite3.Connection, *statements: str) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as caught:
        for statement in statements:
            db.execute(statement)
    return caught.value


def test_sqlite_failure_kinds(tmp_path: Path) -> None:
    failure_kind = sqlite_backend.failure_kind
    path = str(tmp_path / "x.db")
    db = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("CREATE TABLE u (v TEXT UNIQUE)")
        db.execute("INSERT INTO u VALUES ('x')")
        assert failure_kind(_sqlite_error(db, "INSERT INTO u VALUES ('x')")) == "refused"
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100)
        too_big = _sqlite_error(db, "SELECT zeroblob(1000)")
        assert str(too_big) == "string or blob too big"
        assert failure_kind(too_big) == "refused"
        assert failure_kind(_sqlite_error(db, "SELECT * FROM missing")) == "no_schema"
        holder.execute("BEGIN IMMEDIATE")
        locked = _sqlite_error(db, "BEGIN IMMEDIATE")
        assert str(locked) == "database is locked"
        assert failure_kind(locked) == "other"  # reported only after the busy timeout
    finally:
        holder.close()
        db.close()
    with pytest.raises(sqlite3.Error) as cannot_open:
        sqlite3.connect(str(tmp_path / "no" / "such" / "dir.db"))
    assert failure_kind(cannot_open.value) == "lost"


def _connections_opened(client: Client) -> int:
    backend = client.backend
    if isinstance(backend, pg_backend.PostgresBackend):
        return int(backend._pool.get_stats().get("connections_num", 0))
    assert kind(client) == "sqlite"
    return 0
