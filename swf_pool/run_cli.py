"""The long-running commands: `swf-pool run` (a pool) and `swf-pool serve` (the REST API)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from . import argtypes
from .argtypes import env_default as _env
from .client import Client
from .coordinator import Pool
from .errors import ConfigError
from .handlers import load_registry
from .metrics import PrometheusMetrics
from .settings import OPTIONS, Option
from .supervisor import supervise, watch_supervisor

log = logging.getLogger("swf_pool.cli")
AddDsn = Callable[[argparse.ArgumentParser], None]


def add_commands(commands: Any, add_dsn: AddDsn) -> None:
    _add_run(commands, add_dsn)
    _add_serve(commands, add_dsn)


def _option(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    kind: Callable[[str], Any],
    default: object,
    text: str,
    choices: list[str] | None = None,
) -> None:
    """A flag whose default comes from $SWF_<env>, with both named in --help."""
    from_env = _env(env)
    required = default is None and flag == "--app" and from_env is None
    shown = "" if default is None or default == "" else f"default {default}; "
    parser.add_argument(
        flag,
        type=kind,
        choices=choices,
        required=required,
        default=from_env if from_env is not None else default,
        help=f"{text} ({shown}env SWF_{env})",
    )


def _pool_option(parser: argparse.ArgumentParser, option: Option) -> None:
    """A pool setting as a flag: parsed by its converter, checked by its check."""

    def parse(text: str) -> Any:
        value = option.parse(text)
        why = option.why_not(value)
        if why is not None:
            raise argparse.ArgumentTypeError(f"{why}, got {text!r}")
        return value

    parse.__name__ = getattr(option.parse, "__name__", "value")
    assert option.flag is not None
    from_env = os.environ.get(option.env)
    shown = "" if option.default in (None, "", ()) else f"default {option.default}; "
    parser.add_argument(
        option.flag,
        dest=option.name,
        type=parse,
        choices=option.choices,
        default=from_env if from_env is not None else option.default,  # argparse parses it
        help=f"{option.help} ({shown}env {option.env})",
    )


def _add_run(commands: Any, _add_dsn: AddDsn) -> None:
    run = commands.add_parser(
        "run",
        help="execute runs with the handlers of --app, in a pool of worker processes",
        description="Claim runs in batches and execute them with a pool of worker processes. "
        "Stops gracefully on SIGTERM/SIGINT (a second signal exits at once).",
    )
    _add_dsn(run)
    _option(run, "--app", "APP", str, None, "handlers to serve, as package.module:registry")
    for option in OPTIONS:
        if option.flag is not None:
            _pool_option(run, option)
    _option(
        run,
        "--metrics-port",
        "METRICS_PORT",
        argtypes.port,
        None,
        "serve Prometheus metrics at http://HOST:PORT/metrics (default: off)",
    )
    _option(
        run,
        "--metrics-host",
        "METRICS_HOST",
        str,
        "127.0.0.1",
        "address for --metrics-port (0.0.0.0 for every interface)",
    )
    _option(
        run,
        "--coordinators",
        "COORDINATORS",
        argtypes.positive_int,
        1,
        "coordinator processes, each with its share of --processes, supervised by this one "
        "(for many cores, where one coordinator's loop is the limit)",
    )
    _switch(run, "drain", "exit once no runnable run is left")
    _switches(run, "also run the schedule ticker")


SWITCHES = ("drain", "schedules", "auto_migrate")  # each also from $SWF_<NAME>


def switches_from_env(args: argparse.Namespace) -> None:
    """The switches not on the command line take $SWF_<NAME>, read only for the commands that
    have them (a bad SWF_DRAIN must not stop `swf-pool runs list`)."""
    for dest in SWITCHES:
        if getattr(args, dest, False) is None:
            setattr(args, dest, argtypes.env_switch(dest.upper()))


def _switches(parser: argparse.ArgumentParser, schedules_help: str) -> None:
    _switch(parser, "schedules", schedules_help)
    _switch(parser, "auto_migrate", "apply pending migrations first")


def _switch(parser: argparse.ArgumentParser, dest: str, text: str) -> None:
    """A switch of SWITCHES: None when not given, for `switches_from_env`."""
    parser.add_argument(
        f"--{dest.replace('_', '-')}",
        action="store_true",
        default=None,
        help=f"{text} (env SWF_{dest.upper()}=1)",
    )


def _add_serve(commands: Any, _add_dsn: AddDsn) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the REST API (needs swf-pool[api])",
        description="The REST API under /api/v1 (the Go server's endpoints, fixed), its "
        "OpenAPI document at /openapi.json. Stops gracefully on SIGTERM/SIGINT.",
    )
    _add_dsn(serve)
    _option(serve, "--host", "HOST", str, "127.0.0.1", "address to listen on")
    _option(
        serve,
        "--allowed-hosts",
        "ALLOWED_HOSTS",
        argtypes.csv,
        "",
        "host names the server answers to, comma-separated, * for any; a request for another "
        "name (DNS rebinding) gets 400 (default: localhost,127.0.0.1,::1 when --host is a "
        "loopback address, else any)",
    )
    _option(serve, "--port", "PORT", argtypes.port, 8080, "port to listen on (0: any free one)")
    _option(
        serve,
        "--api-key",
        "API_KEY",
        str,
        None,
        "require this X-API-Key on every request but /health (default: no key)",
    )
    _option(
        serve,
        "--max-body-bytes",
        "MAX_BODY_BYTES",
        argtypes.positive_int,
        1024 * 1024,
        "largest request body accepted",
    )
    _switches(serve, "also run the schedule ticker, so schedules created here fire")


def run(args: argparse.Namespace) -> int | None:
    load_registry(args.app)  # a bad --app fails before anything connects
    if args.coordinators > 1:
        if args.metrics_port is not None:
            raise ConfigError("--metrics-port needs one coordinator (each would serve its own)")
        if args.auto_migrate:  # once, before the children all look
            Client(args.dsn, migrate=True).close()
        processes = args.processes or os.cpu_count() or 1
        return supervise(args.argv, processes, args.coordinators, args.worker_id)
    metrics = PrometheusMetrics() if args.metrics_port is not None else None
    with ExitStack() as stack:
        client = stack.enter_context(Client(args.dsn, migrate=args.auto_migrate, audit=args.audit))
        if metrics is not None:
            try:
                host, port = metrics.serve(args.metrics_port, args.metrics_host)
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc}"
                ) from None
            stack.callback(metrics.close)
            log.info("metrics at http://%s:%d/metrics", host, port)
        _serve_pool(args, client, metrics)
    return None


def _serve_pool(
    args: argparse.Namespace, client: Client, metrics: PrometheusMetrics | None
) -> None:
    settings = {o.name: getattr(args, o.name) for o in OPTIONS if o.flag is not None}
    pool = Pool(
        client,
        args.app,
        metrics=metrics,
        schedules=args.schedules,
        **{**settings, "types": args.types or None},
    )
    signals = []

    def on_signal(signum: int, frame: object) -> None:
        signals.append(signum)
        if len(signals) == 1:
            log.info("%s: stopping gracefully (again to exit at once)", signal.Signals(signum).name)
            pool.request_stop()
        else:
            pool.abort()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    watch_supervisor(pool.request_stop)
    log.info(
        "pool %s: %d %s worker(s) serving %s on %s",
        pool.worker_id,
        pool.processes,
        pool.executor_kind,
        ", ".join(args.prefixes or pool.types),
        client.backend.description,
    )
    pool.run(drain=args.drain)  # its summary is logged as it stops
    if args.drain:
        _scheduled_later(client, pool, [p.rstrip("%") for p in args.prefixes])


def _scheduled_later(client: Client, pool: Pool, prefixes: list[str]) -> None:
    """After a drain: the runs of ours left for later (a drain waits only for those due within
    seconds), and when the next is due."""
    served = [
        t
        for t in client.stats().types
        if t.type in pool.types or any(t.type.startswith(p) for p in prefixes)
    ]
    later = sum(t.pending - t.due for t in served)
    due = pool.claimer.next_due
    if later and due is not None:
        wait = argtypes.format_age(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        log.info("%d run(s) left scheduled for later; the next is due in %s", later, wait)
    else:
        log.info("nothing left scheduled for later")


def serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from .api import create_app, default_hosts
    except ImportError as exc:
        raise ConfigError(
            f"the REST API needs its extra: pip install 'swf-pool[api]' ({exc})"
        ) from None
    with (
        _listen(args.host, args.port) as sock,
        Client(args.dsn, migrate=args.auto_migrate) as client,
    ):
        app = create_app(
            client,
            api_key=args.api_key,
            max_body_bytes=args.max_body_bytes,
            schedules=args.schedules,
            allowed_hosts=args.allowed_hosts or default_hosts(args.host),
        )
        host = f"[{args.host}]" if ":" in args.host else args.host
        base = f"http://{host}:{sock.getsockname()[1]}"  # the port bound (--port 0: any)
        log.info("REST API on %s/api/v1 (%s)", base, client.backend.description)
        log.info("dashboard on %s/ (OpenAPI document at %s/openapi.json)", base, base)
        # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the
        # handler it found: let that one be a no-op, so a graceful stop exits with status 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        config = uvicorn.Config(app, log_level="info", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
        log.info("REST API stopped")


def _listen(host: str, port: int) -> socket.socket:
    """The API's socket, bound before anything is announced: a port in use or a host that is
    not ours is a clear error (uvicorn logged it and exited with status 3)."""
    try:
        [(family, *_), *_] = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
