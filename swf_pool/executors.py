"""Executors: where the coordinator's tasks run.

`process` (default, `process_executor.py`): supervised worker processes, for CPU-bound
handlers, and for async ones with an event loop in each process (`async_worker.py`), up to
`--concurrency` runs at once per process. `thread`: a thread pool, for I/O-bound handlers.
`inline`: in the coordinator's own thread, for debugging and tests (both `local_executors.py`).
All three take tasks with `dispatch()`, report `Result`s from `wait()`, and route a handler's
`run.heartbeat()` / `run.is_cancelled()` to the coordinator (`Control`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from multiprocessing.connection import wait as wait_any
from typing import Protocol

from .handlers import Registry
from .local_executors import InlineExecutor, ThreadExecutor
from .models import LeaseState
from .process_executor import ProcessExecutor
from .worker import Result, Task

log = logging.getLogger("swf_pool.pool")


class Control(Protocol):
    """What executors need from the coordinator."""

    worker_id: str

    def extend_lease(self, seq: int, seconds: float) -> LeaseState: ...
    def is_cancelled(self, seq: int) -> bool: ...


class Executor(Protocol):
    restarts: int  # worker processes replaced after they died or were killed

    def free(self) -> int:
        """How many more tasks it takes now."""
        ...

    def dispatch(self, tasks: list[Task]) -> None: ...

    def wait(self, timeout: float) -> list[Result]:
        """Results so far; blocks up to `timeout` (or until woken) when there are none."""
        ...

    def running(self) -> dict[int, float]:
        """seq -> time.monotonic() start of every task executing now."""
        ...

    def cancel(self, seq: int) -> None:
        """Make `run.is_cancelled()` true for task `seq` (if it is running), and cancel the
        asyncio task of an async handler's run in a worker process."""
        ...

    def kill(self, seq: int, reason: str) -> bool:
        """Stop task `seq` now if possible (its result becomes a failure with `reason` and how
        it was stopped); True if this call started stopping it."""
        ...

    def take_unstarted(self) -> list[Task]:
        """Remove and return the tasks not started yet."""
        ...

    def closing(self) -> None:
        """Every worker stops after what it runs now (after `take_unstarted`); `wait()` goes
        on handing out their results."""
        ...

    def busy(self) -> bool:
        """Whether a worker may still hand out a result (it runs, or has yet to exit)."""
        ...

    def close(self, grace: float) -> list[Result]:
        """Stop what outlived the `grace` (seconds) now: the results of everything left,
        failures for what was stopped."""
        ...

    def terminate(self) -> None:
        """Stop at once, after an error: nothing may outlive the pool."""
        ...

    def kill_all(self) -> None:
        """Kill the workers now, without waiting (safe in a signal handler)."""
        ...

    def hold(self, per_process: int) -> None:
        """How many tasks one worker may hold: the one it runs and those queued for it."""
        ...


def runs_at_once(kind: str, registry: Registry, concurrency: int) -> int:
    """How many runs one worker executes at once: `concurrency` in a worker process of an app
    with async handlers (an event loop), else one (a thread, or the coordinator's own, runs
    one at a time), and a warning says the setting does nothing."""
    if kind == "process" and registry.asynchronous:
        return concurrency
    if concurrency > 1:
        why = "no async handler is served" if kind == "process" else f"the {kind} executor"
        log.warning(
            "--concurrency %d has no effect: %s (each worker runs one run at a time; "
            "it applies to `async def` handlers in worker processes)",
            concurrency,
            why,
        )
    return 1


def make_executor(
    kind: str,
    app: Registry | str,
    registry: Registry,
    control: Control,
    waker: Waker,
    processes: int,
    at_once: int,
    per_process: int,
    max_tasks_per_child: int | None,
    start_method: str | None,
) -> Executor:
    """The executor of `kind` (`process`, `thread` or `inline`); `app` is what worker
    processes import (the registry itself, or its `module:attr` name)."""
    if kind == "inline":
        return InlineExecutor(registry, control, waker)
    if kind == "thread":
        return ThreadExecutor(registry, control, waker, processes)
    return ProcessExecutor(
        app,
        control,
        waker,
        processes,
        at_once,
        registry.asynchronous,
        per_process,
        max_tasks_per_child,
        start_method,
    )


class Waker:
    """A self-pipe: other threads wake the coordinator out of `wait()`."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)

    def wake(self) -> None:
        # BlockingIOError: already full of wake-ups, one is enough; OSError: closed, too late
        with contextlib.suppress(OSError):
            self._write.send(b"x")

    def wait(self, timeout: float) -> None:
        """Wait until we are woken or `timeout` passes."""
        if wait_any([self._read], timeout):
            self.drain()

    def fileno(self) -> int:
        return self._read.fileno()

    def drain(self) -> None:
        """Take the wake-ups in (after the descriptor was seen readable)."""
        try:
            while self._read.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._read.close()
        self._write.close()
