"""The operator's statements on SQLite (statistics, retries, retention) and schedules'."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .. import codec
from ..gotime import parse_time
from ..models import EventType, QueueStats, Status
from ..schedules import Schedule
from .sqlite_file import SqliteFile
from .sqlite_rows import (
    Q,
    create_schedule,
    decode_row,
    event,
    format_time,
    now_text,
    schedule_params,
    time_or_none,
)


class SqliteOperations(SqliteFile):
    # -- operations ---------------------------------------------------------------------------

    def queue_stats(self, failures_since: datetime) -> QueueStats:
        moment = datetime.now(UTC)
        params = {"now": format_time(moment), "since": format_time(failures_since)}
        with self._tx("DEFERRED") as db:
            rows = {
                name: [decode_row(row) for row in db.execute(Q[name], params)]
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
        now = now_text()
        done = []
        with self._tx() as db:
            for run_id in ids:
                old = db.execute(Q["run_state"], {"id": run_id}).fetchone()
                if old is None:
                    continue
                db.execute(Q["requeue_one"], {"id": run_id, "now": now})
                data = {"from": old["status"], "attempts_used": old["attempt"]}
                event(db, run_id, EventType.REQUEUED, data, now)
                done.append(run_id)
        return done

    def requeue_candidates(
        self, status: Status, type: str | None, since: datetime | None, after: str, limit: int
    ) -> list[str]:
        params = {
            "status": status.value,
            "type": type,
            "since": time_or_none(since),
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

    # -- schedules ----------------------------------------------------------------------------

    def create_schedule(self, values: dict[str, Any]) -> None:
        with self._tx() as db:
            create_schedule(db, values)

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        rows = self._rows("get_schedule", {"id": schedule_id})
        return Schedule.from_row(rows[0]) if rows else None

    def list_schedules(self) -> list[Schedule]:
        return [Schedule.from_row(row) for row in self._rows("list_schedules", {})]

    def update_schedule(self, values: dict[str, Any]) -> bool:
        params = {**schedule_params(values), "now": now_text()}
        return bool(self._rows("update_schedule", params))

    def delete_schedule(self, schedule_id: str) -> bool:
        return bool(self._rows("delete_schedule", {"id": schedule_id, "now": now_text()}))
