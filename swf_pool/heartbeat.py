"""The heartbeat thread: renews every in-flight lease in one statement, every lease/3.

The same round trip reports which runs were cancelled or lost (expired and re-claimed), so the
coordinator can tell their handlers and discard their results, and renews the pool's row in
the fleet (written when the thread starts, removed when it stops): an idle pool beats too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Self

from .backends import Backend
from .errors import DatabaseError
from .fleet import PoolMember
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
        card: Callable[[], PoolMember] | None = None,
    ) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else lease_seconds / 3
        self.leases = leases
        self.report = report
        self.card = card
        super().__init__("swf-heartbeat")

    def __enter__(self) -> Self:
        if self.card is not None:
            self.backend.join_pool(self.card())
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self.card is not None:
            try:
                self.backend.leave_pool(self.worker_id)
            except DatabaseError as error:  # the row is forgotten after 60 missed beats
                log.warning("could not remove pool %s from the fleet: %s", self.worker_id, error)

    def loop(self) -> None:
        while not self.stopping.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """Renew all leases now (one statement) and report the ones no longer held."""
        leases = self.leases()
        card = None if self.card is None else self.card()
        if not leases and card is None:
            return
        try:
            states = self.backend.heartbeat(
                self.worker_id, leases, self.lease_seconds, False, pool=card
            )
        except DatabaseError as exc:
            log.warning("heartbeat failed (will retry in %.1fs): %s", self.interval, exc)
            return
        gone: dict[Lease, LeaseState] = {
            lease: state for lease, state in states.items() if state is not LeaseState.HELD
        }
        if gone:
            self.report(gone)
