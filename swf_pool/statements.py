"""Statement threads: run the coordinator's claims and flushes off its loop, several at once.

While statements wait on the database, the coordinator keeps receiving results and feeding
workers (psycopg releases the GIL while it waits), so the database and the workers are busy
at the same time instead of taking turns. Each thread takes a pooled connection per
statement, so `threads` statements can be in flight at once: enough of them hide the round
trip and the commit of each, which is what bounds one pool on a remote or many-core database.

`Backoff` is the pause each kind keeps after the database failed it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("swf_pool.pool")

CLOSE_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 5.0


@dataclass
class Done:
    """A finished job: its `value`, or the exception it raised."""

    kind: str
    value: Any = None
    error: BaseException | None = None


class StatementThreads:
    """`threads` threads that run the jobs given to `submit`, each as soon as one is free."""

    def __init__(self, wake: Callable[[], None], name: str, threads: int = 1) -> None:
        self._wake = wake
        self._jobs: queue.SimpleQueue[tuple[str, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._done: deque[Done] = deque()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, kind: str, job: Callable[[], Any]) -> None:
        self._jobs.put((kind, job))

    def completed(self) -> list[Done]:
        """What completed since the last call. A job's exception is raised here: the jobs
        return database errors as values, anything else is a bug and must not pass unseen."""
        out = []
        while self._done:
            done = self._done.popleft()
            if done.error is not None:
                raise done.error
            out.append(done)
        return out

    def close(self) -> list[Done]:
        """Finish the queued jobs, stop, and return what completed."""
        self.stop()
        return self.completed()

    def stop(self) -> None:
        """Finish the queued jobs and stop (after an error: what they bring is not wanted)."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            # bounded: connections have timeouts and keepalives, so this is a last resort
            thread.join(CLOSE_SECONDS)

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            kind, job = item
            try:
                self._done.append(Done(kind, job()))
            except BaseException as exc:  # handed to the coordinator, which decides
                self._done.append(Done(kind, error=exc))
            self._wake()


class Backoff:
    """After a failed statement: no claim or flush before `until` (monotonic seconds), the
    pause doubling from 0.1 s to 5 s while failures go on."""

    def __init__(self, on_failure: Callable[[BaseException], None]) -> None:
        self.seconds = 0.0
        self.until = 0.0
        self.on_failure = on_failure

    def failed(self, what: str, exc: BaseException, now: float) -> None:
        self.on_failure(exc)
        self.seconds = min(max(self.seconds * 2, 0.1), BACKOFF_MAX_SECONDS)
        self.until = now + self.seconds
        log.warning("%s failed (retrying in %.1fs): %s", what, self.seconds, exc)

    def succeeded(self) -> None:
        self.seconds = 0.0
