"""SQLite rows and errors: times and JSON in and out, events, and what sqlite3's errors mean
to us; shared by the backend and the calls made on a caller's connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from .. import codec, queries
from ..errors import (
    ConnectError,
    DatabaseError,
    DataRejected,
    SchemaNotReady,
    SwfError,
    UndecodableRun,
)
from ..gotime import parse_time
from ..models import EventType, NewRun, Status, Submitted

Q = queries.load("sqlite")
_TIME_COLUMNS = ("run_at", "lease_until", "created_at", "updated_at", "next_run_at", "last_run_at")
_JSON_COLUMNS = ("payload", "result", "data")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class Db(Protocol):
    """What statements run on: the backend's connection, or a caller's (see `RowCursors`)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> sqlite3.Cursor: ...


def format_time(moment: datetime) -> str:
    """UTC text with microseconds; its first 19 characters are the Go library's format."""
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def time_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def now_text() -> str:
    return format_time(datetime.now(UTC))


def decode_row(row: sqlite3.Row, raw_json: bool = False) -> dict[str, Any]:
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


def translate(exc: sqlite3.Error, description: str, path: str) -> SwfError:
    """The error of ours that `exc` means (see `failure_kind`), its cause kept."""
    kind = failure_kind(exc)
    if kind == "no_schema":
        return SchemaNotReady(
            f"{exc} in {path!r}: run `swf-pool migrate up` (or pass migrate=True)"
        )
    error = {"lost": ConnectError, "refused": DataRejected}.get(kind, DatabaseError)
    result = error(f"{description}: {exc}")
    result.__cause__ = exc
    return result


def submit_runs(db: Db, runs: Sequence[NewRun], audit_full: bool, now: str) -> list[Submitted]:
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
            "run_at": time_or_none(run.run_at),
        }
        if db.execute(Q["submit"], params).fetchone():
            out.append(Submitted(run.id, True))
            if audit_full or run.created is not None:
                data = None if run.created is None else codec.decode(run.created)
                event(db, run.id, EventType.CREATED, data, now)
        else:
            row = db.execute(Q["id_by_key"], {"key": run.idempotency_key}).fetchone()
            out.append(Submitted(row["id"], False))
    return out


def cancel_run(db: Db, run_id: str, now: str) -> bool:
    """Cancel a pending or leased run, with its event; False if it is neither."""
    if not db.execute(Q["cancel"], {"id": run_id, "now": now}).fetchone():
        return False
    event(db, run_id, EventType.CANCELLED, None, now)
    return True


def run_status(db: Db, run_id: str) -> Status | None:
    row = db.execute(Q["run_status"], {"id": run_id}).fetchone()
    return Status(row["status"]) if row else None


def create_schedule(db: Db, values: dict[str, Any]) -> None:
    db.execute(Q["create_schedule"], {**schedule_params(values), "now": now_text()})


def fail_run(db: Db, run_id: str, attempt: int, error: str, now: str) -> None:
    """Fail a claimed run at once (lease cleared) with its `failed` event."""
    db.execute(Q["exhaust"], {"id": run_id, "error": error, "now": now})
    event(db, run_id, EventType.FAILED, {"attempt": attempt, "error": error}, now)


def lease_expired(db: Db, row: Any, now: str) -> None:
    """The `lease_expired` event of an expired lease taken over (rescued, or failed)."""
    data = {"worker_id": row["leased_by"], "attempt": row["attempt"]}
    event(db, row["id"], EventType.LEASE_EXPIRED, data, now)


def event(db: Db, run_id: str, kind: EventType, data: Any, now: str) -> None:
    encoded = None if data is None else codec.encode(data, "event data")
    db.execute(Q["insert_event"], {"id": run_id, "event": kind.value, "data": encoded, "now": now})


def schedule_params(values: dict[str, Any]) -> dict[str, Any]:
    return {**values, "next_run_at": format_time(values["next_run_at"])}


def statements(script: str) -> list[str]:
    """Split a migration into statements (ours hold no semicolons inside literals)."""
    return [
        part.strip()
        for part in script.split(";")
        if part.strip() and not all(line.startswith("--") for line in part.strip().splitlines())
    ]
