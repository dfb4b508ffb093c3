"""Metrics: what a pool reports, to Prometheus or to a collector of your own.

`MetricsCollector` is the interface and the default (every method does nothing): subclass it
and override what you need. `PrometheusMetrics` keeps the Go library's metric names and labels
and adds what operators ask for (lag, rescues, claim sizes and latency, start latency, in
flight, worker restarts, table bloat). Everything is recorded in the coordinator process, on
a registry of its own, so worker processes need no multiprocess mode and two pools in one
process do not collide.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

from .models import QueueStats, Status

if TYPE_CHECKING:
    from .fleet import PoolMember

# the Go library's buckets for execution time
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class MetricsCollector:
    """What the pool reports; the base class records nothing (the default)."""

    # -- the Go library's MetricsCollector --------------------------------------------------
    def record_intent_claimed(self, workflow_type: str, worker_id: str) -> None:
        """A run was claimed."""

    def record_intent_completed(
        self, workflow_type: str, worker_id: str, status: str, duration: float
    ) -> None:
        """A run ended (`succeeded` or `failed`) after `duration` seconds of execution."""

    def record_intent_deadletter(self, workflow_type: str, worker_id: str) -> None:
        """A run failed for good: no attempt left, or a permanent error."""

    def record_failed_attempt(self, workflow_type: str, worker_id: str, attempt: int) -> None:
        """An attempt failed (retried or not)."""

    def record_poll_cycle(self, worker_id: str) -> None:
        """The pool looked for work (one claim statement)."""

    def record_poll_error(self, worker_id: str, error_type: str) -> None:
        """A claim or a flush failed on the database."""

    def record_queue_depth(self, workflow_type: str, status: str, depth: int) -> None:
        """Runs of a type in a status (pending, leased)."""

    # -- beyond the Go set --------------------------------------------------------------------
    def record_claim(self, worker_id: str, size: int, seconds: float) -> None:
        """One claim statement: how many runs it returned and how long it took."""

    def record_rescued(self, workflow_type: str, worker_id: str) -> None:
        """A claimed run had been leased by a worker whose lease expired."""

    def record_start_latency(self, workflow_type: str, seconds: float) -> None:
        """From when a run was due (created, or its run_at) to when its handler started."""

    def record_in_flight(self, worker_id: str, count: int) -> None:
        """Runs this pool holds leases on now."""

    def record_worker_restart(self, worker_id: str) -> None:
        """A worker process died or was killed and was replaced."""

    def record_queue_stats(self, stats: QueueStats) -> None:
        """The periodic queue view: depth per type and status, lag, table bloat."""

    def record_pools(self, pools: Sequence[PoolMember]) -> None:
        """The fleet: how many pools are live, and how many lost."""

    def record_outcome(
        self, workflow_type: str, worker_id: str, attempt: int, status: Status, duration: float
    ) -> None:
        """An attempt's outcome was stored: `succeeded`, `pending` (a retry) or `failed`."""
        if status is not Status.SUCCEEDED:
            self.record_failed_attempt(workflow_type, worker_id, attempt)
        if status is not Status.PENDING:
            self.record_intent_completed(workflow_type, worker_id, status.value, duration)
        if status is Status.FAILED:
            self.record_intent_deadletter(workflow_type, worker_id)


class PrometheusMetrics(MetricsCollector):
    """Prometheus metrics on `registry` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.started = time.monotonic()
        self._server: Any = None
        self._lock = threading.Lock()
        self._depth_labels: set[tuple[str, str]] = set()
        self._lag_labels: set[str] = set()
        r = self.registry
        wt, wid = "workflow_type", "worker_id"
        self.claimed = Counter("workflow_run_claimed_total", "Runs claimed", [wt, wid], registry=r)
        self.completed = Counter(
            "workflow_run_completed_total", "Runs that ended", [wt, wid, "status"], registry=r
        )
        self.failed = Counter(
            "workflow_run_failed_total",
            "Runs failed for good (dead letters)",
            [wt, wid],
            registry=r,
        )
        self.failed_attempts = Counter(
            "workflow_run_failed_attempts_total",
            "Failed attempts, by attempt number (1, 2, 3+)",
            [wt, wid, "attempt"],
            registry=r,
        )
        self.duration = Histogram(
            "workflow_run_execution_duration_seconds",
            "Handler execution time of runs that ended",
            [wt, wid, "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.polls = Counter(
            "workflow_worker_poll_cycle_total", "Claim statements", [wid], registry=r
        )
        self.poll_errors = Counter(
            "workflow_worker_poll_errors_total",
            "Database errors in claims and flushes",
            [wid, "error_type"],
            registry=r,
        )
        self.depth = Gauge(
            "workflow_run_queue_depth", "Runs by type and status", [wt, "status"], registry=r
        )
        self.uptime = Gauge(
            "workflow_worker_uptime_seconds", "Seconds since the pool started", [wid], registry=r
        )
        self.last_poll = Gauge(
            "workflow_worker_last_poll_timestamp",
            "Unix time of the last claim statement",
            [wid],
            registry=r,
        )
        self.lag = Gauge(
            "swf_run_lag_seconds",
            "Age of the oldest due pending run, since it became due",
            [wt],
            registry=r,
        )
        self.rescued = Counter(
            "swf_run_rescued_total",
            "Runs claimed after another worker's lease expired",
            [wt, wid],
            registry=r,
        )
        self.claim_size = Histogram(
            "swf_claim_batch_size",
            "Runs per claim statement",
            [wid],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.claim_seconds = Histogram(
            "swf_claim_duration_seconds",
            "Time of one claim statement",
            [wid],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.start_latency = Histogram(
            "swf_run_start_latency_seconds",
            "From when a run was due to when its handler started",
            [wt],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "swf_worker_in_flight", "Runs this pool holds leases on", [wid], registry=r
        )
        self.restarts = Counter(
            "swf_worker_process_restarts_total",
            "Worker processes that died or were killed and were replaced",
            [wid],
            registry=r,
        )
        self.dead_tuples = Gauge(
            "swf_table_dead_tuples",
            "Dead rows in workflow_run (table bloat; PostgreSQL)",
            registry=r,
        )
        self.pools = Gauge(
            "swf_pools",
            "Pools in the fleet, live or lost (swf-pool workers)",
            ["state"],
            registry=r,
        )

    def record_intent_claimed(self, workflow_type: str, worker_id: str) -> None:
        self.claimed.labels(workflow_type, worker_id).inc()

    def record_intent_completed(
        self, workflow_type: str, worker_id: str, status: str, duration: float
    ) -> None:
        self.completed.labels(workflow_type, worker_id, status).inc()
        self.duration.labels(workflow_type, worker_id, status).observe(duration)

    def record_intent_deadletter(self, workflow_type: str, worker_id: str) -> None:
        self.failed.labels(workflow_type, worker_id).inc()

    def record_failed_attempt(self, workflow_type: str, worker_id: str, attempt: int) -> None:
        label = str(attempt) if attempt < 3 else "3+"
        self.failed_attempts.labels(workflow_type, worker_id, label).inc()

    def record_poll_cycle(self, worker_id: str) -> None:
        self.polls.labels(worker_id).inc()
        self.last_poll.labels(worker_id).set(time.time())
        self.uptime.labels(worker_id).set(time.monotonic() - self.started)

    def record_poll_error(self, worker_id: str, error_type: str) -> None:
        self.poll_errors.labels(worker_id, error_type).inc()

    def record_queue_depth(self, workflow_type: str, status: str, depth: int) -> None:
        self.depth.labels(workflow_type, status).set(depth)

    def record_claim(self, worker_id: str, size: int, seconds: float) -> None:
        self.claim_size.labels(worker_id).observe(size)
        self.claim_seconds.labels(worker_id).observe(seconds)

    def record_rescued(self, workflow_type: str, worker_id: str) -> None:
        self.rescued.labels(workflow_type, worker_id).inc()

    def record_start_latency(self, workflow_type: str, seconds: float) -> None:
        self.start_latency.labels(workflow_type).observe(seconds)

    def record_in_flight(self, worker_id: str, count: int) -> None:
        self.in_flight.labels(worker_id).set(count)

    def record_worker_restart(self, worker_id: str) -> None:
        self.restarts.labels(worker_id).inc()

    def record_queue_stats(self, stats: QueueStats) -> None:
        depth = {(t.type, "pending"): t.pending for t in stats.types}
        depth |= {(t.type, "leased"): t.leased for t in stats.types}
        lag = {t.type: t.lag_seconds or 0.0 for t in stats.types}
        with self._lock:  # a type that drained reads 0, not its last value
            for key in self._depth_labels - set(depth):
                depth[key] = 0
            for name in self._lag_labels - set(lag):
                lag[name] = 0.0
            self._depth_labels |= set(depth)
            self._lag_labels |= set(lag)
        for (workflow_type, status), value in depth.items():
            self.record_queue_depth(workflow_type, status, value)
        for workflow_type, seconds in lag.items():
            self.lag.labels(workflow_type).set(seconds)
        if stats.dead_tuples is not None:
            self.dead_tuples.set(stats.dead_tuples)

    def record_pools(self, pools: Sequence[PoolMember]) -> None:
        lost = sum(pool.lost for pool in pools)
        self.pools.labels("live").set(len(pools) - lost)
        self.pools.labels("lost").set(lost)

    def exposition(self) -> bytes:
        """The text format, as /metrics serves it."""
        return bytes(generate_latest(self.registry))

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """Serve /metrics on a daemon thread (port 0: any free port); returns the address.
        `close()` stops it."""
        self.close()
        self._server, _ = start_http_server(port, host, registry=self.registry)
        address: tuple[str, int] = self._server.server_address[:2]
        return address

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
