"""The producer and operator API: submit, inspect, cancel and retry runs; queue statistics;
retention."""

from __future__ import annotations

import builtins
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from . import codec
from .backends import Backend, open_backend
from .errors import (
    RunAlreadyFinished,
    RunNotFound,
    RunNotRetryable,
    ScheduleNotFound,
    ValidationError,
)
from .migrate import ensure_ready
from .migrate import up as migrate_up
from .models import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    Audit,
    Event,
    NewRun,
    QueueStats,
    RunFilter,
    RunRecord,
    Status,
    Submitted,
)
from .schedules import (
    DEFAULT_CATCH_UP_LIMIT,
    MissedPolicy,
    Schedule,
    first_fire,
    validate_cron,
    validate_zone,
)

INT32_MAX = 2**31 - 1
MAX_TYPE_LENGTH = 255
MAX_LIST_LIMIT = 1000
DEFAULT_POOL_SIZE = 6  # claims, flushes, heartbeats, the ticker, handlers' heartbeats, API
DEFAULT_RETRY_BATCH = 1000
MAX_DELAY_SECONDS = 100 * 365 * 86400.0
DEFAULT_PRUNE_BATCH = 10_000
DEFAULT_PRUNE_STATUSES = (Status.SUCCEEDED, Status.CANCELLED)  # failed runs are dead letters
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
NO_ID = "00000000-0000-0000-0000-000000000000"  # before every id, to start a key-ordered pass
Progress = Callable[[int, int], None]  # (runs done so far, runs looked at so far)


class Client:
    """A connection to a workflow database, for producers (and the worker underneath).

    `dsn` is a connection string (see `swf_pool.dsn`). With `migrate=True` pending migrations
    are applied first; otherwise a database that is not migrated is a `SchemaNotReady` error.
    `audit="failures"` skips the `created` event on submit.
    """

    def __init__(
        self,
        dsn: str,
        *,
        migrate: bool = False,
        audit: Audit | str = Audit.FULL,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self.audit = _audit(audit)
        self.backend: Backend = open_backend(dsn, pool_size=pool_size, create=migrate)
        try:
            if migrate:
                migrate_up(self.backend)
            else:
                ensure_ready(self.backend)
        except BaseException:
            self.backend.close()
            raise
        self.schedules = Schedules(self.backend)

    def close(self) -> None:
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
    ) -> Submitted:
        """Record the intent that a run of `type` happen, with `payload` (any JSON value).

        Lower `priority` runs first (0 and negative values are allowed). `run_at` (an aware
        datetime) or `run_in` (a timedelta or seconds) delay the run. With an
        `idempotency_key` that already exists nothing is created: the result carries the
        existing run's id and `created=False`.
        """
        run = new_run(
            type,
            payload,
            idempotency_key=idempotency_key,
            priority=priority,
            max_attempts=max_attempts,
            run_at=run_at,
            run_in=run_in,
        )
        return self.backend.submit([run], self.audit is Audit.FULL)[0]

    def submit_many(self, items: Iterable[Mapping[str, Any]]) -> list[Submitted]:
        """Submit many runs in one round trip; each item holds `submit`'s arguments by name.

        Every item is validated before anything is written; results are in input order.
        """
        runs = []
        for index, item in enumerate(items):
            try:
                runs.append(new_run(**item))
            except TypeError as exc:
                raise ValidationError(f"item {index}: {exc}") from None
            except ValidationError as exc:
                raise type(exc)(f"item {index}: {exc}") from None
        return self.backend.submit(runs, self.audit is Audit.FULL) if runs else []

    def cancel(self, run_id: str) -> None:
        """Cancel a pending or leased run; its handler's result, if any, will be discarded."""
        key = _uuid(run_id)
        if key is None:
            raise RunNotFound(f"workflow run {run_id!r} not found")
        if self.backend.cancel(key):
            return
        status = self.backend.run_status(key)
        if status is None:
            raise RunNotFound(f"workflow run {run_id} not found")
        raise RunAlreadyFinished(f"workflow run {run_id} is already {status}")

    def get(self, run_id: str) -> RunRecord | None:
        """The run, or None if there is none (or it was soft-deleted)."""
        key = _uuid(run_id)
        return None if key is None else self.backend.get(key)

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
    ) -> list[RunRecord]:
        """Runs, newest first, optionally filtered (`created_after` inclusive,
        `created_before` exclusive); `limit` is at most 1000."""
        filters = RunFilter(
            type=_filter("type", type),
            status=_status(status),
            idempotency_key=_filter("idempotency_key", idempotency_key),
            created_after=_aware("created_after", created_after),
            created_before=_aware("created_before", created_before),
            limit=_bounded("limit", limit, 1, MAX_LIST_LIMIT),
            offset=_bounded("offset", offset, 0, INT32_MAX),
        )
        return self.backend.list_runs(filters)

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
    ) -> str:
        """Create a recurring schedule; return its id. Manage it with `client.schedules`.

        `cron`: 5 fields or @hourly/@daily/@weekly/@monthly/@yearly, on the wall clock of the
        IANA `timezone`. `missed`: what a ticker that was down does with the fires it missed,
        "skip" (one run, then the next future time; the Go library's way) or "catch_up" (one
        run per missed fire, at most `catch_up_limit`).
        """
        values = _schedule_values(
            uuid7(),
            type,
            payload,
            cron,
            timezone,
            priority,
            max_attempts,
            missed,
            catch_up_limit,
            enabled=True,
        )
        self.backend.create_schedule(values)
        return str(values["id"])

    def events(self, run_id: str) -> builtins.list[Event]:
        """The run's audit trail, oldest first."""
        key = _uuid(run_id)
        return [] if key is None else self.backend.events(key)

    # -- operations ---------------------------------------------------------------------------

    def stats(self) -> QueueStats:
        """Depth per type (pending, due, leased), lag, failures in the last hour, the workers
        holding leases, the registered types and (PostgreSQL) workflow_run's dead tuples.
        One pass over the pending and leased runs: call it periodically, not per poll."""
        return self.backend.queue_stats(datetime.now(UTC) - timedelta(hours=1))

    def retry(self, run_id: str) -> None:
        """Put a failed or cancelled run back to `pending`, due now, with a fresh attempt
        budget (its attempt number keeps counting; `max_attempts` grows by the budget); a
        `requeued` event records it."""
        key = _uuid(run_id)
        if key is None:
            raise RunNotFound(f"workflow run {run_id!r} not found")
        if self.backend.requeue([key]):
            return
        status = self.backend.run_status(key)
        if status is None:
            raise RunNotFound(f"workflow run {run_id} not found")
        raise RunNotRetryable(
            f"workflow run {run_id} is {status}: only failed or cancelled runs can be retried"
        )

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
        wanted = _status(status)
        if wanted is None or wanted not in (Status.FAILED, Status.CANCELLED):
            raise ValidationError(f"status must be failed or cancelled, got {status!r}")
        if type is not None:
            _type(type)
        after_time = datetime.now(UTC) - _duration("since", since) if since is not None else None
        size = _bounded("batch", batch, 1, 100_000)
        after, done, seen = NO_ID, 0, 0
        while ids := self.backend.requeue_candidates(wanted, type, after_time, after, size):
            done += len(self.backend.requeue(ids))
            seen += len(ids)
            after = ids[-1]
            if progress:
                progress(done, seen)
        return done

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
        cutoff = datetime.now(UTC) - _duration("older_than", older_than)
        chosen = sorted({Status(s) for s in statuses if s in set(FINISHED)})
        if not chosen or len(chosen) != len(set(statuses)):
            raise ValidationError(
                f"statuses must be some of {', '.join(FINISHED)}, got {list(map(str, statuses))}"
            )
        size = _bounded("batch", batch, 1, 1_000_000)
        after, done, seen = NO_ID, 0, 0
        while True:
            last, scanned, matched = self.backend.prune_batch(after, cutoff, chosen, size, dry_run)
            if last is None:
                return done
            done += matched
            seen += scanned
            after = last
            if progress:
                progress(done, seen)

    def throughput(self, minutes: int = 60) -> builtins.list[tuple[datetime, int, int]]:
        """(minute, succeeded, failed) for each of the last `minutes` with any, from the
        events (with audit="failures" only failures are recorded)."""
        since = datetime.now(UTC) - timedelta(minutes=_bounded("minutes", minutes, 1, 1440))
        return self.backend.throughput(since)

    def table_rows(self) -> int:
        """About how many rows workflow_run holds (PostgreSQL's estimate; exact on SQLite)."""
        return self.backend.table_rows()


def new_run(
    type: str,
    payload: Any = None,
    *,
    idempotency_key: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    run_at: datetime | None = None,
    run_in: timedelta | float | None = None,
    created: str | None = None,
) -> NewRun:
    """Validate `submit`'s arguments into a `NewRun`, or raise a `ValidationError`.

    `created` is the JSON data of the run's `created` event (the ticker names the schedule)."""
    return NewRun(
        id=uuid7(),
        type=_type(type),
        payload=codec.encode(payload),
        priority=_bounded("priority", priority, -INT32_MAX - 1, INT32_MAX),
        max_attempts=_bounded("max_attempts", max_attempts, 1, INT32_MAX),
        idempotency_key=_key(idempotency_key),
        run_at=_when(run_at, run_in),
        created=created,
    )


def uuid7() -> str:
    """A time-ordered UUID (version 7, RFC 9562): new rows land at the right edge of the
    primary key's index instead of at random pages, which keeps bulk inserts fast."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | (0x7 << 76) | ((rand >> 64) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _audit(value: Audit | str) -> Audit:
    try:
        return Audit(value)
    except ValueError:
        raise ValidationError(
            f"audit must be one of {', '.join(a.value for a in Audit)}, got {value!r}"
        ) from None


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise ValidationError(f"{name} must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValidationError(f"{name} is not valid UTF-8 text") from None
    return value


def _type(value: object) -> str:
    text = _text("type", value)
    if not text.strip():
        raise ValidationError("type must not be empty")
    if len(text) > MAX_TYPE_LENGTH:
        raise ValidationError(f"type is longer than {MAX_TYPE_LENGTH} characters")
    return text


def _key(value: object) -> str | None:
    if value is None:
        return None
    text = _text("idempotency_key", value)
    return text or None  # the Go library treats an empty key as no key


def _bounded(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _when(run_at: datetime | None, run_in: timedelta | float | None) -> datetime | None:
    if run_at is not None and run_in is not None:
        raise ValidationError("give run_at or run_in, not both")
    if run_at is not None:
        return _aware("run_at", run_at)
    if run_in is None:
        return None
    if isinstance(run_in, bool) or not isinstance(run_in, timedelta | int | float):
        raise ValidationError(f"run_in must be a timedelta or seconds, got {run_in!r}")
    seconds = run_in.total_seconds() if isinstance(run_in, timedelta) else float(run_in)
    if seconds < 0:
        raise ValidationError(f"run_in must not be negative, got {run_in!r}")
    if not seconds <= MAX_DELAY_SECONDS:  # also refuses nan
        raise ValidationError(
            f"run_in must be between 0 and {MAX_DELAY_SECONDS:.0f} seconds (100 years), "
            f"got {run_in!r}"
        )
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _filter(name: str, value: str | None) -> str | None:
    """A filter's text: what a stored value could be (the database must take it)."""
    return None if value is None else _text(name, value)


def _status(value: Status | str | None) -> Status | None:
    if value is None:
        return None
    try:
        return Status(value)
    except ValueError:
        raise ValidationError(
            f"unknown status {value!r}: use one of {', '.join(s.value for s in Status)}"
        ) from None


def _aware(name: str, value: object) -> datetime | None:
    """`value` in UTC (PostgreSQL refuses offsets beyond 15:59 that Python allows)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValidationError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError(f"{name} is out of range: {value.isoformat()}") from None


def _duration(name: str, value: object) -> timedelta:
    if not isinstance(value, timedelta):
        raise ValidationError(f"{name} must be a timedelta, got {type(value).__name__}")
    if value <= timedelta(0):
        raise ValidationError(f"{name} must be positive, got {value}")
    if value > timedelta(days=100 * 365):
        raise ValidationError(f"{name} must be at most 100 years, got {value}")
    return value


def _uuid(value: object) -> str | None:
    """The canonical form of a run id, or None if it is not a UUID (so no such run exists)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


class Schedules:
    """`client.schedules`: read and change schedules (create them with `client.schedule`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def get(self, schedule_id: str) -> Schedule | None:
        key = _uuid(schedule_id)
        return None if key is None else self.backend.get_schedule(key)

    def list(self) -> builtins.list[Schedule]:
        """Every schedule that is not deleted, oldest first."""
        return self.backend.list_schedules()

    def pause(self, schedule_id: str) -> Schedule:
        return self.update(schedule_id, enabled=False)

    def resume(self, schedule_id: str) -> Schedule:
        """Enable again, from now on: fires missed while paused are not made up."""
        return self.update(schedule_id, enabled=True)

    def delete(self, schedule_id: str) -> None:
        """Soft delete: the row stays, with `deleted_at` set; it never fires again."""
        key = _uuid(schedule_id)
        if key is None or not self.backend.delete_schedule(key):
            raise ScheduleNotFound(f"schedule {schedule_id!r} not found")

    def update(self, schedule_id: str, **changes: Any) -> Schedule:
        """Change any of cron, timezone, payload, priority, max_attempts, missed,
        catch_up_limit, enabled; the next fire is recomputed from now."""
        allowed = {
            "cron",
            "timezone",
            "payload",
            "priority",
            "max_attempts",
            "missed",
            "catch_up_limit",
            "enabled",
        }
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ValidationError(f"unknown schedule field(s): {', '.join(unknown)}")
        current = self.get(schedule_id)
        if current is None:
            raise ScheduleNotFound(f"schedule {schedule_id!r} not found")
        merged = {
            "cron": current.cron,
            "timezone": current.timezone,
            "payload": current.payload,
            "priority": current.priority,
            "max_attempts": current.max_attempts,
            "missed": current.missed_policy,
            "catch_up_limit": current.catch_up_limit,
            "enabled": current.enabled,
            **changes,
        }
        enabled = merged.pop("enabled")
        if not isinstance(enabled, bool):
            raise ValidationError(f"enabled must be true or false, got {enabled!r}")
        values = _schedule_values(current.id, current.type, enabled=enabled, **merged)
        if not self.backend.update_schedule(values):
            raise ScheduleNotFound(f"schedule {schedule_id!r} not found")
        updated = self.backend.get_schedule(current.id)
        assert updated is not None
        return updated


def _schedule_values(
    schedule_id: str,
    type: str,
    payload: Any,
    cron: str,
    timezone: str,
    priority: int,
    max_attempts: int,
    missed: MissedPolicy | str,
    catch_up_limit: int,
    *,
    enabled: bool,
) -> dict[str, Any]:
    """Validate a schedule into the parameters of its statements (nothing is written)."""
    try:
        policy = MissedPolicy(missed)
    except ValueError:
        raise ValidationError(f"missed must be skip or catch_up, got {missed!r}") from None
    text = validate_cron(cron)
    return {
        "id": schedule_id,
        "type": _type(type),
        "payload": codec.encode(payload),
        "cron": text,
        "timezone": validate_zone(timezone).key,
        "next_run_at": first_fire(text, timezone, datetime.now(UTC)),
        "priority": _bounded("priority", priority, -INT32_MAX - 1, INT32_MAX),
        "max_attempts": _bounded("max_attempts", max_attempts, 1, INT32_MAX),
        "missed_policy": policy.value,
        "catch_up_limit": _bounded("catch_up_limit", catch_up_limit, 1, 10_000),
        "enabled": enabled,
    }
