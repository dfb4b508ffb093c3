"""Running the `pg_ops` generators: on a pooled connection (one statement at a time, in
autocommit), and on a caller's connection, inside the caller's transaction.

On a caller's connection nothing is committed or rolled back: what we write becomes visible
(and its NOTIFY is delivered, which PostgreSQL holds until the commit) when the caller
commits, and vanishes if it rolls back. The caller's `search_path` is its own business: the
statements sent there name the client's schema themselves (`qualified`), so nothing is set or
put back around them and a submit costs one statement. A connection in autocommit outside a
transaction has none to join: the statements get one of their own, committed at once.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from functools import lru_cache
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


# What the statements run on a caller's connection name: our tables, and the schema whose
# channels their NOTIFYs use.
_TABLE = re.compile(r"(?<![.\w])(workflow_run|workflow_event|workflow_schedule)\b")
_CURRENT_SCHEMA = "current_schema()"


@lru_cache(maxsize=256)
def qualified(name: str, schema: str) -> str:
    """`Q[name]` for a caller's connection: each table named in `schema` (whatever the
    caller's search_path) and `current_schema()` replaced by `schema` itself.
    `test_producers_transaction` runs every statement that comes here with the caller's
    path elsewhere."""
    table = sql.Identifier(schema).as_string(None)
    text = _TABLE.sub(lambda m: f"{table}.{m.group(1)}", Q[name])
    return text.replace(_CURRENT_SCHEMA, sql.Literal(schema).as_string(None))


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
        try:
            query = next(queries)
            while True:
                cur = self.conn.cursor(row_factory=dict_row)
                cur.execute(qualified(query.name, self.schema), query.params)
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
        try:
            query = next(queries)
            while True:
                cur = self.conn.cursor(row_factory=dict_row)
                await cur.execute(qualified(query.name, self.schema), query.params)
                rows = await cur.fetchall() if cur.description is not None else []
                query = queries.send(rows)
        except StopIteration as stop:
            result: T = stop.value
            return result
