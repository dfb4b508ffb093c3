"""SQLite backend: one connection per backend object, serialised by a lock (`SqliteFile`);
the producer's and the worker's statements here, the operator's in `SqliteOperations`.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import codec
from ..errors import DatabaseError, InvalidConnection, MigrationError, UndecodableRun
from ..fleet import PoolMember
from ..gotime import parse_time
from ..migrate import Migration
from ..models import (
    Claimed,
    Event,
    EventType,
    Lease,
    LeaseState,
    NewRun,
    NextDue,
    Outcome,
    RunFilter,
    RunRecord,
    Started,
    Status,
    Submitted,
)
from ..schedules import Schedule
from . import Fired, Planner, lease_state, sqlite_fleet
from .sqlite_caller import SqliteCaller
from .sqlite_fleet import SqliteFleet
from .sqlite_ops import SqliteOperations
from .sqlite_rows import (
    Q,
    cancel_run,
    decode_row,
    event,
    fail_run,
    failure_kind,
    format_time,
    lease_expired,
    now_text,
    statements,
    submit_runs,
    time_or_none,
)

__all__ = ["SqliteBackend", "failure_kind", "format_time"]  # (where they used to live)
log = logging.getLogger("swf_pool.sqlite")


class SqliteBackend(SqliteOperations, SqliteFleet):
    kind = "sqlite"

    def statements_at_once(self) -> int:
        return 1  # one connection, one writer

    def reserve_connections(self, count: int) -> None:
        pass

    def listener(self, on_notify: Callable[[], None]) -> None:
        return None  # no NOTIFY: pools poll

    def finished_listener(self, on_finished: Callable[[str | None], None]) -> None:
        return None  # no NOTIFY: waits poll

    def bind(self, conn: object) -> SqliteCaller:
        """This backend's operations on a caller's connection, inside its transaction."""
        if not isinstance(conn, sqlite3.Connection):
            raise InvalidConnection(
                f"a SQLite client writes through a sqlite3.Connection, got "
                f"{type(conn).__module__}.{type(conn).__name__}"
            )
        return SqliteCaller(conn, self.target, self.description)

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        """The operation `name` (a `swf_pool.operations.Call`): the method of that name."""
        return getattr(self, name)(*args)

    # -- migrations ---------------------------------------------------------------------------

    def applied_versions(self) -> list[int]:
        with self._tx("DEFERRED") as db:
            if not db.execute(Q["version_table_exists"]).fetchone()["present"]:
                return []
            return [row["version_id"] for row in db.execute(Q["applied_versions"])]

    def apply_migration(self, migration: Migration, up: bool) -> None:
        try:
            with self._tx() as db:
                for statement in statements(Q["create_version_table"]):
                    db.execute(statement)
                for statement in statements(migration.up if up else migration.down):
                    db.execute(statement)
                record = "record_version" if up else "forget_version"
                db.execute(Q[record], {"version": migration.version})
        except DatabaseError as exc:
            raise MigrationError(
                f"migration {migration.version} ({migration.name}) failed: {exc}"
            ) from exc

    # -- producer side ------------------------------------------------------------------------

    def submit(self, runs: Sequence[NewRun], audit_full: bool) -> list[Submitted]:
        with self._tx() as db:
            return submit_runs(db, runs, audit_full, now_text())

    def get(self, run_id: str) -> RunRecord | None:
        rows = self._rows("get_run", {"id": run_id}, raw_json=True)
        return RunRecord.from_row(rows[0]) if rows else None

    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        params = {
            "type": filters.type,
            "status": filters.status.value if filters.status else None,
            "key": filters.idempotency_key,
            "after": time_or_none(filters.created_after),
            "before": time_or_none(filters.created_before),
            "limit": filters.limit,
            "offset": filters.offset,
        }
        return [RunRecord.from_row(row) for row in self._rows("list_runs", params, raw_json=True)]

    def events(self, run_id: str) -> list[Event]:
        rows = self._rows("list_events", {"id": run_id}, raw_json=True)
        return [Event.from_row(row) for row in rows]

    def run_status(self, run_id: str) -> Status | None:
        rows = self._rows("run_status", {"id": run_id})
        return Status(rows[0]["status"]) if rows else None

    def cancel(self, run_id: str) -> bool:
        with self._tx() as db:
            return cancel_run(db, run_id, now_text())

    # -- worker side --------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        types: Sequence[str],
        prefixes: Sequence[str],
        limit: int,
        *,
        lease_seconds: float,
        audit_full: bool,
    ) -> list[Claimed]:
        moment = datetime.now(UTC)
        now = format_time(moment)
        lease_until = format_time(moment + timedelta(seconds=lease_seconds))
        match = {
            "types": codec.encode(list(types)),
            "prefixes": codec.encode(list(prefixes)),
            "now": now,
            "limit": limit,
        }
        claimed = []
        with self._tx() as db:
            rescued: dict[str, dict[str, Any]] = {}
            for row in db.execute(Q["expired"], match).fetchall():
                if row["attempt"] >= row["max_attempts"]:
                    lease_expired(db, row, now)
                    error = (
                        f"lease expired on attempt {row['attempt']} of "
                        f"{row['max_attempts']}: worker {row['leased_by']} stopped "
                        "without completing it"
                    )
                    fail_run(db, row["id"], row["attempt"], error, now)
                else:
                    rescued[row["id"]] = dict(row)
            # rescues and pending runs together in claim order (the Go library's)
            controlled = sqlite_fleet.pending(db, match, limit, moment)
            found: list[dict[str, Any]] = [*rescued.values()]
            found += [dict(row) for row in db.execute(Q["pending"], match)] \
                if controlled is None else controlled  # fmt: skip
            found.sort(key=lambda row: (row["priority"], row["created_at"]))
            for run_id in [row["id"] for row in found[:limit]]:
                if run_id in rescued:  # a rescue not taken now stays leased, its event unwritten
                    lease_expired(db, rescued[run_id], now)
                params = {"id": run_id, "worker": worker_id, "now": now, "lease_until": lease_until}
                leased = db.execute(Q["lease"], params).fetchone()
                if audit_full:
                    data = {"worker_id": worker_id, "attempt": leased["attempt"]}
                    event(db, run_id, EventType.LEASED, data, now)
                try:
                    row = decode_row(leased)
                except UndecodableRun as exc:  # written by another client: no attempt can run
                    log.warning("UndecodableRun: %s (the run is failed)", exc)
                    fail_run(db, run_id, leased["attempt"], f"UndecodableRun: {exc}", now)
                    continue
                row["rescued"] = run_id in rescued
                claimed.append(row)
        claimed.sort(key=lambda row: (row["priority"], row["created_at"]))
        return [Claimed.from_row(row) for row in claimed]

    def complete(
        self,
        worker_id: str,
        outcomes: Sequence[Outcome],
        started: Sequence[Started],
        audit_full: bool,
    ) -> set[Lease]:
        now = now_text()
        done = set()
        with self._tx() as db:
            if audit_full:
                for s in started:
                    fence = {"id": s.id, "attempt": s.attempt, "worker": worker_id}
                    if db.execute(Q["holds"], fence).fetchone():
                        data = {"worker_id": worker_id}
                        event(db, s.id, EventType.STARTED, data, format_time(s.at))
            for o in outcomes:
                params = {
                    "id": o.id,
                    "attempt": o.attempt,
                    "worker": worker_id,
                    "now": now,
                    "status": o.status.value,
                    "result": o.result,
                    "error": o.error,
                    "retry_at": time_or_none(o.retry_at),
                }
                if not db.execute(Q["complete"], params).fetchone():
                    continue
                done.add(Lease(o.id, o.attempt))
                if audit_full and o.started is not None:
                    data = {"worker_id": worker_id}
                    began = datetime.fromtimestamp(o.started, UTC)
                    event(db, o.id, EventType.STARTED, data, format_time(began))
                if o.status is Status.SUCCEEDED:
                    if audit_full:
                        event(db, o.id, EventType.SUCCEEDED, None, now)
                else:
                    kind = EventType.RETRIED if o.status is Status.PENDING else EventType.FAILED
                    trace = {} if o.traceback is None else {"traceback": o.traceback}
                    event(db, o.id, kind, {"attempt": o.attempt, "error": o.error, **trace}, now)
        return done

    def heartbeat(
        self,
        worker_id: str,
        leases: Sequence[Lease],
        extend_seconds: float,
        record: bool,
        pool: PoolMember | None = None,
    ) -> dict[Lease, LeaseState]:
        moment = datetime.now(UTC)
        now = format_time(moment)
        until = format_time(moment + timedelta(seconds=extend_seconds))
        states = {}
        with self._tx() as db:
            if pool is not None:
                sqlite_fleet.beat(db, pool, now)
            for lease in leases:
                params = {
                    "id": lease.id,
                    "attempt": lease.attempt,
                    "worker": worker_id,
                    "now": now,
                    "lease_until": until,
                }
                held = db.execute(Q["extend"], params).fetchone() is not None
                if held and record:
                    data = {"extended_by_seconds": extend_seconds}
                    event(db, lease.id, EventType.HEARTBEAT, data, now)
                status = db.execute(Q["run_status"], {"id": lease.id}).fetchone()
                states[lease] = lease_state(held, status["status"] if status else None)
        return states

    def release(self, worker_id: str, leases: Sequence[Lease]) -> set[Lease]:
        now = now_text()
        released = set()
        with self._tx() as db:
            for lease in leases:
                params = {"id": lease.id, "attempt": lease.attempt, "worker": worker_id, "now": now}
                if db.execute(Q["release"], params).fetchone():
                    released.add(lease)
                    data = {"worker_id": worker_id, "attempt": lease.attempt}
                    event(db, lease.id, EventType.RELEASED, data, now)
        return released

    def next_due(self, types: Sequence[str], prefixes: Sequence[str]) -> NextDue:
        moment = datetime.now(UTC)
        match = {
            "types": codec.encode(list(types)),
            "prefixes": codec.encode(list(prefixes)),
            "now": format_time(moment),
        }
        with self._tx("DEFERRED") as db:
            return sqlite_fleet.next_due(db, match, moment)

    def register(self, names: Sequence[str]) -> None:
        now = now_text()
        with self._tx() as db:
            for name in sorted(set(names)):
                db.execute(Q["register"], {"id": str(uuid.uuid4()), "name": name, "now": now})

    # -- the schedule ticker --------------------------------------------------------------------

    def fire_schedules(self, now: datetime, limit: int, planner: Planner) -> list[Fired]:
        """Fire the due schedules in one BEGIN IMMEDIATE transaction (tickers take turns)."""
        fired: list[Fired] = []
        stamp = now_text()
        with self._tx() as db:
            due = db.execute(Q["due_schedules"], {"now": format_time(now), "limit": limit})
            for row in due.fetchall():
                schedule = Schedule.from_row(decode_row(row))
                runs, plan = planner(schedule)
                if plan.next_run_at is None:
                    params = {"id": schedule.id, "error": plan.error, "now": stamp}
                    db.execute(Q["disable_schedule"], params)
                    fired.append((schedule, plan, 0))
                    continue
                created = sum(s.created for s in submit_runs(db, runs, True, stamp))
                last = plan.fires[-1] if plan.fires else schedule.last_run_at
                db.execute(
                    Q["advance_schedule"],
                    {
                        "id": schedule.id,
                        "now": stamp,
                        "last_run_at": time_or_none(last),
                        "next_run_at": format_time(plan.next_run_at),
                    },
                )
                fired.append((schedule, plan, created))
        return fired

    def next_schedule_due(self) -> datetime | None:
        return parse_time(self._rows("next_schedule_due", {})[0]["due"])
