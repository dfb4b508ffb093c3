"""Argument types for the command line: each converts one option's text or says why not."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from . import codec
from .errors import ValidationError
from .models import Status

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
N = TypeVar("N", int, float)
MAX_DURATION_SECONDS = 100 * 365 * 86400
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def _at_least(convert: Callable[[str], N], low: N, *, strict: bool = False) -> Callable[[str], N]:
    """A converter that also checks a lower bound (argparse names `convert` on bad text)."""

    def parse(text: str) -> N:
        value = convert(text)
        if math.isnan(value) or math.isinf(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text}")
        return value

    parse.__name__ = convert.__name__
    return parse


positive_float = _at_least(float, 0.0, strict=True)
non_negative_float = _at_least(float, 0.0)
non_negative_int = _at_least(int, 0)
positive_int = _at_least(int, 1)


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text}")
    return value


def delay(text: str) -> float:
    """Seconds (`90`, `1.5`) or a duration (`90s`, `5m`, `1h30m`), at most 100 years."""
    try:
        seconds = float(text)
    except ValueError:
        return parse_duration(text).total_seconds()
    if not 0 <= seconds <= MAX_DURATION_SECONDS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"must be between 0 and {MAX_DURATION_SECONDS} seconds (100 years), got {text}"
        )
    return seconds


def csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `1h30m`, `90s`, `2w` as a timedelta (for argparse)."""
    compact = text.strip().lower()
    parts = DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number and a unit s, m, h, d or w (e.g. 30d, 1h30m)"
        )
    seconds = sum(float(number) * UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    if seconds > MAX_DURATION_SECONDS:
        raise argparse.ArgumentTypeError(f"duration {text!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def statuses(text: str) -> list[Status]:
    try:
        return [Status(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown status in {text!r}: use {', '.join(s.value for s in Status)}"
        ) from None


def format_duration(value: timedelta) -> str:
    """A timedelta the way `parse_duration` reads it: 30d, 1h30m, 90s becomes 1m30s."""
    seconds = value.total_seconds()
    parts = []
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        if unit == "w":
            continue  # 14d reads better than 2w
        whole = int(seconds // size) if unit != "s" else seconds
        if whole:
            parts.append(f"{whole:g}{unit}")
            seconds -= whole * size
    return "".join(parts) or "0s"


def format_age(seconds: float | None) -> str:
    """An age as people read it: 4.2s, 3.5m, 1.2h, 2.0d ("-" for none)."""
    if seconds is None:
        return "-"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def json_value(text: str) -> Any:
    """A JSON argument (a payload): ValidationError if it is not JSON."""
    try:
        return codec.decode(text)
    except ValueError as exc:
        raise ValidationError(f"payload is not valid JSON: {exc}") from None


def env_default(name: str, default: str | None = None) -> str | None:
    """An option's default from $SWF_<name> (argparse converts and checks it like a flag)."""
    return os.environ.get(f"SWF_{name}", default)


ON, OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def env_switch(name: str) -> bool:
    """A switch's default from $SWF_<name>: on or off in any usual spelling (unset is off);
    anything else is refused rather than read as off (SWF_DRAIN=maybe must not run forever)."""
    text = os.environ.get(f"SWF_{name}", "").strip().lower()
    if text in ON or text in OFF:
        return text in ON
    raise BadEnvironment(
        f"SWF_{name} must be one of {', '.join(ON)} or {', '.join(OFF[1:])} (any case), "
        f"got {os.environ[f'SWF_{name}']!r}"
    )


class BadEnvironment(ValueError):
    """An environment variable the command line cannot read: a usage error."""
