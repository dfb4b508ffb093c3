"""The `swf-pool` command line. Every option can also come from an environment variable."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from . import codec, migrate
from .backends import open_backend
from .client import Client
from .errors import SwfError
from .handlers import load_registry
from .models import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, Audit
from .worker import DEFAULT_BATCH_SIZE, DEFAULT_POLL_SECONDS, Worker

DEMO_DSN = "sqlite://demo.db"


def _env(name: str, default: str | None = None) -> str | None:
    """An option's default from the environment (argparse converts and checks it like a flag)."""
    return os.environ.get(f"SWF_{name}", default)


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=_env("DSN"),
        required=_env("DSN") is None,
        help="connection string: postgres://...?schema=workflow, key=value, "
        "or sqlite:///path.db (env SWF_DSN)",
    )


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swf-pool",
        description="A durable system of record for intent, with a worker pool. "
        "Every option can also be set by an environment variable (shown as env).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mig = commands.add_parser("migrate", help="apply, revert or show schema migrations")
    mig.add_argument("action", choices=["up", "down", "status"])
    mig.add_argument(
        "--steps",
        type=_positive_int,
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
    sub.add_argument("--run-in", type=float, help="delay in seconds")
    _add_dsn(sub)

    run = commands.add_parser("run", help="execute runs with the handlers of --app")
    _add_dsn(run)
    run.add_argument(
        "--app",
        default=_env("APP"),
        required=_env("APP") is None,
        help="handlers to serve, as package.module:registry (env SWF_APP)",
    )
    run.add_argument(
        "--worker-id",
        default=_env("WORKER_ID"),
        help="worker id (default hostname-pid; env SWF_WORKER_ID)",
    )
    run.add_argument(
        "--types",
        type=_csv,
        default=_env("TYPES", ""),
        help="serve only these types, comma-separated (default: every type with "
        "a handler; env SWF_TYPES)",
    )
    run.add_argument(
        "--prefixes",
        type=_csv,
        default=_env("PREFIXES", ""),
        help="claim types by prefix instead, e.g. 'billing.%%' (env SWF_PREFIXES)",
    )
    run.add_argument(
        "--lease",
        type=_positive_float,
        default=_env("LEASE", str(DEFAULT_LEASE_SECONDS)),
        help="lease in seconds (default 30; env SWF_LEASE)",
    )
    run.add_argument(
        "--batch-size",
        type=_positive_int,
        default=_env("BATCH_SIZE", str(DEFAULT_BATCH_SIZE)),
        help="runs claimed per statement (default 10; env SWF_BATCH_SIZE)",
    )
    run.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=_env("POLL_INTERVAL", str(DEFAULT_POLL_SECONDS)),
        help="seconds between polls when idle (default 2; env SWF_POLL_INTERVAL)",
    )
    run.add_argument(
        "--audit",
        choices=[a.value for a in Audit],
        default=_env("AUDIT", Audit.FULL.value),
        help="event trail: full, or failures only (default full; env SWF_AUDIT)",
    )
    run.add_argument("--drain", action="store_true", help="exit once no runnable run is left")
    run.add_argument(
        "--auto-migrate",
        action="store_true",
        default=_env("AUTO_MIGRATE", "") in ("1", "true", "yes"),
        help="apply pending migrations first (env SWF_AUTO_MIGRATE=1)",
    )

    demo = commands.add_parser("demo", help="submit and execute demo runs on a database")
    demo.add_argument(
        "--dsn",
        default=_env("DSN", DEMO_DSN),
        help=f"database for the demo (default {DEMO_DSN}; env SWF_DSN)",
    )
    demo.add_argument("--runs", type=_positive_int, default=3000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


def _migrate(args: argparse.Namespace) -> None:
    backend = open_backend(args.dsn)
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
    try:
        payload = codec.decode(args.payload)
    except ValueError as exc:
        raise SwfError(f"payload is not valid JSON: {exc}") from None
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


def _run(args: argparse.Namespace) -> None:
    registry = load_registry(args.app)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Client(args.dsn, migrate=args.auto_migrate, audit=args.audit) as client:
        worker = Worker(
            client,
            registry,
            worker_id=args.worker_id,
            prefixes=args.prefixes,
            lease_seconds=args.lease,
            batch_size=args.batch_size,
            audit=args.audit,
        )
        if args.types:
            unknown = sorted(set(args.types) - set(registry.types))
            if unknown:
                raise SwfError(f"--types names types without a handler: {', '.join(unknown)}")
            worker.types = args.types
        logging.getLogger("swf_pool").info(
            "worker %s serving %s on %s",
            worker.worker_id,
            ", ".join(args.prefixes or worker.types),
            client.backend.description,
        )
        if args.drain:
            print(f"drained: {worker.drain()} run(s) executed")
        else:
            worker.run(stop, args.poll_interval)


def _demo(args: argparse.Namespace) -> None:
    from . import demo

    demo.main(args.dsn, args.runs)


_COMMANDS = {"migrate": _migrate, "submit": _submit, "run": _run, "demo": _demo}


if __name__ == "__main__":
    sys.exit(main())
