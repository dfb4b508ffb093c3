"""The flusher: finished attempts wait in a buffer, then go to the database in fenced flushes.

A flush is one statement that stores a batch of outcomes with their events (and the `started`
events of attempts still running), applied only where this worker still holds the lease.
It starts when the buffer holds a batch, when its oldest outcome has waited `flush_interval`,
or when nothing else is running. While flushes are under way, another starts for each further
batch that fills up, on its own connection, up to `most_at_once`: outcomes never queue behind
one commit. A flush the database refuses for its data is retried one outcome at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from . import codec
from .backends import Backend
from .errors import DatabaseError, DataRejected
from .ledger import Ledger
from .models import Audit, Claimed, Lease, Outcome, Started, Status
from .poolstats import PoolStats
from .retry import RetryPolicy, after_failure
from .settings import PoolSettings
from .statements import Backoff, Done, StatementThreads
from .tracebacks import FailureLog
from .worker import Result

log = logging.getLogger("swf_pool.pool")

FLUSH = "flush"
STARTED_SECONDS = 1.0  # a run that has run this long shows as started before its outcome
Measure = Callable[[int, Status | None], None]  # seq, stored status (None: not stored)


class _Flush(NamedTuple):
    outcomes: dict[int, Outcome]
    started: list[Started]


class Stored(NamedTuple):
    """What a flush stored: `applied` leases, of which `refused` were stored as failures."""

    applied: set[Lease]
    refused: set[Lease]


class Flusher:
    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        settings: PoolSettings,
        *,
        ledger: Ledger,
        stats: PoolStats,
        on_stored: Callable[[bool], None],
        measure: Measure | None,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.audit_full = settings.audit == Audit.FULL  # `started` events only then
        self.batch_size = settings.batch_size
        self.flush_interval = settings.flush_interval
        self.most_at_once = 1  # flushes in flight at once; set when the pool starts
        self.ledger = ledger
        self.stats = stats
        self.on_stored = on_stored  # after each flush: whether it stored a retry
        self.measure = measure
        self.backoff = Backoff(on_error)
        self.threads: StatementThreads | None = None  # while the pool runs
        self.failures = FailureLog()  # a WARNING line per failure, rate-limited per type
        self.buffered: dict[int, Outcome] = {}
        self.oldest = 0.0  # when the oldest buffered outcome came
        self.started: list[Started] = []  # of attempts still running, for the next flush
        self.marked: set[int] = set()  # seqs whose `started` event was sent while running
        self.isolate = False  # the last flush failed on its data: flush one by one
        self._flushes: dict[int, _Flush] = {}  # under way
        self._latest = 0.0  # when the latest flush started
        self._starts_at = 0.0  # when to look for runs under way with no `started` event
        self._ids = itertools.count()

    def add(self, seq: int, outcome: Outcome, now: float) -> None:
        if not self.buffered:
            self.oldest = now
        self.buffered[seq] = outcome

    def record(
        self, result: Result, run: Claimed, policy: RetryPolicy | None, rand: Callable[[], float]
    ) -> None:
        """A worker's result: its outcome (a success, a retry at some later time, or the end)
        waits in the buffer. `policy`: the handler's, for a failure."""
        # its `started` event goes with the outcome, unless an earlier flush wrote it
        began = None
        if self.audit_full and result.started and result.seq not in self.marked:
            began = result.started
        if policy is None:
            outcome = Outcome(run.id, run.attempt, Status.SUCCEEDED, result.value, started=began)
        else:
            outcome = after_failure(
                run, result.value or "error", policy, permanent=result.permanent, rand=rand(),
                now=datetime.now(UTC), traceback=result.trace,
            )._replace(started=began)  # fmt: skip
            self.failures.failed(run, outcome)
        self.add(result.seq, outcome, time.monotonic())

    def holds(self, seq: int) -> bool:
        return seq in self.buffered or any(seq in f.outcomes for f in self._flushes.values())

    def held(self) -> int:
        """Outcomes not stored yet."""
        return len(self.buffered) + sum(len(f.outcomes) for f in self._flushes.values())

    def busy(self) -> bool:
        return bool(self._flushes)

    def due(self, now: float, running: int) -> bool:
        if not self.buffered or now < self.backoff.until:
            return False
        if not self._flushes:
            return (
                len(self.buffered) >= self.batch_size
                or now - self.oldest >= self.flush_interval
                or not running
            )
        return self._another() and now >= self._latest + self.flush_interval

    def _another(self) -> bool:
        """Whether a flush may start beside those under way: for a full batch, once the latest
        has taken longer than `flush_interval` (a slow commit, a far database). Sooner, one
        bigger flush after it costs the database less than two."""
        return len(self._flushes) < self.most_at_once and len(self.buffered) >= self.batch_size

    def deadline(self) -> float | None:
        if not self.buffered:
            return None
        if not self._flushes:
            return max(self.oldest + self.flush_interval, self.backoff.until)
        if self._another():
            return max(self._latest + self.flush_interval, self.backoff.until)
        return None  # a flush under way wakes us when it is done

    def start(self, running: dict[int, float]) -> None:
        """Move the buffer into a flush, run on a statement thread. `running`: the attempts
        running now (seq -> monotonic start), whose `started` events go with it."""
        if self.audit_full:
            self._mark_started(running)
        flush_id, job = self._take()
        assert self.threads is not None
        self.threads.submit(FLUSH, lambda: (flush_id, _run(job)))

    def note_starts(self, now: float, running: Callable[[], dict[int, float]]) -> None:
        """Once a second, while no flush is under way: a flush of the `started` events of the
        runs that began over a second ago, so that a long run shows as started while it runs
        (not only with its outcome). `running`: the executor's (seq -> monotonic start)."""
        if not self.audit_full or now < self._starts_at or self._flushes:
            return
        self._starts_at = now + STARTED_SECONDS
        runs = running()
        since = now - STARTED_SECONDS
        if any(
            s not in self.marked and at <= since and not self.holds(s) for s, at in runs.items()
        ):
            self.start(runs)

    def _mark_started(self, running: dict[int, float]) -> None:
        now, mono = time.time(), time.monotonic()
        for seq, begun in running.items():
            task = self.ledger.get(seq)
            # a slot may still show a task whose result is in: its outcome carries the start
            if task is not None and seq not in self.marked and not self.holds(seq):
                self.marked.add(seq)
                at = datetime.fromtimestamp(now - (mono - begun), UTC)
                self.started.append(Started(task.run.id, task.run.attempt, at))

    def close(self, seconds: float) -> None:
        """At shutdown: wait for the flushes under way, then flush what is left here, trying
        again for up to `seconds` while the database fails."""
        assert self.threads is not None
        for done in self.threads.close():
            self.completed(done, time.monotonic())
        deadline = time.monotonic() + seconds
        while self.buffered and time.monotonic() < deadline:
            flush_id, job = self._take()
            self._done(flush_id, _run(job), time.monotonic())
            if self.buffered:
                time.sleep(min(self.backoff.seconds or 0.1, 1.0))
        if self.buffered:
            log.error(
                "could not flush %d outcome(s) before exit; their leases will expire",
                len(self.buffered),
            )

    def _take(self) -> tuple[int, Callable[[], Stored]]:
        flush_id = next(self._ids)
        self._latest = time.monotonic()
        flush = self._flushes[flush_id] = _Flush(self.buffered, self.started)
        self.buffered, self.started = {}, []
        outcomes = list(flush.outcomes.values())
        backend, worker_id, audit_full = self.backend, self.worker_id, self.audit_full
        if self.isolate:
            self.isolate = False
            return flush_id, lambda: _one_by_one(
                backend, worker_id, outcomes, flush.started, audit_full
            )
        return flush_id, lambda: Stored(
            backend.complete(worker_id, outcomes, flush.started, audit_full), set()
        )

    def completed(self, done: Done, now: float) -> None:
        flush_id, value = done.value
        self._done(flush_id, value, now)

    def _done(self, flush_id: int, value: Stored | DatabaseError, now: float) -> None:
        flush = self._flushes.pop(flush_id)
        if isinstance(value, DatabaseError):
            outcomes = flush.outcomes
            if isinstance(value, _Interrupted):  # what was stored before is done with
                applied = value.stored.applied
                self._account({s: o for s, o in outcomes.items() if o[:2] in applied}, value.stored)
                outcomes = {s: o for s, o in outcomes.items() if o[:2] not in applied}
            # put the rest back, to be tried again
            self.buffered = {**outcomes, **self.buffered}
            self.started = flush.started + self.started
            # the server refused the data (or the connection broke while we looked for what it
            # refused): one statement per outcome next time
            self.isolate = isinstance(value, DataRejected | _Interrupted)
            self.stats.db_errors += 1
            self.backoff.failed("flush", value, now)
            return
        self.backoff.succeeded()
        self.stats.flushes += 1
        self._account(flush.outcomes, value)

    def _account(self, flushed: dict[int, Outcome], stored: Stored) -> None:
        """Count and forget the outcomes of a flush: `applied` were stored, the others were
        fenced out (the lease was no longer held)."""
        stats, measure = self.stats, self.measure
        applied, refused = stored
        retried = False
        for seq, outcome in flushed.items():
            lease = outcome[:2]  # (id, attempt), equal to its Lease
            if measure is not None:
                status = Status.FAILED if lease in refused else outcome.status
                measure(seq, status if lease in applied else None)
            if lease in refused:
                stats.failed += 1
            elif lease not in applied:
                stats.discarded += 1
                log.info(
                    "discarded the outcome of %s attempt %d: lease no longer held "
                    "(cancelled or expired)",
                    outcome.id,
                    outcome.attempt,
                )
            elif outcome.status is Status.SUCCEEDED:
                stats.succeeded += 1
            elif outcome.status is Status.PENDING:
                stats.retried += 1
                retried = True
            else:
                stats.failed += 1
        self.ledger.forget(flushed)
        self.marked.difference_update(flushed)
        self.on_stored(retried)

    def forget(self, seq: int) -> None:
        """A task that ends without an outcome (discarded, released)."""
        self.marked.discard(seq)


def _one_by_one(
    backend: Backend,
    worker_id: str,
    outcomes: list[Outcome],
    started: list[Started],
    audit_full: bool,
) -> Stored:
    """After a flush the server refused for its data: one statement per outcome, so that one
    bad outcome cannot hold back the others. An outcome still refused is stored as a failure
    that says why (and counted as refused); if even that is refused, its lease expires and
    the run is retried. Losing the database part way raises `_Interrupted`, with what was
    stored before."""
    with contextlib.suppress(DataRejected):  # `started` events are only audit
        backend.complete(worker_id, [], started, audit_full)
        started.clear()  # stored (the caller puts back what is left if the rest is interrupted)
    stored = Stored(set(), set())
    try:
        for outcome in outcomes:
            try:
                stored.applied.update(backend.complete(worker_id, [outcome], [], audit_full))
                continue
            except DataRejected as exc:
                log.error("the database refused the outcome of %s: %s", outcome.id, exc)
                text = f"OutcomeRefused: the database refused this outcome: {exc}"
            failure = Outcome(
                outcome.id,
                outcome.attempt,
                Status.FAILED,
                error=codec.clean_text(text),
                started=outcome.started,
            )
            with contextlib.suppress(DataRejected):
                applied = backend.complete(worker_id, [failure], [], audit_full)
                stored.applied.update(applied)
                stored.refused.update(applied)
    except DatabaseError as exc:
        raise _Interrupted(exc, stored) from exc
    return stored


class _Interrupted(DatabaseError):
    """A flush of one statement per outcome lost the database part way: `stored` were
    stored before, the rest are to be flushed again."""

    def __init__(self, cause: DatabaseError, stored: Stored) -> None:
        super().__init__(str(cause))
        self.stored = stored


def _run(job: Callable[[], Stored]) -> Stored | DatabaseError:
    try:
        return job()
    except DatabaseError as exc:
        return exc
