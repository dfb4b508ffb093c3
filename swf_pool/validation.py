"""Checks on everything a producer or an operator passes in, shared by `Client` and
`AsyncClient`: each turns an argument into what the statements take, or raises a
`ValidationError` naming the problem, before anything is written."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from . import codec
from .errors import ValidationError
from .models import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, Audit, NewRun, Status
from .schedules import MissedPolicy, first_fire, validate_cron, validate_zone

INT32_MAX = 2**31 - 1
MAX_TYPE_LENGTH = 255
# PostgreSQL's unique index on the key holds at most about 2,700 bytes; a longer key was the
# database's own error after the round trip (the Go library's column is unbounded TEXT)
MAX_KEY_BYTES = 1000
MAX_LIST_LIMIT = 1000
MAX_DELAY_SECONDS = 100 * 365 * 86400.0


def new_run(
    type: str,
    payload: Any = None,
    *,
    idempotency_key: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    run_at: datetime | None = None,
    run_in: timedelta | float | None = None,
    created: str | None = None,
) -> NewRun:
    """Validate `submit`'s arguments into a `NewRun`, or raise a `ValidationError`.

    `created` is the JSON data of the run's `created` event (the ticker names the schedule)."""
    return NewRun(
        id=uuid7(),
        type=run_type(type),
        payload=codec.encode(payload),
        priority=bounded("priority", priority, -INT32_MAX - 1, INT32_MAX),
        max_attempts=bounded("max_attempts", max_attempts, 1, INT32_MAX),
        idempotency_key=_key(idempotency_key),
        run_at=_when(run_at, run_in),
        created=created,
    )


def new_runs(items: Any) -> list[NewRun]:
    """`submit_many`'s items (mappings of `submit`'s arguments), every one validated; an error
    names the item."""
    runs = []
    if isinstance(items, str | bytes | Mapping):
        raise ValidationError(
            f"submit_many takes an iterable of mappings (one per run), got {type(items).__name__}"
        )
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValidationError(
                f"item {index}: a run is a mapping of submit's arguments, got {type(item).__name__}"
            )
        try:
            runs.append(new_run(**item))
        except TypeError as exc:
            raise ValidationError(f"item {index}: {exc}") from None
        except ValidationError as exc:
            raise type(exc)(f"item {index}: {exc}") from None
    return runs


def uuid7() -> str:
    """A time-ordered UUID (version 7, RFC 9562): new rows land at the right edge of the
    primary key's index instead of at random pages, which keeps bulk inserts fast."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | (0x7 << 76) | ((rand >> 64) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def audit_level(value: Audit | str) -> Audit:
    try:
        return Audit(value)
    except ValueError:
        raise ValidationError(
            f"audit must be one of {', '.join(a.value for a in Audit)}, got {value!r}"
        ) from None


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise ValidationError(f"{name} must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValidationError(f"{name} is not valid UTF-8 text") from None
    return value


def run_type(value: object) -> str:
    text = _text("type", value)
    if not text.strip():
        raise ValidationError("type must not be empty")
    if len(text) > MAX_TYPE_LENGTH:
        raise ValidationError(f"type is longer than {MAX_TYPE_LENGTH} characters")
    return text


def _key(value: object) -> str | None:
    if value is None:
        return None
    text = _text("idempotency_key", value)
    if len(text.encode()) > MAX_KEY_BYTES:
        raise ValidationError(f"idempotency_key is longer than {MAX_KEY_BYTES} bytes (UTF-8)")
    return text or None  # the Go library treats an empty key as no key


def bounded(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _when(run_at: datetime | None, run_in: timedelta | float | None) -> datetime | None:
    if run_at is not None and run_in is not None:
        raise ValidationError("give run_at or run_in, not both")
    if run_at is not None:
        return aware("run_at", run_at)
    if run_in is None:
        return None
    if isinstance(run_in, bool) or not isinstance(run_in, timedelta | int | float):
        raise ValidationError(f"run_in must be a timedelta or seconds, got {run_in!r}")
    seconds = run_in.total_seconds() if isinstance(run_in, timedelta) else float(run_in)
    if seconds < 0:
        raise ValidationError(f"run_in must not be negative, got {run_in!r}")
    if not seconds <= MAX_DELAY_SECONDS:  # also refuses nan
        raise ValidationError(
            f"run_in must be between 0 and {MAX_DELAY_SECONDS:.0f} seconds (100 years), "
            f"got {run_in!r}"
        )
    return datetime.now(UTC) + timedelta(seconds=seconds)


def text_filter(name: str, value: str | None) -> str | None:
    """A filter's text: what a stored value could be (the database must take it)."""
    return None if value is None else _text(name, value)


def status_filter(value: Status | str | None) -> Status | None:
    if value is None:
        return None
    try:
        return Status(value)
    except ValueError:
        raise ValidationError(
            f"unknown status {value!r}: use one of {', '.join(s.value for s in Status)}"
        ) from None


def aware(name: str, value: object) -> datetime | None:
    """`value` in UTC (PostgreSQL refuses offsets beyond 15:59 that Python allows)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValidationError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError(f"{name} is out of range: {value.isoformat()}") from None


def duration(name: str, value: object) -> timedelta:
    if not isinstance(value, timedelta):
        raise ValidationError(f"{name} must be a timedelta, got {type(value).__name__}")
    if value <= timedelta(0):
        raise ValidationError(f"{name} must be positive, got {value}")
    if value > timedelta(days=100 * 365):
        raise ValidationError(f"{name} must be at most 100 years, got {value}")
    return value


def timeout_seconds(value: object) -> float | None:
    """A wait's limit: None (no limit) or non-negative seconds (a float or a timedelta)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"timeout must be seconds or a timedelta, got {value!r}")
    if not 0 <= value <= MAX_DELAY_SECONDS:  # also refuses nan
        raise ValidationError(f"timeout must be between 0 and 100 years, got {value!r}")
    return float(value)


def canonical_id(value: object) -> str | None:
    """The canonical form of a run or schedule id, or None if it is not a UUID (so there is
    no such row)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def schedule_values(
    schedule_id: str,
    type: str,
    payload: Any,
    cron: str,
    timezone: str,
    priority: int,
    max_attempts: int,
    missed: MissedPolicy | str,
    catch_up_limit: int,
    *,
    enabled: bool,
) -> dict[str, Any]:
    """Validate a schedule into the parameters of its statements (nothing is written)."""
    try:
        policy = MissedPolicy(missed)
    except ValueError:
        raise ValidationError(f"missed must be skip or catch_up, got {missed!r}") from None
    text = validate_cron(cron)
    return {
        "id": schedule_id,
        "type": run_type(type),
        "payload": codec.encode(payload),
        "cron": text,
        "timezone": validate_zone(timezone).key,
        "next_run_at": first_fire(text, timezone, datetime.now(UTC)),
        "priority": bounded("priority", priority, -INT32_MAX - 1, INT32_MAX),
        "max_attempts": bounded("max_attempts", max_attempts, 1, INT32_MAX),
        "missed_policy": policy.value,
        "catch_up_limit": bounded("catch_up_limit", catch_up_limit, 1, 10_000),
        "enabled": enabled,
    }
