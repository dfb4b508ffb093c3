"""The schedule commands: `swf-pool schedule add|list|show|update|pause|resume|rm`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

from . import argtypes
from .client import Client
from .errors import ScheduleNotFound
from .models import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY
from .schedules import Schedule, upcoming

AddDsn = Callable[[argparse.ArgumentParser], None]


def add_commands(commands: Any, _add_dsn: AddDsn) -> None:
    sched = commands.add_parser("schedule", help="create, show and change cron schedules")
    actions = sched.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a schedule")
    add.add_argument("type")
    add.add_argument("payload", nargs="?", default="null", help="JSON payload (default null)")
    add.add_argument(
        "--cron", required=True, help="5 fields, or @hourly @daily @weekly @monthly @yearly"
    )
    add.add_argument("--timezone", default="UTC", help="IANA zone (default UTC)")
    _schedule_options(add, kept=False)
    _add_dsn(add)
    for name, text in (("list", "list schedules, with their next fire times"),):
        _add_dsn(actions.add_parser(name, help=text))
    for name, text in (
        ("show", "one schedule"),
        ("pause", "stop firing"),
        ("resume", "fire again, from now on"),
        ("rm", "delete (soft)"),
    ):
        one = actions.add_parser(name, help=text)
        one.add_argument("id")
        _add_dsn(one)
    upd = actions.add_parser("update", help="change a schedule")
    upd.add_argument("id")
    upd.add_argument("--cron")
    upd.add_argument("--timezone")
    upd.add_argument("--payload", help="JSON payload")
    _schedule_options(upd, kept=True)
    _add_dsn(upd)


def _schedule_options(parser: argparse.ArgumentParser, kept: bool) -> None:
    """`kept`: for `update`, where an option not given keeps the schedule's value."""

    def default(value: object) -> str:
        return "default: unchanged" if kept else f"default {value}"

    parser.add_argument(
        "--priority", type=int, help=f"of the runs it creates ({default(DEFAULT_PRIORITY)})"
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        help=f"of the runs it creates ({default(DEFAULT_MAX_ATTEMPTS)})",
    )
    parser.add_argument(
        "--missed",
        choices=["skip", "catch_up"],
        help=f"fires missed while no ticker ran: skip or catch_up ({default('skip')})",
    )
    parser.add_argument("--catch-up-limit", type=int, help="most missed fires made up")


UPDATES = ("cron", "timezone", "priority", "max_attempts", "missed", "catch_up_limit")


def schedule(args: argparse.Namespace) -> int:
    changes = _given(args, *UPDATES) if args.action == "update" else {}
    if args.action == "update" and args.payload is not None:
        changes["payload"] = argtypes.json_value(args.payload)
    if args.action == "update" and not changes:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in (*UPDATES, "payload"))
        print(f"swf-pool: error: schedule update: give one or more of {flags}", file=sys.stderr)
        return 2  # a usage error: nothing to change
    with Client(args.dsn) as client:
        if args.action == "add":
            options = _given(args, "priority", "max_attempts", "missed", "catch_up_limit")
            schedule_id = client.schedule(
                args.type,
                argtypes.json_value(args.payload),
                cron=args.cron,
                timezone=args.timezone,
                **options,
            )
            _print_schedule(client.schedules.get(schedule_id))
        elif args.action == "list":
            schedules = client.schedules.list()
            for schedule in schedules:
                _print_schedule(schedule)
            if not schedules:
                print("no schedules")
        elif args.action == "update":
            _print_schedule(client.schedules.update(args.id, **changes))
        elif args.action == "rm":
            client.schedules.delete(args.id)
            print(f"deleted {args.id}")
        else:
            method = {"pause": client.schedules.pause, "resume": client.schedules.resume}
            found = (
                method[args.action](args.id)
                if args.action in method
                else (client.schedules.get(args.id))
            )
            if found is None:
                raise ScheduleNotFound(f"schedule {args.id!r} not found")
            _print_schedule(found)
    return 0


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _print_schedule(schedule: Schedule | None) -> None:
    """A schedule and its next three fire times, in its zone and in UTC."""
    assert schedule is not None
    state = "enabled" if schedule.enabled else "paused"
    print(
        f"{schedule.id}  {schedule.type}  '{schedule.cron}' {schedule.timezone}  {state}"
        f"  missed={schedule.missed_policy}"
    )
    if schedule.last_error:
        print(f"  error: {schedule.last_error}")
    zone = ZoneInfo(schedule.timezone)
    fires = [schedule.next_run_at]
    fires += upcoming(schedule.cron, zone, schedule.next_run_at, 2)
    for fire in fires:
        local = fire.astimezone(zone)
        print(f"  next {local:%Y-%m-%d %H:%M %Z}  ({fire.astimezone(UTC):%Y-%m-%d %H:%M} UTC)")
