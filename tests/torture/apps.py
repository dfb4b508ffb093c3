"""Handlers for the torture suite: each records a side effect of its own (the run id, the
attempt and its process) in a place the test reads afterwards, so double executions show."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

import psycopg

from swf_pool import Fixed, Registry, Run

registry = Registry()
EFFECTS = "SWF_TORTURE_EFFECTS"  # a PostgreSQL conninfo, or sqlite:///path
_connection: Any = None


def effects_target() -> str:
    return os.environ[EFFECTS]


def _effects() -> Any:
    """One connection per worker process, opened on first use."""
    global _connection
    if _connection is None:
        target = effects_target()
        if target.startswith("sqlite:///"):
            _connection = sqlite3.connect(target.removeprefix("sqlite://"), timeout=30)
            _connection.isolation_level = None
        else:
            _connection = psycopg.connect(target, autocommit=True)
    return _connection


def create_effects_table(target: str) -> None:
    ddl = (
        "CREATE TABLE IF NOT EXISTS torture_effect "
        "(run_id TEXT NOT NULL, attempt INT NOT NULL, pid INT NOT NULL)"
    )
    if target.startswith("sqlite:///"):
        with sqlite3.connect(target.removeprefix("sqlite://")) as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(ddl)
    else:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(ddl.encode())


def read_effects(target: str) -> list[tuple[str, int]]:
    query = "SELECT run_id, attempt FROM torture_effect"
    if target.startswith("sqlite:///"):
        with sqlite3.connect(target.removeprefix("sqlite://")) as db:
            return [(str(r), int(a)) for r, a in db.execute(query)]
    with psycopg.connect(target) as conn:
        return [(str(r), int(a)) for r, a in conn.execute(query.encode())]


@registry.handler("torture.effect", retry=Fixed(0))
def effect(run: Run) -> int:
    """The side effect first, then a little work: a kill between the two re-executes it."""
    global _connection
    connection = _effects()
    sql = "INSERT INTO torture_effect (run_id, attempt, pid) VALUES ({0}, {0}, {0})"
    marker = "?" if isinstance(connection, sqlite3.Connection) else "%s"
    try:
        connection.execute(sql.format(marker), (run.id, run.attempt, os.getpid()))
    except Exception:
        _connection = None  # lost (a restart): the retry connects again
        raise
    time.sleep(run.payload.get("sleep", 0.0) if isinstance(run.payload, dict) else 0.0)
    return run.attempt


@registry.handler("torture.slow_first", retry=Fixed(0))
def slow_first(run: Run) -> dict[str, Any]:
    """Outlives its lease on the first attempt only (for the lease races)."""
    time.sleep(run.payload["first"] if run.attempt == 1 else run.payload["later"])
    return {"attempt": run.attempt, "pid": os.getpid()}


@registry.handler("torture.noop", retry=Fixed(0))
def noop(run: Run) -> None:
    return None
