"""The producer and operator API: submit, inspect, cancel, retry and wait for runs; queue
statistics; retention. The operations themselves (validation and calls) are
`swf_pool.operations`, shared with `AsyncClient`."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from . import operations as ops
from .backends import Backend, open_backend
from .fleet import Fleet
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
from .operations import (
    DEFAULT_PRUNE_BATCH,
    DEFAULT_PRUNE_STATUSES,
    DEFAULT_RETRY_BATCH,
    Progress,
)
from .schedules import DEFAULT_CATCH_UP_LIMIT, MissedPolicy, Schedule
from .validation import MAX_LIST_LIMIT, audit_level, canonical_id, new_run, timeout_seconds
from .waiting import Waits, finished_run, is_finished

__all__ = [  # and what other modules import from here
    "DEFAULT_PRUNE_BATCH",
    "DEFAULT_PRUNE_STATUSES",
    "DEFAULT_RETRY_BATCH",
    "MAX_LIST_LIMIT",
    "Client",
    "Schedules",
    "new_run",
]
T = TypeVar("T")
DEFAULT_POOL_SIZE = 6  # claims, flushes, heartbeats, the ticker, handlers' heartbeats, API


class Client:
    """A connection to a workflow database, for producers (and the worker underneath).

    `dsn` is a connection string (see `swf_pool.dsn`). With `migrate=True` pending migrations
    are applied first; otherwise a database that is not migrated is a `SchemaNotReady` error.
    `audit="failures"` skips the `created` event on submit.

    `submit`, `submit_many`, `cancel` and `schedule` take `conn=`: the caller's open
    connection (a `psycopg.Connection` on PostgreSQL, a `sqlite3.Connection` on SQLite), to
    write inside the caller's transaction: the run becomes visible to workers, and wakes
    them, when the caller commits, and vanishes if it rolls back.
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
        self.backend: Backend = open_backend(dsn, pool_size=pool_size, create=migrate)
        try:
            if migrate:
                migrate_up(self.backend)
            else:
                ensure_ready(self.backend)
        except BaseException:
            self.backend.close()
            raise
        self.schedules = Schedules(self)
        self.fleet = Fleet(self.backend)  # the pools, and pausing and limiting types
        self.waits = Waits(
            self.backend.finished_listener
        )  # every wait of this client, one listener for all

    def close(self) -> None:
        self.waits.close()
        self.backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _do(self, op: ops.Op[T], conn: object = None) -> T:
        return ops.drive(op, self.backend if conn is None else self.backend.bind(conn))

    def submit(
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
        """Record the intent that a run of `type` happen, with `payload` (any JSON value).

        Lower `priority` runs first (0 and negative values are allowed). `run_at` (an aware
        datetime) or `run_in` (a timedelta or seconds) delay the run. With an
        `idempotency_key` that already exists nothing is created: the result carries the
        existing run's id and `created=False`. `conn`: write in the caller's transaction.
        """
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
        return self._do(op, conn)

    def submit_many(
        self, items: Iterable[Mapping[str, Any]], *, conn: object = None
    ) -> list[Submitted]:
        """Submit many runs in one round trip; each item holds `submit`'s arguments by name.

        Every item is validated before anything is written; results are in input order.
        """
        return self._do(ops.submit_many(self.audit is Audit.FULL, items), conn)

    def cancel(self, run_id: str, *, conn: object = None) -> None:
        """Cancel a pending or leased run; its handler's result, if any, will be discarded."""
        self._do(ops.cancel(run_id), conn)

    def get(self, run_id: str) -> RunRecord | None:
        """The run, or None if there is none (or it was soft-deleted)."""
        return self._do(ops.get(run_id))

    def wait(self, run_id: str, timeout: float | timedelta | None = None) -> RunRecord:
        """The run once it has finished (succeeded, failed or cancelled), as soon as it has:
        `WaitTimeout` if it has not within `timeout` seconds (None: no limit), `RunNotFound`
        if there is no such run. No connection is held while waiting."""
        seconds = timeout_seconds(timeout)
        key = canonical_id(run_id)
        run = (
            None
            if key is None
            else self.waits.until(key, lambda: self.get(key), is_finished, seconds)
        )
        return finished_run(run_id, run, seconds)

    def list(
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
        """Runs, newest first, optionally filtered (`created_after` inclusive,
        `created_before` exclusive); `limit` is at most 1000."""
        op = ops.list_runs(
            type=type,
            status=status,
            idempotency_key=idempotency_key,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            offset=offset,
        )
        return self._do(op)

    def schedule(
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
        """Create a recurring schedule; return its id. Manage it with `client.schedules`.

        `cron`: 5 fields or @hourly/@daily/@weekly/@monthly/@yearly, on the wall clock of the
        IANA `timezone`. `missed`: what a ticker that was down does with the fires it missed,
        "skip" (one run, then the next future time; the Go library's way) or "catch_up" (one
        run per missed fire, at most `catch_up_limit`). `conn`: in the caller's transaction.
        """
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
        return self._do(op, conn)

    def events(self, run_id: str) -> builtins.list[Event]:
        """The run's audit trail, oldest first."""
        return self._do(ops.events(run_id))

    # -- operations ---------------------------------------------------------------------------

    def stats(self) -> QueueStats:
        """Depth per type (pending, due, leased), lag, failures in the last hour, the workers
        holding leases, the registered types and (PostgreSQL) workflow_run's dead tuples.
        One pass over the pending and leased runs: call it periodically, not per poll."""
        return self._do(ops.stats())

    def retry(self, run_id: str) -> None:
        """Put a failed or cancelled run back to `pending`, due now, with a fresh attempt
        budget (its attempt number keeps counting; `max_attempts` grows by the budget); a
        `requeued` event records it."""
        self._do(ops.retry(run_id))

    def retry_many(
        self,
        *,
        status: Status | str = Status.FAILED,
        type: str | None = None,
        since: timedelta | None = None,
        batch: int = DEFAULT_RETRY_BATCH,
        progress: Progress | None = None,
    ) -> int:
        """Retry every run with `status` (failed or cancelled), optionally of one `type` and
        finished within `since`, in batches of `batch`; return how many were put back."""
        op = ops.retry_many(status=status, type=type, since=since, batch=batch, progress=progress)
        return self._do(op)

    def prune(
        self,
        older_than: timedelta,
        *,
        statuses: Sequence[Status | str] = DEFAULT_PRUNE_STATUSES,
        batch: int = DEFAULT_PRUNE_BATCH,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> int:
        """Delete finished runs (and their events) last changed more than `older_than` ago;
        return how many (with `dry_run`, how many would be). One pass over the table in key
        order, `batch` rows a statement, so no lock is held for long. Failed runs are kept
        unless `statuses` names them: they are the dead letters an operator may retry."""
        op = ops.prune(
            older_than, statuses=statuses, batch=batch, dry_run=dry_run, progress=progress
        )
        return self._do(op)

    def throughput(self, minutes: int = 60) -> builtins.list[tuple[datetime, int, int]]:
        """(minute, succeeded, failed) for each of the last `minutes` with any, from the
        events (with audit="failures" only failures are recorded)."""
        return self._do(ops.throughput(minutes))

    def table_rows(self) -> int:
        """About how many rows workflow_run holds (PostgreSQL's estimate; exact on SQLite)."""
        return self._do(ops.table_rows())


class Schedules:
    """`client.schedules`: read and change schedules (create them with `client.schedule`)."""

    def __init__(self, client: Client) -> None:
        self._do = client._do

    def get(self, schedule_id: str) -> Schedule | None:
        return self._do(ops.get_schedule(schedule_id))

    def list(self) -> builtins.list[Schedule]:
        """Every schedule that is not deleted, oldest first."""
        return self._do(ops.list_schedules())

    def pause(self, schedule_id: str) -> Schedule:
        return self.update(schedule_id, enabled=False)

    def resume(self, schedule_id: str) -> Schedule:
        """Enable again, from now on: fires missed while paused are not made up."""
        return self.update(schedule_id, enabled=True)

    def delete(self, schedule_id: str) -> None:
        """Soft delete: the row stays, with `deleted_at` set; it never fires again."""
        self._do(ops.delete_schedule(schedule_id))

    def update(self, schedule_id: str, **changes: Any) -> Schedule:
        """Change any of cron, timezone, payload, priority, max_attempts, missed,
        catch_up_limit, enabled; the next fire is recomputed from now."""
        return self._do(ops.update_schedule(schedule_id, changes))
