"""A pool of PostgreSQL connections for one schema: checked out one statement (or one
transaction) at a time, psycopg's errors made ours, deadlock victims run again."""

from __future__ import annotations

import contextlib
import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from ..dsn import PostgresTarget, redact
from ..errors import ClientClosed, ConnectError
from .pg_connect import CONNECT_TIMEOUT_SECONDS, connect_options, probe, translate
from .pg_ops import Row

CHECKOUT_TIMEOUT_SECONDS = 5.0  # while the server is away, fail fast and let callers back off
MAX_CONNECTIONS = 64  # one pool's statements at once, at the most
T = TypeVar("T")
P = ParamSpec("P")


def has_input(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection's socket has something to read (one poll(2), no round
    trip). Between statements the server has nothing to say: input means it closed the
    connection (a restart, pg_terminate_backend, idle_session_timeout send an error, a crashed
    backend at least an end of file; a vanished host shows only once the keepalives give up).
    Where poll(2) is missing, every checkout counts as suspect."""
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """`has_input`, confirmed by a round trip (after which the pool discards a closed one)."""
    if not has_input(conn):
        return False
    try:
        ConnectionPool.check_connection(conn)
    except psycopg.Error:
        return True
    return False


def search_path(target: PostgresTarget) -> sql.Composed:
    return sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema))


class Undecodable(str):
    """JSON the server stored (valid jsonb) that orjson will not take: a number beyond a
    double, nesting deeper than 1024. Kept as its text, with why."""

    reason = ""


def decoding_loads(data: str | bytes) -> Any:
    """JSON through orjson; what it refuses is kept as its text (`Undecodable`)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        text = Undecodable(data.decode(errors="replace") if isinstance(data, bytes) else data)
        text.reason = str(exc)
        return text


def pool_options(target: PostgresTarget, pool_size: int) -> dict[str, Any]:
    """What the sync and the async connection pools of a backend share."""
    return {
        "conninfo": target.conninfo,
        "min_size": 1,
        "max_size": max(1, pool_size),
        "kwargs": {"autocommit": True, "row_factory": dict_row, **connect_options(target)},
        "open": False,
        "timeout": CHECKOUT_TIMEOUT_SECONDS,
    }


class PostgresPool:
    def __init__(self, target: PostgresTarget, *, pool_size: int = 4) -> None:
        self.target = target
        self.description = f"postgres {redact(target.conninfo)} (schema {target.schema})"
        probe(target).close()  # a clear error now beats a pool timeout later
        self._pool = ConnectionPool(
            configure=self._configure,
            name=f"swf-pool:{target.schema}",
            **pool_options(target, pool_size),
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout as exc:
            raise ConnectError(f"cannot open a pool to {self.description}: {exc}") from None

    def _purge(self) -> None:
        """After a lost connection, its idle siblings were most likely lost too (a restart,
        a failover, pg_terminate_backend): drop them all now, rather than discover them one
        checkout at a time, each after a longer pause."""
        with contextlib.suppress(Exception):
            self._pool.check()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(search_path(self.target))
        set_json_loads(decoding_loads, conn)

    def close(self) -> None:
        self._pool.close()

    def reserve_connections(self, count: int) -> None:
        count = min(count, MAX_CONNECTIONS)
        if count > self._pool.max_size:
            self._pool.resize(self._pool.min_size, count)

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Row]]:
        """A pooled connection; psycopg's errors become ours (see `failure_kind`). Only a lost
        connection purges the pool."""
        try:
            with self._checked_out() as conn:
                yield conn
        except psycopg.Error as exc:  # PoolTimeout included
            error = translate(exc, self.description, self.target.schema)
            if isinstance(error, ConnectError):
                self._purge()
            raise error from error.__cause__

    @contextmanager
    def _checked_out(self) -> Iterator[psycopg.Connection[Row]]:
        """A pooled connection the server has not closed: a healthy one costs no round trip
        (a check per checkout would be in every idle pool's wake-up latency). One it closed
        goes back to the pool, which replaces it; its idle siblings were most likely closed
        with it (a restart), so they are all checked before the next is taken."""
        if self._pool.closed:
            raise ClientClosed
        with self._pool.connection() as conn:
            if not closed_by_server(conn):
                yield conn
                return
        self._purge()
        with self._pool.connection() as conn:
            yield conn
