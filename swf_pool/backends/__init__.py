"""Storage backends: the one place where each database's SQL runs.

Both backends offer the same operations (`Backend`); everything above them (client, worker,
pool, migrations) is backend-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..dsn import PostgresTarget, Target, parse_dsn
from ..fleet import ControlChange, PoolMember, TypeControl
from ..migrate import Migration
from ..models import (
    Claimed,
    Event,
    Lease,
    LeaseState,
    NewRun,
    NextDue,
    Outcome,
    QueueStats,
    RunFilter,
    RunRecord,
    Started,
    Status,
    Submitted,
)
from ..schedules import FirePlan, Schedule

if TYPE_CHECKING:
    from .. import operations
    from ..listener import FinishedListener, Listener

# A ticker's decision for one due schedule: the runs to create and what happens next.
Planner = Callable[[Schedule], tuple[list[NewRun], FirePlan]]
Fired = tuple[Schedule, FirePlan, int]  # the schedule, its plan, how many runs were created


class Backend(Protocol):
    kind: str
    description: str  # where it points, without secrets

    def close(self) -> None: ...

    # a pool's statements
    def statements_at_once(self) -> int:
        """How many statements this backend runs at once (SQLite: one writer)."""
        ...

    def reserve_connections(self, count: int) -> None:
        """Make room for `count` statements at once (a pool sizes its connections)."""
        ...

    def listener(self, on_notify: Callable[[], None]) -> Listener | None:
        """A thread that calls `on_notify` when runs are inserted (None: polling only)."""
        ...

    def finished_listener(
        self, on_finished: Callable[[str | None], None]
    ) -> FinishedListener | None:
        """A thread that calls `on_finished` with the ids (comma-separated; empty: any)
        of runs that finished, or None when it may have missed some (None: polling only)."""
        ...

    # the producer's and the operator's operations (`swf_pool.operations`)
    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        """The operation `name` (a `Call`: one of the methods below) with `args`."""
        ...

    def bind(self, conn: object) -> operations.Target:
        """The producer's operations on a caller's connection, inside its transaction (an
        `InvalidConnection` if this backend cannot use it)."""
        ...

    # migrations
    def applied_versions(self) -> list[int]: ...
    def apply_migration(self, migration: Migration, up: bool) -> None: ...

    # producer side
    def submit(self, runs: Sequence[NewRun], audit_full: bool) -> list[Submitted]: ...
    def get(self, run_id: str) -> RunRecord | None: ...
    def list_runs(self, filters: RunFilter) -> list[RunRecord]: ...
    def events(self, run_id: str) -> list[Event]: ...
    def run_status(self, run_id: str) -> Status | None: ...
    def cancel(self, run_id: str) -> bool: ...

    # worker side
    def claim(
        self,
        worker_id: str,
        types: Sequence[str],
        prefixes: Sequence[str],
        limit: int,
        *,
        lease_seconds: float,
        audit_full: bool,
    ) -> list[Claimed]: ...
    def complete(
        self,
        worker_id: str,
        outcomes: Sequence[Outcome],
        started: Sequence[Started],
        audit_full: bool,
    ) -> set[Lease]: ...
    def heartbeat(
        self,
        worker_id: str,
        leases: Sequence[Lease],
        extend_seconds: float,
        record: bool,
        pool: PoolMember | None = None,
    ) -> dict[Lease, LeaseState]:
        """Renew `leases`, report each one's state; with `pool`, renew its row in the fleet."""
        ...

    def release(self, worker_id: str, leases: Sequence[Lease]) -> set[Lease]: ...
    def next_due(self, types: Sequence[str], prefixes: Sequence[str]) -> NextDue: ...

    # the fleet (swf_pool/fleet.py)
    def join_pool(self, member: PoolMember) -> None: ...
    def leave_pool(self, pool_id: str) -> None: ...
    def pools(self) -> list[PoolMember]: ...
    def type_controls(self) -> list[TypeControl]: ...
    def control_type(self, change: ControlChange) -> TypeControl: ...

    # operations
    def queue_stats(self, failures_since: datetime) -> QueueStats: ...
    def requeue(self, ids: Sequence[str]) -> list[str]: ...
    def requeue_candidates(
        self, status: Status, type: str | None, since: datetime | None, after: str, limit: int
    ) -> list[str]: ...
    def prune_batch(
        self, after: str, before: datetime, statuses: Sequence[str], limit: int, dry_run: bool
    ) -> tuple[str | None, int, int]: ...
    def table_rows(self) -> int: ...
    def throughput(self, since: datetime) -> list[tuple[datetime, int, int]]: ...
    def register(self, names: Sequence[str]) -> None: ...

    # schedules
    def create_schedule(self, values: dict[str, Any]) -> None: ...
    def get_schedule(self, schedule_id: str) -> Schedule | None: ...
    def list_schedules(self) -> list[Schedule]: ...
    def update_schedule(self, values: dict[str, Any]) -> bool: ...
    def delete_schedule(self, schedule_id: str) -> bool: ...
    def fire_schedules(self, now: datetime, limit: int, planner: Planner) -> list[Fired]: ...
    def next_schedule_due(self) -> datetime | None: ...


def open_backend(dsn: str | Target, *, pool_size: int = 4, create: bool = True) -> Backend:
    """Connect to the database named by `dsn` (see `swf_pool.dsn`). `create`: a SQLite file
    that does not exist yet may be made (else that is `SchemaNotReady`: a mistyped path?)."""
    target = parse_dsn(dsn) if isinstance(dsn, str) else dsn
    if isinstance(target, PostgresTarget):
        from .postgres import PostgresBackend

        return PostgresBackend(target, pool_size=pool_size)
    from .sqlite import SqliteBackend

    return SqliteBackend(target, create=create)


def lease_state(held: bool, status: str | None) -> LeaseState:
    """Classify one heartbeat row."""
    if held:
        return LeaseState.HELD
    if status == Status.CANCELLED:
        return LeaseState.CANCELLED
    return LeaseState.LOST
