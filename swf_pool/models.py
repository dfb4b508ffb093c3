"""Value objects shared by the client, the worker and the backends.

Rows handed to `from_row()` carry decoded values: JSON columns as Python objects, times as
aware datetimes (each backend converts what its driver returns).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

DEFAULT_PRIORITY = 100
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_LIST_LIMIT = 50


class Status(enum.StrEnum):
    """A run's status; the values are the Go library's strings."""

    PENDING = "pending"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Audit(enum.StrEnum):
    """How much of the event trail to write.

    FULL writes every transition; FAILURES writes only what goes wrong (retries, failures,
    cancellations, lease expiries) and skips created/leased/started/succeeded, which costs
    less on the hot path.
    """

    FULL = "full"
    FAILURES = "failures"


class EventType(enum.StrEnum):
    """A `workflow_event.event_type`: the Go library's set plus `lease_expired`, `released`
    and `requeued`."""

    CREATED = "created"
    LEASED = "leased"
    STARTED = "started"
    HEARTBEAT = "heartbeat"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELLED = "cancelled"
    LEASE_EXPIRED = "lease_expired"
    RELEASED = "released"  # claimed but never started, given back at shutdown
    REQUEUED = "requeued"  # a failed or cancelled run put back by an operator (`retry`)


@dataclass(frozen=True)
class NewRun:
    """A validated run to insert (see `Client.submit` for the meaning of each field)."""

    id: str
    type: str
    payload: str  # JSON text
    priority: int
    max_attempts: int
    idempotency_key: str | None
    run_at: datetime | None  # None: now, by the database clock
    created: str | None = None  # JSON data of its `created` event (e.g. which schedule fired)


@dataclass(frozen=True)
class Submitted:
    """What a submit did: the run's id, and whether this call created it.

    With an idempotency key that already existed, `created` is False and `id` is the
    existing run's id.
    """

    id: str
    created: bool

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class RunRecord:
    """A `workflow_run` row, as read back (the Go library's `WorkflowRunStatus`)."""

    id: str
    type: str
    payload: Any
    status: Status
    priority: int
    run_at: datetime
    idempotency_key: str | None
    attempt: int
    max_attempts: int
    leased_by: str | None
    lease_until: datetime | None
    last_error: str | None
    result: Any
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunRecord:
        return cls(
            id=str(row["id"]),
            type=row["type"],
            payload=row["payload"],
            status=Status(row["status"]),
            priority=row["priority"],
            run_at=row["run_at"],
            idempotency_key=row["idempotency_key"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            leased_by=row["leased_by"],
            lease_until=row["lease_until"],
            last_error=row["last_error"],
            result=row["result"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True)
class Event:
    """A `workflow_event` row."""

    id: int
    workflow_id: str
    event_type: EventType
    data: Any
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Event:
        return cls(
            id=row["id"],
            workflow_id=str(row["workflow_id"]),
            event_type=EventType(row["event_type"]),
            data=row["data"],
            created_at=row["created_at"],
        )


class Claimed(NamedTuple):  # a tuple: built per run on the hot path
    """A run this worker holds the lease on, for this attempt."""

    id: str
    type: str
    payload: Any
    attempt: int
    max_attempts: int
    created_at: datetime
    run_at: datetime  # when it became due (a retry's time, for a retried run)
    rescued: bool = False  # taken over from a worker whose lease expired

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Claimed:
        return cls(
            id=str(row["id"]),
            type=row["type"],
            payload=row["payload"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            created_at=row["created_at"],
            run_at=row["run_at"],
            rescued=bool(row["rescued"]),
        )


class Outcome(NamedTuple):  # a tuple: built and hashed per run on the hot path
    """The end of one attempt, to be written under the lease's fence.

    `status` is SUCCEEDED (with `result`), PENDING (a retry at `retry_at`, with `error`)
    or FAILED (with `error`). `started`: when the attempt began (`time.time()`), if its
    `started` event is still to be written (full audit trail), in the same statement.
    `traceback`: a failure's, for its `retried` or `failed` event's data.
    """

    id: str
    attempt: int
    status: Status
    result: str | None = None  # JSON text
    error: str | None = None
    retry_at: datetime | None = None
    started: float | None = None
    traceback: str | None = None


class LeaseState(enum.StrEnum):
    """What a heartbeat learned about one in-flight run."""

    HELD = "held"  # still ours; the lease was extended
    CANCELLED = "cancelled"  # cancelled by a producer: stop, the result will be discarded
    LOST = "lost"  # no longer ours (expired and re-claimed, or deleted)


class NextDue(NamedTuple):
    """When a run a pool serves comes due next (None: none is waiting), whether a due one is
    `held_back` by its type's concurrency limit (a completion may free its place), and whether
    one is `throttled`, waiting for its type's rate limit (`at` is then no later than the next
    token). Both still count as work for a drain."""

    at: datetime | None
    held_back: bool = False
    throttled: bool = False


DUE_SINCE_SECONDS = 2.0  # how far back `next_due` looks (after a claim that took all due then)


class Lease(NamedTuple):  # a tuple: built and hashed per run on the hot path
    """One attempt this worker holds: what every fenced statement checks."""

    id: str
    attempt: int


class Started(NamedTuple):  # a tuple: built and hashed per run on the hot path
    """An attempt that began executing at `at` (for the `started` event)."""

    id: str
    attempt: int
    at: datetime


@dataclass(frozen=True)
class RunFilter:
    """Filters for listing runs; every field is optional."""

    type: str | None = None
    status: Status | None = None
    idempotency_key: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    limit: int = DEFAULT_LIST_LIMIT
    offset: int = 0


@dataclass(frozen=True)
class TypeStats:
    """The queue of one run type."""

    type: str
    pending: int = 0  # waiting, due or not yet due
    due: int = 0  # pending and runnable now
    leased: int = 0  # held by a worker: in flight
    lag_seconds: float | None = None  # how long the oldest due run has waited since it was due
    failed_last_hour: int = 0  # runs that ended `failed` in the last hour


@dataclass(frozen=True)
class QueueStats:
    """What `swf-pool status`, `GET /stats` and the depth/lag metrics show."""

    at: datetime
    types: list[TypeStats]
    workers: dict[str, int]  # worker id -> runs it holds leases on
    registered: dict[str, str]  # type -> runtime, from workflow_registry
    dead_tuples: int | None = None  # dead rows in workflow_run (PostgreSQL): table bloat

    @classmethod
    def build(
        cls,
        at: datetime,
        depth: Iterable[Mapping[str, Any]],
        failures: Iterable[Mapping[str, Any]],
        holders: Iterable[Mapping[str, Any]],
        registered: Iterable[Mapping[str, Any]],
        dead_tuples: int | None,
    ) -> QueueStats:
        types: dict[str, dict[str, Any]] = {}
        for row in depth:
            entry = types.setdefault(row["type"], {"type": row["type"]})
            if row["status"] == Status.LEASED:
                entry["leased"] = row["depth"]
                continue
            entry["pending"], entry["due"] = row["depth"], row["due"] or 0
            if row["oldest_due"] is not None:
                entry["lag_seconds"] = max(0.0, (at - row["oldest_due"]).total_seconds())
        for row in failures:
            types.setdefault(row["type"], {"type": row["type"]})["failed_last_hour"] = row["failed"]
        return cls(
            at=at,
            types=[TypeStats(**types[name]) for name in sorted(types)],
            workers={row["leased_by"]: row["runs"] for row in holders},
            registered={row["workflow_name"]: row["runtime"] for row in registered},
            dead_tuples=dead_tuples,
        )

    def totals(self) -> TypeStats:
        lags = [t.lag_seconds for t in self.types if t.lag_seconds is not None]
        return TypeStats(
            "(all)",
            pending=sum(t.pending for t in self.types),
            due=sum(t.due for t in self.types),
            leased=sum(t.leased for t in self.types),
            lag_seconds=max(lags) if lags else None,
            failed_last_hour=sum(t.failed_last_hour for t in self.types),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "types": [dataclasses.asdict(t) for t in self.types],
            "totals": dataclasses.asdict(self.totals()),
            "workers": self.workers,
            "registered": self.registered,
            "dead_tuples": self.dead_tuples,
        }
