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

# The Go library parses with robfig/cron's 5 fields and no descriptors (a ticker that meets
# "@hourly" fires it once, then logs "parser does not accept descriptors" every tick): these
# are stored as the 5 fields robfig itself gives them.
DESCRIPTORS: Mapping[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
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


@dataclass(frozen=True)
class _Field:
    """One field of the Go library's parser (robfig/cron v3): its range and its names."""

    name: str
    low: int
    high: int
    names: Mapping[str, int]


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, {name: number for number, name in enumerate(_MONTHS, 1)}),
    _Field("day of week", 0, 6, {name: number for number, name in enumerate(_DAYS)}),
)
_FIELD_FORMS = "minute hour day-of-month month day-of-week"


def validate_cron(expr: object) -> str:
    """The expression as it is stored: 5 fields that both swf-pool and the Go library's
    parser accept (robfig/cron v3: no seconds, no descriptors, no L, W or #, day of week 0-6).
    A supported @descriptor becomes its 5 fields (`@hourly` is stored as `0 * * * *`)."""
    text = _five_fields(expr)
    problem = next(
        (p for p in map(_go_field_problem, text.split(), _FIELDS) if p is not None), None
    )
    if problem is not None:
        raise InvalidSchedule(
            f"invalid cron expression {text!r}: {problem} (the Go library's parser refuses it)"
        )
    if not croniter.is_valid(text):
        raise InvalidSchedule(f"invalid cron expression {text!r}: expected {_FIELD_FORMS}")
    return text


def _five_fields(expr: object) -> str:
    """`expr` with its whitespace collapsed and a supported @descriptor replaced by its
    5 fields; refuse anything else that does not have 5 fields."""
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidSchedule("cron expression must be a non-empty string")
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text not in DESCRIPTORS:
            raise InvalidSchedule(
                f"unknown cron descriptor {text!r}: use 5 fields ({_FIELD_FORMS}, e.g. "
                f"'*/5 * * * *' for every 5 minutes) or one of {', '.join(DESCRIPTORS)}"
            )
        return DESCRIPTORS[text]
    if len(text.split()) != 5:
        raise InvalidSchedule(
            f"invalid cron expression {text!r}: expected 5 fields ({_FIELD_FORMS})"
        )
    return text


def _go_field_problem(text: str, field: _Field) -> str | None:
    """Why robfig/cron's standard parser refuses `text` as `field`, or None.

    Each comma-separated part is `*` or `?`, a value, or a range `a-b`, optionally with a
    positive `/step`; a single value with a step runs to the end of the field (`5/15`).
    Stricter than robfig only in refusing empty parts, signs and `*-n`, which croniter
    refuses as well."""
    for part in text.split(","):
        if not part:
            return f"{field.name} {text!r}: an empty item in a list"
        span, slash, step = part.partition("/")
        if slash and not (step.isascii() and step.isdigit() and int(step) > 0):
            return f"{field.name} {part!r}: the step must be a positive number"
        if span in ("*", "?"):
            continue
        low, hyphen, high = span.partition("-")
        start, end = _go_value(low, field), _go_value(high, field) if hyphen else None
        if start is None or (hyphen and end is None):
            names = f" or names ({', '.join(field.names)})" if field.names else ""
            return f"{field.name} {part!r}: expected *, numbers{names}, ranges a-b and steps /n"
        if end is None:
            end = field.high if slash else start
        if not field.low <= start <= field.high or not field.low <= end <= field.high:
            return f"{field.name} {part!r}: out of range {field.low}-{field.high}"
        if start > end:
            return f"{field.name} {part!r}: a range cannot wrap around ({start} > {end})"
    return None


def _go_value(text: str, field: _Field) -> int | None:
    if text.isascii() and text.isdigit():
        return int(text)
    return field.names.get(text.lower())


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
        cron = fireable_cron(schedule.cron)
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


def fireable_cron(expr: object) -> str:
    """A stored expression in the 5 fields the ticker computes fire times from: a descriptor
    written before it was translated at the door fires as its 5 fields, and a row written
    before the Go parser's rules were enforced (day of week 7, `L`) keeps firing (creating or
    changing a schedule goes through the stricter `validate_cron`)."""
    text = _five_fields(expr)
    if not croniter.is_valid(text):
        raise InvalidSchedule(f"invalid cron expression {text!r}: expected {_FIELD_FORMS}")
    return text


def idempotency_key(schedule_id: str, fire: datetime) -> str:
    """The Go library's key for the run of one fire."""
    return f"schedule:{schedule_id}:{int(fire.timestamp())}"


def first_fire(cron: str, timezone: str, now: datetime) -> datetime:
    """Validate and return the first fire time of a new or changed schedule."""
    text = validate_cron(cron)
    return next_fire(text, validate_zone(timezone), now - timedelta(microseconds=1))
