"""The heartbeat thread: renews every in-flight lease in one statement, every lease/3.

The same round trip reports which runs were cancelled or lost (expired and re-claimed), so the
coordinator can tell their handlers and discard their results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .backends import Backend
from .errors import DatabaseError
from .models import Lease, LeaseState
from .threads import Background

log = logging.getLogger("swf_pool.heartbeat")


class Heartbeat(Background):
    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        lease_seconds: float,
        leases: Callable[[], Sequence[Lease]],
        report: Callable[[dict[Lease, LeaseState]], None],
        interval: float | None = None,
    ) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else lease_seconds / 3
        self.leases = leases
        self.report = report
        super().__init__("swf-heartbeat")

    def loop(self) -> None:
        while not self.stopping.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """Renew all leases now (one statement) and report the ones no longer held."""
        leases = self.leases()
        if not leases:
            return
        try:
            states = self.backend.heartbeat(self.worker_id, leases, self.lease_seconds, False)
        except DatabaseError as exc:
            log.warning("heartbeat failed (will retry in %.1fs): %s", self.interval, exc)
            return
        gone: dict[Lease, LeaseState] = {
            lease: state for lease, state in states.items() if state is not LeaseState.HELD
        }
        if gone:
            self.report(gone)
