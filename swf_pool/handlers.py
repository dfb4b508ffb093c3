"""Handlers: what a worker knows how to execute, and the `Run` each handler receives.

A handler is a function (or an object with `execute`) taking the `Run`; an `async def` one is
run on an event loop (see `async_worker.py`).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import ConfigError, ValidationError
from .fleet import ControlChange, Rate, limit_value
from .models import DEFAULT_LEASE_SECONDS, Claimed, LeaseState
from .retry import DEFAULT_POLICY, RetryPolicy


class LeaseControl(Protocol):
    """How a `Run` reaches the worker that holds its lease."""

    def extend_lease(self, run: Run, seconds: float) -> LeaseState: ...
    def lease_state(self, run: Run) -> LeaseState: ...


class Run:
    """A run being executed, as its handler sees it."""

    __slots__ = ("_control", "attempt", "id", "max_attempts", "payload", "type")

    def __init__(self, claimed: Claimed, control: LeaseControl) -> None:
        self.id = claimed.id
        self.type = claimed.type
        self.payload = claimed.payload
        self.attempt = claimed.attempt
        self.max_attempts = claimed.max_attempts
        self._control = control

    def heartbeat(self, seconds: float = DEFAULT_LEASE_SECONDS) -> bool:
        """Extend the lease to at least `seconds` from now (it is never shortened: the pool
        renews it too); False if the run is no longer ours. It waits for the database: from an
        async handler, `await run.aheartbeat()` instead."""
        if seconds <= 0:
            raise ConfigError(f"heartbeat seconds must be > 0, got {seconds}")
        return self._control.extend_lease(self, seconds) is LeaseState.HELD

    async def aheartbeat(self, seconds: float = DEFAULT_LEASE_SECONDS) -> bool:
        """`heartbeat()` for async handlers: it waits on a thread, the event loop runs on."""
        return await asyncio.to_thread(self.heartbeat, seconds)

    def is_cancelled(self) -> bool:
        """True once the run was cancelled or its lease lost: stop, the result is discarded."""
        return self._control.lease_state(self) is not LeaseState.HELD

    def __repr__(self) -> str:
        return f"<Run {self.type} {self.id} attempt {self.attempt}/{self.max_attempts}>"


HandlerFunc = Callable[[Run], Any]  # its value, or for an async handler a coroutine of it


class HandlerObject(Protocol):
    """A class-based handler."""

    def execute(self, run: Run) -> Any: ...


@dataclass(frozen=True)
class Handler:
    type: str
    func: HandlerFunc
    retry: RetryPolicy
    timeout: float | None = None  # seconds; the process executor stops runs past it
    asynchronous: bool = False  # `async def`: it runs on an event loop
    concurrency: int | None = None  # most runs leased at once over every pool (the fleet's)
    rate: Rate | None = None  # most starts per period over every pool

    def declared_limits(self) -> ControlChange | None:
        """The limits this handler declares, for a pool to write when it starts."""
        if self.concurrency is None and self.rate is None:
            return None
        return ControlChange(
            self.type,
            concurrency=self.concurrency,
            set_concurrency=self.concurrency is not None,
            rate=self.rate,
            set_rate=self.rate is not None,
        )


def is_async(func: Callable[..., Any]) -> bool:
    """An `async def` function or method, or an object whose `__call__` is one."""
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 (the method itself, not callable())
    )


class Registry:
    """Handlers by exact run type.

    registry = Registry()

    @registry.handler("email.send.v1")
    def send(run: Run) -> dict: ...

    registry.register("report.build.v1", ReportBuilder(), retry=Fixed(30))
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(
        self,
        type: str,
        handler: HandlerFunc | HandlerObject,
        *,
        retry: RetryPolicy = DEFAULT_POLICY,
        timeout: float | None = None,
        concurrency: int | None = None,
        rate: str | Rate | None = None,
    ) -> None:
        """`concurrency`, `rate` ('100/m'): limits over every pool, written to the database
        when a pool serving this type starts (operators may change them meanwhile)."""
        if not isinstance(type, str) or not type.strip():
            raise ConfigError(f"handler type must be a non-empty string, got {type!r}")
        if type in self._handlers:
            raise ConfigError(f"a handler for {type!r} is already registered")
        execute = getattr(handler, "execute", None)
        func = execute if callable(execute) else handler
        if not callable(func):
            raise ConfigError(f"handler for {type!r} is neither callable nor has execute()")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout for {type!r} must be > 0 seconds, got {timeout}")
        try:
            limits = (limit_value(concurrency), None if rate is None else Rate.parse(rate))
        except ValidationError as exc:
            raise ConfigError(f"handler for {type!r}: {exc}") from None
        self._handlers[type] = Handler(type, func, retry, timeout, is_async(func), *limits)

    def handler(
        self,
        type: str,
        *,
        retry: RetryPolicy = DEFAULT_POLICY,
        timeout: float | None = None,
        concurrency: int | None = None,
        rate: str | Rate | None = None,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        def decorate(func: HandlerFunc) -> HandlerFunc:
            self.register(
                type, func, retry=retry, timeout=timeout, concurrency=concurrency, rate=rate
            )
            return func

        return decorate

    def get(self, type: str) -> Handler | None:
        return self._handlers.get(type)

    @property
    def types(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def asynchronous(self) -> bool:
        """Whether any handler is async: its worker processes then run an event loop."""
        return any(handler.asynchronous for handler in self._handlers.values())

    def handlers(self) -> list[Handler]:
        return list(self._handlers.values())

    def retry_policy(self, type: str) -> RetryPolicy:
        handler = self._handlers.get(type)
        return handler.retry if handler else DEFAULT_POLICY

    def timeout(self, type: str, default: float | None) -> float | None:
        """Seconds a run of `type` may take: its handler's timeout, else `default`."""
        handler = self._handlers.get(type)
        return (handler.timeout if handler else None) or default

    def served(self, types: Iterable[str] | None, by_prefix: bool) -> list[str]:
        """The types a pool claims: `types` (each must have a handler), or all of them. By
        prefix, only `types` (the prefixes say the rest)."""
        if by_prefix:
            return list(types or [])
        if types is None:
            return self.types
        unknown = sorted(set(types) - set(self._handlers))
        if unknown:
            raise ConfigError(f"no handler for the requested type(s): {', '.join(unknown)}")
        return list(types)


def like_patterns(prefixes: Iterable[str]) -> list[str]:
    """LIKE patterns for type prefixes: `billing.%` or `billing.` both mean "starts with".

    Only the trailing `%` is a wildcard; `%`, `_` and `\\` elsewhere are matched literally.
    """
    patterns = []
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.rstrip("%"):
            raise ConfigError(f"type prefix must be non-empty text before '%', got {prefix!r}")
        literal = prefix.rstrip("%")
        escaped = literal.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        patterns.append(escaped + "%")
    return patterns


def load_registry(spec: str) -> Registry:
    """Import `package.module:name` and return the `Registry` it names (or a factory's)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--app must look like package.module:registry, got {spec!r}")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        # as Celery and RQ do: the app is found from where the command runs (and the worker
        # processes, which start with this sys.path, find it too)
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for --app {spec!r}: {exc}") from None
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    registry = found() if callable(found) and not isinstance(found, Registry) else found
    if not isinstance(registry, Registry):
        raise ConfigError(f"{spec!r} is a {type(registry).__name__}, not a swf_pool.Registry")
    return registry
