"""The fleet: the pools that serve one database, and the controls on each run type.

Every pool keeps a row in `swf_pool` (written when it starts, renewed by the heartbeat it
already sends, deleted when it stops cleanly). A pool not seen for `LOST_AFTER_BEATS` of its
heartbeats is shown as lost; after `FORGET_AFTER_BEATS` its row is removed by the next
heartbeat of any pool. `swf_type_control` holds what operators (or a handler's declaration)
set per type: a pause, a concurrency limit and a rate limit, honoured by every pool's claim.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from .errors import ValidationError
from .validation import bounded, run_type

if TYPE_CHECKING:
    from .backends import Backend
    from .coordinator import Pool
    from .handlers import Handler

LOST_AFTER_BEATS = 3  # missed heartbeats before a pool is shown as lost
FORGET_AFTER_BEATS = 60  # missed heartbeats before its row is removed
RATE_WINDOW_SECONDS = 60.0  # a pool's runs/s is measured over the last minute
MAX_LIMIT = 1_000_000  # a concurrency or a rate count beyond this is a typo
# A rate limit's token bucket holds this many seconds' worth (at least one token), so that no
# minute sees more than 5 % over the limit; the same number is in swf_tokens (migration 0009).
BURST_SECONDS = 3.0

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*")


@dataclass(frozen=True)
class Rate:
    """At most `limit` starts per `seconds`, over every pool."""

    limit: int
    seconds: float

    @classmethod
    def parse(cls, text: str | Rate) -> Rate:
        """'100/m', '10/s', '5000/h', '1/30s': a count per period (s, m, h or d)."""
        if isinstance(text, Rate):
            return text
        match = _RATE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValidationError(
                f"rate must look like '100/m' (a count per s, m, h or d), got {text!r}"
            )
        count, multiple, unit = match.groups()
        seconds = float(multiple or 1) * _PERIODS[unit[0]]
        return cls(bounded("rate", int(count), 1, MAX_LIMIT), _positive_seconds(seconds, text))

    def __str__(self) -> str:
        for unit, seconds in _PERIODS.items():
            if self.seconds == seconds:
                return f"{self.limit}/{unit}"
        return f"{self.limit}/{self.seconds:g}s"


@dataclass(frozen=True)
class TypeControl:
    """What holds a type back: a pause, a concurrency limit, a rate limit."""

    type: str
    paused: bool = False
    concurrency: int | None = None
    rate: Rate | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TypeControl:
        rate = None
        if row["rate_limit"] is not None:
            rate = Rate(int(row["rate_limit"]), float(row["rate_seconds"]))
        return cls(row["type"], bool(row["paused"]), row["concurrency"], rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "paused": self.paused,
            "concurrency": self.concurrency,
            "rate": None if self.rate is None else str(self.rate),
        }


@dataclass(frozen=True)
class ControlChange:
    """A change to one type's controls; what is not set is kept."""

    type: str
    paused: bool | None = None  # None: keep
    concurrency: int | None = None
    set_concurrency: bool = False  # False: keep the concurrency limit (None with True: remove)
    rate: Rate | None = None
    set_rate: bool = False

    def params(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "paused": self.paused,
            "concurrency": self.concurrency,
            "set_concurrency": self.set_concurrency,
            "rate_limit": None if self.rate is None else self.rate.limit,
            "rate_seconds": None if self.rate is None else self.rate.seconds,
            "set_rate": self.set_rate,
        }


def limit_value(value: object) -> int | None:
    """A concurrency limit: a positive count, or None for none."""
    return None if value is None else bounded("concurrency", value, 1, MAX_LIMIT)


@dataclass(frozen=True)
class PoolMember:
    """One pool as the fleet sees it."""

    id: str
    host: str
    pid: int
    version: str
    processes: int
    executor: str
    types: tuple[str, ...]
    beat_seconds: float
    started_at: datetime | None = None
    last_seen: datetime | None = None
    in_flight: int = 0
    per_second: float = 0.0
    lost: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PoolMember:
        types = row["types"]
        return cls(
            id=row["id"],
            host=row["host"],
            pid=int(row["pid"]),
            version=row["version"],
            processes=int(row["processes"]),
            executor=row["executor"],
            types=tuple(json.loads(types) if isinstance(types, str) else types),
            beat_seconds=float(row["beat_seconds"]),
            started_at=row["started_at"],
            last_seen=row["last_seen"],
            in_flight=int(row["in_flight"]),
            per_second=float(row["per_second"]),
            lost=bool(row["lost"]),
        )

    COLUMNS = ("pool_id", "host", "pid", "version", "processes", "executor", "types",
               "beat_seconds", "in_flight", "per_second")  # fmt: skip

    def params(self) -> dict[str, Any]:
        """The columns a heartbeat writes (named as `COLUMNS`)."""
        return {
            "pool_id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "processes": self.processes,
            "executor": self.executor,
            "types": json.dumps(list(self.types)),
            "beat_seconds": self.beat_seconds,
            "in_flight": self.in_flight,
            "per_second": self.per_second,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "processes": self.processes,
            "executor": self.executor,
            "types": list(self.types),
            "started_at": _iso(self.started_at),
            "last_seen": _iso(self.last_seen),
            "in_flight": self.in_flight,
            "per_second": round(self.per_second, 1),
            "state": "lost" if self.lost else "live",
        }


class Fleet:
    """The pools serving a database and the controls on its run types (`client.fleet`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def pools(self) -> list[PoolMember]:
        """Every pool seen lately, live or lost (by host, then id)."""
        return self.backend.pools()

    def controls(self) -> list[TypeControl]:
        """The types that are paused or limited."""
        return self.backend.type_controls()

    def pause(self, type: str) -> TypeControl:
        """No pool claims runs of `type` until `resume`; runs already leased finish."""
        return self.backend.control_type(ControlChange(run_type(type), paused=True))

    def resume(self, type: str) -> TypeControl:
        """Pools claim `type` again at once (they are woken)."""
        return self.backend.control_type(ControlChange(run_type(type), paused=False))

    def limit(
        self,
        type: str,
        *,
        concurrency: int | EllipsisType | None = ...,
        rate: str | Rate | EllipsisType | None = ...,
    ) -> TypeControl:
        """Set (or with None remove) a type's limits over all pools; `...` keeps one as is.
        concurrency: most runs leased at once; rate: most starts per period, e.g. '100/m'."""
        change = ControlChange(
            run_type(type),
            concurrency=None if concurrency is ... else limit_value(concurrency),
            set_concurrency=concurrency is not ...,
            rate=None if rate is ... or rate is None else Rate.parse(rate),
            set_rate=rate is not ...,
        )
        return self.backend.control_type(change)


class Card:
    """What a pool tells the fleet at each heartbeat: who it is, and how busy."""

    def __init__(
        self,
        pool_id: str,
        *,
        processes: int,
        executor: str,
        types: Sequence[str],
        beat_seconds: float,
        in_flight: Callable[[], int],
        finished: Callable[[], int],
    ) -> None:
        from . import __version__

        self.template = PoolMember(
            id=pool_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            processes=processes,
            executor=executor,
            types=tuple(types),
            beat_seconds=beat_seconds,
        )
        self.in_flight = in_flight
        self.finished = finished
        self.window = RateWindow()

    def __call__(self) -> PoolMember:
        per_second = self.window.rate(self.finished())
        return replace(self.template, in_flight=self.in_flight(), per_second=per_second)


def card_of(pool: Pool) -> Card:
    """The card of a running pool (see `coordinator.Pool`)."""
    s = pool.settings
    stats = pool.stats
    return Card(
        pool.worker_id,
        processes=pool.processes,
        executor=pool.executor_kind,
        types=[*pool.types, *s.prefixes],
        beat_seconds=s.heartbeat_interval or s.lease_seconds / 3,
        in_flight=lambda: len(pool.ledger),
        finished=lambda: stats.succeeded + stats.retried + stats.failed,
    )


def declare(backend: Backend, handlers: Iterable[Handler]) -> None:
    """Write the limits the handlers declare (a pool does as it starts)."""
    for handler in handlers:
        change = handler.declared_limits()
        if change is not None:
            backend.control_type(change)


class RateWindow:
    """Runs finished per second over the last minute, from a running total."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()

    def rate(self, total: int) -> float:
        now = self.clock()
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_SECONDS:
            self.samples.popleft()
        then, before = self.samples[0]
        return (total - before) / (now - then) if now > then else 0.0


def _positive_seconds(seconds: float, text: str) -> float:
    if not 0 < seconds <= 366 * 86400:
        raise ValidationError(f"rate period must be more than 0 and at most a year: {text!r}")
    return seconds


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
