"""Connecting to PostgreSQL, and what its errors mean to us: shared by the synchronous
backend, the asynchronous one, the listeners and the calls made on a caller's connection."""

from __future__ import annotations

from typing import Any, Literal

import psycopg

from ..dsn import PostgresTarget, redact
from ..errors import ConnectError, DatabaseError, DataRejected, SchemaNotReady, SwfError

CONNECT_TIMEOUT_SECONDS = 10.0

# What a failed statement means to us (see `failure_kind`).
Failure = Literal["lost", "refused", "transient", "no_schema", "other"]
LOST_STATES = frozenset(
    {
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown (pg_terminate_backend, a fast shutdown)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, shutting down, in recovery)
        "57P04",  # database_dropped
        "57P05",  # idle_session_timeout
    }
)
REFUSED_CLASSES = ("22", "23", "54")  # data exception, integrity, program limit exceeded
TRANSIENT_STATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def failure_kind(exc: psycopg.Error) -> Failure:
    """What a psycopg error means, by its SQLSTATE (psycopg's classes mix them up: a dropped
    socket, a deadlock and a too-long index row are all `OperationalError`).

    "lost": the connection is gone or refused (class 08, a shutdown, a pool timeout, or an
    `OperationalError` with no SQLSTATE: libpq's own, the socket died). "refused": the data
    (classes 22, 23 and 54, or text with a NUL, which psycopg will not send). "transient": a
    deadlock victim or serialization failure, rolled back, to run again. "no_schema": a missing
    table. "other": the rest (a cancelled statement or statement timeout, a full disk, a bug
    in our SQL)."""
    state = exc.sqlstate
    if state is None:  # raised by psycopg or libpq, not by the server
        if isinstance(exc, psycopg.OperationalError):
            return "lost"
        return "refused" if isinstance(exc, psycopg.DataError) else "other"
    if state.startswith("08") or state in LOST_STATES:
        return "lost"
    if state.startswith(REFUSED_CLASSES):
        return "refused"
    if state in TRANSIENT_STATES:
        return "transient"
    if state == "42P01":  # undefined_table
        return "no_schema"
    return "other"


class Transient(DatabaseError):
    """A deadlock victim or serialization failure: the work may be run again."""


def translate(exc: psycopg.Error, description: str, schema: str) -> SwfError:
    """The error of ours that `exc` means (see `failure_kind`), its cause kept."""
    kind = failure_kind(exc)
    if kind == "no_schema":
        return SchemaNotReady(
            f"{exc.diag.message_primary} in schema {schema!r}: "
            "run `swf-pool migrate up` (or pass migrate=True)"
        )
    if kind == "lost":
        error: SwfError = ConnectError(f"lost the database ({description}): {exc}")
    else:
        kinds: dict[str, type[DatabaseError]] = {"refused": DataRejected, "transient": Transient}
        error = kinds.get(kind, DatabaseError)(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def connect_options(target: PostgresTarget) -> dict[str, Any]:
    """libpq settings every connection gets unless the connection string sets them: a bounded
    connect, and TCP keepalives so that a dead server or a silently dropped connection (a
    NAT or a failover) is noticed in about a minute instead of hanging a LISTEN forever."""
    given = psycopg.conninfo.conninfo_to_dict(target.conninfo)
    defaults: dict[str, Any] = {
        "connect_timeout": int(CONNECT_TIMEOUT_SECONDS),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "application_name": "swf-pool",
    }
    return {key: value for key, value in defaults.items() if key not in given}


def probe(target: PostgresTarget) -> psycopg.Connection[Any]:
    """Connect once, turning libpq's failure into a `ConnectError` that says where and why."""
    try:
        return psycopg.connect(target.conninfo, **connect_options(target))
    except psycopg.Error as exc:
        raise ConnectError(
            f"cannot connect to PostgreSQL ({redact(target.conninfo)}): {_reason(exc)}"
        ) from None


def _reason(exc: psycopg.Error) -> str:
    """libpq's why, on one line: 'connection to server at "h", port 1 failed: Connection
    refused', then its hint ('Is the server running ...?'); the place is said already."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return "; ".join([lines[0].rsplit(" failed: ", 1)[-1], *lines[1:]])
