"""The process executor: supervised worker processes, for CPU-bound handlers and, with an
event loop in each, for async ones.

A worker process of sync handlers runs one task at a time; one of an app with async handlers
runs up to `concurrency` at once (`async_worker.py`). The coordinator shares the queued tasks
among them, answers their heartbeats, and settles what a process was running when it died.
A run past its timeout is stopped the way its worker allows: a sync worker is killed (the only
way to stop a handler mid-call); an async run's task is cancelled, and its process killed only
if the run is still there `CANCEL_GRACE_SECONDS` later (a sync handler on the worker's thread,
or a handler that blocks the loop).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import selectors
import signal
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .handlers import Registry
from .worker import SKIPPED, STOP, Result, Task
from .worker_process import WorkerProcess

if TYPE_CHECKING:
    from .executors import Control, Waker

log = logging.getLogger("swf_pool.executors")

CANCEL_GRACE_SECONDS = 1.0  # a task cancelled for its timeout may take this long to end
KILLED = "; its worker process was killed"
CANCELLED = "; its task was cancelled"


class ProcessExecutor:
    """Supervised worker processes: replaced when they die, are killed, or retire."""

    def __init__(
        self,
        app: str | Registry,
        control: Control,
        waker: Waker,
        processes: int,
        concurrency: int,
        asynchronous: bool,
        per_process: int,
        max_tasks: int | None,
        start_method: str | None,
    ) -> None:
        self.app, self.control, self.waker = app, control, waker
        self.size = processes
        self.concurrency = concurrency  # tasks one process runs at once
        self.asynchronous = asynchronous  # each process runs an event loop
        self.per_process = per_process
        self.max_tasks = max_tasks
        # A registry given by name is imported in clean processes forked from a server;
        # an object can only be inherited by fork.
        method = start_method or ("forkserver" if isinstance(app, str) else "fork")
        self.context = multiprocessing.get_context(method)
        if method == "forkserver":
            self.context.set_forkserver_preload(["swf_pool.worker", "swf_pool.async_worker"])
        self.queue: deque[Task] = deque()
        self.children: list[WorkerProcess] = []
        self.spawned = 0
        self.restarts = 0
        self.early: list[Result] = []  # results gathered outside wait(), handed out by it
        self.killing: dict[int, str] = {}  # seq -> the error recorded, for tasks we stop
        self.grace: dict[int, float] = {}  # seq -> when to kill the process of a cancelled run
        self.stopping = False
        # one selector for the pool's life: the waker, and each child's pipe and sentinel
        self.selector = selectors.DefaultSelector()
        self.selector.register(waker.fileno(), selectors.EVENT_READ, None)
        for _ in range(processes):
            self._spawn()

    def _spawn(self) -> None:
        self.spawned += 1
        child = WorkerProcess(
            self.context,
            self.app,
            self.control.worker_id,
            self.max_tasks,
            self.concurrency,
            self.spawned,
        )
        self.children.append(child)
        self.selector.register(child.fd, selectors.EVENT_READ, (child, True))
        self.selector.register(child.process.sentinel, selectors.EVENT_READ, (child, False))

    def _post(self, child: WorkerProcess, message: Any) -> None:
        """Send `message` to `child`; if the pipe is full, finish when it has room."""
        waiting = bool(child.outbuf)
        child.post(message)
        if not waiting and child.outbuf:
            self.selector.modify(
                child.fd, selectors.EVENT_READ | selectors.EVENT_WRITE, (child, True)
            )

    def free(self) -> int:
        held = sum(len(c.sent) for c in self.children) + len(self.queue)
        return max(0, self.size * self.per_process - held)

    def dispatch(self, tasks: list[Task]) -> None:
        self.queue.extend(tasks)
        self._feed()

    def _feed(self) -> None:
        """Share the queued tasks among the processes, least busy first, each an even share
        of what is left. A busy process is topped up only once it has room for a good chunk
        (a quarter of what it may hold), so it never runs dry and gets few, larger messages."""
        children = sorted(self.children, key=lambda c: len(c.sent))
        for index, child in enumerate(children):
            if not self.queue:
                return
            room = self.per_process - len(child.sent)
            if child.sent and room < self.per_process // 4:
                continue
            share = -(-len(self.queue) // (len(children) - index))
            chunk = [self.queue.popleft() for _ in range(min(room, share))]
            for task in chunk:
                child.sent[task.seq] = task  # if it died meanwhile, _reap takes them back
            self._post(child, [task.wire() for task in chunk])

    def wait(self, timeout: float) -> list[Result]:
        results, self.early = self.early, []
        ended = []
        for key, events in self.selector.select(0 if results else timeout):
            if key.data is None:
                self.waker.drain()
            elif not key.data[1]:  # a sentinel: the process ended (read its last messages first)
                ended.append(key.data[0])
            else:  # a pipe: messages in, or room for what waits to go out
                child = key.data[0]
                if events & selectors.EVENT_READ:
                    results += self._receive(child)
                if events & selectors.EVENT_WRITE and child.write():
                    self.selector.modify(child.fd, selectors.EVENT_READ, key.data)
        for child in ended:
            results += self._reap(child)
        for child in self.children:
            if child.cancels:
                child.slot.cancel_if_running(child.cancels)
        if not self.stopping:
            self._feed()
        return results

    def _receive(self, child: WorkerProcess) -> list[Result]:
        results = []
        for message in child.messages():
            if isinstance(message[0], int):  # a Result, as a tuple
                result = Result(*message)
                child.sent.pop(result.seq, None)
                child.cancels.discard(result.seq)
                if result.seq in self.killing:  # cancelled for its timeout: that is its error
                    self.grace.pop(result.seq, None)
                    error = self.killing.pop(result.seq)
                    result = Result(
                        result.seq, False, error, False, result.started, result.duration
                    )
                results.append(result)
            elif message[0] == "fatal":
                raise ConfigError(f"a worker process could not start: {message[1]}")
            else:  # ("heartbeat", seq, seconds): answer at once, the handler waits
                _, seq, seconds = message
                state = self.control.extend_lease(seq, seconds)
                self._post(child, ("lease", state.value))
        return results

    def _reap(self, child: WorkerProcess, killed: bool = False) -> list[Result]:
        """A process ended (or we `killed` it): settle its tasks, and replace it unless stopping."""
        results = self._receive(child)
        child.process.join()
        code = child.process.exitcode
        for seq, begun in child.slot.running().items():
            self.grace.pop(seq, None)
            reason = self.killing.pop(seq, None) or _death(code)
            if seq in child.sent:
                del child.sent[seq]
                # when it started (wall clock), for its `started` event; how long it ran, for
                # prefetch (a run killed at its timeout teaches that runs of it are long)
                ran = time.monotonic() - begun
                results.append(Result(seq, False, reason, started=time.time() - ran, duration=ran))
        self.queue.extendleft(reversed(list(child.sent.values())))  # never started
        child.sent.clear()
        self.selector.unregister(child.fd)
        self.selector.unregister(child.process.sentinel)
        child.conn.close()
        self.children.remove(child)
        if code != 0 and not killed:
            then = "" if self.stopping else "; replacing it"
            log.warning("worker process %s exited (%s)%s", child.process.name, _death(code), then)
        if not self.stopping:
            self.restarts += code != 0
            self._spawn()
        return results

    def running(self) -> dict[int, float]:
        out = {}
        for child in self.children:
            out.update(child.slot.running())
        return out

    def cancel(self, seq: int) -> None:
        for task in [t for t in self.queue if t.seq == seq]:
            self.queue.remove(task)
            self.early.append(Result(seq, False, SKIPPED))
        for child in self.children:
            if seq in child.sent:
                child.cancels.add(seq)  # flagged for run.is_cancelled() while it runs
                child.slot.cancel_if_running(child.cancels)
                self._post(child, ("cancel", seq))  # skipped if it has not started

    def kill(self, seq: int, reason: str) -> bool:
        for child in self.children:
            if seq not in child.sent:
                continue
            if self.asynchronous:
                return self._cancel_task(child, seq, reason)
            # under the slot's lock the worker cannot start its next task: we kill this one
            with child.slot.guard():
                if seq in child.slot.running() and seq not in self.killing:
                    self.killing[seq] = reason + KILLED
                    _kill(child.process.pid)
                    return True
        return False

    def _cancel_task(self, child: WorkerProcess, seq: int, reason: str) -> bool:
        """Cancel the task of an async worker's run; kill the process if the run is still
        there after the grace (the coordinator asks again while the run is past its timeout)."""
        if seq not in child.slot.running():
            return False
        if seq not in self.killing:
            self.killing[seq] = reason + CANCELLED
            self.grace[seq] = time.monotonic() + CANCEL_GRACE_SECONDS
            self._post(child, ("cancel", seq))
            return True
        if seq in self.grace and time.monotonic() > self.grace[seq]:
            del self.grace[seq]
            self.killing[seq] = reason + KILLED
            log.warning(
                "run %s did not end when cancelled; killing its worker process",
                child.sent[seq].run.id,
            )
            _kill(child.process.pid)
        return False

    def take_unstarted(self) -> list[Task]:
        """Stop every worker from starting anything more; take back all it did not start."""
        self.stopping = True
        taken = list(self.queue)
        self.queue.clear()
        for child in self.children:
            running = child.slot.stop_starting()
            # results of tasks finished before that are in the pipe already: read them
            self.early += self._receive(child)
            for seq in [s for s in child.sent if s not in running]:
                taken.append(child.sent.pop(seq))
        return taken

    def terminate(self) -> None:
        """Kill every worker process now (after an error in the coordinator)."""
        self.kill_all()
        for child in self.children:
            child.process.join()
        self.selector.close()

    def hold(self, per_process: int) -> None:
        self.per_process = per_process

    def kill_all(self) -> None:
        """SIGKILL every worker process still running, without waiting (safe in a signal
        handler)."""
        self.stopping = True
        for child in self.children:
            if child.process.exitcode is None:
                _kill(child.process.pid)

    def closing(self) -> None:
        self.stopping = True
        for child in self.children:
            self._post(child, STOP)

    def busy(self) -> bool:
        return bool(self.children)  # a process leaves the list when it has exited

    def close(self, grace: float) -> list[Result]:
        """Kill the processes still running: their runs outlived `grace`."""
        self.stopping = True
        results, self.early = self.early, []
        for child in list(self.children):
            for seq in child.slot.running():
                self.killing[seq] = (
                    f"WorkerShutdown: the pool stopped before the run finished "
                    f"(shutdown grace {grace:g}s)"
                )
            _kill(child.process.pid)
            results += self._reap(child, killed=True)
        self.selector.close()
        return results


def _kill(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return f"WorkerDied: the worker process was killed by {name} while running this run"
    return f"WorkerDied: the worker process exited with status {code} while running this run"
