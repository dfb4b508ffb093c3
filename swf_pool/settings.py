"""Every pool option, declared once: its default, unit, check, help text and, for those the
command line offers, its flag and environment variable. `Pool(...)` takes them as keywords;
`swf-pool run` generates its options from `OPTIONS`, so adding one is one edit here.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import argtypes
from .errors import ConfigError
from .models import DEFAULT_LEASE_SECONDS, Audit

log = logging.getLogger("swf_pool.pool")

EXECUTORS = ("process", "thread", "inline")
MAX_PROCESSES = 1024  # a typo like 100000 must not fork the machine to death
# runs at once in one event loop: far beyond what one process drives, short of a typo's million
MAX_CONCURRENCY = 10_000
MAX_DB_CONCURRENCY = 64

Check = Callable[[Any], str | None]  # why a value is refused, or None


def positive(value: Any) -> str | None:
    return _bounded(value, 1, 0.0)


def non_negative(value: Any) -> str | None:
    return _bounded(value, 0, None)


def _bounded(value: Any, low: int, above: float | None) -> str | None:
    """Integers at least `low`; other numbers finite and above `above` (or at least 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    if isinstance(value, int):
        return None if value >= low else f"must be >= {low}"
    if not math.isfinite(value):
        return "must be a finite number"
    if above is None:
        return None if value >= 0 else "must be >= 0"
    return None if value > above else f"must be > {above:g}"


def at_most(limit: int) -> Check:
    def check(value: Any) -> str | None:
        return positive(value) or (None if value <= limit else f"must be at most {limit}")

    return check


def whole_at_most(limit: int) -> Check:
    """Whole numbers from 1 to `limit` (a count: 2.5 tasks at once means nothing)."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        return at_most(limit)(value)

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _nothing(value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Option:
    """One setting. `flag`: its command-line flag (None: Python only); the environment
    variable is SWF_ and the flag's name in capitals."""

    name: str
    default: Any
    help: str
    check: Check = _nothing
    optional: bool = False  # None is allowed (and means what `help` says)
    flag: str | None = None
    parse: Callable[[str], Any] = str
    choices: Sequence[str] | None = None

    @property
    def env(self) -> str:
        assert self.flag is not None
        return "SWF_" + self.flag.removeprefix("--").replace("-", "_").upper()

    def why_not(self, value: Any) -> str | None:
        if value is None:
            return None if self.optional else "must be set"
        return self.check(value)


def _cores() -> int:
    return os.cpu_count() or 1


OPTIONS: tuple[Option, ...] = (
    Option("processes", None, "worker processes (or threads) (default: one per core)",
           at_most(MAX_PROCESSES), True, "--processes", int),
    Option("concurrency", 1,
           "runs of async handlers at once in each worker process, on its event loop (the "
           "process executor; sync handlers run one at a time per process)",
           whole_at_most(MAX_CONCURRENCY), False, "--concurrency", int),
    Option("executor", "process",
           "process (CPU-bound handlers), thread (I/O-bound) or inline (debugging)",
           one_of(*EXECUTORS), False, "--executor", str, EXECUTORS),
    Option("batch_size", 100, "most runs claimed by one statement", at_most(100_000), False,
           "--batch-size", int),
    Option("prefetch", None,
           "runs claimed beyond the free workers, ready to start (default: follows how long "
           "runs take, from --processes for long runs, which other pools may then take, to "
           "twice --batch-size for short ones)", non_negative, True, "--prefetch", int),
    Option("db_concurrency", None,
           "most claims and most flushes in flight at once, each on its own connection "
           "(default: as many as keep the workers fed and the outcomes moving, up to "
           "max(4, runs at once/2), at most 8, where runs at once is processes x the "
           "concurrency that applies; SQLite: 1)",
           at_most(MAX_DB_CONCURRENCY), True, "--db-concurrency", int),
    Option("lease_seconds", DEFAULT_LEASE_SECONDS,
           "lease in seconds; renewed every lease/3 for every run in flight", positive, False,
           "--lease", float),
    Option("poll_interval", 2.0,
           "seconds between polls when idle (PostgreSQL also wakes on NOTIFY)", positive, False,
           "--poll-interval", float),
    Option("types", None,
           "serve only these types, comma-separated (default: every type with a handler)",
           optional=True, flag="--types", parse=argtypes.csv),
    Option("prefixes", (), "claim types by LIKE prefix instead, e.g. 'billing.%%'",
           flag="--prefixes", parse=argtypes.csv),
    Option("worker_id", None, "worker id (default hostname-pid)", optional=True,
           flag="--worker-id"),
    Option("timeout", None,
           "seconds a run may take before its process is killed (default: none; handlers "
           "can set their own)", positive, True, "--timeout", float),
    Option("max_tasks_per_child", None,
           "replace a worker process after this many runs (default: never)", positive, True,
           "--max-tasks-per-child", int),
    Option("shutdown_grace", 30.0, "seconds running runs get to finish on shutdown",
           non_negative, False, "--shutdown-grace", float),
    Option("audit", Audit.FULL.value, "event trail: full, or failures (only what goes wrong)",
           one_of(*(a.value for a in Audit)), False, "--audit", str,
           tuple(a.value for a in Audit)),
    Option("log_interval", 10.0, "seconds between progress lines", positive, False,
           "--log-interval", float),
    Option("stats_interval", 15.0, "seconds between queue depth/lag queries for the metrics",
           positive, False, "--stats-interval", float),
    Option("prune_older_than", None,
           "also delete succeeded and cancelled runs older than this, every 10 minutes "
           "(e.g. 30d; default: keep everything)",
           lambda v: None if v > timedelta(0) else "must be positive", True,
           "--prune-older-than", argtypes.parse_duration),
    Option("flush_interval", 0.02, "seconds an outcome waits at most for company in a flush",
           positive),
    Option("heartbeat_interval", None, "seconds between lease renewals (default: lease/3)",
           positive, True),
    Option("start_method", None, "multiprocessing start method (default: the platform's)",
           one_of("fork", "spawn", "forkserver"), True),
    Option("listen", True, "wake on NOTIFY (PostgreSQL)"),
    Option("schedules", False, "also run the schedule ticker"),
)  # fmt: skip
BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class PoolSettings:
    """The checked values of every option (see `OPTIONS` for what each means)."""

    processes: int
    concurrency: int
    executor: str
    batch_size: int
    prefetch: int | None
    db_concurrency: int | None
    lease_seconds: float
    poll_interval: float
    types: Sequence[str] | None
    prefixes: Sequence[str]
    worker_id: str | None
    timeout: float | None
    max_tasks_per_child: int | None
    shutdown_grace: float
    audit: str
    log_interval: float
    stats_interval: float
    prune_older_than: timedelta | None
    flush_interval: float
    heartbeat_interval: float | None
    start_method: str | None
    listen: bool
    schedules: bool

    @classmethod
    def build(cls, **given: Any) -> PoolSettings:
        """The defaults, overridden by `given`; ConfigError names the first bad value."""
        unknown = sorted(set(given) - set(BY_NAME))
        if unknown:
            raise ConfigError(f"unknown pool option(s): {', '.join(unknown)}")
        values = {option.name: given.get(option.name, option.default) for option in OPTIONS}
        if values["processes"] is None:
            values["processes"] = _cores()
        if values["executor"] == "inline":
            values["processes"] = 1
        for option in OPTIONS:
            why = option.why_not(values[option.name])
            if why is not None:
                raise ConfigError(f"{option.name} {why}, got {values[option.name]!r}")
        beat, lease = values["heartbeat_interval"], values["lease_seconds"]
        if beat is not None and beat >= lease:  # the tests do it on purpose, users by mistake
            log.warning(
                "heartbeat_interval %s >= lease_seconds %s: leases expire between renewals, "
                "and running runs are claimed again",
                beat,
                lease,
            )
        return cls(**values)

    def statements_at_once(self, most_the_backend_runs: int, runs_at_once: int) -> int:
        """How many claims (and how many flushes) may be in flight at once, for a pool that
        executes `runs_at_once` runs at once (its processes times the concurrency that
        applies)."""
        wanted = self.db_concurrency or min(8, max(4, runs_at_once // 2))
        return max(1, min(wanted, most_the_backend_runs))


def default_worker_id() -> str:
    """`hostname-pid`, as in the Go library."""
    return f"{socket.gethostname()}-{os.getpid()}"


def default(name: str) -> Any:
    """An option's default value."""
    return BY_NAME[name].default
