"""Running the `pg_ops` generators: on a pooled connection (one statement at a time, in
autocommit), and on a caller's connection, inside the caller's transaction.

On a caller's connection nothing is committed or rolled back: what we write becomes visible
(and its NOTIFY is delivered, which PostgreSQL holds until the commit) when the caller
commits, and vanishes if it rolls back. The caller's `search_path` is its own business: each
statement runs with the client's schema set for the transaction (`set_config(..., true)`)
and the caller's path put back right after, the three sent as one pipeline (one round trip).
A connection in autocommit outside a transaction has none to join: the statements get one of
their own, committed at once.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from typing import Any, TypeVar

import psycopg
from psycopg import pq, sql
from psycopg.rows import dict_row

from ..errors import InvalidConnection
from .pg_connect import translate
from .pg_ops import OPERATIONS, Q, Queries, Row

T = TypeVar("T")
ACTIVE, IDLE, INERROR = (
    pq.TransactionStatus.ACTIVE,
    pq.TransactionStatus.IDLE,
    pq.TransactionStatus.INERROR,
)


def run_queries(conn: psycopg.Connection[Row], queries: Queries[T]) -> T:
    """`queries` on a pooled connection (rows as dictionaries, the schema on its path)."""
    try:
        query = next(queries)
        while True:
            cur = conn.execute(Q[query.name], query.params)
            query = queries.send(cur.fetchall() if cur.description is not None else [])
    except StopIteration as stop:
        result: T = stop.value
        return result


async def run_queries_async(conn: psycopg.AsyncConnection[Row], queries: Queries[T]) -> T:
    try:
        query = next(queries)
        while True:
            cur = await conn.execute(Q[query.name], query.params)
            query = queries.send(await cur.fetchall() if cur.description is not None else [])
    except StopIteration as stop:
        result: T = stop.value
        return result


def check_usable(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Refuse, before anything is sent, a connection that cannot take our statements."""
    if conn.closed:
        raise InvalidConnection("the connection given is closed")
    status = conn.info.transaction_status
    if status == INERROR:
        raise InvalidConnection(
            "the connection's transaction has already failed: roll it back first"
        )
    if status == ACTIVE:
        raise InvalidConnection("the connection given is busy with another statement")


class PostgresCaller:
    """A `PostgresBackend`'s operations on a caller's `psycopg.Connection`."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str, description: str) -> None:
        self.conn = conn
        self.schema = schema
        self.description = description

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        check_usable(self.conn)
        own: AbstractContextManager[Any] = nullcontext()
        if self.conn.autocommit and self.conn.info.transaction_status == IDLE:
            own = self.conn.transaction()
        try:
            with own:
                return self._run(OPERATIONS[name](*args))
        except psycopg.Error as exc:
            error = translate(exc, self.description, self.schema)
            raise error from error.__cause__

    def _run(self, queries: Queries[T]) -> T:
        conn = self.conn
        path = {"path": sql.Identifier(self.schema).as_string(conn)}
        try:
            query = next(queries)
            while True:
                cur = conn.cursor(row_factory=dict_row)
                with conn.pipeline():
                    conn.execute(Q["path_save"])
                    conn.execute(Q["path_set"], path)
                    cur.execute(Q[query.name], query.params)
                    conn.execute(Q["path_restore"])
                query = queries.send(cur.fetchall() if cur.description is not None else [])
        except StopIteration as stop:
            result: T = stop.value
            return result


class AsyncPostgresCaller:
    """An `AsyncPostgresBackend`'s operations on a caller's `psycopg.AsyncConnection`."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], schema: str, description: str) -> None:
        self.conn = conn
        self.schema = schema
        self.description = description

    async def call(self, name: str, args: tuple[Any, ...]) -> Any:
        check_usable(self.conn)
        own: AbstractAsyncContextManager[Any] = nullcontext()
        if self.conn.autocommit and self.conn.info.transaction_status == IDLE:
            own = self.conn.transaction()
        try:
            async with own:
                return await self._run(OPERATIONS[name](*args))
        except psycopg.Error as exc:
            error = translate(exc, self.description, self.schema)
            raise error from error.__cause__

    async def _run(self, queries: Queries[T]) -> T:
        conn = self.conn
        path = {"path": sql.Identifier(self.schema).as_string(conn)}
        try:
            query = next(queries)
            while True:
                cur = conn.cursor(row_factory=dict_row)
                async with conn.pipeline():
                    await conn.execute(Q["path_save"])
                    await conn.execute(Q["path_set"], path)
                    await cur.execute(Q[query.name], query.params)
                    await conn.execute(Q["path_restore"])
                rows = await cur.fetchall() if cur.description is not None else []
                query = queries.send(rows)
        except StopIteration as stop:
            result: T = stop.value
            return result
