"""Async handlers (and two sync ones beside them) for the pool tests, importable by name so
worker processes can load them."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from swf_pool import Fixed, Registry, Run

registry = Registry()
DEADLINE_SECONDS = 30.0

# per worker process: runs of each barrier group under way now, and the most seen at once
_arrived: Counter[str] = Counter()
_under_way: Counter[str] = Counter()
_peak: Counter[str] = Counter()


@registry.handler("a.echo", retry=Fixed(0))
async def echo(run: Run) -> Any:
    await asyncio.sleep(0)
    return {"payload": run.payload, "pid": os.getpid(), "attempt": run.attempt}


@registry.handler("a.barrier", retry=Fixed(0))
async def barrier(run: Run) -> dict[str, int]:
    """Waits until `n` runs of its group have arrived in this process: they can only all
    finish if that many run at once. Returns the most of its group seen under way at once."""
    group, n = run.payload["group"], run.payload["n"]
    _arrived[group] += 1
    _under_way[group] += 1
    _peak[group] = max(_peak[group], _under_way[group])
    try:
        await _until(lambda: _arrived[group] >= n, f"only {_arrived[group]} of {n} arrived")
    finally:
        _under_way[group] -= 1
    if run.attempt in run.payload.get("die_on", []):
        os._exit(3)  # with every other run of the group under way
    return {"pid": os.getpid(), "peak": _peak[group], "attempt": run.attempt}


async def _until(condition: Any, why: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(why)
        await asyncio.sleep(0.005)


@registry.handler("a.gate", retry=Fixed(0))
async def gate(run: Run) -> str:
    """Announces that it started (a file), then waits for the gate file to appear."""
    Path(run.payload["started"]).write_text(run.id)
    await _until(Path(run.payload["gate"]).exists, "the gate never opened")
    return "passed"


@registry.handler("a.watch_cancel")
async def watch_cancel(run: Run) -> None:
    """Announces that it started, then waits; records (a file) what it saw when cancelled."""
    Path(run.payload["started"]).write_text(run.id)
    try:
        await asyncio.sleep(DEADLINE_SECONDS)
    except asyncio.CancelledError:
        Path(run.payload["seen"]).write_text(f"cancelled, is_cancelled() {run.is_cancelled()}")
        raise


@registry.handler("a.hang", retry=Fixed(0), timeout=0.5)
async def hang(run: Run) -> None:
    await asyncio.sleep(DEADLINE_SECONDS)  # far longer than its timeout


@registry.handler("a.block", retry=Fixed(0), timeout=0.3)
async def block(run: Run) -> None:
    time.sleep(DEADLINE_SECONDS)  # holds the loop: its task cannot even be cancelled


@registry.handler("a.fail", retry=Fixed(0))
async def fail(run: Run) -> None:
    await asyncio.sleep(0)
    raise ValueError(f"async boom {run.attempt}")


@registry.handler("a.beat")
async def beat(run: Run) -> list[bool]:
    """Both heartbeats: the blocking one and the awaited one."""
    return [run.heartbeat(run.payload["seconds"]), await run.aheartbeat(run.payload["seconds"])]


class Doubler:
    async def execute(self, run: Run) -> int:
        await asyncio.sleep(0)
        return int(run.payload) * 2


registry.register("a.double", Doubler())


@registry.handler("s.gate", retry=Fixed(0))
def sync_gate(run: Run) -> int:
    """A sync handler beside the async ones: announces that it started, waits for the gate,
    and extends its lease (from the worker's thread for sync handlers)."""
    Path(run.payload["started"]).write_text(run.id)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not Path(run.payload["gate"]).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the gate never opened")
        time.sleep(0.01)
    assert run.heartbeat(60)
    return os.getpid()


@registry.handler("s.echo", retry=Fixed(0))
def sync_echo(run: Run) -> int:
    return os.getpid()
