"""The event loop of a worker process whose app has async handlers.

The process runs up to `concurrency` runs at once, one per entry of its `Slot`, so the
coordinator sees every one of them (timeouts; and after a crash, every run in the slot fails
while the rest goes back to the queue). An async handler runs as a task on the loop. A sync
handler of the same app runs on the worker's one thread for them, one at a time as in a
worker without a loop: it neither stands the loop still nor competes with a second one for
the interpreter.

The loop watches the pipe: tasks come in and start as entries free up; a cancel skips a task
not started yet or cancels the task of one under way (the coordinator sends it for a cancelled
or lost run, and for one past its timeout; a sync handler's thread cannot be cancelled and
runs on); STOP means start nothing more and exit once the runs under way end. Each result goes
back as soon as its run ends, so a crash leaves only the runs still under way to settle.

`run.heartbeat()` asks the coordinator over the pipe. From the loop's own thread it waits for
the answer right there, so the loop stands still for that round trip (the coordinator's one
statement); from a thread it goes through the loop. `await run.aheartbeat()` waits on a thread
and holds nothing up.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from .handlers import Registry, Run
from .models import LeaseState
from .worker import SKIPPED, STOP, Result, Slot, Task, execute, execute_async


async def serve(
    conn: Connection, registry: Registry, worker_id: str, slot: Slot, max_tasks: int | None
) -> None:
    """Run tasks until told to stop (or `max_tasks` were started), then return."""
    with ThreadPoolExecutor(1, "swf-sync-handler") as sync_thread:
        await LoopWorker(conn, registry, worker_id, slot, max_tasks, sync_thread).run()


class LoopWorker:
    def __init__(
        self,
        conn: Connection,
        registry: Registry,
        worker_id: str,
        slot: Slot,
        max_tasks: int | None,
        sync_thread: ThreadPoolExecutor,
    ) -> None:
        self.conn, self.registry, self.worker_id, self.slot = conn, registry, worker_id, slot
        self.left = max_tasks  # runs it may still start (None: no limit)
        self.sync_thread = sync_thread
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.waiting: deque[Task] = deque()  # for an async handler (or none: it fails at once)
        self.waiting_sync: deque[Task] = deque()
        self.sync_running = 0  # the seq of the sync handler's run on the thread (0: none)
        self.running: dict[int, asyncio.Task[Result]] = {}  # seq -> its task, for a cancel
        self.free = list(range(slot.size))  # entries of the slot not in use
        # heartbeats sent, oldest first, for the answers (which come in order); None: one
        # waited for on the loop's thread, whose answer `_receive` returns
        self.replies: deque[asyncio.Future[LeaseState] | None] = deque()
        self.stopping = False
        self.finished: asyncio.Future[None] = self.loop.create_future()

    async def run(self) -> None:
        fd = self.conn.fileno()
        self.loop.add_reader(fd, self._readable)
        try:
            await self.finished
        finally:
            self.loop.remove_reader(fd)

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                self._receive(self.conn.recv())
        except EOFError:  # the coordinator is gone
            os._exit(0)
        self._start()

    def _receive(self, message: Any) -> LeaseState | None:
        """Take in one message; returns the answer to a heartbeat waited for on this thread."""
        if isinstance(message, list):
            for task in map(Task.from_wire, message):
                handler = self.registry.get(task.run.type)
                sync = handler is not None and not handler.asynchronous
                (self.waiting_sync if sync else self.waiting).append(task)
        elif message == STOP:
            self.stopping = True
            self._finish_if_idle()
        elif message[0] == "cancel":
            self._cancel(message[1])
        else:  # ("lease", state): the answer to the oldest heartbeat
            waiter, state = self.replies.popleft(), LeaseState(message[1])
            if waiter is None:
                return state
            if not waiter.done():  # its handler's task may have been cancelled meanwhile
                waiter.set_result(state)
        return None

    def _cancel(self, seq: int) -> None:
        for waiting in (self.waiting, self.waiting_sync):
            for task in [t for t in waiting if t.seq == seq]:
                waiting.remove(task)  # skipped: its handler never runs
                self._send(Result(task.seq, False, SKIPPED))
        running = self.running.get(seq)
        if running is not None:
            running.cancel()

    def _start(self) -> None:
        """Start what waits, while there are free entries."""
        while self.free and not self.stopping:
            if self.waiting_sync and not self.sync_running:
                task, sync = self.waiting_sync.popleft(), True
            elif self.waiting:
                task, sync = self.waiting.popleft(), False
            else:
                break
            index = self.free.pop()
            if not self.slot.begin(index, task.seq):  # the pool stops: the rest never starts
                self.free.append(index)
                self.stopping = True
                break
            self._launch(task, index, sync)
            if self.left is not None:
                self.left -= 1
                if self.left == 0:  # retire once the runs under way end
                    self.stopping = True
        self._finish_if_idle()

    def _launch(self, task: Task, index: int, sync: bool) -> None:
        control = _RunControl(self, task.seq, index)
        future: asyncio.Future[Result]
        if sync:
            self.sync_running = task.seq
            future = self.loop.run_in_executor(
                self.sync_thread, execute, self.registry, task, control, self.worker_id
            )
        else:
            coroutine = execute_async(self.registry, task, control, self.worker_id)
            future = self.running[task.seq] = self.loop.create_task(coroutine)
        future.add_done_callback(functools.partial(self._ended, task.seq, index))

    def _ended(self, seq: int, index: int, future: asyncio.Future[Result]) -> None:
        # cancelled before its first step, the handler never ran: its run is dropped anyway
        result = Result(seq, False, SKIPPED) if future.cancelled() else future.result()
        self._send(result)  # before the entry is freed: a crash now loses no result
        self.slot.end(index)
        self.free.append(index)
        self.running.pop(seq, None)
        if self.sync_running == seq:
            self.sync_running = 0
        self._start()

    def _finish_if_idle(self) -> None:
        idle = not self.running and not self.sync_running
        if self.stopping and idle and not self.finished.done():
            self.finished.set_result(None)

    def _send(self, result: Result) -> None:
        # plain pickle: the multiprocessing pickler costs 5x more per call
        self.conn.send_bytes(pickle.dumps(result.wire(), pickle.HIGHEST_PROTOCOL))

    async def heartbeat(self, seq: int, seconds: float) -> LeaseState:
        waiter: asyncio.Future[LeaseState] = self.loop.create_future()
        self.replies.append(waiter)
        self.conn.send(("heartbeat", seq, seconds))
        return await waiter

    def heartbeat_here(self, seq: int, seconds: float) -> LeaseState:
        """A heartbeat from the loop's own thread: wait for its answer right here, taking in
        what comes meanwhile (what it lets start, starts once the loop runs again)."""
        self.replies.append(None)
        self.conn.send(("heartbeat", seq, seconds))
        answer = None
        while answer is None:
            try:
                answer = self._receive(self.conn.recv())
            except EOFError:  # the coordinator is gone
                os._exit(0)
        self.loop.call_soon(self._start)
        return answer


class _RunControl:
    """`LeaseControl` for one run in a loop worker."""

    __slots__ = ("index", "seq", "worker")

    def __init__(self, worker: LoopWorker, seq: int, index: int) -> None:
        self.worker, self.seq, self.index = worker, seq, index

    def extend_lease(self, run: Run, seconds: float) -> LeaseState:
        worker = self.worker
        if threading.get_ident() == worker.thread:
            return worker.heartbeat_here(self.seq, seconds)
        asked = asyncio.run_coroutine_threadsafe(worker.heartbeat(self.seq, seconds), worker.loop)
        return asked.result()

    def lease_state(self, run: Run) -> LeaseState:
        cancelled = self.worker.slot.is_cancelled(self.index, self.seq)
        return LeaseState.CANCELLED if cancelled else LeaseState.HELD
