"""PostgreSQL backend: a psycopg connection pool and the named queries of `postgres.sql`."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from weakref import WeakKeyDictionary

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from .. import codec, queries
from ..dsn import PostgresTarget, redact
from ..errors import (
    ConnectError,
    DatabaseError,
    DataRejected,
    MigrationError,
    SchemaNotReady,
    UndecodableRun,
)
from ..migrate import Migration
from ..models import (
    Claimed,
    Event,
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

if TYPE_CHECKING:
    from ..listener import Listener

log = logging.getLogger("swf_pool.postgres")
Q = queries.load("postgres")
CONNECT_TIMEOUT_SECONDS = 10.0
IDLE_CHECK_SECONDS = 1.0  # a connection unused this long is checked before it is handed out
CHECKOUT_TIMEOUT_SECONDS = 5.0  # while the server is away, fail fast and let callers back off
TRANSIENT_TRIES = 4  # a statement rolled back as a deadlock victim is run again, up to this
TRANSIENT_PAUSE_SECONDS = 0.02  # before the next try: up to this, times the tries so far
MAX_CONNECTIONS = 64  # one pool's statements at once, at the most
Row = dict[str, Any]
T = TypeVar("T")

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


class _Transient(DatabaseError):
    """A deadlock victim or serialization failure: `_retried` runs the work again."""


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


def notify_channel(schema: str) -> str:
    """The channel the insert trigger notifies (see migration 0002)."""
    return f"swf_pool.{schema}"


def schedules_channel(schema: str) -> str:
    """The channel notified when schedules are created or changed (migration 0003)."""
    return f"swf_pool_schedules.{schema}"


class PostgresBackend:
    kind = "postgres"

    def __init__(self, target: PostgresTarget, *, pool_size: int = 4) -> None:
        self.target = target
        self.description = f"postgres {redact(target.conninfo)} (schema {target.schema})"
        self._used: WeakKeyDictionary[psycopg.Connection[Any], float] = WeakKeyDictionary()
        self._search_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema))
        probe(target).close()  # a clear error now beats a pool timeout later
        self._pool = ConnectionPool(
            target.conninfo,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True, "row_factory": dict_row, **connect_options(target)},
            configure=self._configure,
            check=self._check,
            open=False,
            timeout=CHECKOUT_TIMEOUT_SECONDS,
            name=f"swf-pool:{target.schema}",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout as exc:
            raise ConnectError(f"cannot open a pool to {self.description}: {exc}") from None

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """On checkout: a connection idle for a while may have been closed by the server (a
        restart, pg_terminate_backend, a failover) without our knowing; one round trip tells,
        and the pool replaces it if so. Busy connections skip the check."""
        if time.monotonic() - self._used.get(conn, 0.0) > IDLE_CHECK_SECONDS:
            ConnectionPool.check_connection(conn)

    def _purge(self) -> None:
        """After a lost connection, its idle siblings were most likely lost too (a restart,
        a failover, pg_terminate_backend): drop them all now, rather than discover them one
        checkout at a time, each after a longer pause."""
        with contextlib.suppress(Exception):
            self._pool.check()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(self._search_path)
        set_json_loads(_loads, conn)

    def close(self) -> None:
        self._pool.close()

    def statements_at_once(self) -> int:
        return MAX_CONNECTIONS

    def reserve_connections(self, count: int) -> None:
        count = min(count, MAX_CONNECTIONS)
        if count > self._pool.max_size:
            self._pool.resize(self._pool.min_size, count)

    def listener(self, on_notify: Callable[[], None]) -> Listener:
        from ..listener import Listener

        return Listener(self.target, notify_channel(self.target.schema), on_notify)

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Row]]:
        """A pooled connection; psycopg's errors become ours (see `failure_kind`). Only a lost
        connection purges the pool."""
        try:
            with self._pool.connection() as conn:
                yield conn
                self._used[conn] = time.monotonic()
        except psycopg.Error as exc:  # PoolTimeout included
            kind = failure_kind(exc)
            if kind == "no_schema":
                raise SchemaNotReady(
                    f"{exc.diag.message_primary} in schema {self.target.schema!r}: "
                    "run `swf-pool migrate up` (or pass migrate=True)"
                ) from None
            if kind == "lost":
                self._purge()
                raise ConnectError(f"lost the database ({self.description}): {exc}") from exc
            error = {"refused": DataRejected, "transient": _Transient}.get(kind, DatabaseError)
            raise error(f"{type(exc).__name__}: {exc}") from exc

    def _retried(self, work: Callable[[psycopg.Connection[Row]], T]) -> T:
        """`work` on a pooled connection, run again after a short random pause if the server
        rolled it back as a deadlock victim or a serialization failure. `work` must be one
        statement in autocommit or one transaction, so that a failed try left nothing behind;
        still failing after `TRANSIENT_TRIES`, it is a `DatabaseError` (not a lost database)."""
        tries = 1
        while True:
            try:
                with self._conn() as conn:
                    return work(conn)
            except _Transient as exc:
                if tries >= TRANSIENT_TRIES:
                    raise DatabaseError(f"{exc} (tried {tries} times)") from exc.__cause__
            time.sleep(random.uniform(0.0, TRANSIENT_PAUSE_SECONDS * tries))
            tries += 1

    def _rows(self, name: str, params: dict[str, Any]) -> list[Row]:
        return self._retried(lambda conn: conn.execute(Q[name], params).fetchall())

    def _tuples(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows as plain tuples, for the hot path: their columns in the order of the record
        type built from them, with no dictionary per row."""
        return self._retried(
            lambda conn: conn.cursor(row_factory=tuple_row).execute(Q[name], params).fetchall()
        )

    # -- migrations ---------------------------------------------------------------------------

    def applied_versions(self) -> list[int]:
        with self._conn() as conn:
            if not conn.execute(Q["version_table_exists"]).fetchall()[0]["present"]:
                return []
            return [row["version_id"] for row in conn.execute(Q["applied_versions"])]

    def apply_migration(self, migration: Migration, up: bool) -> None:
        with self._conn() as conn:
            try:
                with conn.transaction():
                    create = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                    conn.execute(create.format(sql.Identifier(self.target.schema)))
                    conn.execute(Q["create_version_table"])
                    conn.execute((migration.up if up else migration.down).encode())
                    record = "record_version" if up else "forget_version"
                    conn.execute(Q[record], {"version": migration.version})
            except psycopg.errors.DatabaseError as exc:
                raise MigrationError(
                    f"migration {migration.version} ({migration.name}) failed: {exc}"
                ) from exc

    # -- producer side ------------------------------------------------------------------------

    def submit(self, runs: Sequence[NewRun], audit_full: bool) -> list[Submitted]:
        # Two statements in autocommit, yet safe to run again: only the insert can be a
        # deadlock victim (the lookup after it reads, and holds no lock between statements).
        return self._retried(lambda conn: _submit(conn, runs, audit_full))

    def get(self, run_id: str) -> RunRecord | None:
        rows = self._rows("get_run", {"id": run_id})
        return RunRecord.from_row(rows[0]) if rows else None

    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        params = {
            "type": filters.type,
            "status": filters.status.value if filters.status else None,
            "key": filters.idempotency_key,
            "after": filters.created_after,
            "before": filters.created_before,
            "limit": filters.limit,
            "offset": filters.offset,
        }
        return [RunRecord.from_row(row) for row in self._rows("list_runs", params)]

    def events(self, run_id: str) -> list[Event]:
        return [Event.from_row(row) for row in self._rows("list_events", {"id": run_id})]

    def run_status(self, run_id: str) -> Status | None:
        rows = self._rows("run_status", {"id": run_id})
        return Status(rows[0]["status"]) if rows else None

    def cancel(self, run_id: str) -> bool:
        return bool(self._rows("cancel", {"id": run_id}))

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
        params = {
            "worker": worker_id,
            "types": list(types),
            "prefixes": list(prefixes),
            "limit": limit,
            "lease": lease_seconds,
            "audit_full": audit_full,
        }
        claimed = list(map(Claimed._make, self._tuples("claim", params)))
        bad = [run for run in claimed if isinstance(run.payload, Undecodable)]
        if not bad:
            return claimed
        failures = [
            {"id": run.id, "attempt": run.attempt, "error": _undecodable(run)} for run in bad
        ]
        for failure in failures:
            log.warning("failed run %s: %s", failure["id"], failure["error"])
        self._rows("fail_undecodable", {"worker": worker_id, "runs": _json(failures)})
        return [run for run in claimed if not isinstance(run.payload, Undecodable)]

    def complete(
        self,
        worker_id: str,
        outcomes: Sequence[Outcome],
        started: Sequence[Started],
        audit_full: bool,
    ) -> set[Lease]:
        params = {
            "worker": worker_id,
            "outcomes": _json(
                {
                    "id": o.id,
                    "attempt": o.attempt,
                    "status": o.status.value,
                    "result": None if o.result is None else orjson.Fragment(o.result),
                    "error": o.error,
                    "retry_at": o.retry_at,
                    "started": o.started,
                    "traceback": o.traceback,
                }
                for o in outcomes
            ),
            "started": _json({"id": s.id, "attempt": s.attempt, "at": s.at} for s in started),
            "audit_full": audit_full,
        }
        return set(map(Lease._make, self._tuples("complete", params)))

    def heartbeat(
        self, worker_id: str, leases: Sequence[Lease], extend_seconds: float, record: bool
    ) -> dict[Lease, LeaseState]:
        params = {
            "worker": worker_id,
            "leases": _leases(leases),
            "extend": extend_seconds,
            "record": record,
        }
        rows = self._rows("heartbeat", params)
        return {
            Lease(str(row["id"]), row["attempt"]): lease_state(row["held"], row["status"])
            for row in rows
        }

    def release(self, worker_id: str, leases: Sequence[Lease]) -> set[Lease]:
        rows = self._rows("release", {"worker": worker_id, "leases": _leases(leases)})
        return {Lease(str(row["id"]), row["attempt"]) for row in rows}

    def next_due(self, types: Sequence[str], prefixes: Sequence[str]) -> datetime | None:
        rows = self._rows("next_due", {"types": list(types), "prefixes": list(prefixes)})
        due: datetime | None = rows[0]["due"]
        return due

    # -- operations ---------------------------------------------------------------------------

    def queue_stats(self, failures_since: datetime) -> QueueStats:
        with self._conn() as conn:
            rows = {
                name: conn.execute(Q[name], {"since": failures_since}).fetchall()
                for name in ("queue_depth", "failures_since", "lease_holders", "registered_types")
            }
            dead = conn.execute(Q["dead_tuples"]).fetchall()
            now = conn.execute(Q["db_now"]).fetchall()[0]["now"]
        return QueueStats.build(
            now,
            rows["queue_depth"],
            rows["failures_since"],
            rows["lease_holders"],
            rows["registered_types"],
            dead[0]["dead"] if dead else None,
        )

    def requeue(self, ids: Sequence[str]) -> list[str]:
        return [str(row["id"]) for row in self._rows("requeue", {"ids": list(ids)})]

    def requeue_candidates(
        self, status: Status, type: str | None, since: datetime | None, after: str, limit: int
    ) -> list[str]:
        params = {"status": status.value, "type": type, "since": since, "after": after}
        rows = self._rows("requeue_candidates", {**params, "limit": limit})
        return [str(row["id"]) for row in rows]

    def prune_batch(
        self, after: str, before: datetime, statuses: Sequence[str], limit: int, dry_run: bool
    ) -> tuple[str | None, int, int]:
        params = {
            "after": after,
            "before": before,
            "statuses": list(statuses),
            "limit": limit,
            "dry_run": dry_run,
        }
        [row] = self._rows("prune", params)
        return row["last"], row["scanned"], row["matched"]

    def throughput(self, since: datetime) -> list[tuple[datetime, int, int]]:
        rows = self._rows("throughput", {"since": since})
        return [(row["minute"], row["succeeded"], row["failed"]) for row in rows]

    def table_rows(self) -> int:
        return int(self._rows("table_rows", {})[0]["estimate"])

    def register(self, names: Sequence[str]) -> None:
        self._retried(lambda conn: conn.execute(Q["register"], {"names": sorted(set(names))}))

    # -- schedules ----------------------------------------------------------------------------

    def create_schedule(self, values: dict[str, Any]) -> None:
        self._retried(lambda conn: conn.execute(Q["create_schedule"], values))

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        rows = self._rows("get_schedule", {"id": schedule_id})
        return Schedule.from_row(rows[0]) if rows else None

    def list_schedules(self) -> list[Schedule]:
        return [Schedule.from_row(row) for row in self._rows("list_schedules", {})]

    def update_schedule(self, values: dict[str, Any]) -> bool:
        return bool(self._rows("update_schedule", values))

    def delete_schedule(self, schedule_id: str) -> bool:
        return bool(self._rows("delete_schedule", {"id": schedule_id}))

    def fire_schedules(self, now: datetime, limit: int, planner: Planner) -> list[Fired]:
        """Lock the due schedules (others' tickers skip them), fire, advance: one transaction
        (run again whole if it was a deadlock victim: `planner` only computes)."""

        def fire(conn: psycopg.Connection[Row]) -> list[Fired]:
            fired: list[Fired] = []
            with conn.transaction():
                due = conn.execute(Q["due_schedules"], {"now": now, "limit": limit}).fetchall()
                for row in due:
                    schedule = Schedule.from_row(row)
                    runs, plan = planner(schedule)
                    if plan.next_run_at is None:
                        error = {"id": schedule.id, "error": plan.error}
                        conn.execute(Q["disable_schedule"], error)
                        fired.append((schedule, plan, 0))
                        continue
                    created = sum(s.created for s in _submit(conn, runs, True)) if runs else 0
                    last = plan.fires[-1] if plan.fires else schedule.last_run_at
                    conn.execute(
                        Q["advance_schedule"],
                        {"id": schedule.id, "last_run_at": last, "next_run_at": plan.next_run_at},
                    )
                    fired.append((schedule, plan, created))
            return fired

        return self._retried(fire)

    def next_schedule_due(self) -> datetime | None:
        due: datetime | None = self._rows("next_schedule_due", {})[0]["due"]
        return due


def _submit(
    conn: psycopg.Connection[Row], runs: Sequence[NewRun], audit_full: bool
) -> list[Submitted]:
    rows = [
        {
            "id": r.id,
            "type": r.type,
            "payload": orjson.Fragment(r.payload),
            "priority": r.priority,
            "max_attempts": r.max_attempts,
            "idempotency_key": r.idempotency_key,
            "run_at": r.run_at,
            "created": None if r.created is None else orjson.Fragment(r.created),
        }
        for r in runs
    ]
    params = {"runs": _json(rows), "audit_full": audit_full}
    skipped = set(conn.execute(Q["submit"], params).fetchall()[0]["skipped"])
    if not skipped:
        return [Submitted(r.id, True) for r in runs]
    keys = [r.idempotency_key for r in runs if r.id in skipped]
    found = conn.execute(Q["ids_by_key"], {"keys": keys})
    existing = {row["idempotency_key"]: str(row["id"]) for row in found}
    return [
        Submitted(existing[str(r.idempotency_key)], False)
        if r.id in skipped
        else Submitted(r.id, True)
        for r in runs
    ]


class Undecodable(str):
    """JSON the server stored (valid jsonb) that orjson will not take: a number beyond a
    double, nesting deeper than 1024. Kept as its text, with why."""

    reason = ""


def _loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        text = Undecodable(data.decode(errors="replace") if isinstance(data, bytes) else data)
        text.reason = str(exc)
        return text


def _undecodable(run: Claimed) -> str:
    shown = codec.clean_text(repr(str(run.payload)), 200)
    why = f"payload of run {run.id}: {shown} cannot be decoded here ({run.payload.reason})"
    return codec.clean_text(f"{UndecodableRun.__name__}: {why}", 1000)


def _json(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as one JSON array, for `jsonb_to_recordset` (cheaper than one array per column)."""
    return orjson.dumps(list(rows)).decode()


def _leases(leases: Sequence[Lease]) -> str:
    return _json({"id": lease.id, "attempt": lease.attempt} for lease in leases)


def probe(target: PostgresTarget) -> psycopg.Connection[Any]:
    """Connect once, turning libpq's failure into a `ConnectError` that says where and why."""
    try:
        return psycopg.connect(target.conninfo, **connect_options(target))
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConnectError(
            f"cannot connect to PostgreSQL ({redact(target.conninfo)}): {reason}"
        ) from None
