"""The producer's and the operator's operations, written once for `Client` and `AsyncClient`.

Each operation is a small generator (sans-IO): it validates its arguments, yields the backend
calls it needs (`Call`: a method's name and its arguments), receives their results and returns
its own. `drive` runs one against a synchronous target (a backend, or a caller's connection
bound to one), `drive_async` against an asynchronous one; neither knows what an operation does.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from .errors import (
    RunAlreadyFinished,
    RunNotFound,
    RunNotRetryable,
    ScheduleNotFound,
    ValidationError,
)
from .models import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    Event,
    QueueStats,
    RunFilter,
    RunRecord,
    Status,
    Submitted,
)
from .schedules import DEFAULT_CATCH_UP_LIMIT, MissedPolicy, Schedule
from .validation import (
    INT32_MAX,
    MAX_LIST_LIMIT,
    aware,
    bounded,
    canonical_id,
    duration,
    new_run,
    new_runs,
    run_type,
    schedule_values,
    status_filter,
    text_filter,
    uuid7,
)

T = TypeVar("T")
DEFAULT_RETRY_BATCH = 1000
DEFAULT_PRUNE_BATCH = 10_000
DEFAULT_PRUNE_STATUSES = (Status.SUCCEEDED, Status.CANCELLED)  # failed runs are dead letters
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
NO_ID = "00000000-0000-0000-0000-000000000000"  # before every id, to start a key-ordered pass
SCHEDULE_FIELDS = frozenset(
    {"cron", "timezone", "payload", "priority", "max_attempts", "missed", "catch_up_limit"}
)
Progress = Callable[[int, int], None]  # (runs done so far, runs looked at so far)


@dataclass(frozen=True)
class Call:
    """One backend operation: the name of a `Backend` method and its arguments."""

    name: str
    args: tuple[Any, ...] = ()


Op = Generator[Call, Any, T]


class Target(Protocol):
    def call(self, name: str, args: tuple[Any, ...]) -> Any: ...


class AsyncTarget(Protocol):
    async def call(self, name: str, args: tuple[Any, ...]) -> Any: ...


def drive(op: Op[T], target: Target) -> T:
    """Run `op` to its end, each call on `target`."""
    try:
        call = next(op)
        while True:
            call = op.send(target.call(call.name, call.args))
    except StopIteration as stop:
        result: T = stop.value
        return result


async def drive_async(op: Op[T], target: AsyncTarget) -> T:
    try:
        call = next(op)
        while True:
            call = op.send(await target.call(call.name, call.args))
    except StopIteration as stop:
        result: T = stop.value
        return result


# -- producer -----------------------------------------------------------------------------------


def submit(
    audit_full: bool,
    type: str,
    payload: Any = None,
    *,
    idempotency_key: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    run_at: datetime | None = None,
    run_in: timedelta | float | None = None,
) -> Op[Submitted]:
    run = new_run(
        type,
        payload,
        idempotency_key=idempotency_key,
        priority=priority,
        max_attempts=max_attempts,
        run_at=run_at,
        run_in=run_in,
    )
    submitted: list[Submitted] = yield Call("submit", ([run], audit_full))
    return submitted[0]


def submit_many(audit_full: bool, items: Iterable[Mapping[str, Any]]) -> Op[list[Submitted]]:
    runs = new_runs(items)
    if not runs:
        return []
    submitted: list[Submitted] = yield Call("submit", (runs, audit_full))
    return submitted


def cancel(run_id: str) -> Op[None]:
    key = canonical_id(run_id)
    if key is None:
        raise RunNotFound(f"workflow run {run_id!r} not found")
    if (yield Call("cancel", (key,))):
        return
    status = yield Call("run_status", (key,))
    if status is None:
        raise RunNotFound(f"workflow run {run_id} not found")
    raise RunAlreadyFinished(f"workflow run {run_id} is already {status}")


def get(run_id: str) -> Op[RunRecord | None]:
    key = canonical_id(run_id)
    if key is None:
        return None
    run: RunRecord | None = yield Call("get", (key,))
    return run


def list_runs(
    *,
    type: str | None = None,
    status: Status | str | None = None,
    idempotency_key: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
    offset: int = 0,
) -> Op[list[RunRecord]]:
    filters = RunFilter(
        type=text_filter("type", type),
        status=status_filter(status),
        idempotency_key=text_filter("idempotency_key", idempotency_key),
        created_after=aware("created_after", created_after),
        created_before=aware("created_before", created_before),
        limit=bounded("limit", limit, 1, MAX_LIST_LIMIT),
        offset=bounded("offset", offset, 0, INT32_MAX),
    )
    runs: list[RunRecord] = yield Call("list_runs", (filters,))
    return runs


def events(run_id: str) -> Op[list[Event]]:
    key = canonical_id(run_id)
    if key is None:
        return []
    found: list[Event] = yield Call("events", (key,))
    return found


def schedule(
    type: str,
    payload: Any = None,
    *,
    cron: str,
    timezone: str = "UTC",
    priority: int = DEFAULT_PRIORITY,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    missed: MissedPolicy | str = MissedPolicy.SKIP,
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT,
) -> Op[str]:
    values = schedule_values(
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
    yield Call("create_schedule", (values,))
    return str(values["id"])


# -- operations ---------------------------------------------------------------------------------


def stats() -> Op[QueueStats]:
    result: QueueStats = yield Call("queue_stats", (datetime.now(UTC) - timedelta(hours=1),))
    return result


def retry(run_id: str) -> Op[None]:
    key = canonical_id(run_id)
    if key is None:
        raise RunNotFound(f"workflow run {run_id!r} not found")
    if (yield Call("requeue", ([key],))):
        return
    status = yield Call("run_status", (key,))
    if status is None:
        raise RunNotFound(f"workflow run {run_id} not found")
    raise RunNotRetryable(
        f"workflow run {run_id} is {status}: only failed or cancelled runs can be retried"
    )


def retry_many(
    *,
    status: Status | str = Status.FAILED,
    type: str | None = None,
    since: timedelta | None = None,
    batch: int = DEFAULT_RETRY_BATCH,
    progress: Progress | None = None,
) -> Op[int]:
    wanted = status_filter(status)
    if wanted is None or wanted not in (Status.FAILED, Status.CANCELLED):
        raise ValidationError(f"status must be failed or cancelled, got {status!r}")
    if type is not None:
        run_type(type)
    after_time = datetime.now(UTC) - duration("since", since) if since is not None else None
    size = bounded("batch", batch, 1, 100_000)
    after, done, seen = NO_ID, 0, 0
    while ids := (yield Call("requeue_candidates", (wanted, type, after_time, after, size))):
        done += len((yield Call("requeue", (ids,))))
        seen += len(ids)
        after = ids[-1]
        if progress:
            progress(done, seen)
    return done


def prune(
    older_than: timedelta,
    *,
    statuses: Sequence[Status | str] = DEFAULT_PRUNE_STATUSES,
    batch: int = DEFAULT_PRUNE_BATCH,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Op[int]:
    cutoff = datetime.now(UTC) - duration("older_than", older_than)
    chosen = sorted({Status(s) for s in statuses if s in set(FINISHED)})
    if not chosen or len(chosen) != len(set(statuses)):
        raise ValidationError(
            f"statuses must be some of {', '.join(FINISHED)}, got {list(map(str, statuses))}"
        )
    size = bounded("batch", batch, 1, 1_000_000)
    after, done, seen = NO_ID, 0, 0
    while True:
        last, scanned, matched = yield Call("prune_batch", (after, cutoff, chosen, size, dry_run))
        if last is None:
            return done
        done += matched
        seen += scanned
        after = last
        if progress:
            progress(done, seen)


def throughput(minutes: int = 60) -> Op[list[tuple[datetime, int, int]]]:
    since = datetime.now(UTC) - timedelta(minutes=bounded("minutes", minutes, 1, 1440))
    rows: list[tuple[datetime, int, int]] = yield Call("throughput", (since,))
    return rows


def table_rows() -> Op[int]:
    rows: int = yield Call("table_rows")
    return rows


# -- schedules ----------------------------------------------------------------------------------


def get_schedule(schedule_id: str) -> Op[Schedule | None]:
    key = canonical_id(schedule_id)
    if key is None:
        return None
    found: Schedule | None = yield Call("get_schedule", (key,))
    return found


def list_schedules() -> Op[list[Schedule]]:
    found: list[Schedule] = yield Call("list_schedules")
    return found


def delete_schedule(schedule_id: str) -> Op[None]:
    key = canonical_id(schedule_id)
    if key is None or not (yield Call("delete_schedule", (key,))):
        raise ScheduleNotFound(f"schedule {schedule_id!r} not found")


def update_schedule(schedule_id: str, changes: Mapping[str, Any]) -> Op[Schedule]:
    unknown = sorted(set(changes) - SCHEDULE_FIELDS - {"enabled"})
    if unknown:
        raise ValidationError(f"unknown schedule field(s): {', '.join(unknown)}")
    current = yield from get_schedule(schedule_id)
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
    values = schedule_values(current.id, current.type, enabled=enabled, **merged)
    if not (yield Call("update_schedule", (values,))):
        raise ScheduleNotFound(f"schedule {schedule_id!r} not found")
    updated: Schedule | None = yield Call("get_schedule", (current.id,))
    assert updated is not None
    return updated
