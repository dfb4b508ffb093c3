"""The threads that run beside a pool's loop, each in the pool's `ExitStack`: LISTEN for new
runs, the schedule ticker, the queue statistics for the metrics, and retention."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack

from .client import Client
from .metrics import MetricsCollector
from .settings import PoolSettings
from .threads import Periodic
from .ticker import TickerThread

log = logging.getLogger("swf_pool.pool")

PRUNE_SECONDS = 600.0  # with prune_older_than: retention every ten minutes
LISTEN_READY_SECONDS = 5.0


def companions(
    stack: ExitStack,
    settings: PoolSettings,
    client: Client,
    on_notify: Callable[[], None],
    metrics: MetricsCollector | None,
) -> None:
    """Start what `settings` asks for; `metrics`: someone listens (feed depth and lag)."""
    if settings.listen:
        listener = client.backend.listener(on_notify)
        if listener is not None:
            stack.enter_context(listener).ready.wait(LISTEN_READY_SECONDS)
    if settings.schedules:
        stack.enter_context(TickerThread(client))
    if metrics is not None:
        publish = metrics  # for the closure's type

        def stats() -> None:
            publish.record_queue_stats(client.stats())
            publish.record_pools(client.fleet.pools())

        stack.enter_context(Periodic("swf-stats", settings.stats_interval, stats))
    older_than = settings.prune_older_than
    if older_than is not None:

        def prune() -> None:
            pruned = client.prune(older_than)
            if pruned:
                log.info("pruned %d finished run(s) older than %s", pruned, older_than)

        stack.enter_context(Periodic("swf-prune", PRUNE_SECONDS, prune))
