"""The statement thread: runs the coordinator's claims and flushes off its loop.

While one of them waits on the database, the coordinator keeps receiving results and feeding
workers (psycopg releases the GIL while it waits), so the database and the workers are busy
at the same time instead of taking turns. Jobs run one at a time, in order.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CLOSE_SECONDS = 60.0


@dataclass
class Done:
    """A finished job: its `value`, or the exception it raised."""

    kind: str
    value: Any = None
    error: BaseException | None = None


class StatementThread:
    def __init__(self, wake: Callable[[], None], name: str, start: bool = True) -> None:
        self._wake = wake
        self._jobs: queue.SimpleQueue[tuple[str, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._done: deque[Done] = deque()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        if start:
            self._thread.start()

    @classmethod
    def idle(cls) -> StatementThread:
        """A placeholder that runs nothing (before the pool starts)."""
        return cls(lambda: None, "swf-idle", start=False)

    def submit(self, kind: str, job: Callable[[], Any]) -> None:
        self._jobs.put((kind, job))

    def completed(self) -> list[Done]:
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def close(self) -> list[Done]:
        """Finish the queued jobs, stop, and return what completed."""
        if self._thread.is_alive():
            self._jobs.put(None)
            # bounded: connections have timeouts and keepalives, so this is a last resort
            self._thread.join(CLOSE_SECONDS)
        return self.completed()

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            kind, job = item
            try:
                self._done.append(Done(kind, job()))
            except BaseException as exc:  # handed to the coordinator, which decides
                self._done.append(Done(kind, error=exc))
            self._wake()
