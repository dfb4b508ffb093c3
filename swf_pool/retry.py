"""Retry policies: how long to wait before the next attempt of a failed run.

A policy is a small pure object: given the attempt that just failed (1-based) and a random
number in [0, 1), it returns the delay in seconds, or None to give up. The attempt budget
(`max_attempts`) is enforced by the worker on top of any policy, and no retry is put more
than `MAX_DELAY_SECONDS` ahead (a policy's delay grows without bound with the attempt, and
"retry forever" is a large `max_attempts`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from . import codec
from .errors import ConfigError
from .models import Claimed, Outcome, Status

log = logging.getLogger("swf_pool.pool")

MAX_DELAY_SECONDS = 365 * 86400.0


class RetryPolicy(Protocol):
    def delay(self, attempt: int, rand: float) -> float | None:
        """Seconds to wait after failed attempt `attempt`, or None for no retry."""
        ...


@dataclass(frozen=True)
class GoBackoff:
    """The Go library's backoff: attempt² minutes plus 0-10 % jitter."""

    jitter: float = 0.1

    def delay(self, attempt: int, rand: float) -> float:
        base = attempt * attempt * 60.0
        return base * (1.0 + self.jitter * rand)


@dataclass(frozen=True)
class Fixed:
    """The same delay after every failure."""

    seconds: float

    def __post_init__(self) -> None:
        _non_negative("seconds", self.seconds)

    def delay(self, attempt: int, rand: float) -> float:
        return self.seconds


@dataclass(frozen=True)
class Exponential:
    """`base * factor**(attempt-1)` seconds, capped at `maximum`, plus up to `jitter` of it."""

    base: float = 1.0
    factor: float = 2.0
    maximum: float = 3600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for name in ("base", "maximum", "jitter"):
            _non_negative(name, getattr(self, name))
        if self.factor < 1:
            raise ConfigError(f"factor must be >= 1, got {self.factor}")

    def delay(self, attempt: int, rand: float) -> float:
        try:
            raw = min(self.base * self.factor ** (attempt - 1), self.maximum)
        except OverflowError:  # past 1e308: far past any maximum
            raw = self.maximum
        return raw * (1.0 + self.jitter * rand)


@dataclass(frozen=True)
class NoRetry:
    """Fail on the first error."""

    def delay(self, attempt: int, rand: float) -> None:
        return None


DEFAULT_POLICY = GoBackoff()


def after_failure(
    run: Claimed,
    error: str,
    policy: RetryPolicy,
    *,
    permanent: bool,
    rand: float,
    now: datetime,
    traceback: str | None = None,
) -> Outcome:
    """The outcome of a failed attempt: a retry at some later time, or the end (`failed`).
    `traceback`: the handler's, for the event's data."""
    error = codec.clean_text(error)
    trace = None if traceback is None else codec.clean_text(traceback)
    delay = None if permanent or run.attempt >= run.max_attempts else _delay(policy, run, rand)
    if delay is None:
        return Outcome(run.id, run.attempt, Status.FAILED, error=error, traceback=trace)
    retry_at = now + timedelta(seconds=delay)
    return Outcome(
        run.id, run.attempt, Status.PENDING, error=error, retry_at=retry_at, traceback=trace
    )


def _delay(policy: RetryPolicy, run: Claimed, rand: float) -> float | None:
    """The policy's delay, within [0, MAX_DELAY_SECONDS]. A policy that fails (a bug in a
    user's policy) must not stop the pool: the run is retried after the default's delay."""
    try:
        delay = policy.delay(run.attempt, rand)
    except Exception:
        log.exception("retry policy %r failed for %s; using the default backoff", policy, run.id)
        delay = DEFAULT_POLICY.delay(run.attempt, rand)
    if delay is None:
        return None
    if math.isnan(delay):
        return MAX_DELAY_SECONDS
    return min(max(0.0, delay), MAX_DELAY_SECONDS)


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
