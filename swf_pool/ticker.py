"""The schedule ticker: turns due schedules into runs, exactly once per fire time.

Any number of tickers may share a database: each due schedule is locked by one of them
(SKIP LOCKED on PostgreSQL, BEGIN IMMEDIATE on SQLite) and every fire's run carries the key
`schedule:<id>:<unix seconds>`, so even a double fire creates one run. `tick(now)` is one
iteration with an injectable clock; `run()` sleeps until the next schedule is due (bounded).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Self

from . import codec
from .backends import Planner
from .backends.postgres import schedules_channel
from .client import Client, new_run
from .dsn import PostgresTarget
from .errors import DatabaseError, ValidationError
from .listener import Listener
from .models import NewRun
from .schedules import FirePlan, Schedule, idempotency_key, plan
from .threads import Background

log = logging.getLogger("swf_pool.ticker")

DEFAULT_BATCH = 100
MAX_SLEEP_SECONDS = 15.0  # the Go library's tick; we usually wake sooner, when one is due


class Ticker:
    def __init__(
        self,
        client: Client,
        *,
        batch: int = DEFAULT_BATCH,
        max_sleep: float = MAX_SLEEP_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.batch = batch
        self.max_sleep = max_sleep
        self.clock = clock
        self.woken = threading.Event()

    def wake(self) -> None:
        """Tick now (a schedule was created or changed)."""
        self.woken.set()

    def tick(self, now: datetime | None = None) -> int:
        """Fire every schedule due at `now` (default: the clock); return the runs created."""
        now = now or self.clock()
        created = 0
        while True:
            fired = self.client.backend.fire_schedules(now, self.batch, self._planner(now))
            for schedule, fire_plan, count in fired:
                created += count
                if fire_plan.error:
                    log.warning(
                        "schedule %s (%s) disabled: %s", schedule.id, schedule.type, fire_plan.error
                    )
            if len(fired) < self.batch:
                return created

    def _planner(self, now: datetime) -> Planner:
        def decide(schedule: Schedule) -> tuple[list[NewRun], FirePlan]:
            fire_plan = plan(schedule, now)
            try:
                return [_fire_run(schedule, fire) for fire in fire_plan.fires], fire_plan
            except ValidationError as exc:  # a row no longer valid (written by hand, or Go)
                return [], FirePlan([], None, str(exc))

        return decide

    def sleep_seconds(self, now: datetime) -> float:
        """Until the next schedule is due, at most `max_sleep`."""
        due = self.client.backend.next_schedule_due()
        if due is None:
            return self.max_sleep
        return min(self.max_sleep, max(0.0, (due - now).total_seconds()))

    def run(self, stop: threading.Event) -> None:
        """Tick until `stop` is set (set `woken` too, to stop at once)."""
        while not stop.is_set():
            self.woken.clear()
            try:
                self.tick()
                wait = self.sleep_seconds(self.clock())
            except DatabaseError as exc:
                log.warning("schedule tick failed (retrying in 1s): %s", exc)
                wait = 1.0
            except Exception:  # a bug must not silently end all schedules: log, go on
                log.exception("schedule tick failed unexpectedly (retrying in 1s)")
                wait = 1.0
            self.woken.wait(wait)


class TickerThread(Background):
    """A ticker on a thread (in a pool, or alone), woken by NOTIFY on PostgreSQL."""

    def __init__(self, client: Client) -> None:
        self.ticker = Ticker(client)
        self._stack = ExitStack()
        super().__init__("swf-ticker")

    def __enter__(self) -> Self:
        target = getattr(self.ticker.client.backend, "target", None)
        if isinstance(target, PostgresTarget):
            channel = schedules_channel(target.schema)
            self._stack.enter_context(Listener(target, channel, self.ticker.wake))
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.ticker.wake()
        super().__exit__(*exc)
        self._stack.close()

    def loop(self) -> None:
        self.ticker.run(self.stopping)


def _fire_run(schedule: Schedule, fire: datetime) -> NewRun:
    created = {"schedule_id": schedule.id, "fire_time": fire.isoformat()}
    return new_run(
        schedule.type,
        schedule.payload,
        priority=schedule.priority,
        max_attempts=schedule.max_attempts,
        idempotency_key=idempotency_key(schedule.id, fire),
        run_at=fire,
        created=codec.encode(created, "event data"),
    )
