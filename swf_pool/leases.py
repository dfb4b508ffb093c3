"""The lease keeper: what the executors ask about leases, and what the heartbeat reports.

The heartbeat thread renews every lease in the ledger every lease/3 and reports the attempts
that were cancelled or lost; a handler's `run.heartbeat(seconds)` extends its own lease at once
(and records the event); `run.is_cancelled()` reads the ledger. Doomed attempts are discarded
by the coordinator: their workers are told, and their results are not written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .backends import Backend
from .errors import DatabaseError
from .fleet import Card
from .heartbeat import Heartbeat
from .ledger import Ledger
from .models import Lease, LeaseState

log = logging.getLogger("swf_pool.pool")

# A handler's `run.heartbeat()` extends its lease every time, but writes a `heartbeat` event
# (the Go library's, with `extended_by_seconds`) only the first time in an attempt and then at
# most once a minute: the trail says the handler was alive and asked for more time, without
# a row per call (a handler that beats in a loop wrote thousands).
HEARTBEAT_EVENT_SECONDS = 60.0


class LeaseKeeper:
    """The executors' `Control`: `worker_id`, `extend_lease` and `is_cancelled`."""

    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        ledger: Ledger,
        wake: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.ledger = ledger
        self.wake = wake
        self._lock = threading.Lock()  # handlers' heartbeats come from several threads
        self._recorded: dict[int, float] = {}  # seq -> when its last heartbeat event was written

    def heartbeat(
        self, lease_seconds: float, interval: float | None, card: Card | None = None
    ) -> Heartbeat:
        """The heartbeat thread, to be entered for as long as the pool runs; with `card`, it
        keeps the pool's row in the fleet."""
        return Heartbeat(
            self.backend,
            self.worker_id,
            lease_seconds,
            leases=self.ledger.leases,
            report=self.report,
            interval=interval,
            card=card,
        )

    def report(self, states: dict[Lease, LeaseState]) -> None:
        """These attempts are cancelled or no longer ours: wake the coordinator."""
        if self.ledger.report(states):
            self.wake()

    def is_cancelled(self, seq: int) -> bool:
        return self.ledger.doomed(seq) is not None

    def extend_lease(self, seq: int, seconds: float) -> LeaseState:
        """A handler's `run.heartbeat(seconds)`: extend now and record the event."""
        task = self.ledger.get(seq)
        if task is None:
            return LeaseState.LOST
        lease = Lease(task.run.id, task.run.attempt)
        now = time.monotonic()
        with self._lock:
            last = self._recorded.get(seq)
        record = last is None or now - last >= HEARTBEAT_EVENT_SECONDS
        try:
            state = self.backend.heartbeat(self.worker_id, [lease], seconds, record)[lease]
        except DatabaseError as exc:
            log.warning("heartbeat for %s failed: %s", lease.id, exc)
            return LeaseState.HELD
        if state is not LeaseState.HELD:
            self.report({lease: state})
        elif record:
            self._recorded_at(seq, now)
        return state

    def _recorded_at(self, seq: int, now: float) -> None:
        with self._lock:
            self._recorded[seq] = now
            if len(self._recorded) > 2 * len(self.ledger) + 100:  # forget finished attempts
                for gone in [s for s in self._recorded if self.ledger.get(s) is None]:
                    del self._recorded[gone]
