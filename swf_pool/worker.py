"""The worker side: executing one run, and the loop of a worker process.

A worker process opens no database connection. It receives tasks from the coordinator over a
pipe, runs them one at a time, and sends each result back before it starts the next; it
publishes what it is running in shared memory (`Slot`) so the coordinator can time it out or
account for it if the process dies. `run.heartbeat()` is a request over the same pipe;
`run.is_cancelled()` reads the shared memory, where the coordinator's heartbeat marks
cancelled or lost runs. A worker of an app with async handlers runs an event loop instead,
several runs at once (`async_worker.py`).
"""

from __future__ import annotations

import asyncio
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
from .handlers import Handler, LeaseControl, Registry, Run, load_registry
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
    """Run the handler of one task; a handler's exception is data, not a crash. An async
    handler gets an event loop of its own for the run."""
    handler = registry.get(task.run.type)
    if handler is not None and handler.asynchronous:
        return asyncio.run(execute_async(registry, task, control, worker_id))
    started, clock = time.time(), time.perf_counter()
    try:
        value = _handler(registry, task, worker_id).func(Run(task.run, control))
        return _succeeded(task, value, started, clock)
    except (Exception, SystemExit) as exc:  # sys.exit() in a handler ends the run, not a thread
        return _failed(task, exc, started, clock)


async def execute_async(
    registry: Registry, task: Task, control: LeaseControl, worker_id: str
) -> Result:
    """Run the async handler of one task on the running loop. Cancelled (its run was, or
    it ran past its timeout), it fails with the CancelledError: the coordinator discards it
    or records the timeout instead."""
    started, clock = time.time(), time.perf_counter()
    try:
        handler = _handler(registry, task, worker_id)
        value = await handler.func(Run(task.run, control))
        return _succeeded(task, value, started, clock)
    except (Exception, SystemExit, asyncio.CancelledError) as exc:
        return _failed(task, exc, started, clock)


def _handler(registry: Registry, task: Task, worker_id: str) -> Handler:
    handler = registry.get(task.run.type)
    if handler is None:
        raise LookupError(f"no handler for type {task.run.type!r} on {worker_id}")
    return handler


def _succeeded(task: Task, value: Any, started: float, clock: float) -> Result:
    try:
        encoded = codec.encode(value, "result")
    except InvalidPayload as exc:  # the handler's value is at fault, and no frame of its code
        duration = time.perf_counter() - clock
        return Result(task.seq, False, describe_error(exc), True, started, duration)
    return Result(task.seq, True, encoded, False, started, time.perf_counter() - clock)


def _failed(task: Task, exc: BaseException, started: float, clock: float) -> Result:
    duration = time.perf_counter() - clock
    permanent = isinstance(exc, PermanentError | InvalidPayload)
    trace = format_traceback(exc)
    return Result(task.seq, False, describe_error(exc), permanent, started, duration, trace)


LOCK_WAIT_SECONDS = 1.0  # a worker holds its slot's lock for microseconds, unless it died


class Slot:
    """Shared memory between the coordinator and one worker process: what it runs now.

    [0] is 1 once the pool stops: start nothing more. Then one entry per run the worker may
    run at once (one for sync handlers, `--concurrency` for async ones), each three numbers:
    the seq of the run in it (0: free), its time.monotonic() start, and the seq again once the
    coordinator marked it cancelled or lost. The lock makes "may I start?" and "stop starting"
    exclusive, so the coordinator knows exactly which tasks never started. The coordinator
    waits for it only a bounded time: a worker killed while holding it (an OOM kill, say)
    never gives it back.
    """

    STOPPING, SEQ, STARTED, CANCELLED, WIDTH = 0, 1, 2, 3, 3

    def __init__(self, array: Any, lock: Any) -> None:
        self.array = array
        self.lock = lock
        self.size = (len(array) - 1) // self.WIDTH

    @classmethod
    def create(cls, context: Any, size: int) -> Slot:
        """A slot of `size` entries, to share with a process of `context`."""
        return cls(context.Array("d", 1 + cls.WIDTH * size, lock=False), context.Lock())

    def running(self) -> dict[int, float]:
        """seq -> time.monotonic() start of every run in the slot."""
        values = self.array[:]  # one copy: a read per entry costs more with 200 of them
        step = self.WIDTH
        return {int(values[at]): values[at + 1] for at in range(1, len(values), step) if values[at]}

    def begin(self, index: int, seq: int) -> bool:
        """In the worker: mark `seq` as running in entry `index`, unless the pool is stopping."""
        at = self.SEQ + self.WIDTH * index
        with self.lock:
            if self.array[self.STOPPING]:
                return False
            self.array[at + 1] = time.monotonic()
            self.array[at] = seq  # last: a seq read without the lock has its start
            return True

    def end(self, index: int) -> None:
        self.array[self.SEQ + self.WIDTH * index] = 0

    @contextmanager
    def guard(self) -> Iterator[None]:
        """In the coordinator: hold the lock, so the worker starts nothing meanwhile."""
        acquired = self.lock.acquire(timeout=LOCK_WAIT_SECONDS)
        try:
            yield
        finally:
            if acquired:
                self.lock.release()

    def stop_starting(self) -> set[int]:
        """In the coordinator: no task starts after this; returns those running."""
        with self.guard():
            self.array[self.STOPPING] = 1
            return set(self.running())

    def cancel_if_running(self, seqs: set[int]) -> None:
        """In the coordinator: flag the running tasks that are among the cancelled `seqs`."""
        array = self.array
        with self.guard():
            for at in range(self.SEQ, len(array), self.WIDTH):
                if int(array[at]) in seqs:
                    array[at + 2] = array[at]

    def is_cancelled(self, index: int, seq: int) -> bool:
        return int(self.array[self.CANCELLED + self.WIDTH * index]) == seq


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
        return LeaseState.CANCELLED if self.slot.is_cancelled(0, self.seq) else LeaseState.HELD

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
    if registry.asynchronous:
        from .async_worker import serve  # here: it imports this module

        asyncio.run(serve(conn, registry, worker_id, slot, max_tasks))
    else:
        _serve(conn, registry, worker_id, slot, max_tasks)


def _serve(
    conn: Connection, registry: Registry, worker_id: str, slot: Slot, max_tasks: int | None
) -> None:
    """Run tasks one at a time until told to stop (or `max_tasks` are done)."""
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
        if not slot.begin(0, task.seq):
            return  # the pool stops: what is left in the inbox never started
        result = execute(registry, task, control, worker_id)
        # synchronous: once it returns, the result survives our death (plain pickle: the
        # multiprocessing pickler costs 5x more per call)
        conn.send_bytes(pickle.dumps(result.wire(), pickle.HIGHEST_PROTOCOL))
        slot.end(0)
        done += 1
