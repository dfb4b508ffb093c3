"""The claimer: when to claim, how much, and how many claims at once.

A claim takes up to a batch of runs in one statement. Several may be in flight, each on its
own connection, as long as the pool has room for what they ask: its free workers plus the
prefetch. One that comes back short means the queue is drained for now: no more claims until
the next poll, the earliest delayed run, or a NOTIFY (`want`), whichever comes first.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from .backends import Backend
from .errors import DatabaseError
from .ledger import Ledger
from .metrics import MetricsCollector
from .models import Claimed, NextDue
from .poolstats import PoolStats
from .prefetch import Prefetch
from .settings import PoolSettings
from .statements import Backoff, Done, StatementThreads
from .worker import Task

CLAIM = "claim"
DUE = "due"


class Request(NamedTuple):
    """What the claimer asks of the database."""

    worker_id: str
    types: Sequence[str]
    prefixes: Sequence[str]
    lease_seconds: float
    audit_full: bool


class _Claim(NamedTuple):
    limit: int
    wants: int  # `Claimer.wants` when it began: a NOTIFY since then is not lost


class Claimer:
    def __init__(
        self,
        backend: Backend,
        request: Request,
        settings: PoolSettings,
        *,
        ledger: Ledger,
        prefetch: Prefetch,
        stats: PoolStats,
        metrics: MetricsCollector,
        measuring: bool,
    ) -> None:
        self.backend = backend
        self.request = request
        self.batch_size = settings.batch_size
        self.poll_interval = settings.poll_interval
        self.most_at_once = 1  # claims in flight at once; set when the pool starts
        self.ledger = ledger
        self.prefetch = prefetch
        self.stats = stats
        self.metrics = metrics
        self.measuring = measuring
        self.backoff = Backoff(
            lambda exc: metrics.record_poll_error(request.worker_id, type(exc).__name__)
        )
        self.threads: StatementThreads | None = None  # while the pool runs
        self._lock = threading.Lock()  # `want` comes from the listener thread
        self.wanted = True  # claim as soon as there is room
        self.wants = 0  # counts `want` calls
        self.next_poll = 0.0
        self._claims: dict[int, _Claim] = {}  # under way
        self._asking_due = False  # when the next delayed run is due: asked, no answer yet
        self.next_due: datetime | None = None  # the answer
        self.held_back = False  # and a due run waits for a place under its type's limit
        self.throttled = False  # or for a token of its type's rate limit
        self._ids = itertools.count()

    # -- deciding -----------------------------------------------------------------------------

    def asked(self) -> int:
        """Runs asked for by the claims under way."""
        return sum(claim.limit for claim in self._claims.values())

    def busy(self) -> bool:
        return bool(self._claims) or self._asking_due

    def threshold(self, capacity: int) -> int:
        """The smallest claim worth a statement."""
        return max(1, min(self.batch_size, capacity) // 2)

    def due(self, room: int, capacity: int, now: float) -> bool:
        """Whether to claim now, with `room` runs free of `capacity`."""
        return self._room_for_one(room, capacity) and now >= max(self.next_poll, self.backoff.until)

    def deadline(self, room: int, capacity: int) -> float | None:
        """When a claim may become due by itself (a poll, the end of a backoff)."""
        if not self._room_for_one(room, capacity):
            return None  # a claim or a result under way wakes us
        return max(self.next_poll, self.backoff.until)

    def _room_for_one(self, room: int, capacity: int) -> bool:
        """A claim is worth a statement for half a batch (or half the capacity); one beside
        those under way, only for a whole batch (fewer, bigger claims cost the database less)."""
        if len(self._claims) >= self.most_at_once:
            return False
        free = room - self.asked()
        return free >= (self.batch_size if self._claims else self.threshold(capacity))

    def want(self) -> None:
        """There may be runnable runs: claim as soon as there is room (unless backing off)."""
        with self._lock:
            self.wanted = True
            self.wants += 1
            self.next_poll = 0.0

    # -- claiming -----------------------------------------------------------------------------

    def claim(self, room: int, now: float, inline: bool) -> list[Task]:
        """Start a claim for up to `room` runs (minus those asked for already). `inline`: run
        it here and return its tasks (an idle pool: one thread hop less between a NOTIFY and
        the start); else on a statement thread, whose result comes to `completed`."""
        claim_id, limit = self._begin(room)
        if inline or self.threads is None:
            return self._claimed(self._job(claim_id, limit), now)
        self.threads.submit(CLAIM, lambda: self._job(claim_id, limit))
        return []

    def _begin(self, room: int) -> tuple[int, int]:
        claim_id = next(self._ids)
        limit = min(room - self.asked(), self.batch_size)
        self._claims[claim_id] = _Claim(limit, self.wants)
        return claim_id, limit

    def _job(self, claim_id: int, limit: int) -> tuple[int, list[Claimed] | DatabaseError, float]:
        began = time.perf_counter()
        r = self.request
        try:
            batch: list[Claimed] | DatabaseError = self.backend.claim(
                r.worker_id,
                r.types,
                r.prefixes,
                limit,
                lease_seconds=r.lease_seconds,
                audit_full=r.audit_full,
            )
        except DatabaseError as exc:
            batch = exc
        return claim_id, batch, time.perf_counter() - began

    def completed(self, done: Done, now: float) -> list[Task]:
        """A statement of ours came back: the tasks it claimed."""
        if done.kind == DUE:
            self._learned_due(done.value)
            return []
        return self._claimed(done.value, now)

    def _claimed(
        self, value: tuple[int, list[Claimed] | DatabaseError, float], now: float
    ) -> list[Task]:
        claim_id, batch, seconds = value
        claim = self._claims.pop(claim_id)
        self.metrics.record_poll_cycle(self.request.worker_id)
        if isinstance(batch, DatabaseError):
            self.backoff.failed("claim", batch, now)
            self.stats.db_errors += 1
            return []
        self.backoff.succeeded()
        stats = self.stats
        stats.claims += 1
        stats.claimed += len(batch)
        stats.empty_claims += not batch
        tasks = self.ledger.add(batch)
        if self.measuring:
            self._measure(batch, seconds)
        self.prefetch.claimed(seconds)
        drained = False
        with self._lock:  # against `want` on the listener thread
            if len(batch) == claim.limit:
                self.wanted = True  # more may be waiting
            elif self.wants == claim.wants:  # no NOTIFY came in while we claimed
                self.wanted, drained = False, True
                self.next_poll = now + self.poll_interval
        if drained:
            self._ask_due()
        return tasks

    def close(self, now: float) -> list[Task]:
        """At shutdown: wait for the claims under way; the tasks they bring."""
        assert self.threads is not None
        return [task for done in self.threads.close() for task in self.completed(done, now)]

    def _ask_due(self) -> None:
        """Learn, off the claim's path, when the earliest delayed run of ours is due."""
        if self.threads is None or self._asking_due:
            return
        r = self.request
        self._asking_due = True
        self.threads.submit(DUE, lambda: self._due_job(r.types, r.prefixes))

    def _due_job(self, types: Sequence[str], prefixes: Sequence[str]) -> NextDue:
        try:
            return self.backend.next_due(types, prefixes)
        except DatabaseError:
            return NextDue(None)  # the next poll comes anyway

    def waiting(self, seconds: float) -> bool:
        """Whether, as last learned, runs of ours wait: for a place or a token of their type's
        limit (however long), or to come due within `seconds`."""
        due = self.next_due
        soon = due is not None and (due - datetime.now(UTC)).total_seconds() <= seconds
        return soon or self.held_back or self.throttled

    def stored(self, retried: bool) -> None:
        """Outcomes of ours were stored: a retry may be due already, and a place under a
        type's concurrency limit may have freed for a run held back."""
        if retried or self.held_back:
            self.held_back = False
            self.want()

    def _learned_due(self, answer: NextDue) -> None:
        self._asking_due = False
        self.next_due = due = answer.at
        self.held_back, self.throttled = answer.held_back, answer.throttled
        if due is None:
            return
        wait = (due - datetime.now(UTC)).total_seconds()
        with self._lock:  # wake for it if it comes before the next poll
            self.next_poll = min(self.next_poll, time.monotonic() + max(0.0, wait) + 0.001)
            if wait <= 0:
                self.wanted = True  # due already: a claim raced with it, or skipped it

    def _measure(self, batch: list[Claimed], seconds: float) -> None:
        metrics, worker_id = self.metrics, self.request.worker_id
        metrics.record_claim(worker_id, len(batch), seconds)
        for run in batch:
            metrics.record_intent_claimed(run.type, worker_id)
            if run.rescued:
                metrics.record_rescued(run.type, worker_id)
        metrics.record_in_flight(worker_id, len(self.ledger))
