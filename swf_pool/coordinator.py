"""The coordinator: the pool's main loop, which orchestrates the parts below.

    claimer (claims in flight) ──> executor (processes | threads | inline)
          ^                                   │ results
          │ NOTIFY / poll                     v
    listener thread             flusher (buffer ──> fenced flushes in flight)
                                heartbeat thread: renews every lease in the ledger

Each loop iteration (`tick`) waits for results (or a wake-up), turns them into outcomes,
kills runs past their timeout, starts the flushes and claims that are due, and hands claimed
runs to free workers. Where each part lives: `settings.py` (every option), `claimer.py`,
`flusher.py`, `ledger.py` (the runs held: the state other threads share), `heartbeat.py`
(leases), `prefetch.py`, `statements.py` (the threads claims and flushes run on).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from . import fleet
from .backends import Backend
from .claimer import Claimer, Request
from .client import Client
from .companions import companions
from .errors import DatabaseError
from .executors import Executor, Waker, make_executor, runs_at_once
from .flusher import Flusher
from .handlers import Registry, like_patterns, load_registry
from .leases import LeaseKeeper
from .ledger import Ledger
from .metrics import MetricsCollector
from .models import Audit, Lease, Status
from .poolstats import PoolStats
from .prefetch import Prefetch
from .settings import PoolSettings, default_worker_id
from .statements import StatementThreads
from .worker import SKIPPED, Result, Task

log = logging.getLogger("swf_pool.pool")

IDLE_WAIT_SECONDS = 1.0  # the longest we block without looking around
TIMEOUT_CHECK_SECONDS = 0.05
DRAIN_WAIT_SECONDS = 10.0  # a drain waits for runs due this soon (and held back: `waiting`)


class Pool:
    """Claims runs in batches and executes them with `processes` workers (each running up to
    `concurrency` runs of async handlers at once, with the process executor).

    `client`: a `Client` or a connection string. `app`: a `Registry`, or `"module:attr"`
    naming one (needed for the `process` executor with the spawn/forkserver start methods,
    which import it in each worker process). The other keywords are the options of
    `swf_pool.settings.OPTIONS` (`processes`, `batch_size`, `lease_seconds`, ...).
    """

    def __init__(
        self,
        client: Client | str,
        app: Registry | str,
        *,
        metrics: MetricsCollector | None = None,
        rand: Callable[[], float] = random.random,
        **options: Any,
    ) -> None:
        self.registry = load_registry(app) if isinstance(app, str) else app
        self.app = app
        self.settings = s = PoolSettings.build(**options)
        self.processes = s.processes
        self.executor_kind = s.executor
        self.worker_id = s.worker_id or default_worker_id()
        prefixes = like_patterns(s.prefixes)
        self.types = self.registry.served(s.types, bool(prefixes))
        self.audit = Audit(s.audit)
        self.timeouts = bool(s.timeout) or any(h.timeout for h in self.registry.handlers())
        self.metrics = metrics or MetricsCollector()
        self.measuring = type(self.metrics) is not MetricsCollector  # else skip the work
        self.rand = rand
        self._owns_client = isinstance(client, str)
        self.client = Client(client) if isinstance(client, str) else client
        self.backend: Backend = self.client.backend
        self.stats = PoolStats()
        self.ledger = Ledger()
        per_worker = runs_at_once(s.executor, self.registry, s.concurrency)
        self.prefetch = Prefetch(s.processes, per_worker, s.batch_size, s.prefetch)
        self.pending: deque[Task] = deque()  # claimed, not yet handed to the executor
        self.durations: dict[int, float] = {}  # seq -> handler seconds, for the metrics
        self.restarts = 0  # worker process restarts reported to the metrics so far
        self.waker: Waker | None = None  # exists while run() runs
        self.executor: Executor | None = None
        self.stopping = False
        self.leases = LeaseKeeper(self.backend, self.worker_id, self.ledger, self._wake)
        full = self.audit is Audit.FULL
        self.claimer = Claimer(
            self.backend,
            Request(self.worker_id, self.types, prefixes, s.lease_seconds, full),
            s,
            ledger=self.ledger,
            prefetch=self.prefetch,
            stats=self.stats,
            metrics=self.metrics,
            measuring=self.measuring,
        )
        self.flusher = Flusher(
            self.backend,
            self.worker_id,
            s,
            ledger=self.ledger,
            stats=self.stats,
            on_stored=self.claimer.stored,
            measure=self._measure if self.measuring else None,
            on_error=self.claimer.backoff.on_failure,
        )

    # -- running ------------------------------------------------------------------------------

    def drain(self) -> PoolStats:
        """Execute runs until none is runnable, then return."""
        return self.run(drain=True)

    def run(self, stop: threading.Event | None = None, *, drain: bool = False) -> PoolStats:
        """Work until `stop` is set or `request_stop()` is called (or, with `drain`, until
        nothing runnable is left); then shut down gracefully and return the statistics."""
        s = self.settings
        self.backend.register(self.registry.types)
        fleet.declare(self.backend, self.registry.handlers())
        with ExitStack() as stack:
            self.waker = waker = Waker()
            stack.callback(waker.close)
            if self._owns_client:
                stack.callback(self.client.close)
            self.executor = executor = make_executor(
                s.executor, self.app, self.registry, self.leases, waker, self.processes,
                self.prefetch.concurrency, self.prefetch.per_process(), s.max_tasks_per_child,
                s.start_method,
            )  # fmt: skip
            at_once = s.statements_at_once(self.backend.statements_at_once(), self.prefetch.slots)
            # each statement thread holds a connection; the heartbeat and a handler's
            # `run.heartbeat()` need theirs too
            self.backend.reserve_connections(2 * at_once + 2)
            self.claimer.most_at_once = self.flusher.most_at_once = at_once
            self.prefetch.claims_at_once = at_once
            self.claimer.threads = StatementThreads(waker.wake, "swf-claims", at_once)
            self.flusher.threads = StatementThreads(waker.wake, "swf-flushes", at_once)
            beat = self.leases.heartbeat(s.lease_seconds, s.heartbeat_interval, fleet.card_of(self))
            stack.enter_context(beat)
            companions(
                stack, s, self.client, self._notified, self.metrics if self.measuring else None
            )
            try:
                self._loop(stop, drain)
                self._shutdown()
            except BaseException:
                executor.terminate()  # nothing outlives us; leases expire normally
                self.claimer.threads.stop()
                self.flusher.threads.stop()
                raise
        log.info("pool %s stopped: %s", self.worker_id, self.stats.summary())
        return self.stats

    def _loop(self, stop: threading.Event | None, drain: bool) -> None:
        last_log, done = time.monotonic(), 0
        while not self.stopping and not (stop is not None and stop.is_set()):
            if self.tick() and drain:
                return
            if (now := time.monotonic()) - last_log >= self.settings.log_interval:
                self._log_progress(now - last_log, done)
                last_log, done = now, self.stats.succeeded + self.stats.retried + self.stats.failed

    def request_stop(self) -> None:
        """Stop claiming and shut down gracefully (safe from signal handlers and threads)."""
        self.stopping = True
        self._wake()

    def abort(self) -> None:
        """Exit at once: kill the worker processes; leases will expire normally."""
        if self.executor is not None:
            self.executor.kill_all()
        os._exit(130)

    def tick(self) -> bool:
        """One iteration; True when idle (nothing in flight and nothing to claim)."""
        assert self.executor is not None
        claimer, flusher = self.claimer, self.flusher
        self._apply_doomed()
        for result in self.executor.wait(self._wait_seconds()):
            self._record(result)
        while self.restarts < self.executor.restarts:
            self.restarts += 1
            self.metrics.record_worker_restart(self.worker_id)
        now = time.monotonic()
        self._statements_done(now)
        if self.timeouts:
            self._enforce_timeouts(now)
        while flusher.due(now, self.running()):
            flusher.start(self.executor.running())
        flusher.note_starts(now, self.executor.running)
        if not self.stopping:
            inline = not self.ledger and not claimer.busy()  # idle: claim right here
            while claimer.due(self._room(), self._capacity(), now):
                self.pending.extend(claimer.claim(self._room(), now, inline))
                self._adapt_prefetch()
                inline = False
        self._dispatch()
        busy = self.ledger or claimer.busy() or flusher.busy()
        return not busy and not claimer.wanted and not claimer.waiting(DRAIN_WAIT_SECONDS)

    def _statements_done(self, now: float) -> None:
        assert self.claimer.threads is not None and self.flusher.threads is not None
        for done in self.claimer.threads.completed():
            self.pending.extend(self.claimer.completed(done, now))
            self._adapt_prefetch()
        flushed = self.flusher.threads.completed()
        for done in flushed:
            self.flusher.completed(done, now)
        if flushed and self.measuring:
            self.metrics.record_in_flight(self.worker_id, len(self.ledger))

    def running(self) -> int:
        """Tasks claimed and not finished: started, or waiting for a worker."""
        return len(self.ledger) - self.flusher.held()

    def _capacity(self) -> int:
        return self.prefetch.slots + self.prefetch.value

    def _room(self) -> int:
        return self._capacity() - self.running()

    def _wait_seconds(self) -> float:
        """How long the executor may block: until the next thing we must do ourselves."""
        now = time.monotonic()
        deadlines = [now + IDLE_WAIT_SECONDS]
        claim = None if self.stopping else self.claimer.deadline(self._room(), self._capacity())
        if claim is not None:
            deadlines.append(claim)
        flush = self.flusher.deadline()
        if flush is not None:
            deadlines.append(flush)
        if self.timeouts:
            deadlines.append(now + TIMEOUT_CHECK_SECONDS)
        return max(0.0, min(deadlines) - now)

    def _adapt_prefetch(self) -> None:
        assert self.executor is not None
        self.executor.hold(self.prefetch.per_process())

    def _notified(self) -> None:
        self.claimer.want()
        self._wake()

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

    # -- results ------------------------------------------------------------------------------

    def _record(self, result: Result) -> None:
        """A result from a worker: its outcome goes to the flusher (or is discarded)."""
        task = self.ledger.get(result.seq)
        if task is None or self.flusher.holds(result.seq):
            return
        run = task.run
        doomed = self.ledger.doomed(result.seq)
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
        if self.measuring:
            if result.started:
                due = max(run.created_at, run.run_at).timestamp()
                self.metrics.record_start_latency(run.type, max(0.0, result.started - due))
            self.durations[result.seq] = result.duration
        if result.started:  # the handler ran (not a death, a skip)
            self.prefetch.ran(result.duration)
        policy = None if result.ok else self.registry.retry_policy(run.type)
        self.flusher.record(result, run, policy, self.rand)

    def _measure(self, seq: int, status: Status | None) -> None:
        """The metrics of an outcome now stored (`status` None: it was not)."""
        task, duration = self.ledger.get(seq), self.durations.pop(seq, 0.0)
        if task is not None and status is not None:
            run = task.run
            self.metrics.record_outcome(run.type, self.worker_id, run.attempt, status, duration)

    def _forget(self, *seqs: int) -> None:
        """Tasks that end without an outcome to store."""
        self.ledger.forget(seqs)
        for seq in seqs:
            self.flusher.forget(seq)
            self.durations.pop(seq, None)

    # -- cancellation, timeouts --------------------------------------------

    def _apply_doomed(self) -> None:
        """Attempts the heartbeat found cancelled or lost: skip them or tell their worker."""
        assert self.executor is not None
        for seq in self.ledger.take_newly_doomed():
            waiting = [t for t in self.pending if t.seq == seq]
            for task in waiting:
                self.pending.remove(task)
                self._record(Result(seq, False, SKIPPED))
            if not waiting:
                self.executor.cancel(seq)

    def _enforce_timeouts(self, now: float) -> None:
        assert self.executor is not None
        for seq, begun in self.executor.running().items():
            task = self.ledger.get(seq)
            limit = task and self.registry.timeout(task.run.type, self.settings.timeout)
            if limit and now - begun > limit:
                reason = f"Timeout: the run exceeded its timeout of {limit:g}s"
                if self.executor.kill(seq, reason):
                    self.stats.timed_out += 1

    # -- lifecycle ----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Release what never started; let running runs finish within the grace, their
        outcomes flushed as they come (a kill after a grace the platform cuts short loses
        none of those); then flush what is left."""
        executor, claimer, flusher = self.executor, self.claimer, self.flusher
        assert executor is not None
        assert claimer.threads is not None and flusher.threads is not None
        self.stopping = True
        self._release_pending(executor.take_unstarted())
        executor.closing()
        deadline = time.monotonic() + self.settings.shutdown_grace
        while executor.busy() and (left := deadline - time.monotonic()) > 0:
            self._apply_doomed()
            for result in executor.wait(min(self._wait_seconds(), left)):
                self._record(result)
            now = time.monotonic()
            self._statements_done(now)
            self._release_pending([])  # what claims under way brought back
            if self.timeouts:
                self._enforce_timeouts(now)
            while flusher.due(now, self.running()):
                flusher.start(executor.running())
            flusher.note_starts(now, executor.running)
        for result in executor.close(self.settings.shutdown_grace):
            self._record(result)
        self.pending.extend(claimer.close(time.monotonic()))  # claims under way finish
        self._release_pending(executor.take_unstarted())
        flusher.close(max(self.settings.shutdown_grace, 1.0))

    def _release_pending(self, unstarted: list[Task]) -> None:
        """Give back the runs waiting for a worker and `unstarted` (taken from the workers)."""
        self._release(list(self.pending) + unstarted)
        self.pending.clear()

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
        self._forget(*(task.seq for task in tasks))

    def _log_progress(self, seconds: float, done_before: int) -> None:
        stats = self.stats
        done = stats.succeeded + stats.retried + stats.failed
        log.info(
            "%d attempts in the last %.0fs (%.0f/s); %s | running %d, waiting for a worker %d",
            done - done_before,
            seconds,
            (done - done_before) / max(seconds, 1e-9),
            stats.summary(),
            self.running() - len(self.pending),
            len(self.pending),
        )
