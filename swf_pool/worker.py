"""The worker core: claim a batch, execute each run, write its outcome under the lease's fence.

This single-process worker is the reference for the semantics; the multiprocessing pool does
the same through the same backend operations, in bulk.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from . import codec
from .client import Client
from .errors import ConfigError, InvalidPayload, PermanentError
from .handlers import Registry, Run, like_patterns
from .models import DEFAULT_LEASE_SECONDS, Audit, Claimed, LeaseState, Outcome, Status
from .retry import DEFAULT_POLICY, after_failure

log = logging.getLogger("swf_pool.worker")

DEFAULT_BATCH_SIZE = 10
DEFAULT_POLL_SECONDS = 2.0


def default_worker_id() -> str:
    """`hostname-pid`, as in the Go library."""
    return f"{socket.gethostname()}-{os.getpid()}"


def describe_error(exc: BaseException) -> str:
    """The text stored in `last_error`: exception type and message."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class Worker:
    """Executes runs of the types in `registry` (or matching `prefixes`), one at a time.

    `client` is a `Client` (shared, e.g. for SQLite `:memory:`) or a connection string.
    """

    def __init__(
        self,
        client: Client | str,
        registry: Registry,
        *,
        worker_id: str | None = None,
        prefixes: Sequence[str] = (),
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        audit: Audit | str = Audit.FULL,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigError(f"lease_seconds must be > 0, got {lease_seconds}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self._owns_client = isinstance(client, str)
        self.client = Client(client) if isinstance(client, str) else client
        self.registry = registry
        self.worker_id = worker_id or default_worker_id()
        self.prefixes = like_patterns(prefixes)
        self.types = [] if prefixes else registry.types
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size
        self.audit = Audit(audit)
        self._rand = rand
        self._registered = False

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def run_once(self) -> int:
        """Claim one batch and execute it; return how many runs were claimed."""
        backend = self.client.backend
        if not self._registered:
            backend.register(self.registry.types)
            self._registered = True
        full = self.audit is Audit.FULL
        batch = backend.claim(
            self.worker_id,
            self.types,
            self.prefixes,
            self.batch_size,
            lease_seconds=self.lease_seconds,
            audit_full=full,
        )
        for claimed in batch:
            if full:
                backend.start(self.worker_id, [claimed.id])
            outcome = self.execute(claimed)
            if not backend.complete(self.worker_id, [outcome], full):
                log.warning(
                    "discarded the outcome of %s attempt %d: lease no longer held "
                    "(cancelled or expired)",
                    claimed.id,
                    claimed.attempt,
                )
        return len(batch)

    def drain(self) -> int:
        """Execute runnable runs until none is left; return how many were claimed."""
        total = 0
        while claimed := self.run_once():
            total += claimed
        return total

    def run(self, stop: threading.Event, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        """Work until `stop` is set, polling every `poll_seconds` when idle."""
        while not stop.is_set():
            if not self.run_once():
                stop.wait(poll_seconds)

    def execute(self, claimed: Claimed) -> Outcome:
        """Run the handler of one claimed run and decide its outcome (no database write)."""
        handler = self.registry.get(claimed.type)
        policy = handler.retry if handler else DEFAULT_POLICY
        started = time.monotonic()
        try:
            if handler is None:
                raise LookupError(f"no handler for type {claimed.type!r} on {self.worker_id}")
            result = codec.encode(handler.func(Run(claimed, self)), "result")
        except Exception as exc:  # a handler's failure is data, recorded on the run
            permanent = isinstance(exc, PermanentError | InvalidPayload)
            log.debug(
                "run %s (%s) attempt %d failed after %.3fs: %s",
                claimed.id,
                claimed.type,
                claimed.attempt,
                time.monotonic() - started,
                describe_error(exc),
            )
            return after_failure(
                claimed,
                describe_error(exc),
                policy,
                permanent=permanent,
                rand=self._rand(),
                now=datetime.now(UTC),
            )
        return Outcome(claimed.id, claimed.attempt, Status.SUCCEEDED, result=result)

    # LeaseControl, for Run.heartbeat() and Run.is_cancelled()

    def extend_lease(self, run: Run, seconds: float) -> LeaseState:
        return self._heartbeat(run, seconds, record=True)

    def lease_state(self, run: Run) -> LeaseState:
        return self._heartbeat(run, self.lease_seconds, record=False)

    def _heartbeat(self, run: Run, seconds: float, record: bool) -> LeaseState:
        leases = [(run.id, run.attempt)]
        return self.client.backend.heartbeat(self.worker_id, leases, seconds, record)[run.id]
