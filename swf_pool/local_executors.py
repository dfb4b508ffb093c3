"""The executors that run handlers in the coordinator's own process: `inline` (in its thread,
for debugging and tests) and `thread` (a pool of threads, for I/O-bound handlers).

An async handler runs on an event loop of its own for the run (`asyncio.run`), one run at a
time per thread: `--concurrency` is for the process executor. Neither executor can stop a
handler from outside: `run.is_cancelled()` tells it, and timeouts need the process executor.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from .handlers import Registry, Run
from .models import LeaseState
from .worker import SKIPPED, Result, Task, execute

if TYPE_CHECKING:
    from .executors import Control, Waker


class _LocalRun:
    """`LeaseControl` for handlers in the coordinator's process (inline and thread)."""

    def __init__(self, control: Control, seq: int) -> None:
        self.control = control
        self.seq = seq

    def extend_lease(self, run: Run, seconds: float) -> LeaseState:
        return self.control.extend_lease(self.seq, seconds)

    def lease_state(self, run: Run) -> LeaseState:
        cancelled = self.control.is_cancelled(self.seq)
        return LeaseState.CANCELLED if cancelled else LeaseState.HELD


class InlineExecutor:
    """Runs one task per `wait()`, in the calling thread."""

    restarts = 0

    def __init__(self, registry: Registry, control: Control, waker: Waker) -> None:
        self.registry, self.control, self.waker = registry, control, waker
        self.queue: deque[Task] = deque()
        self.current: tuple[int, float] | None = None

    def free(self) -> int:
        return 0 if self.queue else 1

    def dispatch(self, tasks: list[Task]) -> None:
        self.queue.extend(tasks)

    def wait(self, timeout: float) -> list[Result]:
        if not self.queue:
            self.waker.wait(timeout)
            return []
        task = self.queue.popleft()
        if self.control.is_cancelled(task.seq):
            return [Result(task.seq, False, SKIPPED)]
        self.current = (task.seq, time.monotonic())
        try:
            control = _LocalRun(self.control, task.seq)
            return [execute(self.registry, task, control, self.control.worker_id)]
        finally:
            self.current = None

    def running(self) -> dict[int, float]:
        return dict([self.current]) if self.current else {}

    def cancel(self, seq: int) -> None:
        pass  # the control knows; is_cancelled asks it

    def kill(self, seq: int, reason: str) -> bool:
        return False  # cannot interrupt our own thread

    def take_unstarted(self) -> list[Task]:
        tasks = list(self.queue)
        self.queue.clear()
        return tasks

    def closing(self) -> None:
        pass  # runs nothing between two `wait()`s

    def busy(self) -> bool:
        return False

    def close(self, grace: float) -> list[Result]:
        return []

    def terminate(self) -> None:
        self.queue.clear()

    def kill_all(self) -> None:
        pass  # nothing runs elsewhere

    def hold(self, per_process: int) -> None:
        pass  # one at a time


class ThreadExecutor:
    """A pool of threads in the coordinator's process, for I/O-bound handlers."""

    restarts = 0

    def __init__(self, registry: Registry, control: Control, waker: Waker, threads: int) -> None:
        self.registry, self.control, self.waker = registry, control, waker
        self.size = threads
        self.tasks: queue.Queue[Task | None] = queue.Queue()
        self.results: queue.Queue[Result] = queue.Queue()
        self.outstanding = 0
        self.lock = threading.Lock()
        self.active: dict[int, float] = {}
        self.threads = [
            threading.Thread(target=self._loop, name=f"swf-thread-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        try:
            self._work()
        finally:
            self.waker.wake()  # `busy()` changed

    def _work(self) -> None:
        while (task := self.tasks.get()) is not None:
            if self.control.is_cancelled(task.seq):
                result = Result(task.seq, False, SKIPPED)
            else:
                with self.lock:
                    self.active[task.seq] = time.monotonic()
                control = _LocalRun(self.control, task.seq)
                result = execute(self.registry, task, control, self.control.worker_id)
                with self.lock:
                    del self.active[task.seq]
            self.results.put(result)
            self.waker.wake()

    def free(self) -> int:
        return max(0, 2 * self.size - self.outstanding)

    def dispatch(self, tasks: list[Task]) -> None:
        self.outstanding += len(tasks)
        for task in tasks:
            self.tasks.put(task)

    def wait(self, timeout: float) -> list[Result]:
        if self.results.empty():
            self.waker.wait(timeout)
        out = []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                break
        self.outstanding -= len(out)
        return out

    def running(self) -> dict[int, float]:
        with self.lock:
            return dict(self.active)

    def cancel(self, seq: int) -> None:
        pass

    def kill(self, seq: int, reason: str) -> bool:
        return False  # threads cannot be killed; --timeout needs the process executor

    def take_unstarted(self) -> list[Task]:
        taken = []
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                taken.append(task)
        self.outstanding -= len(taken)
        return taken

    def closing(self) -> None:
        for _ in self.threads:
            self.tasks.put(None)

    def busy(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def close(self, grace: float) -> list[Result]:
        """Threads cannot be stopped: what still runs finishes unrecorded (its lease
        expires)."""
        return self.wait(0)

    def terminate(self) -> None:
        """Threads cannot be killed: drop what has not started; running handlers finish."""
        self.take_unstarted()
        for _ in self.threads:
            self.tasks.put(None)

    def kill_all(self) -> None:
        pass  # threads die with the process

    def hold(self, per_process: int) -> None:
        pass  # each thread takes a task when it is free
