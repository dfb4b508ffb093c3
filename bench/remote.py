"""A remote database: every packet between the pools and PostgreSQL is delivered 5 ms late,
each way, by a TCP proxy on loopback, so the round-trip wall a pool meets in production (a
database on another host) shows on this machine. Compares, in interleaved rounds, one pool
through the proxy, four pools through the proxy (the same table), and the same one pool
without the proxy. Each pool is `swf-pool run --drain` with `--processes 2`, no-op runs, full
audit; the rate is read from the table between 10 % and 90 % done (start-up excluded).

python -m bench.remote [--dsn ...] [--quick] [--runs N] [--rounds N] [--delay-ms 5]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from swf_pool.dsn import PostgresTarget, parse_dsn
from swf_pool.threads import Background

from .common import Scratch, fill, middle_rate, parser, quick, report, swf_finished

ROOT = Path(__file__).resolve().parent.parent


class DelayProxy(Background):
    """Forwards TCP connections from a loopback port to `host:port`, each chunk of bytes
    delivered `delay` seconds after it arrived, in order (a long, fat link: latency, no
    bandwidth limit)."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.host, self.upstream, self.delay = host, port, delay
        self.port = 0
        self.ready = threading.Event()
        super().__init__("delay-proxy")

    def loop(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        while not self.stopping.is_set():
            await asyncio.sleep(0.05)
        server.close()

    async def _connection(self, client: asyncio.StreamReader, back: asyncio.StreamWriter) -> None:
        try:
            upstream, forth = await asyncio.open_connection(self.host, self.upstream)
        except OSError:
            back.close()
            return
        await asyncio.gather(self._pipe(client, forth), self._pipe(upstream, back))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await chunks.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(256 * 1024):
                chunks.put_nowait((loop.time() + self.delay, data))
        except OSError:
            pass
        chunks.put_nowait(None)
        with contextlib.suppress(OSError):
            await sender


def via(dsn: str, port: int) -> str:
    """`dsn` (a bench Scratch: conninfo plus `schema=`) through the proxy on `port`."""
    target = parse_dsn(dsn)
    assert isinstance(target, PostgresTarget)
    return (
        f"{make_conninfo(target.conninfo, host='127.0.0.1', port=str(port))} schema={target.schema}"
    )


def drain(dsn: str, pool_dsn: str, runs: int, pools: int, extra: list[str]) -> float:
    """Runs/s of `pools` pools draining `runs` no-op runs, between 10 % and 90 % done."""
    fill(dsn, runs)
    command = [sys.executable, "-m", "swf_pool.cli", "run", "--app", "bench.apps:registry"]
    options = ["--processes", "2", "--drain", "--log-interval", "3600", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [*command, "--dsn", pool_dsn, *options],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(pools)
    ]
    target = parse_dsn(dsn)
    assert isinstance(target, PostgresTarget)
    return middle_rate(procs, "a pool", target.conninfo, swf_finished(target.schema), runs)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--delay-ms", type=float, default=5.0)
    p.add_argument("--pool-args", default="", help="more `swf-pool run` options, space-separated")
    args = p.parse_args()
    runs = args.runs or (2000 if quick(args) else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    extra = args.pool_args.split()
    server = conninfo_to_dict(parse_dsn(args.dsn).conninfo)  # type: ignore[union-attr]
    host, port = str(server.get("host", "127.0.0.1")), int(str(server.get("port", 5432)))
    rates: dict[str, list[float]] = {"one pool": [], "four pools": [], "one pool, no proxy": []}
    with DelayProxy(host, port, args.delay_ms / 1000) as proxy:
        proxy.ready.wait(5)
        for _ in range(rounds):
            for name, pools, through in (
                ("one pool", 1, True),
                ("four pools", 4, True),
                ("one pool, no proxy", 1, False),
            ):
                with Scratch(args.dsn) as scratch:
                    pool_dsn = via(scratch.dsn, proxy.port) if through else scratch.dsn
                    rates[name].append(drain(scratch.dsn, pool_dsn, runs, pools, extra))
                print(f"  {name}: {rates[name][-1]:,.0f} runs/s", flush=True)
    one, four, direct = (statistics.median(rates[k]) for k in rates)
    report(
        "remote",
        {
            "runs": runs,
            "rounds": rounds,
            "delay ms each way": args.delay_ms,
            "one pool runs/s": round(one),
            "four pools runs/s": round(four),
            "one pool without proxy runs/s": round(direct),
            "one/four": round(one / four, 2),
            "one/without proxy": round(one / direct, 2),
        },
        {"runs/s by round": rates},
    )


if __name__ == "__main__":
    main()
