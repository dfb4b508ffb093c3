"""Shared benchmark plumbing: a database to run on and a uniform way to print results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import uuid
from typing import Any

import psycopg

from swf_pool import Client
from swf_pool.dsn import PostgresTarget, parse_dsn

DEFAULT_DSN = os.environ.get("SWF_BENCH_DSN", "host=127.0.0.1 user=postgres dbname=postgres")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--dsn",
        default=DEFAULT_DSN,
        help="server to benchmark on; a fresh schema is created and dropped (env SWF_BENCH_DSN)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for CI")
    return p


class Scratch:
    """A fresh schema (PostgreSQL) or file (SQLite), migrated, removed afterwards."""

    def __init__(self, dsn: str) -> None:
        target = parse_dsn(dsn)
        self.schema = f"swf_bench_{uuid.uuid4().hex[:8]}"
        if isinstance(target, PostgresTarget):
            self.admin: str | None = target.conninfo
            self.dsn = f"{target.conninfo} schema={self.schema}"
        else:
            self.admin = None
            self.dsn = dsn
        Client(self.dsn, migrate=True).close()

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.admin:
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE'.encode())


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def report(name: str, results: dict[str, Any]) -> None:
    """Print one JSON line and one markdown row."""
    print(json.dumps({"scenario": name, **results, "machine": machine()}))
    cells = " | ".join(f"{k}: {v}" for k, v in results.items())
    print(f"| {name} | {cells} |")
