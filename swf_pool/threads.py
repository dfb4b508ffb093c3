"""A background thread owned by a `with` block: started on entry, stopped and joined on exit."""

from __future__ import annotations

import threading
from typing import Self


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
        self._thread.join()

    def loop(self) -> None:
        raise NotImplementedError
