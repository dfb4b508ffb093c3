"""The fleet's commands: `swf-pool workers` and `swf-pool types ...`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from . import argtypes
from .client import Client
from .errors import ValidationError
from .fleet import Fleet, PoolMember, Rate, TypeControl
from .ops_cli import table

AddDsn = Callable[[argparse.ArgumentParser], None]


def add_commands(commands: Any, add_dsn: AddDsn) -> None:
    workers = commands.add_parser(
        "workers",
        help="the pools serving this database: live, idle and lost",
        description="Every pool registers itself and renews its row with its heartbeat. "
        "A pool not seen for 3 heartbeats is shown as lost (killed, wedged or cut off); "
        "after 60 its row is removed.",
    )
    workers.add_argument("--json", action="store_true", help="print JSON, for scripts")
    add_dsn(workers)

    types = commands.add_parser(
        "types",
        help="pause, resume and limit run types over every pool",
        description="Controls that every pool's claim honours, kept in the database: a "
        "paused type is not claimed (runs already running finish); a concurrency limit caps "
        "the runs of a type leased at once, a rate limit its starts per period, over all "
        "pools together.",
    )
    actions = types.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the paused and limited types")
    listing.add_argument("--json", action="store_true", help="print JSON, for scripts")
    add_dsn(listing)
    for name, text in (
        ("pause", "stop claiming runs of TYPE in every pool"),
        ("resume", "claim runs of TYPE again (pools are woken at once)"),
    ):
        one = actions.add_parser(name, help=text)
        one.add_argument("type", metavar="TYPE")
        add_dsn(one)
    limit = actions.add_parser(
        "limit",
        help="set or remove TYPE's concurrency and rate limits",
        description="Set what is given, keep the rest; `none` removes a limit. A handler's "
        "declared limits (registry.handler(..., concurrency=, rate=)) are written again when "
        "a pool serving it starts.",
    )
    limit.add_argument("type", metavar="TYPE")
    limit.add_argument(
        "--concurrency",
        type=_or_none(argtypes.positive_int),
        default=...,
        metavar="N|none",
        help="most runs of TYPE leased at once, over all pools",
    )
    limit.add_argument(
        "--rate",
        type=_or_none(Rate.parse),
        default=...,
        metavar="N/PERIOD|none",
        help="most starts per period over all pools: 100/m, 10/s, 5000/h, 1/30s",
    )
    add_dsn(limit)


def workers(args: argparse.Namespace) -> None:
    with Client(args.dsn) as client:
        pools = Fleet(client.backend).pools()
    if args.json:
        print(orjson.dumps([pool.to_dict() for pool in pools]).decode())
        return
    print(render_pools(pools, datetime.now(UTC)))


def types(args: argparse.Namespace) -> None:
    with Client(args.dsn) as client:
        fleet = Fleet(client.backend)
        if args.action == "list":
            controls = fleet.controls()
            if args.json:
                print(orjson.dumps([c.to_dict() for c in controls]).decode())
            else:
                print(render_controls(controls))
            return
        if args.action == "limit":
            if args.concurrency is ... and args.rate is ...:
                raise ValidationError("types limit: give --concurrency and/or --rate")
            control = fleet.limit(args.type, concurrency=args.concurrency, rate=args.rate)
        else:
            control = fleet.pause(args.type) if args.action == "pause" else fleet.resume(args.type)
    print(render_controls([control]))


def render_pools(pools: Sequence[PoolMember], now: datetime) -> str:
    if not pools:
        return "no pools"
    header = ("POOL", "HOST", "PID", "VERSION", "PROCS", "EXECUTOR", "IN FLIGHT", "RUNS/S",
              "SEEN", "STATE", "TYPES")  # fmt: skip
    rows = [
        (
            pool.id,
            pool.host,
            str(pool.pid),
            pool.version,
            str(pool.processes),
            pool.executor,
            str(pool.in_flight),
            f"{pool.per_second:.1f}",
            _ago(pool.last_seen, now),
            "lost" if pool.lost else "live",
            ", ".join(pool.types) or "all registered",
        )
        for pool in pools
    ]
    return table(header, rows)


def render_controls(controls: Sequence[TypeControl]) -> str:
    if not controls:
        return "no paused or limited types"
    header = ("TYPE", "STATE", "CONCURRENCY", "RATE")
    rows = [
        (
            c.type,
            "paused" if c.paused else "active",
            "-" if c.concurrency is None else str(c.concurrency),
            "-" if c.rate is None else str(c.rate),
        )
        for c in controls
    ]
    return table(header, rows)


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    return argtypes.format_age(max(0.0, (now - moment).total_seconds())) + " ago"


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An option's value, or None for `none` (remove the limit)."""

    def parse(text: str) -> Any:
        if text.strip().lower() == "none":
            return None
        try:
            return convert(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse
