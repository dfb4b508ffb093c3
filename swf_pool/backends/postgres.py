"""PostgreSQL backend: a psycopg connection pool and the named queries of `postgres.sql`.

The producer's and the operator's statements are the `pg_ops` generators (shared with the
asynchronous backend and with calls on a caller's connection); the worker's are here."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from .. import codec
from ..errors import DatabaseError, InvalidConnection, MigrationError, UndecodableRun
from ..fleet import PoolMember
from ..migrate import Migration
from ..models import (
    DUE_SINCE_SECONDS,
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
from ..schedules import Schedule
from . import Fired, Planner, lease_state, pg_ops
from .pg_connect import Transient, failure_kind
from .pg_drive import PostgresCaller, run_queries
from .pg_fleet import PostgresFleet, heartbeat_params
from .pg_ops import OPERATIONS, Q, Queries, Row, json_rows
from .pg_pool import MAX_CONNECTIONS, PostgresPool, Undecodable

if TYPE_CHECKING:
    from ..listener import FinishedListener, Listener

TRANSIENT_TRIES = 4  # a statement rolled back as a deadlock victim is run again, up to this
TRANSIENT_PAUSE_SECONDS = 0.02  # before the next try: up to this, times the tries so far
T = TypeVar("T")
P = ParamSpec("P")
__all__ = [
    "PostgresBackend",
    "failure_kind",  # (where it used to live)
    "finished_channel",
    "notify_channel",
    "schedules_channel",
]
log = logging.getLogger("swf_pool.postgres")


def notify_channel(schema: str) -> str:
    """The channel the insert trigger notifies (see migration 0002)."""
    return f"swf_pool.{schema}"


def schedules_channel(schema: str) -> str:
    """The channel notified when schedules are created or changed (migration 0003)."""
    return f"swf_pool_schedules.{schema}"


def finished_channel(schema: str) -> str:
    """The channel a flush (`complete`) and a cancel notify when runs finish: the payload is
    their ids, comma-separated, or empty when they did not fit (`Client.wait`)."""
    return f"swf_pool_done.{schema}"


class PostgresBackend(PostgresPool, PostgresFleet):
    kind = "postgres"

    def statements_at_once(self) -> int:
        return MAX_CONNECTIONS

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
            except Transient as exc:
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

    def run(self, op: Callable[P, Queries[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """The `pg_ops` operation `op` on a pooled connection, run again whole if it was a
        deadlock victim (each is one statement, or reads)."""
        return self._retried(lambda conn: run_queries(conn, op(*args, **kwargs)))

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        """`run` by name (a `swf_pool.operations.Call`)."""
        return self.run(OPERATIONS[name], *args)

    def listener(self, on_notify: Callable[[], None]) -> Listener:
        from ..listener import Listener

        return Listener(self.target, notify_channel(self.target.schema), on_notify)

    def finished_listener(self, on_finished: Callable[[str | None], None]) -> FinishedListener:
        from ..listener import FinishedListener

        return FinishedListener(self.target, finished_channel(self.target.schema), on_finished)

    def bind(self, conn: object) -> PostgresCaller:
        """This backend's operations on a caller's connection, inside its transaction."""
        if isinstance(conn, psycopg.Connection):
            return PostgresCaller(conn, self.target.schema, self.description)
        hint = " (use AsyncClient)" if isinstance(conn, psycopg.AsyncConnection) else ""
        raise InvalidConnection(
            f"a PostgreSQL client writes through a psycopg.Connection, got "
            f"{type(conn).__module__}.{type(conn).__name__}{hint}"
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

    # -- producer side, operations, schedules (the statements are `pg_ops`) -------------------

    def submit(self, runs: Sequence[NewRun], audit_full: bool) -> list[Submitted]:
        return self.run(pg_ops.submit, runs, audit_full)

    def get(self, run_id: str) -> RunRecord | None:
        return self.run(pg_ops.get, run_id)

    def list_runs(self, filters: RunFilter) -> list[RunRecord]:
        return self.run(pg_ops.list_runs, filters)

    def events(self, run_id: str) -> list[Event]:
        return self.run(pg_ops.events, run_id)

    def run_status(self, run_id: str) -> Status | None:
        return self.run(pg_ops.run_status, run_id)

    def cancel(self, run_id: str) -> bool:
        return self.run(pg_ops.cancel, run_id)

    def queue_stats(self, failures_since: datetime) -> QueueStats:
        return self.run(pg_ops.queue_stats, failures_since)

    def requeue(self, ids: Sequence[str]) -> list[str]:
        return self.run(pg_ops.requeue, ids)

    def requeue_candidates(
        self, status: Status, type: str | None, since: datetime | None, after: str, limit: int
    ) -> list[str]:
        return self.run(pg_ops.requeue_candidates, status, type, since, after, limit)

    def prune_batch(
        self, after: str, before: datetime, statuses: Sequence[str], limit: int, dry_run: bool
    ) -> tuple[str | None, int, int]:
        return self.run(pg_ops.prune_batch, after, before, statuses, limit, dry_run)

    def throughput(self, since: datetime) -> list[tuple[datetime, int, int]]:
        return self.run(pg_ops.throughput, since)

    def table_rows(self) -> int:
        return self.run(pg_ops.table_rows)

    def create_schedule(self, values: dict[str, Any]) -> None:
        self.run(pg_ops.create_schedule, values)

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        return self.run(pg_ops.get_schedule, schedule_id)

    def list_schedules(self) -> list[Schedule]:
        return self.run(pg_ops.list_schedules)

    def update_schedule(self, values: dict[str, Any]) -> bool:
        return self.run(pg_ops.update_schedule, values)

    def delete_schedule(self, schedule_id: str) -> bool:
        return self.run(pg_ops.delete_schedule, schedule_id)

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
        try:
            self._rows("fail_undecodable", {"worker": worker_id, "runs": json_rows(failures)})
        except DatabaseError as exc:  # the claim stands: its good runs are ours to execute
            log.warning(
                "could not fail %d undecodable run(s) now (%s); they are failed when their "
                "lease expires and a pool claims them again",
                len(failures),
                exc,
            )
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
            "outcomes": json_rows(
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
            "started": json_rows({"id": s.id, "attempt": s.attempt, "at": s.at} for s in started),
            "audit_full": audit_full,
        }
        return set(map(Lease._make, self._tuples("complete", params)))

    def heartbeat(
        self,
        worker_id: str,
        leases: Sequence[Lease],
        extend_seconds: float,
        record: bool,
        pool: PoolMember | None = None,
    ) -> dict[Lease, LeaseState]:
        params = {
            "worker": worker_id,
            "leases": _leases(leases),
            "extend": extend_seconds,
            "record": record,
            **heartbeat_params(pool),
        }
        rows = self._rows("heartbeat", params)
        return {
            Lease(str(row["id"]), row["attempt"]): lease_state(row["held"], row["status"])
            for row in rows
        }

    def release(self, worker_id: str, leases: Sequence[Lease]) -> set[Lease]:
        rows = self._rows("release", {"worker": worker_id, "leases": _leases(leases)})
        return {Lease(str(row["id"]), row["attempt"]) for row in rows}

    def next_due(self, types: Sequence[str], prefixes: Sequence[str]) -> NextDue:
        params = {"types": list(types), "prefixes": list(prefixes), "since": DUE_SINCE_SECONDS}
        [row] = self._rows("next_due", params)
        token_at = row["token_at"]
        at = min((t for t in (row["ready"], row["due"], token_at) if t), default=None)
        return NextDue(at, row["held_back"], token_at is not None)

    def register(self, names: Sequence[str]) -> None:
        self._retried(lambda conn: conn.execute(Q["register"], {"names": sorted(set(names))}))

    # -- the schedule ticker ------------------------------------------------------------------

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
                    submitted = run_queries(conn, pg_ops.submit(runs, True)) if runs else []
                    last = plan.fires[-1] if plan.fires else schedule.last_run_at
                    conn.execute(
                        Q["advance_schedule"],
                        {"id": schedule.id, "last_run_at": last, "next_run_at": plan.next_run_at},
                    )
                    fired.append((schedule, plan, sum(s.created for s in submitted)))
            return fired

        return self._retried(fire)

    def next_schedule_due(self) -> datetime | None:
        due: datetime | None = self._rows("next_schedule_due", {})[0]["due"]
        return due


def _undecodable(run: Claimed) -> str:
    shown = codec.clean_text(repr(str(run.payload)), 200)
    why = f"payload of run {run.id}: {shown} cannot be decoded here ({run.payload.reason})"
    return codec.clean_text(f"{UndecodableRun.__name__}: {why}", 1000)


def _leases(leases: Sequence[Lease]) -> str:
    return json_rows({"id": lease.id, "attempt": lease.attempt} for lease in leases)
