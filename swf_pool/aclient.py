"""`AsyncClient`: the producer's and the operator's API for asyncio applications.

The same operations as `Client` (`swf_pool.operations`: one implementation of validation and
of the calls), driven asynchronously: on PostgreSQL over psycopg's `AsyncConnection`s in a
`psycopg_pool.AsyncConnectionPool`, running the same statements (`pg_ops`).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from . import operations as ops
from .backends import Backend, open_backend
from .backends.pg_async import AsyncPostgresBackend
from .backends.sqlite import SqliteBackend
from .client import DEFAULT_POOL_SIZE
from .dsn import PostgresTarget, Target, parse_dsn
from .errors import ConfigError
from .migrate import ensure_ready
from .migrate import up as migrate_up
from .models import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    Audit,
    Event,
    QueueStats,
    RunRecord,
    Status,
    Submitted,
)
from .operations import DEFAULT_PRUNE_BATCH, DEFAULT_PRUNE_STATUSES, DEFAULT_RETRY_BATCH, Progress
from .schedules import DEFAULT_CATCH_UP_LIMIT, MissedPolicy, Schedule
from .validation import audit_level, canonical_id, timeout_seconds
from .waiting import Waits, finished_run, is_finished

T = TypeVar("T")
NOT_OPEN = ConfigError("the AsyncClient is not open: `async with` it, or await open()")


class AsyncClient:
    """`Client`'s API as coroutines: `async with AsyncClient(dsn) as client: ...` (or
    `await client.open()` and `await client.close()`).

    `submit`, `submit_many`, `cancel` and `schedule` take `conn=`, the caller's open
    `psycopg.AsyncConnection`, to write inside the caller's transaction (see `Client`).

    On SQLite, which has no asynchronous driver, each call runs the synchronous backend's in
    a thread (`asyncio.to_thread`); with `conn=` (a `sqlite3.Connection`, which belongs to
    the thread that made it) it runs on the event loop's thread, as the caller's own
    statements do.
    """

    def __init__(
        self,
        dsn: str,
        *,
        migrate: bool = False,
        audit: Audit | str = Audit.FULL,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self.audit = audit_level(audit)
        self._target = parse_dsn(dsn)
        self._migrate = migrate
        self._pool_size = pool_size
        self._backend: AsyncPostgresBackend | SqliteBackend | None = None
        self._waits: Waits | None = None
        self.schedules = AsyncSchedules(self)

    async def open(self) -> None:
        """Check (or with `migrate=True`, migrate) the schema and open the pool."""
        prepared = await asyncio.to_thread(_prepared, self._target, self._migrate)
        if isinstance(prepared, SqliteBackend):  # the one it uses, in threads
            self._backend = prepared
        else:  # it was for the checks: the asynchronous pool serves the calls
            await asyncio.to_thread(prepared.close)
            assert isinstance(self._target, PostgresTarget)  # (the other kind of backend)
            backend = AsyncPostgresBackend(self._target, pool_size=self._pool_size)
            await backend.open()
            self._backend = backend
        self._waits = Waits(self._backend.finished_listener)

    async def close(self) -> None:
        backend, waits, self._backend, self._waits = self._backend, self._waits, None, None
        if waits is not None:
            await asyncio.to_thread(waits.close)  # joins its listener thread
        if isinstance(backend, AsyncPostgresBackend):
            await backend.close()
        elif backend is not None:
            await asyncio.to_thread(backend.close)

    async def __aenter__(self) -> AsyncClient:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def backend(self) -> AsyncPostgresBackend | SqliteBackend:
        if self._backend is None:
            raise NOT_OPEN
        return self._backend

    async def _do(self, op: ops.Op[T], conn: object = None) -> T:
        backend = self.backend
        if isinstance(backend, AsyncPostgresBackend):
            return await ops.drive_async(op, backend if conn is None else backend.bind(conn))
        if conn is not None:
            return ops.drive(op, backend.bind(conn))
        return await asyncio.to_thread(ops.drive, op, backend)

    async def submit(
        self,
        type: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        run_at: datetime | None = None,
        run_in: timedelta | float | None = None,
        conn: object = None,
    ) -> Submitted:
        """See `Client.submit`."""
        op = ops.submit(
            self.audit is Audit.FULL,
            type,
            payload,
            idempotency_key=idempotency_key,
            priority=priority,
            max_attempts=max_attempts,
            run_at=run_at,
            run_in=run_in,
        )
        return await self._do(op, conn)

    async def submit_many(
        self, items: Iterable[Mapping[str, Any]], *, conn: object = None
    ) -> list[Submitted]:
        """See `Client.submit_many`."""
        return await self._do(ops.submit_many(self.audit is Audit.FULL, items), conn)

    async def cancel(self, run_id: str, *, conn: object = None) -> None:
        await self._do(ops.cancel(run_id), conn)

    async def get(self, run_id: str) -> RunRecord | None:
        return await self._do(ops.get(run_id))

    async def wait(self, run_id: str, timeout: float | timedelta | None = None) -> RunRecord:
        """See `Client.wait`: one listener thread serves every wait of this client."""
        seconds = timeout_seconds(timeout)
        key = canonical_id(run_id)
        if self._waits is None:
            raise NOT_OPEN
        waits = self._waits
        run = None
        if key is not None:
            run = await waits.until_async(key, lambda: self.get(key), is_finished, seconds)
        return finished_run(run_id, run, seconds)

    async def list(
        self,
        *,
        type: str | None = None,
        status: Status | str | None = None,
        idempotency_key: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        offset: int = 0,
    ) -> builtins.list[RunRecord]:
        op = ops.list_runs(
            type=type,
            status=status,
            idempotency_key=idempotency_key,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            offset=offset,
        )
        return await self._do(op)

    async def schedule(
        self,
        type: str,
        payload: Any = None,
        *,
        cron: str,
        timezone: str = "UTC",
        priority: int = DEFAULT_PRIORITY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        missed: MissedPolicy | str = MissedPolicy.SKIP,
        catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT,
        conn: object = None,
    ) -> str:
        """See `Client.schedule`."""
        op = ops.schedule(
            type,
            payload,
            cron=cron,
            timezone=timezone,
            priority=priority,
            max_attempts=max_attempts,
            missed=missed,
            catch_up_limit=catch_up_limit,
        )
        return await self._do(op, conn)

    async def events(self, run_id: str) -> builtins.list[Event]:
        return await self._do(ops.events(run_id))

    async def stats(self) -> QueueStats:
        return await self._do(ops.stats())

    async def retry(self, run_id: str) -> None:
        await self._do(ops.retry(run_id))

    async def retry_many(
        self,
        *,
        status: Status | str = Status.FAILED,
        type: str | None = None,
        since: timedelta | None = None,
        batch: int = DEFAULT_RETRY_BATCH,
        progress: Progress | None = None,
    ) -> int:
        op = ops.retry_many(status=status, type=type, since=since, batch=batch, progress=progress)
        return await self._do(op)

    async def prune(
        self,
        older_than: timedelta,
        *,
        statuses: Sequence[Status | str] = DEFAULT_PRUNE_STATUSES,
        batch: int = DEFAULT_PRUNE_BATCH,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> int:
        op = ops.prune(
            older_than, statuses=statuses, batch=batch, dry_run=dry_run, progress=progress
        )
        return await self._do(op)

    async def throughput(self, minutes: int = 60) -> builtins.list[tuple[datetime, int, int]]:
        return await self._do(ops.throughput(minutes))

    async def table_rows(self) -> int:
        return await self._do(ops.table_rows())


class AsyncSchedules:
    """`client.schedules` of an `AsyncClient` (see `swf_pool.client.Schedules`)."""

    def __init__(self, client: AsyncClient) -> None:
        self._do = client._do

    async def get(self, schedule_id: str) -> Schedule | None:
        return await self._do(ops.get_schedule(schedule_id))

    async def list(self) -> builtins.list[Schedule]:
        return await self._do(ops.list_schedules())

    async def pause(self, schedule_id: str) -> Schedule:
        return await self.update(schedule_id, enabled=False)

    async def resume(self, schedule_id: str) -> Schedule:
        return await self.update(schedule_id, enabled=True)

    async def delete(self, schedule_id: str) -> None:
        await self._do(ops.delete_schedule(schedule_id))

    async def update(self, schedule_id: str, **changes: Any) -> Schedule:
        return await self._do(ops.update_schedule(schedule_id, changes))


def _prepared(target: Target, migrate: bool) -> Backend:
    """The synchronous backend, its schema checked (or with `migrate`, migrated)."""
    backend = open_backend(target, pool_size=1, create=migrate)
    try:
        migrate_up(backend) if migrate else ensure_ready(backend)
    except BaseException:
        backend.close()
        raise
    return backend
