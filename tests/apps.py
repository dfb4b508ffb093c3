"""Handlers for the pool tests, importable by name so worker processes can load them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from swf_pool import Fixed, Registry, Run

registry = Registry()
DEADLINE_SECONDS = 30.0


@registry.handler("t.echo", retry=Fixed(0))
def echo(run: Run) -> Any:
    return {"payload": run.payload, "pid": os.getpid(), "attempt": run.attempt}


@registry.handler("t.die", retry=Fixed(0))
def die(run: Run) -> int:
    """Kills its own process on the attempts listed in the payload."""
    if run.attempt in run.payload["on"]:
        if run.payload.get("how") == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        os._exit(3)
    return os.getpid()


@registry.handler("t.hang", retry=Fixed(0), timeout=0.5)
def hang(run: Run) -> None:
    time.sleep(DEADLINE_SECONDS)  # the workload: far longer than its timeout


@registry.handler("t.until_cancelled")
def until_cancelled(run: Run) -> bool:
    """Works until told it was cancelled (or a deadline passes)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if run.is_cancelled():
            return True
        time.sleep(0.01)
    return False


@registry.handler("t.nap")
def nap(run: Run) -> None:
    time.sleep(run.payload)  # a run that takes a while


@registry.handler("t.beat")
def beat(run: Run) -> bool:
    return run.heartbeat(run.payload["seconds"])


@registry.handler("t.gate", retry=Fixed(0))
def gate(run: Run) -> str:
    """Announces that it started (a file), then waits for the gate file to appear."""
    Path(run.payload["started"]).write_text(run.id)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if Path(run.payload["gate"]).exists():
            return "passed"
        time.sleep(0.01)
    raise TimeoutError("the gate never opened")


@registry.handler("t.nasty_error", retry=Fixed(0))
def nasty_error(run: Run) -> None:
    """An error text no database takes as is: a NUL, a lone surrogate, and a lot of it."""
    raise ValueError("nul\x00 and a lone surrogate \ud800 " + "x" * run.payload["pad"])


@registry.handler("t.watch_cancel")
def watch_cancel(run: Run) -> bool:
    """Announces that it started, then records (a file) that it saw its cancellation."""
    Path(run.payload["started"]).write_text(run.id)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if run.is_cancelled():
            Path(run.payload["seen"]).write_text(run.id)
            return True
        time.sleep(0.01)
    return False


@registry.handler("t.divide", retry=Fixed(0))
def divide(run: Run) -> float:
    """Fails with ZeroDivisionError, on the line below (the one its traceback names)."""
    return int(run.payload) / 0


@registry.handler("t.recurse", retry=Fixed(0))
def recurse(run: Run) -> None:
    """Fails `depth` calls down a recursion of two functions (no frame repeats the one before,
    so Python's traceback does not fold them), with a long message."""
    _ping(run.payload["depth"], run.payload["pad"])


def _ping(depth: int, pad: int) -> None:
    if depth <= 0:
        raise ValueError("bottom " + "y" * pad)
    _pong(depth - 1, pad)


def _pong(depth: int, pad: int) -> None:
    _ping(depth - 1, pad)
