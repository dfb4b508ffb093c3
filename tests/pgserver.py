"""A PostgreSQL server for the tests: $SWF_TEST_DSN, else 127.0.0.1:5432, else a throwaway one.

The throwaway cluster is made with `initdb` in a temporary folder (fsync off) on a free port and
stopped at exit. initdb refuses to run as root, so as root it runs as the `postgres` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

LOCAL_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


def answers(conninfo: str) -> bool:
    try:
        psycopg.connect(conninfo).close()
    except psycopg.Error:
        return False
    return True


@contextmanager
def server() -> Iterator[str]:
    """Yield a libpq conninfo of a server where we may create databases."""
    configured = os.environ.get("SWF_TEST_DSN")
    if configured:
        yield configured
    elif answers(LOCAL_CONNINFO):
        yield LOCAL_CONNINFO
    else:
        with throwaway_cluster() as cluster:
            yield cluster.conninfo


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster that the tests own (and may restart)."""

    conninfo: str
    command: list[str]  # how to run pg_ctl on it (as the right user)
    options: str

    def restart(self, mode: str = "fast") -> None:
        """Restart the server; `mode="immediate"` is a crash (no checkpoint, WAL replayed)."""
        subprocess.run(
            [*self.command, "-o", self.options, "-m", mode, "-w", "restart"],
            check=True,
            capture_output=True,
        )


@contextmanager
def throwaway_cluster(settings: str = "") -> Iterator[Cluster]:
    """`settings`: more server options, e.g. "-c wal_writer_delay=10000"."""
    initdb = shutil.which("initdb")
    pg_ctl = shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError(
            "no PostgreSQL answers on 127.0.0.1:5432 and initdb/pg_ctl are not on "
            "PATH: set SWF_TEST_DSN or install PostgreSQL"
        )
    folder = tempfile.mkdtemp(prefix="swf-pg-")
    data = os.path.join(folder, "data")
    prefix: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [*prefix, initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = (
        f"-p {port} -k {folder} -c fsync=off -c synchronous_commit=off "
        f"-c listen_addresses=127.0.0.1 {settings}"
    )
    command = [*prefix, pg_ctl, "-D", data, "-l", os.path.join(folder, "log")]
    subprocess.run([*command, "-o", options, "-w", "start"], check=True, capture_output=True)
    try:
        yield Cluster(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", command, options)
    finally:
        subprocess.run([*command, "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
