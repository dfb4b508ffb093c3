"""A background thread owned by a `with` block: started on entry, stopped and joined on exit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Self

log = logging.getLogger("swf_pool.threads")

JOIN_SECONDS = 10.0  # loops notice `stopping` within a fraction of a second; this is a bound


class Background:
    """Subclasses implement `loop()`, which returns soon after `self.stopping` is set."""

    def __init__(self, name: str) -> None:
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.loop, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._thread.join(JOIN_SECONDS)
        if self._thread.is_alive():  # stuck in a statement; a daemon thread dies with us
            log.warning("%s did not stop within %gs; leaving it", self._thread.name, JOIN_SECONDS)

    def loop(self) -> None:
        raise NotImplementedError


class Periodic(Background):
    """Calls `job` every `interval` seconds, starting at once; an error is logged, not fatal."""

    def __init__(self, name: str, interval: float, job: Callable[[], None]) -> None:
        self.interval = interval
        self.job = job
        super().__init__(name)

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.job()
            except Exception:
                log.exception("%s failed; trying again in %gs", self._thread.name, self.interval)
            self.stopping.wait(self.interval)
