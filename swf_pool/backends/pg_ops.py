"""The producer's and the operator's statements on PostgreSQL, written once (sans-IO).

Each operation is a generator that yields the named queries of `postgres.sql` it needs
(`Query`), receives their rows (dictionaries) and returns its decoded result. The same
generator runs on a pooled connection (`PostgresBackend`), on an asynchronous one
(`AsyncPostgresBackend`) and on a caller's connection inside the caller's transaction
(`pg_caller`); only the drivers differ.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

from .. import queries
from ..models import Event, NewRun, QueueStats, RunFilter, RunRecord, Status, Submitted
from ..schedules import Schedule

Q = queries.load("postgres")
T = TypeVar("T")
Row = dict[str, Any]


@dataclass(frozen=True)
class Query:
    """A named query of `postgres.sql` and its parameters."""

    name: str
    params: dict[str, Any]


Queries = Generator[Query, list[Row], T]


def json_rows(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as one JSON array, for `jsonb_to_recordset` (cheaper than one array per column)."""
    return orjson.dumps(list(rows)).decode()


def submit(runs: Sequence[NewRun], audit_full: bool) -> Queries[list[Submitted]]:
    """Two statements in autocommit, yet safe to run again: only the insert can be a deadlock
    victim (the lookup after it reads, and holds no lock between statements)."""
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
    [row] = yield Query("submit", {"runs": json_rows(rows), "audit_full": audit_full})
    skipped = set(row["skipped"])
    if not skipped:
        return [Submitted(r.id, True) for r in runs]
    keys = [r.idempotency_key for r in runs if r.id in skipped]
    found = yield Query("ids_by_key", {"keys": keys})
    existing = {row["idempotency_key"]: str(row["id"]) for row in found}
    return [
        Submitted(existing[str(r.idempotency_key)], False)
        if r.id in skipped
        else Submitted(r.id, True)
        for r in runs
    ]


def get(run_id: str) -> Queries[RunRecord | None]:
    rows = yield Query("get_run", {"id": run_id})
    return RunRecord.from_row(rows[0]) if rows else None


def list_runs(filters: RunFilter) -> Queries[list[RunRecord]]:
    params = {
        "type": filters.type,
        "status": filters.status.value if filters.status else None,
        "key": filters.idempotency_key,
        "after": filters.created_after,
        "before": filters.created_before,
        "limit": filters.limit,
        "offset": filters.offset,
    }
    return [RunRecord.from_row(row) for row in (yield Query("list_runs", params))]


def events(run_id: str) -> Queries[list[Event]]:
    return [Event.from_row(row) for row in (yield Query("list_events", {"id": run_id}))]


def run_status(run_id: str) -> Queries[Status | None]:
    rows = yield Query("run_status", {"id": run_id})
    return Status(rows[0]["status"]) if rows else None


def cancel(run_id: str) -> Queries[bool]:
    return bool((yield Query("cancel", {"id": run_id})))


def queue_stats(failures_since: datetime) -> Queries[QueueStats]:
    rows = {}
    for name in ("queue_depth", "failures_since", "lease_holders", "registered_types"):
        rows[name] = yield Query(name, {"since": failures_since})
    dead = yield Query("dead_tuples", {})
    [now] = yield Query("db_now", {})
    return QueueStats.build(
        now["now"],
        rows["queue_depth"],
        rows["failures_since"],
        rows["lease_holders"],
        rows["registered_types"],
        dead[0]["dead"] if dead else None,
    )


def requeue(ids: Sequence[str]) -> Queries[list[str]]:
    return [str(row["id"]) for row in (yield Query("requeue", {"ids": list(ids)}))]


def requeue_candidates(
    status: Status, type: str | None, since: datetime | None, after: str, limit: int
) -> Queries[list[str]]:
    params = {"status": status.value, "type": type, "since": since, "after": after}
    rows = yield Query("requeue_candidates", {**params, "limit": limit})
    return [str(row["id"]) for row in rows]


def prune_batch(
    after: str, before: datetime, statuses: Sequence[str], limit: int, dry_run: bool
) -> Queries[tuple[str | None, int, int]]:
    params = {
        "after": after,
        "before": before,
        "statuses": list(statuses),
        "limit": limit,
        "dry_run": dry_run,
    }
    [row] = yield Query("prune", params)
    return row["last"], row["scanned"], row["matched"]


def throughput(since: datetime) -> Queries[list[tuple[datetime, int, int]]]:
    rows = yield Query("throughput", {"since": since})
    return [(row["minute"], row["succeeded"], row["failed"]) for row in rows]


def table_rows() -> Queries[int]:
    [row] = yield Query("table_rows", {})
    return int(row["estimate"])


def create_schedule(values: dict[str, Any]) -> Queries[None]:
    yield Query("create_schedule", values)


def get_schedule(schedule_id: str) -> Queries[Schedule | None]:
    rows = yield Query("get_schedule", {"id": schedule_id})
    return Schedule.from_row(rows[0]) if rows else None


def list_schedules() -> Queries[list[Schedule]]:
    return [Schedule.from_row(row) for row in (yield Query("list_schedules", {}))]


def update_schedule(values: dict[str, Any]) -> Queries[bool]:
    return bool((yield Query("update_schedule", values)))


def delete_schedule(schedule_id: str) -> Queries[bool]:
    return bool((yield Query("delete_schedule", {"id": schedule_id})))


# The operations a `Call` may name (see `swf_pool.operations`), by name.
OPERATIONS: dict[str, Callable[..., Queries[Any]]] = {
    op.__name__: op
    for op in (
        submit,
        get,
        list_runs,
        events,
        run_status,
        cancel,
        queue_stats,
        requeue,
        requeue_candidates,
        prune_batch,
        throughput,
        table_rows,
        create_schedule,
        get_schedule,
        list_schedules,
        update_schedule,
        delete_schedule,
    )
}
