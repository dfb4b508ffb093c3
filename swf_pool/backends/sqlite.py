"""SQLite backend: one connection per backend object, serialised by a lock.

Writes that must be atomic run in `BEGIN IMMEDIATE` transactions, so several processes can
share one database file (WAL mode; each waits its turn up to the busy timeout).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .. import codec, queries
from ..dsn import SqliteTarget
from ..errors import (
    ConnectError,
    DatabaseError,
    DataRejected,
    MigrationError,
    SchemaNotReady,
    UndecodableRun,
)
from ..gotime import parse_time
from ..migrate import Migration
from ..models import (
    Claimed,
    Event,
    EventType,
    Lease,
    LeaseState,
    NewRun,
    Outcome,
    QueueStats,
    RunFilter,
    RunRecord,
    Started,
    Status,
    Submitted,
)
from ..schedules import Schedule
from . import Fired, Planner, lease_state

Q = queries.load("sqlite")
log = logging.getLogger("swf_pool.sqlite")
BUSY_TIMEOUT_SECONDS = 30.0
_TIME_COLUMNS = ("run_at", "lease_until", "created_at", "updated_at", "next_run_at", "last_run_at")
_JSON_COLUMNS = ("payload", "result", "data")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def format_time(moment: datetime) -> str:
    """UTC text with microseconds; its first 19 characters are the Go library's format."""
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def _time_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def _now() -> str:
    return format_time(datetime.now(UTC))


def _dict(row: sqlite3.Row, raw_json: bool = False) -> dict[str, Any]:
    """The row with its times and JSON decoded, or UndecodableRun naming what is not.

    `raw_json`: JSON that cannot be decoded is kept as its text instead (reading runs: a run
    another client wrote badly can still be seen, listed and its failure read)."""
    out = dict(row)
    for column in _TIME_COLUMNS:
        if column in out:
            try:
                out[column] = parse_time(out[column])
            except ValueError as exc:
                raise _undecodable(out, column, str(exc)) from None
    for column in _JSON_COLUMNS:
        if column in out:
            try:
                out[column] = codec.decode(out[column])
            except ValueError as exc:  # orjson.JSONDecodeError
                if not raw_json:
                    value = codec.clean_text(repr(out[column]), 200)
                    raise _undecodable(out, column, f"{value} is not JSON ({exc})") from None
                raw = out[column]
                out[column] = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return out


def _undecodable(row: dict[str, Any], column: str, why: str) -> UndecodableRun:
    if "workflow_id" in row:
        owner = f"event {row['id']} of run {row['workflow_id']}"
    else:
        owner = f"{'schedule' if 'schedule' in row else 'run'} {row.get('id')}"
    return UndecodableRun(codec.clean_text(f"{column} of {owner}: {why}", 1000))


class SqliteBackend:
    kind = "sqlite"

    def __init__(self, target: SqliteTarget, *, create: bool = True) -> None:
        self.target = target
        self.description = f"sqlite {target.path}"
        self._lock = threading.RLock()
        if not create and target.path != ":memory:" and not os.path.exists(target.path):
            raise SchemaNotReady(
                f"no SQLite database at {target.path!r}: check the path, or create it with "
                "`swf-pool migrate up` (or --auto-migrate)"
            )
        try:
            self._db = sqlite3.connect(
                target.path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            if target.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            # LIKE patterns are type prefixes: case matters, as on PostgreSQL.
            self._db.execute("PRAGMA case_sensitive_like = ON")
        except sqlite3.Error as exc:
            raise ConnectError(f"cannot open SQLite database {target.path!r}: {exc}") from None
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def statements_at_once(self) -> int:
        return 1  # one connection, one writer

    def reserve_connections(self, count: int) -> None:
        pass

    def listener(self, on_notify: Callable[[], None]) -> None:
        return None  # no NOTIFY: pools poll

    @contextmanager
    def _tx(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute(f"BEGIN {mode}")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    # (after an I/O error or a full disk SQLite may have rolled back already)
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                kind = failure_kind(exc)
                if kind == "no_schema":
                    raise SchemaNotReady(
                        f"{exc} in {self.target.path!r}: run `swf-pool migrate up` "
                        "(or pass migrate=True)"
                    ) from None
                error = {"lost": ConnectError, "refused": DataRejected}.get(kind, DatabaseError)
                raise error(f"{self.description}: {exc}") from exc

    def _rows(
        self, name: str, params: dict[str, Any], raw_json: bool = False
    ) -> list[dict[str, Any]]:
        with self._tx("DEFERRED") as db:
            return [_dict(row, raw_json) for row in db.execute(Q[name], params)]

    # -- migrations ---------------------------------------------------------------------------

    def applied_versions(self) -> list[int]:
        with self._tx("DEFERRED") as db:
            if not db.execute(Q["version_table_exists"]).fetchone()["present"]:
                return []
            return [row["version_id"] for row in db.execute(Q["applied_versions"])]

    def apply_migration(self, migration: Migration, up: bool) -> None:
        try:
            with self._tx() as db:
                for statement in _statements(Q["create_version_table"]):
                    db.execute(statement)
                for statement in _statements(migration.up if up else migration.down):
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
            return _submit(db, runs, audit_full, _now())

    def get(self, run_id: str) -> RunRecord | None:
        rows = self._rows("get_run", {"id": run_id}, raw_json=True)
        return RunRecord.from_row(rows[0]) if rows else None

    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        params = {
            "type": filters.type,
            "status": filters.status.value if filters.status else None,
            "key": filters.idempotency_key,
            "after": _time_or_none(filters.created_after),
            "before": _time_or_none(filters.created_before),
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
        now = _now()
        with self._tx() as db:
            if not db.execute(Q["cancel"], {"id": run_id, "now": now}).fetchone():
                return False
            _event(db, run_id, EventType.CANCELLED, None, now)
            return True

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
            rescued = {}
            for row in db.execute(Q["expired"], match).fetchall():
                _event(
                    db,
                    row["id"],
                    EventType.LEASE_EXPIRED,
                    {"worker_id": row["leased_by"], "attempt": row["attempt"]},
                    now,
                )
                if row["attempt"] >= row["max_attempts"]:
                    error = (
                        f"lease expired on attempt {row['attempt']} of "
                        f"{row['max_attempts']}: worker {row['leased_by']} stopped "
                        "without completing it"
                    )
                    _fail(db, row["id"], row["attempt"], error, now)
                else:
                    rescued[row["id"]] = row["leased_by"]
            ids = list(rescued)[:limit]
            if len(ids) < limit:
                ids += [
                    row["id"]
                    for row in db.execute(Q["pending"], {**match, "limit": limit - len(ids)})
                ]
            for run_id in ids:
                params = {"id": run_id, "worker": worker_id, "now": now, "lease_until": lease_until}
                leased = db.execute(Q["lease"], params).fetchone()
                if audit_full:
                    data = {"worker_id": worker_id, "attempt": leased["attempt"]}
                    _event(db, run_id, EventType.LEASED, data, now)
                try:
                    row = _dict(leased)
                except UndecodableRun as exc:  # written by another client: no attempt can run
                    log.warning("UndecodableRun: %s (the run is failed)", exc)
                    _fail(db, run_id, leased["attempt"], f"UndecodableRun: {exc}", now)
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
        now = _now()
        done = set()
        with self._tx() as db:
            if audit_full:
                for s in started:
                    fence = {"id": s.id, "attempt": s.attempt, "worker": worker_id}
                    if db.execute(Q["holds"], fence).fetchone():
                        data = {"worker_id": worker_id}
                        _event(db, s.id, EventType.STARTED, data, format_time(s.at))
            for o in outcomes:
                params = {
                    "id": o.id,
                    "attempt": o.attempt,
                    "worker": worker_id,
                    "now": now,
                    "status": o.status.value,
                    "result": o.result,
                    "error": o.error,
                    "retry_at": _time_or_none(o.retry_at),
                }
                if not db.execute(Q["complete"], params).fetchone():
                    continue
                done.add(Lease(o.id, o.attempt))
                if audit_full and o.started is not None:
                    data = {"worker_id": worker_id}
                    began = datetime.fromtimestamp(o.started, UTC)
                    _event(db, o.id, EventType.STARTED, data, format_time(began))
                if o.status is Status.SUCCEEDED:
                    if audit_full:
                        _event(db, o.id, EventType.SUCCEEDED, None, now)
                else:
                    kind = EventType.RETRIED if o.status is Status.PENDING else EventType.FAILED
                    trace = {} if o.traceback is None else {"traceback": o.traceback}
                    _event(db, o.id, kind, {"attempt": o.attempt, "error": o.error, **trace}, now)
        return done

    def heartbeat(
        self, worker_id: str, leases: Sequence[Lease], extend_seconds: float, record: bool
    ) -> dict[Lease, LeaseState]:
        moment = datetime.now(UTC)
        now = format_time(moment)
        until = format_time(moment + timedelta(seconds=extend_seconds))
        states = {}
        with self._tx() as db:
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
                    _event(db, lease.id, EventType.HEARTBEAT, data, now)
                status = db.execute(Q["run_status"], {"id": lease.id}).fetchone()
                states[lease] = lease_state(held, status["status"] if status else None)
        return states

    def release(self, worker_id: str, leases: Sequence[Lease]) -> set[Lease]:
        now = _now()
        released = set()
        with self._tx() as db:
            for lease in leases:
                params = {"id": lease.id, "attempt": lease.attempt, "worker": worker_id, "now": now}
                if db.execute(Q["release"], params).fetchone():
                    released.add(lease)
                    data = {"worker_id": worker_id, "attempt": lease.attempt}
                    _event(db, lease.id, EventType.RELEASED, data, now)
        return released

    def next_due(self, types: Sequence[str], prefixes: Sequence[str]) -> datetime | None:
        params = {"types": codec.encode(list(types)), "prefixes": codec.encode(list(prefixes))}
        due = self._rows("next_due", params)[0]["due"]
        try:
            return parse_time(due)
        except ValueError:  # a run_at in no known form sorts after every date: never due
            return None

    # -- operations ---------------------------------------------------------------------------

    def queue_stats(self, failures_since: datetime) -> QueueStats:
        moment = datetime.now(UTC)
        params = {"now": format_time(moment), "since": format_time(failures_since)}
        with self._tx("DEFERRED") as db:
            rows = {
                name: [_dict(row) for row in db.execute(Q[name], params)]
                for name in ("queue_depth", "failures_since", "lease_holders", "registered_types")
            }
        for row in rows["queue_depth"]:
            row["oldest_due"] = parse_time(row["oldest_due"])
        return QueueStats.build(
            moment,
            rows["queue_depth"],
            rows["failures_since"],
            rows["lease_holders"],
            rows["registered_types"],
            None,
        )

    def requeue(self, ids: Sequence[str]) -> list[str]:
        now = _now()
        done = []
        with self._tx() as db:
            for run_id in ids:
                old = db.execute(Q["run_state"], {"id": run_id}).fetchone()
                if old is None:
                    continue
                db.execute(Q["requeue_one"], {"id": run_id, "now": now})
                data = {"from": old["status"], "attempts_used": old["attempt"]}
                _event(db, run_id, EventType.REQUEUED, data, now)
                done.append(run_id)
        return done

    def requeue_candidates(
        self, status: Status, type: str | None, since: datetime | None, after: str, limit: int
    ) -> list[str]:
        params = {
            "status": status.value,
            "type": type,
            "since": _time_or_none(since),
            "after": after,
            "limit": limit,
        }
        return [row["id"] for row in self._rows("requeue_candidates", params)]

    def prune_batch(
        self, after: str, before: datetime, statuses: Sequence[str], limit: int, dry_run: bool
    ) -> tuple[str | None, int, int]:
        with self._tx() as db:
            scanned = [
                row["id"] for row in db.execute(Q["prune_scan"], {"after": after, "limit": limit})
            ]
            if not scanned:
                return None, 0, 0
            params = {
                "ids": codec.encode(scanned),
                "statuses": codec.encode(list(statuses)),
                "before": format_time(before),
            }
            matched = [row["id"] for row in db.execute(Q["prune_match"], params)]
            if matched and not dry_run:
                db.execute(Q["prune_delete"], {"ids": codec.encode(matched)})
        return scanned[-1], len(scanned), len(matched)

    def throughput(self, since: datetime) -> list[tuple[datetime, int, int]]:
        rows = self._rows("throughput", {"since": format_time(since)})
        out = []
        for row in rows:
            minute = parse_time(row["minute"])
            assert minute is not None
            out.append((minute, row["succeeded"], row["failed"]))
        return out

    def table_rows(self) -> int:
        return int(self._rows("table_rows", {})[0]["estimate"])

    def register(self, names: Sequence[str]) -> None:
        now = _now()
        with self._tx() as db:
            for name in sorted(set(names)):
                db.execute(Q["register"], {"id": str(uuid.uuid4()), "name": name, "now": now})

    # -- schedules ----------------------------------------------------------------------------

    def create_schedule(self, values: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(Q["create_schedule"], {**_schedule_params(values), "now": _now()})

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        rows = self._rows("get_schedule", {"id": schedule_id})
        return Schedule.from_row(rows[0]) if rows else None

    def list_schedules(self) -> list[Schedule]:
        return [Schedule.from_row(row) for row in self._rows("list_schedules", {})]

    def update_schedule(self, values: dict[str, Any]) -> bool:
        params = {**_schedule_params(values), "now": _now()}
        return bool(self._rows("update_schedule", params))

    def delete_schedule(self, schedule_id: str) -> bool:
        return bool(self._rows("delete_schedule", {"id": schedule_id, "now": _now()}))

    def fire_schedules(self, now: datetime, limit: int, planner: Planner) -> list[Fired]:
        """Fire the due schedules in one BEGIN IMMEDIATE transaction (tickers take turns)."""
        fired: list[Fired] = []
        stamp = _now()
        with self._tx() as db:
            due = db.execute(Q["due_schedules"], {"now": format_time(now), "limit": limit})
            for row in due.fetchall():
                schedule = Schedule.from_row(_dict(row))
                runs, plan = planner(schedule)
                if plan.next_run_at is None:
                    params = {"id": schedule.id, "error": plan.error, "now": stamp}
                    db.execute(Q["disable_schedule"], params)
                    fired.append((schedule, plan, 0))
                    continue
                created = sum(s.created for s in _submit(db, runs, True, stamp))
                last = plan.fires[-1] if plan.fires else schedule.last_run_at
                db.execute(
                    Q["advance_schedule"],
                    {
                        "id": schedule.id,
                        "now": stamp,
                        "last_run_at": _time_or_none(last),
                        "next_run_at": format_time(plan.next_run_at),
                    },
                )
                fired.append((schedule, plan, created))
        return fired

    def next_schedule_due(self) -> datetime | None:
        return parse_time(self._rows("next_schedule_due", {})[0]["due"])


# What a failed statement means to us (see `failure_kind`).
Failure = Literal["lost", "refused", "no_schema", "other"]
_LOST_CODES = (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN)
_REFUSED_CODES = (sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH)


def failure_kind(exc: sqlite3.Error) -> Failure:
    """What an sqlite3 error means, by SQLite's result code. "lost": the file cannot be opened
    or read (a disk I/O error, "unable to open"). "refused": a constraint failed, or a value
    is over SQLite's limits ("string or blob too big"). "no_schema": a missing table. "other":
    the rest, e.g. "database is locked" (only after the busy timeout) or a full disk."""
    code = getattr(exc, "sqlite_errorcode", None)  # absent when raised by the sqlite3 module
    primary = None if code is None else code & 0xFF  # the extended code's low byte
    if primary in _LOST_CODES:
        return "lost"
    if primary in _REFUSED_CODES or isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return "refused"
    if "no such table" in str(exc):
        return "no_schema"
    return "other"


def _submit(
    db: sqlite3.Connection, runs: Sequence[NewRun], audit_full: bool, now: str
) -> list[Submitted]:
    out = []
    for run in runs:
        params = {
            "id": run.id,
            "type": run.type,
            "payload": run.payload,
            "priority": run.priority,
            "max_attempts": run.max_attempts,
            "key": run.idempotency_key,
            "now": now,
            "run_at": _time_or_none(run.run_at),
        }
        if db.execute(Q["submit"], params).fetchone():
            out.append(Submitted(run.id, True))
            if audit_full or run.created is not None:
                data = None if run.created is None else codec.decode(run.created)
                _event(db, run.id, EventType.CREATED, data, now)
        else:
            row = db.execute(Q["id_by_key"], {"key": run.idempotency_key}).fetchone()
            out.append(Submitted(row["id"], False))
    return out


def _fail(db: sqlite3.Connection, run_id: str, attempt: int, error: str, now: str) -> None:
    """Fail a claimed run at once (lease cleared) with its `failed` event."""
    db.execute(Q["exhaust"], {"id": run_id, "error": error, "now": now})
    _event(db, run_id, EventType.FAILED, {"attempt": attempt, "error": error}, now)


def _event(db: sqlite3.Connection, run_id: str, kind: EventType, data: Any, now: str) -> None:
    encoded = None if data is None else codec.encode(data, "event data")
    db.execute(Q["insert_event"], {"id": run_id, "event": kind.value, "data": encoded, "now": now})


def _schedule_params(values: dict[str, Any]) -> dict[str, Any]:
    return {**values, "next_run_at": format_time(values["next_run_at"])}


def _statements(script: str) -> list[str]:
    """Split a migration into statements (ours hold no semicolons inside literals)."""
    return [
        part.strip()
        for part in script.split(";")
        if part.strip() and not all(line.startswith("--") for line in part.strip().splitlines())
    ]
