"""Waiting for runs to finish (`Client.wait`, `AsyncClient.wait`, REST `?wait=`).

One registry of waiters per client, woken by one listener thread: on PostgreSQL the NOTIFY
that a flush (`complete`, once per statement) or a cancel sends, carrying the ids of the runs
that finished. A woken waiter reads its run again. No waiter holds a connection between its
reads. Polling is the fallback: on SQLite, while the listener is down or not yet listening
(a few milliseconds, backing off), and now and then beside it, in case a NOTIFY was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from .errors import RunNotFound, WaitTimeout
from .models import RunRecord, Status

if TYPE_CHECKING:
    from .listener import FinishedListener

# A backend's `finished_listener`: the listener thread for these waits (None: poll only).
ListenerFactory = Callable[[Callable[[str | None], None]], "FinishedListener | None"]

R = TypeVar("R")
FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
POLL_FIRST_SECONDS = 0.005
POLL_MAX_SECONDS = 0.2  # without a listener, reads back off to one per this
LISTENING_POLL_SECONDS = 1.0  # with one, a read this often all the same
MAX_WAIT_SECONDS = 60.0  # a long poll's limit (`GET /workflows/{id}?wait=`)


class Pace:
    """How long a wait pauses before it reads again: never past its deadline; long while a
    listener will wake it, else from a few milliseconds, doubling up to `POLL_MAX_SECONDS`."""

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.poll = POLL_FIRST_SECONDS

    def next(self, listening: bool) -> float | None:
        """Seconds to pause, or None: the deadline has passed."""
        if listening:
            step = LISTENING_POLL_SECONDS
        else:
            step, self.poll = self.poll, min(self.poll * 2, POLL_MAX_SECONDS)
        if self.deadline is None:
            return step
        left = self.deadline - time.monotonic()
        return None if left <= 0 else min(step, left)


class Waits:
    """The waits of one client, by run id; its listener starts with the first wait."""

    def __init__(self, listener: ListenerFactory) -> None:
        self._make_listener = listener
        self._lock = threading.Lock()
        self._wakes: dict[str, set[Callable[[], None]]] = {}
        self._listener: FinishedListener | None = None
        self._state = "idle"  # then "started", then "closed"

    def close(self) -> None:
        with self._lock:
            listener, self._listener, self._state = self._listener, None, "closed"
        if listener is not None:
            listener.__exit__(None, None, None)

    def listening(self) -> bool:
        """Whether a listener is in place (the first call starts it)."""
        with self._lock:
            if self._state == "idle":
                self._state = "started"
                listener = self._make_listener(self.wake)
                self._listener = None if listener is None else listener.__enter__()
            return self._listener is not None and self._listener.ready.is_set()

    def wake(self, payload: str | None) -> None:
        """Wake the waiters of the runs in `payload` (comma-separated ids; empty or None:
        every waiter, since any run may have finished)."""
        with self._lock:
            if payload:
                wakes = [w for key in payload.split(",") for w in self._wakes.get(key, ())]
            else:
                wakes = [w for waiting in self._wakes.values() for w in waiting]
        for wake in wakes:
            wake()

    @contextmanager
    def watching(self, run_id: str, wake: Callable[[], None]) -> Iterator[None]:
        with self._lock:
            self._wakes.setdefault(run_id, set()).add(wake)
        try:
            yield
        finally:
            with self._lock:
                waiting = self._wakes[run_id]
                waiting.discard(wake)
                if not waiting:
                    del self._wakes[run_id]

    def until(
        self,
        run_id: str,
        read: Callable[[], R | None],
        finished: Callable[[R], bool],
        timeout: float | None,
    ) -> R | None:
        """`read()` whenever `run_id` may have finished, until `finished` says it has or
        `timeout` seconds pass; return the last read (None: there is no such run)."""
        woken = threading.Event()
        with self.watching(run_id, woken.set):  # before the first read: no wake is missed
            pace = Pace(timeout)
            while True:
                value = read()
                if value is None or finished(value):
                    return value
                pause = pace.next(self.listening())
                if pause is None:
                    return value
                woken.wait(pause)
                woken.clear()

    async def until_async(
        self,
        run_id: str,
        read: Callable[[], Awaitable[R | None]],
        finished: Callable[[R], bool],
        timeout: float | None,
    ) -> R | None:
        """`until`, for a coroutine: the listener thread wakes it on its event loop."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under a late wake
                loop.call_soon_threadsafe(woken.set)

        with self.watching(run_id, wake):
            pace = Pace(timeout)
            while True:
                value = await read()
                if value is None or finished(value):
                    return value
                pause = pace.next(self.listening())
                if pause is None:
                    return value
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), pause)
                woken.clear()


def is_finished(run: RunRecord) -> bool:
    return run.status in FINISHED


def finished_run(run_id: str, run: RunRecord | None, timeout: float | None) -> RunRecord:
    """What a wait returns: the finished run, or the error that says why there is none."""
    if run is None:
        raise RunNotFound(f"workflow run {run_id!r} not found")
    if not is_finished(run):
        raise WaitTimeout(f"workflow run {run.id} is still {run.status} after {timeout:g}s")
    return run
