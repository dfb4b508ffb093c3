"""The worker side: executing one run, and the loop of a worker process.

A worker process opens no database connection. It receives tasks from the coordinator over a
pipe, runs them one at a time, and sends each result back before it starts the next; it
publishes what it is running in shared memory (`Slot`) so the coordinator can time it out or
account for it if the process dies. `run.heartbeat()` is a request over the same pipe;
`run.is_cancelled()` reads the shared memory, where the coordinator's heartbeat marks
cancelled or lost runs.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from . import codec
from .errors import InvalidPayload, PermanentError
from .handlers import LeaseControl, Registry, Run, load_registry
from .models import Claimed, LeaseState
from .tracebacks import format_traceback


class Task(NamedTuple):  # a tuple: built per run on the hot path
    """A claimed run handed to an executor; `seq` is unique within one pool."""

    seq: int
    run: Claimed

    def wire(self) -> tuple[Any, ...]:
        """A plain tuple to send to a worker process (pickles ~6x faster than dataclasses)."""
        run = self.run
        return (self.seq, run.id, run.type, run.payload, run.attempt, run.max_attempts)

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> Task:
        seq, run_id, type_, payload, attempt, max_attempts = wire
        return cls(seq, Claimed(run_id, type_, payload, attempt, max_attempts, _NO_TIME, _NO_TIME))


_NO_TIME = datetime.fromtimestamp(0, UTC)  # a worker process does not need created_at


class Result(NamedTuple):  # a tuple: built per run on the hot path
    """What became of one task: `value` is the JSON result (ok) or the error text, `trace` a
    failed handler's traceback (bounded)."""

    seq: int
    ok: bool
    value: str | None
    permanent: bool = False
    started: float = 0.0  # wall clock (time.time()) when the handler began
    duration: float = 0.0
    trace: str | None = None

    def wire(self) -> tuple[Any, ...]:
        wire = (self.seq, self.ok, self.value, self.permanent, self.started, self.duration)
        return wire if self.trace is None else (*wire, self.trace)  # only failures carry one


def describe_error(exc: BaseException) -> str:
    """The text stored in `last_error`: exception type and message."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def execute(registry: Registry, task: Task, control: LeaseControl, worker_id: str) -> Result:
    """Run the handler of one task; a handler's exception is data, not a crash."""
    handler = registry.get(task.run.type)
    started = time.time()
    clock = time.perf_counter()
    try:
        if handler is None:
            raise LookupError(f"no handler for type {task.run.type!r} on {worker_id}")
        value = codec.encode(handler.func(Run(task.run, control)), "result")
    except Exception as exc:
        duration = time.perf_counter() - clock
        permanent = isinstance(exc, PermanentError | InvalidPayload)
        trace = format_traceback(exc)
        return Result(task.seq, False, describe_error(exc), permanent, started, duration, trace)
    return Result(task.seq, True, value, False, started, time.perf_counter() - clock)


LOCK_WAIT_SECONDS = 1.0  # a worker holds its slot's lock for microseconds, unless it died


class Slot:
    """Shared memory between the coordinator and one worker process.

    [0] seq of the task running now (0: idle), [1] its time.monotonic() start,
    [2] a seq the coordinator marked cancelled or lost, [3] 1 once the pool stops: start
    nothing more. The lock makes "may I start?" and "stop starting" exclusive, so the
    coordinator knows exactly which tasks never started. The coordinator waits for it only a
    bounded time: a worker killed while holding it (an OOM kill, say) never gives it back.
    """

    CURRENT, STARTED, CANCELLED, STOPPING = 0, 1, 2, 3

    def __init__(self, array: Any, lock: Any) -> None:
        self.array = array
        self.lock = lock

    @property
    def current(self) -> int:
        return int(self.array[self.CURRENT])

    @property
    def started(self) -> float:
        return float(self.array[self.STARTED])

    def begin(self, seq: int) -> bool:
        """In the worker: mark `seq` as running, unless the pool is stopping."""
        with self.lock:
            if self.array[self.STOPPING]:
                return False
            self.array[self.STARTED] = time.monotonic()
            self.array[self.CURRENT] = seq
            return True

    def end(self) -> None:
        self.array[self.CURRENT] = 0

    @contextmanager
    def guard(self) -> Iterator[None]:
        """In the coordinator: hold the lock, so the worker starts nothing meanwhile."""
        acquired = self.lock.acquire(timeout=LOCK_WAIT_SECONDS)
        try:
            yield
        finally:
            if acquired:
                self.lock.release()

    def stop_starting(self) -> int:
        """In the coordinator: no task starts after this; returns the one running (or 0)."""
        with self.guard():
            self.array[self.STOPPING] = 1
            return int(self.array[self.CURRENT])

    def cancel_if_running(self, seqs: set[int]) -> None:
        """In the coordinator: flag the running task if it is one of the cancelled `seqs`
        (one flag: only the running task can look at it)."""
        with self.guard():
            current = int(self.array[self.CURRENT])
            if current in seqs:
                self.array[self.CANCELLED] = current

    def is_cancelled(self, seq: int) -> bool:
        return int(self.array[self.CANCELLED]) == seq


STOP = "stop"  # coordinator -> worker: finish the current task, then exit
LOOK_SECONDS = 0.005  # how often a busy worker checks its pipe between tasks
SKIPPED = "cancelled before it started"  # the result of a task whose handler never ran


class _ChildControl:
    """`LeaseControl` inside a worker process: through the pipe and the shared slot."""

    def __init__(self, conn: Connection, slot: Slot, inbox: deque[Task]) -> None:
        self.conn = conn
        self.slot = slot
        self.inbox = inbox
        self.seq = 0
        self.stopping = False

    def extend_lease(self, run: Run, seconds: float) -> LeaseState:
        self.conn.send(("heartbeat", self.seq, seconds))
        while True:
            message = self.conn.recv()
            if not self.receive(message):
                return LeaseState(message[1])

    def lease_state(self, run: Run) -> LeaseState:
        return LeaseState.CANCELLED if self.slot.is_cancelled(self.seq) else LeaseState.HELD

    def receive(self, message: Any) -> bool:
        """Take in tasks, a cancel or a stop; False for anything else (a heartbeat reply)."""
        if isinstance(message, list):
            self.inbox.extend(map(Task.from_wire, message))
        elif message == STOP:
            self.stopping = True
        elif message[0] == "cancel":
            # a task cancelled before it started is skipped: its handler never runs
            for task in [t for t in self.inbox if t.seq == message[1]]:
                self.inbox.remove(task)
                self.conn.send(Result(task.seq, False, SKIPPED).wire())
        else:
            return False
        return True


# The coordinator's signals (a graceful stop, a second one aborts). Workers leave them to it: a
# SIGTERM to the whole process group (systemd, `timeout`, container runtimes) must not kill
# running handlers. The coordinator stops a worker with STOP or, when it must, SIGKILL.
COORDINATOR_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """Block the coordinator's signals in this thread while a worker process starts: the
    process, and a forkserver started for it (which never unblocks them), inherit the mask, so
    none dies of one before `child_main` ignores them (the stdlib's resource tracker does the
    same, bpo-33613). What arrived meanwhile reaches the coordinator when they are unblocked."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, COORDINATOR_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _die_with_coordinator(conn: Connection) -> None:
    """Exit as soon as the coordinator is gone (its end of our pipe hangs up), even in the
    middle of a handler: the run's lease will expire and another worker will rescue it, so
    it must not run on here. Linux reports the hang-up as POLLRDHUP without any read."""
    if not hasattr(select, "POLLRDHUP"):
        return
    watcher = select.poll()
    watcher.register(conn.fileno(), select.POLLRDHUP)

    def watch() -> None:
        while not watcher.poll():
            pass
        os._exit(1)

    threading.Thread(target=watch, name="swf-orphan-watch", daemon=True).start()


def child_main(
    conn: Connection,
    app: str | Registry,
    worker_id: str,
    slot_array: Any,
    slot_lock: Any,
    max_tasks: int | None,
) -> None:
    """The loop of one worker process."""
    for signum in COORDINATOR_SIGNALS:  # ignored, then unblocked: one sent meanwhile is dropped
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, COORDINATOR_SIGNALS)
    _die_with_coordinator(conn)
    try:
        registry = load_registry(app) if isinstance(app, str) else app
    except Exception as exc:  # tell the coordinator why, rather than die in a restart loop
        conn.send(("fatal", describe_error(exc)))
        return
    slot = Slot(slot_array, slot_lock)
    inbox: deque[Task] = deque()
    control = _ChildControl(conn, slot, inbox)
    done = 0
    looked = 0.0
    while not control.stopping and (max_tasks is None or done < max_tasks):
        # between tasks, look for messages (cancels, more tasks) now and then, or wait for them
        if not inbox or time.monotonic() - looked > LOOK_SECONDS:
            looked = time.monotonic()
            while not inbox or conn.poll():
                try:
                    control.receive(conn.recv())
                except EOFError:  # the coordinator is gone
                    os._exit(0)
                if control.stopping:
                    return
        task = inbox.popleft()
        control.seq = task.seq
        if not slot.begin(task.seq):
            return  # the pool stops: what is left in the inbox never started
        result = execute(registry, task, control, worker_id)
        # synchronous: once it returns, the result survives our death (plain pickle: the
        # multiprocessing pickler costs 5x more per call)
        conn.send_bytes(pickle.dumps(result.wire(), pickle.HIGHEST_PROTOCOL))
        slot.end()
        done += 1
