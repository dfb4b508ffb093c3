"""Tracebacks of failed attempts, and the pool's log line for each failure.

A worker formats the traceback of a handler's exception (bounded: the innermost frames, at most
`TRACEBACK_CHARS`); it travels with the failure only, and is stored as `"traceback"` in the data
of the attempt's `retried` or `failed` event. `last_error` stays the one line
(`Type: message`) that Go clients and lists show. `runs show`, the REST run and the dashboard's
run page show the traceback of the latest failure. The pool logs each failure at WARNING, at most
one line per run type per `LOG_INTERVAL` seconds.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from .models import Claimed, Event, EventType, Outcome, RunRecord, Status

TRACEBACK_FRAMES = 30  # the innermost frames of each exception in a chain
TRACEBACK_CHARS = 8 * 1024  # the end of the text is kept: the innermost frames and the error
PART_CHARS = 1024  # one frame (or the exception line) beyond this is cut
LOG_INTERVAL = 10.0  # seconds: at most one WARNING line per run type in this time

log = logging.getLogger("swf_pool.pool")

_FRAME = re.compile(r'^  File "(.*)", line (\d+), in (.*)$', re.MULTILINE)
_FAILURES = (EventType.FAILED, EventType.RETRIED)


def format_traceback(exc: BaseException, *, skip_caller: bool = True) -> str | None:
    """The bounded traceback of `exc`, without the caller's own frame (`skip_caller`: the frame
    that called the handler). None if it cannot be formatted."""
    try:
        tb = exc.__traceback__
        if skip_caller and tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        summary = traceback.TracebackException(type(exc), exc, tb, limit=-TRACEBACK_FRAMES)
        text = "".join(_cut(part, PART_CHARS) for part in summary.format())
    except Exception:  # a broken __str__ or the like: the one-line error still tells
        return None
    if len(text) > TRACEBACK_CHARS:
        tail = text[-TRACEBACK_CHARS:]
        tail = tail[tail.find("\n") + 1 :]  # start on a whole line
        text = f"[{len(text) - len(tail)} characters cut]\n{tail}"
    return text


def _cut(part: str, limit: int) -> str:
    if len(part) <= limit:
        return part
    return f"{part[:limit]}... [{len(part) - limit} more characters cut]\n"


def last_frame(text: str | None) -> str | None:
    """`file:line in function` of the innermost frame of a formatted traceback."""
    found = None
    for found in _FRAME.finditer(text or ""):  # noqa: B007 (the last one is wanted)
        pass
    return None if found is None else f"{found[1]}:{found[2]} in {found[3]}"


def latest(events: Sequence[Event]) -> Event | None:
    """The latest `failed` or `retried` event: the attempt that set `last_error`."""
    for event in reversed(events):
        if event.event_type in _FAILURES:
            return event
    return None


def traceback_of(event: Event | None) -> str | None:
    data = event.data if event is not None else None
    found = data.get("traceback") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def without_traceback(data: Any) -> Any:
    """Event data for a one-line timeline: the traceback is shown apart."""
    if isinstance(data, dict) and "traceback" in data:
        return {key: value for key, value in data.items() if key != "traceback"}
    return data


def run_view(client: Any, run_id: str) -> dict[str, Any] | None:
    """A run as the REST API shows it: its columns, and `traceback`, that of the attempt
    that set `last_error` (its events are read only when there is one)."""
    run: RunRecord | None = client.get(run_id)
    if run is None:
        return None
    view = {field.name: getattr(run, field.name) for field in fields(run)}
    view["traceback"] = traceback_of(latest(client.events(run_id))) if run.last_error else None
    return view


class FailureLog:
    """Logs failed attempts at WARNING with the run's type, id, attempt and innermost frame: at
    most one line per run type per `interval` seconds; the next line says how many were not
    logged meanwhile."""

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._types: dict[str, tuple[float, int]] = {}  # type -> (last logged, not logged since)

    def failed(self, run: Claimed, outcome: Outcome) -> None:
        now = self.clock()
        logged, quiet = self._types.get(run.type, (None, 0))
        if logged is not None and now - logged < self.interval:
            self._types[run.type] = (logged, quiet + 1)
            return
        self._types[run.type] = (now, 0)
        frame = last_frame(outcome.traceback)
        then = "will retry" if outcome.status is Status.PENDING else "failed"
        log.warning(
            "%s run %s attempt %d of %d %s: %s%s%s",
            run.type,
            run.id,
            run.attempt,
            run.max_attempts,
            then,
            _cut(" ".join((outcome.error or "error").split()), 300).rstrip("\n"),
            f" at {frame}" if frame else "",
            f" ({quiet} more failures of {run.type} since the last line not logged)"
            if quiet
            else "",
        )
