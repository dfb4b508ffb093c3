"""The lease keeper: what the executors ask about leases, and what the heartbeat reports.

The heartbeat thread renews every lease in the ledger every lease/3 and reports the attempts
that were cancelled or lost; a handler's `run.heartbeat(seconds)` extends its own lease at once
(and records the event); `run.is_cancelled()` reads the ledger. Doomed attempts are discarded
by the coordinator: their workers are told, and their results are not written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .backends import Backend
from .errors import DatabaseError
from .heartbeat import Heartbeat
from .ledger import Ledger
from .models import Lease, LeaseState

log = logging.getLogger("swf_pool.pool")


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

    def heartbeat(self, lease_seconds: float, interval: float | None) -> Heartbeat:
        """The heartbeat thread, to be entered for as long as the pool runs."""
        return Heartbeat(
            self.backend,
            self.worker_id,
            lease_seconds,
            leases=self.ledger.leases,
            report=self.report,
            interval=interval,
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
        try:
            state = self.backend.heartbeat(self.worker_id, [lease], seconds, True)[lease]
        except DatabaseError as exc:
            log.warning("heartbeat for %s failed: %s", lease.id, exc)
            return LeaseState.HELD
        if state is not LeaseState.HELD:
            self.report({lease: state})
        return state
