"""Executors: where the coordinator's tasks run.

`process` (default): supervised worker processes, for CPU-bound handlers. `thread`: a thread
pool, for I/O-bound handlers. `inline`: in the coordinator's own thread, for debugging and tests.
All three take tasks with `dispatch()`, report `Result`s from `wait()`, and route a handler's
`run.heartbeat()` / `run.is_cancelled()` to the coordinator (`Control`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import queue
import selectors
import signal
import socket
import struct
import threading
import time
from collections import deque
from multiprocessing.connection import wait as wait_any
from typing import Any, Protocol

from .errors import ConfigError
from .handlers import Registry, Run
from .models import LeaseState
from .worker import SKIPPED, STOP, Result, Slot, Task, child_main, execute, signals_held

log = logging.getLogger("swf_pool.executors")

READ_BYTES = 256 * 1024


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
        """Make `run.is_cancelled()` true for task `seq` (if it is running)."""
        ...

    def kill(self, seq: int, reason: str) -> bool:
        """Stop task `seq` now if possible (its result becomes a failure with `reason`);
        True if this call started killing it."""
        ...

    def take_unstarted(self) -> list[Task]:
        """Remove and return the tasks not started yet."""
        ...

    def close(self, grace: float) -> list[Result]:
        """Let running tasks finish within `grace` seconds; results of those that did."""
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


def make_executor(
    kind: str,
    app: Registry | str,
    registry: Registry,
    control: Control,
    waker: Waker,
    processes: int,
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
        app, control, waker, processes, per_process, max_tasks_per_child, start_method
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

    def close(self, grace: float) -> list[Result]:
        for _ in self.threads:
            self.tasks.put(None)
        deadline = time.monotonic() + grace
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
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


class _Child:
    """One worker process and what the coordinator sent it."""

    def __init__(
        self, context: Any, app: str | Registry, worker_id: str, max_tasks: int | None, index: int
    ) -> None:
        self.slot = Slot(context.Array("d", 4, lock=False), context.Lock())
        self.conn, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=child_main,
            name=f"swf-worker-{index}",
            args=(child_end, app, worker_id, self.slot.array, self.slot.lock, max_tasks),
            daemon=True,
        )
        with signals_held():  # SIGTERM to our process group is ours to handle, not the worker's
            self.process.start()
        child_end.close()
        # our end never blocks: a worker busy in a long handler reads its pipe only later, and
        # what it cannot take yet waits in `outbuf` (written when the pipe has room again)
        self.fd = self.conn.fileno()
        os.set_blocking(self.fd, False)
        self.outbuf = bytearray()
        self.sent: dict[int, Task] = {}  # seq -> task, until its result arrives
        self.cancels: set[int] = set()  # sent and cancelled: flag it in the slot once it runs
        self.inbuf = bytearray()

    def post(self, message: Any) -> None:
        """Send one message in multiprocessing's framing (the worker reads it with `recv`):
        what the pipe takes now is written, the rest waits for `write()`."""
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        size = len(data)
        header = struct.pack("!i", size) if size < 0x7FFFFFFF else struct.pack("!iQ", -1, size)
        self.outbuf += header + data
        self.write()

    def write(self) -> bool:
        """Write what the pipe takes of `outbuf`; True once all is written. A worker that
        died takes nothing: its sentinel tells, and what it was sent goes back to the queue."""
        while self.outbuf:
            try:
                written = os.write(self.fd, self.outbuf)
            except BlockingIOError:
                return False
            except OSError:
                self.outbuf.clear()
                break
            del self.outbuf[:written]
        return True

    def messages(self) -> list[Any]:
        """Every message the worker has sent so far, read in bulk (a few reads per wake-up, not
        two per message): multiprocessing frames, a 4-byte big-endian length then a pickle."""
        while True:
            try:
                chunk = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                break  # all read
            except OSError:
                break  # the process is gone; its sentinel tells the rest
            if not chunk:
                break
            self.inbuf += chunk
        out = []
        view = memoryview(self.inbuf)
        at = 0
        while len(view) - at >= 4:
            (size,) = struct.unpack_from("!i", view, at)
            if len(view) - at - 4 < size:
                break
            out.append(pickle.loads(view[at + 4 : at + 4 + size]))
            at += 4 + size
        view.release()
        del self.inbuf[:at]
        return out


class ProcessExecutor:
    """Supervised worker processes: replaced when they die, are killed, or retire."""

    def __init__(
        self,
        app: str | Registry,
        control: Control,
        waker: Waker,
        processes: int,
        per_process: int,
        max_tasks: int | None,
        start_method: str | None,
    ) -> None:
        self.app, self.control, self.waker = app, control, waker
        self.size = processes
        self.per_process = per_process
        self.max_tasks = max_tasks
        # A registry given by name is imported in clean processes forked from a server;
        # an object can only be inherited by fork.
        method = start_method or ("forkserver" if isinstance(app, str) else "fork")
        self.context = multiprocessing.get_context(method)
        if method == "forkserver":
            self.context.set_forkserver_preload(["swf_pool.worker"])
        self.queue: deque[Task] = deque()
        self.children: list[_Child] = []
        self.spawned = 0
        self.restarts = 0
        self.early: list[Result] = []  # results gathered outside wait(), handed out by it
        self.killing: dict[int, str] = {}  # seq -> reason, for tasks we are killing
        self.stopping = False
        # one selector for the pool's life: the waker, and each child's pipe and sentinel
        self.selector = selectors.DefaultSelector()
        self.selector.register(waker.fileno(), selectors.EVENT_READ, None)
        for _ in range(processes):
            self._spawn()

    def _spawn(self) -> None:
        self.spawned += 1
        child = _Child(self.context, self.app, self.control.worker_id, self.max_tasks, self.spawned)
        self.children.append(child)
        self.selector.register(child.fd, selectors.EVENT_READ, (child, True))
        self.selector.register(child.process.sentinel, selectors.EVENT_READ, (child, False))

    def _post(self, child: _Child, message: Any) -> None:
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

    def _receive(self, child: _Child) -> list[Result]:
        results = []
        for message in child.messages():
            if isinstance(message[0], int):  # a Result, as a tuple
                result = Result(*message)
                child.sent.pop(result.seq, None)
                child.cancels.discard(result.seq)
                results.append(result)
            elif message[0] == "fatal":
                raise ConfigError(f"a worker process could not start: {message[1]}")
            else:  # ("heartbeat", seq, seconds): answer at once, the handler waits
                _, seq, seconds = message
                state = self.control.extend_lease(seq, seconds)
                self._post(child, ("lease", state.value))
        return results

    def _reap(self, child: _Child, killed: bool = False) -> list[Result]:
        """A process ended (or we `killed` it): settle its tasks, and replace it unless stopping."""
        results = self._receive(child)
        child.process.join()
        code = child.process.exitcode
        running = child.slot.current
        reason = self.killing.pop(running, None) or _death(code)
        if running and running in child.sent:
            del child.sent[running]
            results.append(Result(running, False, reason))
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
            seq = child.slot.current
            if seq:
                out[seq] = child.slot.started
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
            # under the slot's lock the worker cannot start its next task: we kill this one
            with child.slot.guard():
                if child.slot.current == seq and seq not in self.killing:
                    self.killing[seq] = reason
                    _kill(child.process.pid)
                    return True
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
            for seq in [s for s in child.sent if s != running]:
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

    def close(self, grace: float) -> list[Result]:
        """Stop every process after its current task; kill what outlives `grace`."""
        self.stopping = True
        results: list[Result] = []
        for child in self.children:
            self._post(child, STOP)
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            results += self.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        for child in list(self.children):
            running = child.slot.current
            if running:
                self.killing[running] = (
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
