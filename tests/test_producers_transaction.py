"""Submitting in the caller's transaction (`conn=`), on PostgreSQL and SQLite: the run is
written inside it, seen (and NOTIFYed) at its commit, gone with its rollback."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from swf_pool import (
    Client,
    EventType,
    InvalidConnection,
    Pool,
    RunAlreadyFinished,
    Status,
    ValidationError,
)
from swf_pool.backends.postgres import notify_channel
from swf_pool.dsn import PostgresTarget, parse_dsn

from .apps import registry
from .helpers import count, wait_until

Caller = psycopg.Connection[Any] | sqlite3.Connection


@contextmanager
def caller(dsn: str) -> Iterator[Caller]:
    """The application's own connection, as it opens one by default (a transaction begins
    with its first statement; nothing is committed until it says so)."""
    target = parse_dsn(dsn)
    conn: Caller
    if isinstance(target, PostgresTarget):
        conn = psycopg.connect(target.conninfo)
    else:
        conn = sqlite3.connect(target.path)
    try:
        yield conn
    finally:
        conn.close()


def app_write(conn: Caller) -> None:
    """The application's own write, in the same transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER)")
    conn.execute("INSERT INTO orders VALUES (1)")


def orders(dsn: str) -> int:
    """The application's rows (its table is in `public` on PostgreSQL, not our schema)."""
    return count(dsn, "public.orders" if isinstance(parse_dsn(dsn), PostgresTarget) else "orders")


def test_a_run_submitted_in_a_transaction_appears_at_its_commit(client: Client, dsn: str) -> None:
    with caller(dsn) as conn:
        app_write(conn)
        submitted = client.submit("t.echo", {"order": 1}, conn=conn)
        assert submitted.created
        assert client.get(submitted.id) is None  # not yet: the caller has not committed
        assert count(dsn) == 0
        conn.commit()
    run = client.get(submitted.id)
    assert run is not None and run.status is Status.PENDING and run.payload == {"order": 1}
    assert [e.event_type for e in client.events(run.id)] == [EventType.CREATED]
    assert orders(dsn) == 1


def test_a_rollback_takes_the_run_with_it(client: Client, dsn: str) -> None:
    with caller(dsn) as conn:
        app_write(conn)
        many = client.submit_many([{"type": "t.echo"}, {"type": "t.echo"}], conn=conn)
        conn.rollback()
    assert [client.get(s.id) for s in many] == [None, None]
    assert count(dsn) == 0 and count(dsn, "workflow_event") == 0


def test_an_exception_in_the_callers_block_leaves_nothing(client: Client, dsn: str) -> None:
    class Boom(Exception):
        pass

    with caller(dsn) as conn, pytest.raises(Boom):
        if isinstance(conn, sqlite3.Connection):
            with conn:  # sqlite3: commits on success, rolls back on an exception
                client.submit("t.echo", conn=conn)
                raise Boom
        else:
            with conn.transaction():
                client.submit("t.echo", conn=conn)
                raise Boom
    assert count(dsn) == 0


def test_a_pool_sees_nothing_until_the_commit(postgres_dsn: str) -> None:
    # (on SQLite a pool's claim, a write, waits for the caller's transaction to end: one
    # writer at a time)
    dsn = postgres_dsn
    with Client(dsn) as client, caller(dsn) as conn:
        submitted = client.submit("t.echo", {"x": 1}, conn=conn)
        assert Pool(client, registry, executor="inline").drain().succeeded == 0
        conn.commit()
        assert Pool(client, registry, executor="inline").drain().succeeded == 1
        run = client.get(submitted.id)
        assert run is not None and run.status is Status.SUCCEEDED


def test_the_notify_is_delivered_at_the_commit(postgres_dsn: str) -> None:
    target = parse_dsn(postgres_dsn)
    assert isinstance(target, PostgresTarget)
    with (
        Client(postgres_dsn) as client,
        psycopg.connect(target.conninfo, autocommit=True) as listener,
        caller(postgres_dsn) as conn,
    ):
        channel = pgsql.Identifier(notify_channel(target.schema))
        listener.execute(pgsql.SQL("LISTEN {}").format(channel))
        heard: list[str] = []

        def hear(wanted: int) -> bool:
            heard.extend(n.channel for n in listener.notifies(timeout=0.05))
            return len(heard) >= wanted

        client.submit("t.echo", conn=conn)
        client.submit("t.echo")  # a marker, committed at once: its NOTIFY comes first
        wait_until(lambda: hear(1))
        assert len(heard) == 1  # only the marker's: the caller has not committed
        assert isinstance(conn, psycopg.Connection)
        conn.commit()
        wait_until(lambda: hear(2))


def test_the_callers_search_path_is_its_own(postgres_dsn: str) -> None:
    # every statement a caller's connection is sent (submit, its idempotency lookup, cancel
    # and its status check, a schedule) names the client's schema itself
    with Client(postgres_dsn) as client, caller(postgres_dsn) as conn:
        assert isinstance(conn, psycopg.Connection)
        conn.execute("SET search_path TO public")
        app_write(conn)  # public.orders
        client.submit("t.echo", idempotency_key="k", conn=conn)
        assert not client.submit("t.echo", idempotency_key="k", conn=conn).created
        client.cancel(client.submit("t.echo", conn=conn).id, conn=conn)
        client.schedule("t.echo", cron="0 3 * * *", conn=conn)
        row = conn.execute("SELECT current_setting('search_path')").fetchone()
        assert row == ("public",)
        conn.execute("INSERT INTO orders VALUES (2)")  # still public's table
        conn.commit()
        assert conn.execute("SELECT count(*) FROM public.orders").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM workflow.workflow_run").fetchone() == (2,)
        assert len(client.schedules.list()) == 1


def test_a_cancel_wakes_waits_on_the_clients_schema(postgres_dsn: str) -> None:
    # its completion NOTIFY is on the client's schema's channel, not the caller's path's
    other = f"{postgres_dsn} schema=tenant_c"
    target = parse_dsn(postgres_dsn)
    assert isinstance(target, PostgresTarget)
    with (
        Client(other, migrate=True) as client,
        psycopg.connect(target.conninfo, autocommit=True) as listener,
        caller(postgres_dsn) as conn,
    ):
        listener.execute('LISTEN "swf_pool_done.tenant_c"')
        run = client.submit("t.echo")
        client.cancel(run.id, conn=conn)
        assert isinstance(conn, psycopg.Connection)
        conn.commit()
        heard: list[str] = []

        def hear() -> bool:
            heard.extend(n.payload for n in listener.notifies(timeout=0.05))
            return run.id in heard

        wait_until(hear)


def test_a_client_on_another_schema_writes_there(postgres_dsn: str) -> None:
    other = f"{postgres_dsn} schema=tenant_b"
    with Client(other, migrate=True) as client, caller(postgres_dsn) as conn:
        submitted = client.submit("t.echo", conn=conn)
        assert isinstance(conn, psycopg.Connection)
        conn.commit()
        assert client.get(submitted.id) is not None
        [row] = conn.execute("SELECT count(*) FROM tenant_b.workflow_run").fetchall()
        assert row == (1,)
        assert conn.execute("SELECT count(*) FROM workflow.workflow_run").fetchone() == (0,)


def test_an_autocommit_connection_commits_at_once(client: Client, dsn: str) -> None:
    target = parse_dsn(dsn)
    conn: Caller
    if isinstance(target, PostgresTarget):
        conn = psycopg.connect(target.conninfo, autocommit=True)
    else:
        conn = sqlite3.connect(target.path, isolation_level=None)
    with conn:
        submitted = client.submit("t.echo", conn=conn)
        assert client.get(submitted.id) is not None
        assert not (conn.in_transaction if isinstance(conn, sqlite3.Connection) else False)


def test_cancel_and_schedule_follow_the_transaction(client: Client, dsn: str) -> None:
    run = client.submit("t.echo")
    with caller(dsn) as conn:
        client.cancel(run.id, conn=conn)
        schedule_id = client.schedule("t.echo", cron="0 * * * *", conn=conn)
        assert client.schedules.get(schedule_id) is None
        conn.rollback()
        pending = client.get(run.id)
        assert pending is not None and pending.status is Status.PENDING
        client.cancel(run.id, conn=conn)
        with pytest.raises(RunAlreadyFinished):  # in its own transaction, it is cancelled
            client.cancel(run.id, conn=conn)
        conn.commit()
    cancelled = client.get(run.id)
    assert cancelled is not None and cancelled.status is Status.CANCELLED


def test_idempotency_holds_inside_the_transaction(client: Client, dsn: str) -> None:
    first = client.submit("t.echo", idempotency_key="k")
    with caller(dsn) as conn:
        again = client.submit("t.echo", idempotency_key="k", conn=conn)
        fresh = client.submit_many([{"type": "t.echo", "idempotency_key": "j"}] * 2, conn=conn)
        conn.commit()
    assert (again.id, again.created) == (first.id, False)
    assert [s.created for s in fresh] == [True, False] and fresh[0].id == fresh[1].id


def test_bad_input_raises_before_anything_is_sent(client: Client, dsn: str) -> None:
    with caller(dsn) as conn:
        app_write(conn)
        with pytest.raises(ValidationError):
            client.submit("", conn=conn)
        with pytest.raises(ValidationError):
            client.submit_many([{"type": "t.echo"}, {"type": "t.echo", "priority": "x"}], conn=conn)
        client.submit("t.echo", conn=conn)  # the transaction is intact
        conn.commit()
    assert count(dsn) == 1 and orders(dsn) == 1


def test_a_postgres_client_refuses_what_it_cannot_write_through(
    postgres_dsn: str, tmp_path: Any
) -> None:
    target = parse_dsn(postgres_dsn)
    assert isinstance(target, PostgresTarget)
    with Client(postgres_dsn) as client, caller(postgres_dsn) as failed:
        assert isinstance(failed, psycopg.Connection)
        with pytest.raises(psycopg.errors.DivisionByZero):
            failed.execute("SELECT 1/0")
        closed = psycopg.connect(target.conninfo)
        closed.close()
        lite = sqlite3.connect(str(tmp_path / "x.db"))
        for conn in (lite, object(), closed, failed):
            with pytest.raises(InvalidConnection):
                client.submit("t.echo", conn=conn)
        lite.close()
    assert count(postgres_dsn) == 0


def test_a_sqlite_client_refuses_what_it_cannot_write_through(
    sqlite_dsn: str, postgres_dsn: str, tmp_path: Any
) -> None:
    target = parse_dsn(postgres_dsn)
    assert isinstance(target, PostgresTarget)
    with Client(sqlite_dsn) as client, psycopg.connect(target.conninfo) as pg:
        elsewhere = sqlite3.connect(str(tmp_path / "elsewhere.db"))
        closed = sqlite3.connect(str(tmp_path / "closed.db"))
        closed.close()
        for conn in (pg, elsewhere, closed, object()):
            with pytest.raises(InvalidConnection):
                client.submit("t.echo", conn=conn)
        assert not elsewhere.in_transaction  # nothing was begun there
        elsewhere.close()
    assert count(sqlite_dsn) == 0
