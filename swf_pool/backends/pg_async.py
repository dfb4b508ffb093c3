"""The PostgreSQL backend for `AsyncClient`: psycopg's asynchronous pool, running the same
`pg_ops` generators as `PostgresBackend` (the producer's and the operator's statements)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..dsn import PostgresTarget, redact
from ..errors import ClientClosed, ConnectError, DatabaseError, InvalidConnection
from ..listener import FinishedListener
from .pg_connect import CONNECT_TIMEOUT_SECONDS, Transient, translate
from .pg_drive import AsyncPostgresCaller, run_queries_async
from .pg_ops import OPERATIONS
from .pg_pool import decoding_loads, has_input, pool_options, search_path
from .postgres import TRANSIENT_PAUSE_SECONDS, TRANSIENT_TRIES, finished_channel


async def closed_by_server(conn: psycopg.AsyncConnection[Any]) -> bool:
    """`pg_pool.closed_by_server`, for an async connection."""
    if not has_input(conn):
        return False
    try:
        await AsyncConnectionPool.check_connection(conn)
    except psycopg.Error:
        return True
    return False


class AsyncPostgresBackend:
    kind = "postgres"

    def __init__(self, target: PostgresTarget, *, pool_size: int) -> None:
        self.target = target
        self.description = f"postgres {redact(target.conninfo)} (schema {target.schema})"
        self._pool = AsyncConnectionPool(
            configure=self._configure,
            name=f"swf-pool-async:{target.schema}",
            **pool_options(target, pool_size),
        )

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout as exc:
            raise ConnectError(f"cannot open a pool to {self.description}: {exc}") from None

    async def close(self) -> None:
        await self._pool.close()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(search_path(self.target))
        set_json_loads(decoding_loads, conn)

    @contextlib.asynccontextmanager
    async def _checked_out(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """As `PostgresPool._checked_out`: a healthy connection costs no round trip; one the
        server closed is replaced, after a check of all its idle siblings."""
        if self._pool.closed:
            raise ClientClosed
        async with self._pool.connection() as conn:
            if not await closed_by_server(conn):
                yield conn
                return
        with contextlib.suppress(Exception):
            await self._pool.check()
        async with self._pool.connection() as conn:
            yield conn

    def finished_listener(self, on_finished: Callable[[str | None], None]) -> FinishedListener:
        return FinishedListener(self.target, finished_channel(self.target.schema), on_finished)

    def bind(self, conn: object) -> AsyncPostgresCaller:
        if isinstance(conn, psycopg.AsyncConnection):
            return AsyncPostgresCaller(conn, self.target.schema, self.description)
        hint = " (use Client)" if isinstance(conn, psycopg.Connection) else ""
        raise InvalidConnection(
            f"an AsyncClient on PostgreSQL writes through a psycopg.AsyncConnection, got "
            f"{type(conn).__module__}.{type(conn).__name__}{hint}"
        )

    async def call(self, name: str, args: tuple[Any, ...]) -> Any:
        """The `pg_ops` operation `name` on a pooled connection, run again whole if it was a
        deadlock victim (see `PostgresBackend._retried`)."""
        tries = 1
        while True:
            try:
                async with self._checked_out() as conn:
                    return await run_queries_async(conn, OPERATIONS[name](*args))
            except psycopg.Error as exc:  # PoolTimeout included
                error = translate(exc, self.description, self.target.schema)
                if isinstance(error, ConnectError):
                    with contextlib.suppress(Exception):
                        await self._pool.check()  # its siblings were most likely lost too
                if not isinstance(error, Transient):
                    raise error from error.__cause__
                if tries >= TRANSIENT_TRIES:
                    raise DatabaseError(f"{error} (tried {tries} times)") from exc
            await asyncio.sleep(random.uniform(0.0, TRANSIENT_PAUSE_SECONDS * tries))
            tries += 1
