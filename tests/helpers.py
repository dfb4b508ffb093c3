"""Test helpers: waiting on conditions (never sleeping as synchronisation) and raw SQL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from swf_pool import Client
from swf_pool.dsn import PostgresTarget, parse_dsn

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.005) -> T:
    """Return the first truthy value of `condition()`, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


def sql(
    dsn: str, query: str, params: dict[str, Any] | tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    """Run raw SQL on the test database, as another program (e.g. the Go library) would."""
    target = parse_dsn(dsn)
    if isinstance(target, PostgresTarget):
        with psycopg.connect(target.conninfo, autocommit=True, row_factory=dict_row) as conn:
            conn.execute(f'SET search_path TO "{target.schema}"'.encode())
            cur = conn.execute(query.encode() if not params else query, params or None)
            return cur.fetchall() if cur.description else []
    db = sqlite3.connect(target.path, isolation_level=None)
    try:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(query, params)]
    finally:
        db.close()


def count(dsn: str, table: str = "workflow_run") -> int:
    return int(sql(dsn, f"SELECT count(*) AS n FROM {table}")[0]["n"])  # noqa: S608


def kind(client: Client) -> str:
    return client.backend.kind
