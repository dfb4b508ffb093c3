"""The `swf-pool` command line. Every option can also come from an environment variable."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from . import __version__, argtypes, fleet_cli, migrate, ops_cli, run_cli, schedule_cli
from .argtypes import env_default as _env
from .backends import open_backend
from .client import Client
from .errors import SwfError
from .models import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY
from .ticker import TickerThread

DEMO_DSN = "sqlite://demo.db"
log = logging.getLogger("swf_pool")


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=_env("DSN"),
        required=_env("DSN") is None,
        help="connection string: postgres://...?schema=workflow, key=value, "
        "or sqlite:///path.db (env SWF_DSN)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swf-pool",
        description="A durable system of record for intent, with a worker pool. "
        "Every option can also be set by an environment variable (shown as env).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--version", action="version", version=f"swf-pool {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mig = commands.add_parser("migrate", help="apply, revert or show schema migrations")
    mig.add_argument("action", choices=["up", "down", "status"])
    mig.add_argument(
        "--steps",
        type=argtypes.positive_int,
        default=1,
        help="how many migrations `down` reverts (default 1)",
    )
    _add_dsn(mig)

    sub = commands.add_parser("submit", help="submit one run")
    sub.add_argument("type", help="run type, e.g. billing.invoice.v1")
    sub.add_argument("payload", nargs="?", default="null", help="JSON payload (default null)")
    sub.add_argument(
        "--priority", type=int, default=DEFAULT_PRIORITY, help="lower runs first (default 100)"
    )
    sub.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS)
    sub.add_argument("--idempotency-key")
    sub.add_argument(
        "--run-in", type=argtypes.delay, help="delay: seconds, or a duration such as 90s, 5m, 1h"
    )
    _add_dsn(sub)

    run_cli.add_commands(commands, _add_dsn)

    ticker = commands.add_parser(
        "scheduler", help="run the schedule ticker alone (any number may run at once)"
    )
    _add_dsn(ticker)

    schedule_cli.add_commands(commands, _add_dsn)
    ops_cli.add_commands(commands, _add_dsn)
    fleet_cli.add_commands(commands, _add_dsn)

    demo = commands.add_parser("demo", help="submit and execute demo runs on a database")
    demo.add_argument(
        "--dsn",
        default=_env("DSN", DEMO_DSN),
        help=f"database for the demo (default {DEMO_DSN}; env SWF_DSN)",
    )
    demo.add_argument("--runs", type=argtypes.positive_int, default=3000)
    demo.add_argument(
        "--processes",
        type=argtypes.positive_int,
        default=None,
        help="worker processes (default: one per core)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        run_cli.switches_from_env(args)
    except argtypes.BadEnvironment as exc:
        print(f"swf-pool: error: {exc}", file=sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for `run --coordinators`
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(_COMMANDS[args.command](args) or 0)
    except SwfError as exc:
        print(f"swf-pool: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        # Python would complain again flushing stdout at exit: point it at nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _migrate(args: argparse.Namespace) -> None:
    backend = open_backend(args.dsn, create=args.action == "up")  # a mistyped path makes none
    try:
        if args.action == "up":
            done = migrate.up(backend)
            print(
                f"applied {len(done)} migration(s)"
                + "".join(f"\n  {m.version:04d}_{m.name}" for m in done)
            )
        elif args.action == "down":
            done = migrate.down(backend, args.steps)
            print(
                f"reverted {len(done)} migration(s)"
                + "".join(f"\n  {m.version:04d}_{m.name}" for m in done)
            )
        else:
            for m, applied in migrate.status(backend):
                print(f"{'applied' if applied else 'pending':<8} {m.version:04d}_{m.name}")
    finally:
        backend.close()


def _submit(args: argparse.Namespace) -> None:
    payload = argtypes.json_value(args.payload)
    with Client(args.dsn) as client:
        result = client.submit(
            args.type,
            payload,
            priority=args.priority,
            max_attempts=args.max_attempts,
            idempotency_key=args.idempotency_key,
            run_in=args.run_in,
        )
        print(result.id if result.created else f"{result.id} (already existed)")


def _scheduler(args: argparse.Namespace) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Client(args.dsn) as client, TickerThread(client):
        log.info("schedule ticker on %s", client.backend.description)
        stop.wait()


def _demo(args: argparse.Namespace) -> None:
    from . import demo

    demo.main(args.dsn, args.runs, args.processes)


_COMMANDS = {
    "migrate": _migrate,
    "submit": _submit,
    "run": run_cli.run,
    "scheduler": _scheduler,
    "schedule": schedule_cli.schedule,
    "status": ops_cli.status,
    "runs": ops_cli.runs,
    "prune": ops_cli.prune,
    "workers": fleet_cli.workers,
    "types": fleet_cli.types,
    "serve": run_cli.serve,
    "demo": _demo,
}


if __name__ == "__main__":
    sys.exit(main())
