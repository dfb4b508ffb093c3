"""The operator's commands: `swf-pool status`, `swf-pool runs ...` and `swf-pool prune`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from . import argtypes
from .client import DEFAULT_PRUNE_BATCH, DEFAULT_PRUNE_STATUSES, DEFAULT_RETRY_BATCH, Client
from .errors import WaitTimeout
from .fleet import TypeControl
from .models import DEFAULT_LIST_LIMIT, Event, QueueStats, RunRecord, Status, TypeStats
from .tracebacks import latest, traceback_of, without_traceback

AddDsn = Callable[[argparse.ArgumentParser], None]
DEFAULT_WATCH_SECONDS = 2.0
WAIT_TIMED_OUT = 124  # as timeout(1) exits


def add_commands(commands: Any, add_dsn: AddDsn) -> None:
    status = commands.add_parser(
        "status",
        help="the queue at a glance: depth, lag, failures, workers",
        description="Depth per type and status, lag (how long the oldest due run has waited), "
        "failures in the last hour, and the workers holding leases.",
    )
    status.add_argument("--json", action="store_true", help="print JSON, for scripts")
    status.add_argument(
        "--watch",
        nargs="?",
        type=argtypes.positive_float,
        const=DEFAULT_WATCH_SECONDS,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {DEFAULT_WATCH_SECONDS:g}) until Ctrl-C",
    )
    add_dsn(status)

    runs = commands.add_parser("runs", help="list, show, cancel and retry runs")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="runs, newest first")
    listing.add_argument("--type")
    listing.add_argument("--status", choices=[s.value for s in Status])
    listing.add_argument("--idempotency-key")
    listing.add_argument("--limit", type=argtypes.positive_int, default=DEFAULT_LIST_LIMIT)
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    add_dsn(listing)
    for name, text in (
        ("show", "a run and its event timeline"),
        ("events", "a run's events, oldest first"),
        ("cancel", "cancel a pending or leased run"),
    ):
        one = actions.add_parser(name, help=text)
        one.add_argument("id")
        if name != "cancel":
            one.add_argument("--json", action="store_true", help="print JSON")
        add_dsn(one)
    wait = actions.add_parser(
        "wait",
        help="wait for a run to finish; exit 0 if it succeeded, 1 if not, 124 on --timeout",
        description="Print the run once it has finished (succeeded, failed or cancelled). "
        "Exit status: 0 succeeded, 1 failed or cancelled (or no such run), 124 still "
        "unfinished after --timeout.",
    )
    wait.add_argument("id")
    wait.add_argument("--timeout", type=argtypes.positive_float, help="seconds (default: none)")
    wait.add_argument("--json", action="store_true", help="print the run as JSON")
    add_dsn(wait)
    retry = actions.add_parser(
        "retry",
        help="put failed (or cancelled) runs back to pending, with a fresh attempt budget",
        description="Retry one run by id, or every run matching --status/--type/--since.",
    )
    retry.add_argument("id", nargs="?", help="one run (otherwise: all that match the filters)")
    retry.add_argument(
        "--status", choices=["failed", "cancelled"], help="which runs (default: failed)"
    )
    retry.add_argument("--type")
    retry.add_argument(
        "--since",
        type=argtypes.parse_duration,
        help="only runs that ended within this long, e.g. 1h",
    )
    retry.add_argument("--batch", type=argtypes.positive_int, default=DEFAULT_RETRY_BATCH)
    add_dsn(retry)

    prune = commands.add_parser(
        "prune",
        help="delete finished runs (and their events) older than a given age",
        description="Retention: deletes finished runs last changed more than --older-than "
        "ago, in batches that never hold long locks. Failed runs are kept unless --status "
        "names them (they are the dead letters you may want to retry).",
    )
    prune.add_argument(
        "--older-than", type=argtypes.parse_duration, required=True, help="e.g. 30d, 12h"
    )
    prune.add_argument(
        "--status",
        type=argtypes.statuses,
        default=list(DEFAULT_PRUNE_STATUSES),
        help="finished statuses to delete, comma-separated (default succeeded,cancelled)",
    )
    prune.add_argument("--batch", type=argtypes.positive_int, default=DEFAULT_PRUNE_BATCH)
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    add_dsn(prune)


def status(args: argparse.Namespace) -> None:
    with Client(args.dsn) as client:
        while True:
            stats = client.stats()
            controls = client.fleet.controls()
            if args.json:
                view = {**stats.to_json(), "controls": [c.to_dict() for c in controls]}
                print(orjson.dumps(view).decode(), flush=True)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\x1b[H\x1b[2J", end="")  # clear the screen (a file gets each view)
                text = render_status(stats, client.backend.description, controls)
                print(text, flush=True)
            if not args.watch:
                return
            time.sleep(args.watch)


def render_status(stats: QueueStats, where: str, controls: Sequence[TypeControl] = ()) -> str:
    lines = [f"{where} at {stats.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC", ""]
    header = ("TYPE", "PENDING", "DUE", "LEASED", "LAG", "FAILED 1H")
    rows = [_type_row(t) for t in stats.types]
    rows.append(_type_row(stats.totals()))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for index, row in enumerate([header, *rows]):
        if index == len(rows):  # the totals line
            lines.append("  ".join("-" * w for w in widths))
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    workers = ", ".join(f"{w} ({n})" for w, n in sorted(stats.workers.items())) or "none"
    lines.append(f"workers holding leases: {workers}")
    registered = ", ".join(f"{t} ({r})" for t, r in stats.registered.items()) or "none"
    lines.append(f"registered types: {registered}")
    held = ", ".join(_control(c) for c in controls) or "none"
    lines.append(f"paused or limited types: {held}")
    if stats.dead_tuples is not None:
        lines.append(f"dead tuples in workflow_run: {stats.dead_tuples}")
    return "\n".join(lines)


def _control(control: TypeControl) -> str:
    held = ["paused"] if control.paused else []
    if control.concurrency is not None:
        held.append(f"at most {control.concurrency} at once")
    if control.rate is not None:
        held.append(str(control.rate))
    return f"{control.type} ({', '.join(held)})"


def _type_row(t: TypeStats) -> tuple[str, ...]:
    lag = argtypes.format_age(t.lag_seconds)
    return (t.type, str(t.pending), str(t.due), str(t.leased), lag, str(t.failed_last_hour))


def runs(args: argparse.Namespace) -> int:
    with Client(args.dsn) as client:
        if args.action == "list":
            found = client.list(
                type=args.type,
                status=args.status,
                idempotency_key=args.idempotency_key,
                limit=args.limit,
                offset=args.offset,
            )
            if args.json:
                for record in found:
                    print(_json(record))
            else:
                _print_runs(found)
        elif args.action in ("show", "events"):
            run = client.get(args.id)
            if run is None:
                print(f"swf-pool: error: workflow run {args.id!r} not found", file=sys.stderr)
                return 1
            events = client.events(run.id)
            if args.json:
                body: Any = events if args.action == "events" else {"run": run, "events": events}
                print(_json(body))
                return 0
            if args.action == "show":
                _print_run(run)
                _print_traceback(latest(events))
                print()
            _print_events(events)
        elif args.action == "wait":
            return _wait(client, args)
        elif args.action == "cancel":
            client.cancel(args.id)
            print(f"cancelled {args.id}")
        else:
            return _retry(client, args)
    return 0


def _retry(client: Client, args: argparse.Namespace) -> int:
    if args.id:
        if args.status or args.type or args.since:  # it would retry the run whatever
            print(
                "swf-pool: error: runs retry takes a run id or filters "
                "(--status, --type, --since), not both",
                file=sys.stderr,
            )
            return 2
        client.retry(args.id)
        print(f"requeued {args.id}")
        return 0
    status = args.status or "failed"
    count = client.retry_many(
        status=status,
        type=args.type,
        since=args.since,
        batch=args.batch,
        progress=lambda done, seen: _progress(f"requeued {done} of {seen} looked at"),
    )
    _progress_end()
    print(f"requeued {count} {status} run(s)")
    return 0


def _wait(client: Client, args: argparse.Namespace) -> int:
    try:
        run = client.wait(args.id, timeout=args.timeout)
    except WaitTimeout as exc:
        print(f"swf-pool: {exc}", file=sys.stderr)
        return WAIT_TIMED_OUT
    if args.json:
        print(_json(run))
    else:
        error = f"  {_one_line(run.last_error, 100)}" if run.last_error else ""
        print(f"{run.id} {run.status.value}{error}")
    return 0 if run.status is Status.SUCCEEDED else 1


def prune(args: argparse.Namespace) -> None:
    with Client(args.dsn) as client:
        total = max(client.table_rows(), 1)
        verb = "would delete" if args.dry_run else "deleted"

        def progress(done: int, seen: int) -> None:
            _progress(f"{_bar(min(seen / total, 1.0))} {seen} scanned, {verb} {done}")

        count = client.prune(
            args.older_than,
            statuses=args.status,
            batch=args.batch,
            dry_run=args.dry_run,
            progress=progress,
        )
        _progress_end()
        names = ",".join(s.value for s in args.status)
        age = argtypes.format_duration(args.older_than)
        print(f"{verb} {count} {names} run(s) older than {age}")


def _bar(fraction: float, width: int = 30) -> str:
    filled = int(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}"


def _progress(text: str) -> None:
    """A progress line, redrawn in place on a terminal (nothing when stderr is a file)."""
    if sys.stderr.isatty():
        print(f"\r{text}\x1b[K", end="", file=sys.stderr, flush=True)


def _progress_end() -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NAIVE_UTC).decode()


def _print_runs(found: Sequence[RunRecord]) -> None:
    if not found:
        print("no runs")
        return
    header = ("ID", "STATUS", "TYPE", "ATTEMPT", "UPDATED", "LAST ERROR")
    rows = [
        (
            run.id,
            run.status.value,
            run.type,
            f"{run.attempt}/{run.max_attempts}",
            _when(run.updated_at),
            _one_line(run.last_error, 60) if run.last_error else "",
        )
        for run in found
    ]
    print(table(header, rows))


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """Aligned columns under a header; the last column (free text) is not padded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _print_run(run: RunRecord) -> None:
    fields: list[tuple[str, Any]] = [
        ("id", run.id),
        ("type", run.type),
        ("status", run.status.value),
        ("attempt", f"{run.attempt} of {run.max_attempts}"),
        ("priority", run.priority),
        ("run at", _when(run.run_at)),
        ("idempotency key", run.idempotency_key),
        ("leased by", run.leased_by and f"{run.leased_by} until {_when(run.lease_until)}"),
        ("created", _when(run.created_at)),
        ("updated", _when(run.updated_at)),
        ("payload", _json(run.payload)),
        ("result", None if run.result is None else _json(run.result)),
        ("last error", run.last_error),
    ]
    for name, value in fields:
        if value is not None:
            print(f"{name + ':':<17}{value}")


def _print_traceback(event: Event | None) -> None:
    """The traceback of the attempt that set `last_error`, if it has one."""
    text = traceback_of(event)
    if event is not None and text:
        print(f"traceback (attempt {event.data.get('attempt')}):")
        print("\n".join(f"  {line}" for line in text.rstrip("\n").splitlines()))


def _print_events(events: Sequence[Event]) -> None:
    print("events:")
    for event in events:
        shown = without_traceback(event.data)
        data = "" if shown is None else f"  {_one_line(_json(shown), 100)}"
        print(f"  {_when(event.created_at)}  {event.event_type.value:<13}{data}")


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
