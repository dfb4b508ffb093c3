"""The coordinator: the pool's main loop.

    claim a batch (one statement) ──> executor (processes | threads | inline)
          ^                                   │ results
          │ NOTIFY / poll                     v
    listener thread              buffer ──> flush (one fenced statement: outcomes + events)
                                 heartbeat thread: renew all leases (one statement, every lease/3)

Each loop iteration (`tick`) waits for results (or a wake-up), records them, kills runs past
their timeout, flushes when the buffer is full or old enough, and claims when there is room.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import codec
from .backends import Backend
from .backends.postgres import notify_channel
from .client import Client
from .dsn import PostgresTarget
from .errors import ConfigError, DatabaseError, DataRejected
from .executors import Executor, InlineExecutor, ProcessExecutor, ThreadExecutor, Waker
from .handlers import Registry, like_patterns, load_registry
from .heartbeat import Heartbeat
from .listener import Listener
from .metrics import MetricsCollector
from .models import (
    DEFAULT_LEASE_SECONDS,
    Audit,
    Claimed,
    Lease,
    LeaseState,
    Outcome,
    Started,
    Status,
)
from .retry import DEFAULT_POLICY, after_failure
from .statements import Done, StatementThread
from .threads import Periodic
from .ticker import TickerThread
from .worker import SKIPPED, Result, Task

log = logging.getLogger("swf_pool.pool")

DEFAULT_BATCH_SIZE = 100
DEFAULT_POLL_SECONDS = 2.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0
DEFAULT_FLUSH_SECONDS = 0.02  # outcomes wait at most this long for company in one statement
DEFAULT_LOG_SECONDS = 10.0
DEFAULT_STATS_SECONDS = 15.0  # depth and lag for the metrics: one query over the queue
PRUNE_SECONDS = 600.0  # with prune_older_than: retention every ten minutes
EXECUTORS = ("process", "thread", "inline")
BACKOFF_MAX_SECONDS = 5.0
IDLE_WAIT_SECONDS = 1.0  # the longest we block without looking around
TIMEOUT_CHECK_SECONDS = 0.05


def default_worker_id() -> str:
    """`hostname-pid`, as in the Go library."""
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class PoolStats:
    """What a pool did; printed as its exit summary."""

    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    discarded: int = 0  # outcomes not written: the run was cancelled or its lease lost
    released: int = 0
    timed_out: int = 0
    claims: int = 0
    empty_claims: int = 0  # claims that found nothing (idle polls, or another pool was faster)
    flushes: int = 0
    db_errors: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        done = self.succeeded + self.retried + self.failed
        return (
            f"{done} attempts in {elapsed:.1f}s ({done / elapsed:.0f}/s): "
            f"{self.succeeded} succeeded, {self.retried} retried, {self.failed} failed, "
            f"{self.discarded} discarded, {self.released} released, {self.timed_out} timed out; "
            f"{self.claims} claims, {self.flushes} flushes"
        )


class Pool:
    """Claims runs in batches and executes them with `processes` workers.

    `client`: a `Client` or a connection string. `app`: a `Registry`, or `"module:attr"`
    naming one (needed for the `process` executor with the spawn/forkserver start methods,
    which import it in each worker process).
    """

    def __init__(
        self,
        client: Client | str,
        app: Registry | str,
        *,
        processes: int | None = None,
        executor: str = "process",
        worker_id: str | None = None,
        types: Sequence[str] | None = None,
        prefixes: Sequence[str] = (),
        batch_size: int = DEFAULT_BATCH_SIZE,
        prefetch: int | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_interval: float = DEFAULT_POLL_SECONDS,
        timeout: float | None = None,
        max_tasks_per_child: int | None = None,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE_SECONDS,
        audit: Audit | str = Audit.FULL,
        flush_interval: float = DEFAULT_FLUSH_SECONDS,
        heartbeat_interval: float | None = None,
        log_interval: float = DEFAULT_LOG_SECONDS,
        start_method: str | None = None,
        listen: bool = True,
        schedules: bool = False,
        metrics: MetricsCollector | None = None,
        stats_interval: float = DEFAULT_STATS_SECONDS,
        prune_older_than: timedelta | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.registry = load_registry(app) if isinstance(app, str) else app
        self.app = app
        self.processes = processes or os.cpu_count() or 1
        _check_positive(
            processes=self.processes,
            batch_size=batch_size,
            lease_seconds=lease_seconds,
            poll_interval=poll_interval,
            flush_interval=flush_interval,
            log_interval=log_interval,
            stats_interval=stats_interval,
        )
        _check_positive(
            timeout=timeout,
            max_tasks_per_child=max_tasks_per_child,
            heartbeat_interval=heartbeat_interval,
            allow_none=True,
        )
        if shutdown_grace < 0 or (prefetch is not None and prefetch < 0):
            raise ConfigError("shutdown_grace and prefetch must not be negative")
        if executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        if executor == "inline":
            self.processes = 1
        self.executor_kind = executor
        self.timeouts = bool(timeout) or any(h.timeout for h in self.registry.handlers())
        self.worker_id = worker_id or default_worker_id()
        self.prefixes = like_patterns(prefixes)
        self.types = self._served_types(types)
        self.batch_size = batch_size
        self.auto_prefetch = prefetch is None  # then it follows how long runs take
        self.prefetch = prefetch if prefetch is not None else self.processes
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.max_tasks_per_child = max_tasks_per_child
        self.shutdown_grace = shutdown_grace
        self.audit = Audit(audit)
        self.audit_full = self.audit is Audit.FULL  # `started` events are written only then
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.log_interval = log_interval
        self.start_method = start_method
        self.listen = listen
        self.schedules = schedules  # run the schedule ticker too
        self.metrics = metrics or MetricsCollector()
        self.measuring = type(self.metrics) is not MetricsCollector  # else skip the work
        self.stats_interval = stats_interval
        if prune_older_than is not None and prune_older_than <= timedelta(0):
            raise ConfigError(f"prune_older_than must be positive, got {prune_older_than}")
        self.prune_older_than = prune_older_than
        self.rand = rand
        self._owns_client = isinstance(client, str)
        self.client = Client(client) if isinstance(client, str) else client
        self.backend: Backend = self.client.backend
        self.stats = PoolStats()

        self._init_state()

    def _init_state(self) -> None:
        self.lock = threading.Lock()  # guards what the heartbeat thread reads and writes
        self.inflight: dict[int, Task] = {}  # claimed, not yet finished
        self.buffered: dict[int, Outcome] = {}  # finished, waiting for the flush
        self.flushing: dict[int, Outcome] = {}  # in the flush under way
        self.flushing_started: list[Started] = []
        self.claiming = 0  # size of the claim under way (0: none)
        # claims and flushes each run on a thread of their own, on their own connections
        self.claimer = self.flusher = StatementThread.idle()
        self.doomed: dict[int, LeaseState] = {}  # cancelled or lost: discard their results
        self.pending: deque[Task] = deque()  # claimed, not yet handed to the executor
        self.started: list[Started] = []
        self.marked: set[int] = set()  # seqs whose `started` event was sent while running
        self.newly_doomed: list[int] = []
        self.durations: dict[int, float] = {}  # seq -> handler seconds, for the metrics
        self.restarts = 0  # worker process restarts reported to the metrics so far
        self.run_seconds: float | None = None  # moving averages, for the automatic prefetch
        self.claim_seconds: float | None = None
        self.waker: Waker | None = None  # exists while run() runs
        self.next_seq = 1
        self.wanted = True  # claim as soon as there is room
        self.wants = 0  # counts _want() calls: one during a claim is not lost when it ends
        self.wants_at_claim = 0
        self.next_poll = 0.0
        self.next_flush = 0.0  # after a failed flush, not before this
        self.isolate = False  # the last flush failed on its data: flush one by one
        self.refused: set[Lease] = set()  # in that flush: stored as failures instead
        self.backoff = 0.0
        self.oldest_buffered = 0.0
        self.stopping = False
        self.executor: Executor | None = None

    def _served_types(self, types: Sequence[str] | None) -> list[str]:
        if self.prefixes:
            return list(types or [])
        if types is None:
            return self.registry.types
        unknown = sorted(set(types) - set(self.registry.types))
        if unknown:
            raise ConfigError(f"no handler for the requested type(s): {', '.join(unknown)}")
        return list(types)

    # -- running ------------------------------------------------------------------------------

    def drain(self) -> PoolStats:
        """Execute runs until none is runnable, then return."""
        return self.run(drain=True)

    def run(self, stop: threading.Event | None = None, *, drain: bool = False) -> PoolStats:
        """Work until `stop` is set or `request_stop()` is called (or, with `drain`, until
        nothing runnable is left); then shut down gracefully and return the statistics."""
        self.backend.register(self.registry.types)
        with ExitStack() as stack:
            self.waker = waker = Waker()
            stack.callback(waker.close)
            if self._owns_client:
                stack.callback(self.client.close)
            self.executor = executor = self._make_executor(waker)
            self.claimer = StatementThread(waker.wake, "swf-claims")
            self.flusher = StatementThread(waker.wake, "swf-flushes")
            stack.enter_context(
                Heartbeat(
                    self.backend,
                    self.worker_id,
                    self.lease_seconds,
                    leases=self._leases,
                    report=self._report,
                    interval=self.heartbeat_interval,
                )
            )
            target = getattr(self.backend, "target", None)
            if self.listen and isinstance(target, PostgresTarget):
                channel = notify_channel(target.schema)
                listener = stack.enter_context(Listener(target, channel, self._notified))
                listener.ready.wait(5)
            if self.schedules:
                stack.enter_context(TickerThread(self.client))
            if self.measuring:  # someone listens: feed depth, lag
                stack.enter_context(Periodic("swf-stats", self.stats_interval, self._publish_stats))
            if self.prune_older_than is not None:
                stack.enter_context(Periodic("swf-prune", PRUNE_SECONDS, self._prune))
            try:
                self._loop(stop, drain)
                self._shutdown()
            except BaseException:
                executor.terminate()  # nothing outlives us; leases expire normally
                self.claimer.close()
                self.flusher.close()
                raise
        log.info("pool %s stopped: %s", self.worker_id, self.stats.summary())
        return self.stats

    def _loop(self, stop: threading.Event | None, drain: bool) -> None:
        last_log = time.monotonic()
        while not self.stopping and not (stop is not None and stop.is_set()):
            if self.tick() and drain:
                return
            if time.monotonic() - last_log >= self.log_interval:
                last_log = time.monotonic()
                self._log_progress()

    def request_stop(self) -> None:
        """Stop claiming and shut down gracefully (safe from signal handlers and threads)."""
        self.stopping = True
        self._wake()

    def abort(self) -> None:
        """Exit at once: kill the worker processes; leases will expire normally."""
        if isinstance(self.executor, ProcessExecutor):
            self.executor.kill_all()
        os._exit(130)

    def tick(self) -> bool:
        """One iteration; True when idle (nothing in flight and nothing to claim)."""
        assert self.executor is not None
        self._apply_doomed()
        for result in self.executor.wait(self._wait_seconds()):
            self._record(result)
        while self.restarts < self.executor.restarts:
            self.restarts += 1
            self.metrics.record_worker_restart(self.worker_id)
        now = time.monotonic()
        for done in self.claimer.completed() + self.flusher.completed():
            self._completed(done, now)
        self._enforce_timeouts(now)
        if (
            self.buffered
            and not self.flushing
            and now >= self.next_flush
            and (
                len(self.buffered) >= self.batch_size
                or now - self.oldest_buffered >= self.flush_interval
                or not self.inflight_active()
            )
        ):
            self.flusher.submit("flush", self._flush_job())
        if not self.stopping and not self.claiming:
            self._claim(now)
            now = time.monotonic()
        self._dispatch()
        busy = self.inflight or self.claiming or self.flushing
        return not busy and not self.wanted

    def _completed(self, done: Done, now: float) -> None:
        """A statement came back from the statement thread."""
        if done.error is not None and not isinstance(done.error, DatabaseError):
            raise done.error
        if done.kind == "claim":
            self._claimed(done.value, done.error, now)
        else:
            self._flushed(done.value, done.error, now)

    def inflight_active(self) -> int:
        return len(self.inflight) - len(self.buffered) - len(self.flushing)

    def _wait_seconds(self) -> float:
        """How long the executor may block: until the next thing we must do ourselves."""
        now = time.monotonic()
        deadlines = [now + IDLE_WAIT_SECONDS]
        # a claim or flush under way wakes us when it is done
        if not self.stopping and not self.claiming and self._room() >= self._claim_threshold():
            if self.wanted and now >= self.next_poll:
                return 0.0
            deadlines.append(self.next_poll)  # the next poll, or the end of a backoff
        if self.buffered and not self.flushing:
            deadlines.append(max(self.oldest_buffered + self.flush_interval, self.next_flush))
        if self.timeouts:
            deadlines.append(now + TIMEOUT_CHECK_SECONDS)
        return max(0.0, min(deadlines) - now)

    # -- claiming -----------------------------------------------------------------------------

    def _room(self) -> int:
        return self.processes + self.prefetch - self.inflight_active()

    def _claim_threshold(self) -> int:
        capacity = self.processes + self.prefetch
        return max(1, min(self.batch_size, capacity) // 2)

    def _claim(self, now: float) -> None:
        room = self._room()
        if room < self._claim_threshold() or now < self.next_poll:
            return  # no room, or idle (or backing off) until the next poll
        limit = self.claiming = min(room, self.batch_size)
        self.wants_at_claim = self.wants
        audit_full = self.audit_full

        def job() -> tuple[list[Claimed], datetime | None, float]:
            began = time.perf_counter()
            batch = self.backend.claim(
                self.worker_id,
                self.types,
                self.prefixes,
                limit,
                lease_seconds=self.lease_seconds,
                audit_full=audit_full,
            )
            # idle: learn when the earliest delayed run of ours is due
            seconds = time.perf_counter() - began
            due = self.backend.next_due(self.types, self.prefixes) if len(batch) < limit else None
            return batch, due, seconds

        if self.inflight:
            self.claimer.submit("claim", job)
            return
        # idle: claim right here, one thread hop less between a NOTIFY and the start
        try:
            value = job()
        except DatabaseError as exc:
            self._claimed(None, exc, now)
            return
        self._claimed(value, None, now)

    def _claimed(
        self,
        value: tuple[list[Claimed], datetime | None, float] | None,
        error: BaseException | None,
        now: float,
    ) -> None:
        limit, self.claiming = self.claiming, 0
        self.metrics.record_poll_cycle(self.worker_id)
        if error is not None or value is None:
            self._db_failed("claim", error, now)
            return
        batch, due, seconds = value
        self.backoff = 0.0
        self.stats.claims += 1
        self.stats.claimed += len(batch)
        self.stats.empty_claims += not batch
        with self.lock:
            for run in batch:
                task = Task(self.next_seq, run)
                self.next_seq += 1
                self.inflight[task.seq] = task
                self.pending.append(task)
        if self.measuring:
            self._measure_claim(batch, seconds)
        if self.auto_prefetch:
            self.claim_seconds = _average(self.claim_seconds, seconds)
            self._adapt_prefetch()
        if len(batch) == limit:
            return  # more may be waiting
        next_poll = now + self.poll_interval
        if due is not None:  # wake for it if it comes before the next poll
            wait = (due - datetime.now(UTC)).total_seconds()
            next_poll = min(next_poll, now + max(0.0, wait) + 0.001)
        with self.lock:  # against _want() on the listener thread
            if self.wants == self.wants_at_claim:  # no NOTIFY came in while we claimed
                self.wanted = False
                self.next_poll = next_poll

    def _adapt_prefetch(self) -> None:
        """Without an explicit prefetch: hold enough runs to keep the workers busy through
        two claims at the rate runs finish, from `processes` (long runs stay in the table,
        for other pools to take) to twice the batch (short runs come in big claims)."""
        if self.run_seconds is None or self.claim_seconds is None:
            return
        rate = self.processes / max(self.run_seconds, 1e-6)
        wanted = math.ceil(2 * self.claim_seconds * rate)
        self.prefetch = max(self.processes, min(wanted, 2 * self.batch_size))
        if isinstance(self.executor, ProcessExecutor):
            self.executor.per_process = _per_process(self.prefetch, self.processes)

    def _notified(self) -> None:
        self._want()
        self._wake()

    def _want(self) -> None:
        """There may be runnable runs: claim as soon as there is room (unless backing off)."""
        with self.lock:
            self.wanted = True
            self.wants += 1
            if not self.backoff:
                self.next_poll = 0.0

    def _wake(self) -> None:
        waker = self.waker
        if waker is not None:
            waker.wake()

    def _dispatch(self) -> None:
        assert self.executor is not None
        free = self.executor.free()
        if free and self.pending:
            tasks = [self.pending.popleft() for _ in range(min(free, len(self.pending)))]
            self.executor.dispatch(tasks)

    # -- results and flushing -----------------------------------------------------------------

    def _record(self, result: Result) -> None:
        task = self.inflight.get(result.seq)
        if task is None or result.seq in self.buffered or result.seq in self.flushing:
            return
        run = task.run
        doomed = self.doomed.get(result.seq)
        if doomed is not None or result.value == SKIPPED:
            self.stats.discarded += 1
            self._forget(result.seq)
            log.info(
                "discarded the outcome of %s attempt %d: %s",
                run.id,
                run.attempt,
                doomed.value if doomed else "cancelled",
            )
            return
        # its `started` event goes with the outcome, unless an earlier flush wrote it
        began = None
        if self.audit_full and result.started and result.seq not in self.marked:
            began = result.started
        if self.measuring:
            if result.started:
                due = max(run.created_at, run.run_at).timestamp()
                self.metrics.record_start_latency(run.type, max(0.0, result.started - due))
            self.durations[result.seq] = result.duration
        if self.auto_prefetch and result.started:  # the handler ran (not a death, a skip)
            self.run_seconds = _average(self.run_seconds, result.duration)
        if result.ok:
            outcome = Outcome(
                run.id, run.attempt, Status.SUCCEEDED, result.value, None, None, began
            )
        else:
            handler = self.registry.get(run.type)
            policy = handler.retry if handler else DEFAULT_POLICY
            outcome = after_failure(
                run,
                result.value or "error",
                policy,
                permanent=result.permanent,
                rand=self.rand(),
                now=datetime.now(UTC),
            )._replace(started=began)
        if not self.buffered:
            self.oldest_buffered = time.monotonic()
        with self.lock:
            self.buffered[result.seq] = outcome

    def _flush_job(self) -> Callable[[], set[Lease]]:
        """Move the buffer into a flush (one statement, run by the caller of the job)."""
        assert self.executor is not None
        now = time.time()
        mono = time.monotonic()
        for seq, begun in self.executor.running().items() if self.audit_full else ():
            task = self.inflight.get(seq)
            # a slot may still show a task whose result is in: its outcome carries the start
            if task and seq not in self.marked and seq not in self.buffered:
                self.marked.add(seq)
                at = _wall(now - (mono - begun))
                self.started.append(Started(task.run.id, task.run.attempt, at))
        with self.lock:
            self.flushing, self.buffered = self.buffered, {}
        self.flushing_started, self.started = self.started, []
        outcomes = list(self.flushing.values())
        started = self.flushing_started
        backend, worker_id, audit_full = self.backend, self.worker_id, self.audit_full
        if self.isolate:
            self.isolate = False
            refused = self.refused
            return lambda: _complete_one_by_one(
                backend, worker_id, outcomes, started, audit_full, refused
            )
        return lambda: backend.complete(worker_id, outcomes, started, audit_full)

    def _flushed(self, applied: set[Lease] | None, error: BaseException | None, now: float) -> None:
        if error is not None or applied is None:
            if isinstance(error, _Interrupted):  # what was stored before is done with
                stored = error.applied
                self._account({s: o for s, o in self.flushing.items() if o[:2] in stored}, stored)
            with self.lock:  # put the rest back, to be tried again
                self.buffered = {**self.flushing, **self.buffered}
                self.flushing = {}
            self.started = self.flushing_started + self.started
            # the server refused the data (or the connection broke while we looked for what it
            # refused): one statement per outcome next time
            self.isolate = isinstance(error, DataRejected | _Interrupted)
            self._db_failed("flush", error, now)
            self.next_flush = self.next_poll
            return
        self.stats.flushes += 1
        self.next_flush = 0.0
        self._account(self.flushing, applied)
        self.flushing_started = []
        if self.measuring:
            self.metrics.record_in_flight(self.worker_id, len(self.inflight))

    def _account(self, flushed: dict[int, Outcome], applied: set[Lease]) -> None:
        """Count and forget the outcomes of a flush: `applied` were stored, the others were
        fenced out (the lease was no longer held)."""
        stats, refused = self.stats, self.refused
        for seq, outcome in flushed.items():
            lease = outcome[:2]  # (id, attempt), equal to its Lease
            if lease in applied and self.measuring:
                status = Status.FAILED if lease in refused else outcome.status
                self._measure(seq, status)
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
                self._want()  # the retry may be due already
            else:
                stats.failed += 1
        self._forget(*flushed)
        refused.clear()

    def _measure_claim(self, batch: list[Claimed], seconds: float) -> None:
        metrics, worker_id = self.metrics, self.worker_id
        metrics.record_claim(worker_id, len(batch), seconds)
        for run in batch:
            metrics.record_intent_claimed(run.type, worker_id)
            if run.rescued:
                metrics.record_rescued(run.type, worker_id)
        metrics.record_in_flight(worker_id, len(self.inflight))

    def _measure(self, seq: int, status: Status) -> None:
        """The metrics of an outcome now stored."""
        task = self.inflight.get(seq)
        if task is None:
            return
        run, worker_id, metrics = task.run, self.worker_id, self.metrics
        duration = self.durations.get(seq, 0.0)
        if status is Status.SUCCEEDED:
            metrics.record_intent_completed(run.type, worker_id, status.value, duration)
            return
        metrics.record_failed_attempt(run.type, worker_id, run.attempt)
        if status is Status.FAILED:
            metrics.record_intent_completed(run.type, worker_id, status.value, duration)
            metrics.record_intent_deadletter(run.type, worker_id)

    def _flush_now(self) -> None:
        """Flush synchronously (at shutdown)."""
        job = self._flush_job()
        try:
            applied: set[Lease] | None = job()
        except DatabaseError as exc:
            self._flushed(None, exc, time.monotonic())
            return
        self._flushed(applied, None, time.monotonic())

    def _forget(self, *seqs: int) -> None:
        with self.lock:  # once for a whole flush
            for seq in seqs:
                self.inflight.pop(seq, None)
                self.buffered.pop(seq, None)
                self.flushing.pop(seq, None)
                self.doomed.pop(seq, None)
                self.marked.discard(seq)
                self.durations.pop(seq, None)

    def _db_failed(self, what: str, exc: BaseException | None, now: float) -> None:
        self.stats.db_errors += 1
        self.metrics.record_poll_error(self.worker_id, type(exc).__name__)
        self.backoff = min(max(self.backoff * 2, 0.1), BACKOFF_MAX_SECONDS)
        self.next_poll = now + self.backoff
        log.warning("%s failed (retrying in %.1fs): %s", what, self.backoff, exc)

    # -- leases: heartbeat, cancellation, timeouts --------------------------------------------

    def _leases(self) -> list[Lease]:
        with self.lock:
            return [Lease(t.run.id, t.run.attempt) for t in self.inflight.values()]

    def _report(self, states: dict[Lease, LeaseState]) -> None:
        """From the heartbeat thread: these attempts are cancelled or no longer ours."""
        with self.lock:  # rare (a cancel, a lost lease): looking through what is in flight is
            # cheaper than keeping an index up to date for every run; a run may be here twice,
            # attempt n and n+1
            for seq, task in self.inflight.items():
                state = states.get(Lease(task.run.id, task.run.attempt))
                if state is not None and seq not in self.doomed:
                    self.doomed[seq] = state
                    self.newly_doomed.append(seq)
        self._wake()

    def _apply_doomed(self) -> None:
        assert self.executor is not None
        with self.lock:
            seqs, self.newly_doomed = self.newly_doomed, []
        for seq in seqs:
            waiting = [t for t in self.pending if t.seq == seq]
            for task in waiting:
                self.pending.remove(task)
                self._record(Result(seq, False, SKIPPED))
            if not waiting:
                self.executor.cancel(seq)

    def is_cancelled(self, seq: int) -> bool:
        with self.lock:
            return seq in self.doomed

    def extend_lease(self, seq: int, seconds: float) -> LeaseState:
        """A handler's `run.heartbeat(seconds)`: extend now and record the event."""
        task = self.inflight.get(seq)
        if task is None:
            return LeaseState.LOST
        lease = Lease(task.run.id, task.run.attempt)
        try:
            state = self.backend.heartbeat(self.worker_id, [lease], seconds, True)[lease]
        except DatabaseError as exc:
            log.warning("heartbeat for %s failed: %s", lease.id, exc)
            return LeaseState.HELD
        if state is not LeaseState.HELD:
            self._report({lease: state})
        return state

    def _enforce_timeouts(self, now: float) -> None:
        assert self.executor is not None
        for seq, begun in self.executor.running().items():
            task = self.inflight.get(seq)
            if task is None:
                continue
            handler = self.registry.get(task.run.type)
            limit = (handler.timeout if handler else None) or self.timeout
            if not limit or now - begun <= limit:
                continue
            reason = (
                f"Timeout: the run exceeded its timeout of {limit:g}s; "
                "its worker process was killed"
            )
            if self.executor.kill(seq, reason):
                self.stats.timed_out += 1

    # -- lifecycle ----------------------------------------------------------------------------

    def _make_executor(self, waker: Waker) -> Executor:
        if self.executor_kind == "inline":
            return InlineExecutor(self.registry, self, waker)
        if self.executor_kind == "thread":
            return ThreadExecutor(self.registry, self, waker, self.processes)
        return ProcessExecutor(
            self.app,
            self,
            waker,
            self.processes,
            _per_process(self.prefetch, self.processes),
            self.max_tasks_per_child,
            self.start_method,
        )

    def _shutdown(self) -> None:
        """Release what never started, let running runs finish, flush everything."""
        assert self.executor is not None
        self.stopping = True
        now = time.monotonic()
        for done in self.claimer.close() + self.flusher.close():  # what is under way finishes
            self._completed(done, now)
        self._release(list(self.pending) + self.executor.take_unstarted())
        self.pending.clear()
        for result in self.executor.close(self.shutdown_grace):
            self._record(result)
        self._release(self.executor.take_unstarted())
        deadline = time.monotonic() + max(self.shutdown_grace, 1.0)
        while self.buffered and time.monotonic() < deadline:
            self._flush_now()
            if self.buffered:
                time.sleep(min(self.backoff or 0.1, 1.0))
        if self.buffered:
            log.error(
                "could not flush %d outcome(s) before exit; their leases will expire",
                len(self.buffered),
            )

    def _release(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        leases = [Lease(t.run.id, t.run.attempt) for t in tasks]
        try:
            released = self.backend.release(self.worker_id, leases)
        except DatabaseError as exc:
            log.warning(
                "could not release %d unstarted run(s); their leases will expire: %s",
                len(tasks),
                exc,
            )
            return
        self.stats.released += len(released)
        for task in tasks:
            self._forget(task.seq)

    def _publish_stats(self) -> None:
        """From the stats thread: the queue's depth and lag, for the metrics."""
        self.metrics.record_queue_stats(self.client.stats())

    def _prune(self) -> None:
        """From the prune thread: retention, as `swf-pool prune` does it."""
        assert self.prune_older_than is not None
        pruned = self.client.prune(self.prune_older_than)
        if pruned:
            log.info("pruned %d finished run(s) older than %s", pruned, self.prune_older_than)

    def _log_progress(self) -> None:
        log.info(
            "%s | in flight %d, pending %d",
            self.stats.summary(),
            self.inflight_active(),
            len(self.pending),
        )


def _complete_one_by_one(
    backend: Backend,
    worker_id: str,
    outcomes: list[Outcome],
    started: list[Started],
    audit_full: bool,
    refused: set[Lease],
) -> set[Lease]:
    """After a flush the server refused for its data: one statement per outcome, so that one
    bad outcome cannot hold back the others. An outcome still refused is stored as a failure
    that says why (and added to `refused`); if even that is refused, its lease expires and
    the run is retried. Losing the database part way raises `_Interrupted`, with what was
    stored before."""
    with contextlib.suppress(DataRejected):  # `started` events are only audit
        backend.complete(worker_id, [], started, audit_full)
        started.clear()  # stored (the caller puts back what is left if the rest is interrupted)
    applied: set[Lease] = set()
    try:
        for outcome in outcomes:
            try:
                applied |= backend.complete(worker_id, [outcome], [], audit_full)
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
                stored = backend.complete(worker_id, [failure], [], audit_full)
                applied |= stored
                refused |= stored
    except DatabaseError as exc:
        raise _Interrupted(exc, applied) from exc
    return applied


class _Interrupted(DatabaseError):
    """A flush of one statement per outcome lost the database part way: `applied` were
    stored before, the rest are to be flushed again."""

    def __init__(self, cause: DatabaseError, applied: set[Lease]) -> None:
        super().__init__(str(cause))
        self.applied = applied


def _per_process(prefetch: int, processes: int) -> int:
    """How many tasks one worker process holds: the one it runs and its share of the rest."""
    return 1 + -(-prefetch // processes)


def _average(mean: float | None, value: float) -> float:
    """An exponential moving average (the last 10 or so values count)."""
    return value if mean is None else mean + 0.1 * (value - mean)


def _wall(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _check_positive(allow_none: bool = False, **values: float | None) -> None:
    for name, value in values.items():
        if value is None and allow_none:
            continue
        if value is None or value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
