"""Cron schedules: validation, fire times across daylight-saving changes, and the ticker.

Fire times are computed on the schedule's local wall clock, then placed on the time line:
a wall-clock time that does not exist (spring forward) fires once, at the same offset as
before the change (02:30 becomes 03:30); one that exists twice (fall back) fires once, at
its first occurrence. The run created for a fire carries the Go library's idempotency key
`schedule:<id>:<unix seconds>`, so two tickers firing the same time create one run.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .errors import InvalidSchedule

log = logging.getLogger("swf_pool.schedules")

DESCRIPTORS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")
DEFAULT_CATCH_UP_LIMIT = 10
MAX_SEARCH = 10_000  # cron candidates examined before a schedule is declared unfireable


class MissedPolicy(enum.StrEnum):
    """What a ticker does with fire times it missed (it was down): one run, or each of them."""

    SKIP = "skip"
    CATCH_UP = "catch_up"


@dataclass(frozen=True)
class Schedule:
    """A `workflow_schedule` row."""

    id: str
    type: str
    payload: Any
    cron: str
    timezone: str
    next_run_at: datetime
    last_run_at: datetime | None
    enabled: bool
    priority: int
    max_attempts: int
    missed_policy: MissedPolicy
    catch_up_limit: int
    last_error: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        return cls(
            id=str(row["id"]),
            type=row["type"],
            payload=row["payload"],
            cron=row["schedule"],
            timezone=row["timezone"],
            next_run_at=row["next_run_at"],
            last_run_at=row["last_run_at"],
            enabled=bool(row["enabled"]),
            priority=row["priority"],
            max_attempts=row["max_attempts"],
            missed_policy=MissedPolicy(row["missed_policy"]),
            catch_up_limit=row["catch_up_limit"],
            last_error=row["last_error"],
        )


def validate_cron(expr: object) -> str:
    """`expr` if it is a 5-field cron expression or a supported @descriptor."""
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidSchedule("cron expression must be a non-empty string")
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text not in DESCRIPTORS:
            raise InvalidSchedule(
                f"unknown cron descriptor {text!r}: use one of {', '.join(DESCRIPTORS)}"
            )
    elif len(text.split()) != 5 or not croniter.is_valid(text):
        raise InvalidSchedule(
            f"invalid cron expression {text!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    return text


def validate_zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidSchedule("time zone must be an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC"
        ) from None


def next_fire(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first fire time strictly after `after` (aware), as an aware UTC datetime."""
    local = after.astimezone(zone).replace(tzinfo=None)
    candidates = croniter(cron, local)
    for _ in range(MAX_SEARCH):
        try:
            wall = candidates.get_next(datetime)
        except CroniterError:  # e.g. "0 0 30 2 *": croniter gives up looking
            break
        moment = wall.replace(tzinfo=zone)  # fold=0: first occurrence, or shifted past a gap
        if moment > after:
            return moment.astimezone(UTC)
    raise InvalidSchedule(f"cron expression {cron!r} never fires")


def upcoming(cron: str, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times after `after`."""
    out: list[datetime] = []
    for _ in range(count):
        after = next_fire(cron, zone, after)
        out.append(after)
    return out


@dataclass(frozen=True)
class FirePlan:
    """What one tick does with one due schedule: fire these times, then wait until next."""

    fires: list[datetime]
    next_run_at: datetime | None  # None: the schedule is broken and gets disabled
    error: str | None = None


def plan(schedule: Schedule, now: datetime) -> FirePlan:
    """Decide the fires of a due schedule (pure: the ticker and the tests share it)."""
    try:
        zone = validate_zone(schedule.timezone)
        cron = validate_cron(schedule.cron)
        fires = [schedule.next_run_at]
        if schedule.missed_policy is MissedPolicy.CATCH_UP:
            while len(fires) < schedule.catch_up_limit:
                later = next_fire(cron, zone, fires[-1])
                if later > now:
                    break
                fires.append(later)
        return FirePlan(fires, next_fire(cron, zone, now))
    except InvalidSchedule as exc:
        return FirePlan([], None, str(exc))


def idempotency_key(schedule_id: str, fire: datetime) -> str:
    """The Go library's key for the run of one fire."""
    return f"schedule:{schedule_id}:{int(fire.timestamp())}"


def first_fire(cron: str, timezone: str, now: datetime) -> datetime:
    """Validate and return the first fire time of a new or changed schedule."""
    text = validate_cron(cron)
    return next_fire(text, validate_zone(timezone), now - timedelta(microseconds=1))
