"""LISTEN on a channel (PostgreSQL only): new runs for the pool, changed schedules for the
ticker, finished runs for the waits of a client. A burst of notifications wakes the
listener's owner once; a `FinishedListener` hands on each one's payload."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

from .backends.pg_connect import connect_options
from .dsn import PostgresTarget
from .threads import Background

log = logging.getLogger("swf_pool.listener")

RECONNECT_MAX_SECONDS = 5.0
STOP_CHECK_SECONDS = 0.05


class Listener(Background):
    def __init__(self, target: PostgresTarget, channel: str, on_notify: Callable[[], None]) -> None:
        self.target = target
        self.channel = channel
        self.on_notify = on_notify
        self.ready = threading.Event()  # set once LISTEN is in place
        super().__init__("swf-listener")

    def loop(self) -> None:
        delay = 0.1
        while not self.stopping.is_set():
            try:
                self._listen()
                delay = 0.1
            except psycopg.Error as exc:
                self.ready.clear()
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _listen(self) -> None:
        options = connect_options(self.target)
        with psycopg.connect(self.target.conninfo, autocommit=True, **options) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.ready.set()
            self.on_notify()  # anything sent while we were not listening
            while not self.stopping.is_set():
                self.receive(conn)

    def receive(self, conn: psycopg.Connection[object]) -> None:
        """Wait a moment for notifications (a short timeout, so that stopping never waits
        long); any number of them wakes the owner once."""
        if any(True for _ in conn.notifies(timeout=STOP_CHECK_SECONDS)):
            self.on_notify()


class FinishedListener(Listener):
    """Calls `on_finished` with each notification's payload as it arrives, and with None
    when it (re)connects: what was sent meanwhile is unknown."""

    def __init__(
        self, target: PostgresTarget, channel: str, on_finished: Callable[[str | None], None]
    ) -> None:
        super().__init__(target, channel, lambda: on_finished(None))
        self.on_finished = on_finished

    def receive(self, conn: psycopg.Connection[object]) -> None:
        for note in conn.notifies(timeout=STOP_CHECK_SECONDS):
            self.on_finished(note.payload)
