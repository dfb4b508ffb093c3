"""The in-flight ledger: every run a pool holds, from its claim to its stored outcome.

It is the only state that other threads touch (the heartbeat reads the leases and reports the
ones lost or cancelled; handlers ask whether theirs is cancelled), under its own lock. The
coordinator's loop adds and forgets tasks; the rest of its state is its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .models import Claimed, Lease, LeaseState
from .worker import Task


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[int, Task] = {}  # claimed, outcome not stored yet
        self._doomed: dict[int, LeaseState] = {}  # cancelled or lost: discard their results
        self._newly_doomed: list[int] = []
        self._next_seq = 1

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, seq: int) -> Task | None:
        return self._tasks.get(seq)

    def add(self, batch: Iterable[Claimed]) -> list[Task]:
        """Tasks for claimed runs, numbered in claim order."""
        with self._lock:
            tasks = []
            for run in batch:
                task = Task(self._next_seq, run)
                self._next_seq += 1
                self._tasks[task.seq] = task
                tasks.append(task)
            return tasks

    def forget(self, seqs: Iterable[int]) -> None:
        with self._lock:  # once for a whole flush
            tasks, doomed = self._tasks, self._doomed
            for seq in seqs:
                tasks.pop(seq, None)
                doomed.pop(seq, None)

    def leases(self) -> list[Lease]:
        """From the heartbeat thread: every lease held now."""
        with self._lock:
            return [Lease(t.run.id, t.run.attempt) for t in self._tasks.values()]

    def report(self, states: dict[Lease, LeaseState]) -> bool:
        """From the heartbeat thread: these attempts are cancelled or no longer ours. True if
        that dooms a task that was not doomed yet."""
        with self._lock:  # rare (a cancel, a lost lease): looking through what is in flight is
            # cheaper than keeping an index up to date for every run; a run may be here twice,
            # attempt n and n+1
            before = len(self._newly_doomed)
            for seq, task in self._tasks.items():
                state = states.get(Lease(task.run.id, task.run.attempt))
                if state is not None and seq not in self._doomed:
                    self._doomed[seq] = state
                    self._newly_doomed.append(seq)
            return len(self._newly_doomed) > before

    def take_newly_doomed(self) -> list[int]:
        with self._lock:
            seqs, self._newly_doomed = self._newly_doomed, []
            return seqs

    def doomed(self, seq: int) -> LeaseState | None:
        with self._lock:
            return self._doomed.get(seq)
