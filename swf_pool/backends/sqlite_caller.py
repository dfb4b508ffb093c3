"""A SQLite client's producer calls on a caller's `sqlite3.Connection`, inside the caller's
transaction: nothing is committed or rolled back for it.

Our statements run inside a savepoint, so that a failure takes back only what they wrote.
A connection in sqlite3's default (legacy) mode that has no transaction open yet would begin
one before a write of the caller's own: so do we, and its commit or rollback decides. A
connection in autocommit (`isolation_level=None`) outside a transaction has none to join: the
savepoint is then a transaction of its own, committed at once.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..dsn import SqliteTarget
from ..errors import InvalidConnection
from .sqlite_rows import (
    Db,
    cancel_run,
    create_schedule,
    now_text,
    run_status,
    submit_runs,
    translate,
)

LEGACY = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)  # Python 3.12's name for it
BEGIN = {  # sqlite3's isolation levels, as it begins a transaction for each
    "": "BEGIN",
    "DEFERRED": "BEGIN DEFERRED",
    "IMMEDIATE": "BEGIN IMMEDIATE",
    "EXCLUSIVE": "BEGIN EXCLUSIVE",
}
OPERATIONS: dict[str, Callable[..., Any]] = {
    "submit": lambda db, runs, audit_full: submit_runs(db, runs, audit_full, now_text()),
    "cancel": lambda db, run_id: cancel_run(db, run_id, now_text()),
    "run_status": run_status,
    "create_schedule": create_schedule,
}


class RowCursors:
    """A caller's connection as our statements expect it: rows as `sqlite3.Row`, whatever
    its `row_factory` (each statement gets a cursor of its own)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        cursor = self.conn.cursor()
        cursor.row_factory = sqlite3.Row
        return cursor.execute(sql, parameters)


class SqliteCaller:
    def __init__(self, conn: sqlite3.Connection, target: SqliteTarget, description: str) -> None:
        self.conn = conn
        self.target = target
        self.description = description

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        self._check_database()
        db: Db = RowCursors(self.conn)
        with self._savepoint():
            return OPERATIONS[name](db, *args)

    def _check_database(self) -> None:
        """The connection must be open and on this client's file (a write elsewhere would
        be lost to the workers)."""
        try:
            files = self.conn.execute("PRAGMA database_list").fetchall()
        except sqlite3.ProgrammingError as exc:  # closed
            raise InvalidConnection(f"the connection given cannot be used: {exc}") from None
        main = next((str(row[2]) for row in files if row[1] == "main"), "")
        ours = self.target.path
        if ours == ":memory:" or not main or os.path.realpath(main) != os.path.realpath(ours):
            raise InvalidConnection(
                f"the connection given is to {main or 'an in-memory database'!r}, this client "
                f"to {ours!r}"
            )

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        conn = self.conn
        began = False
        legacy = getattr(conn, "autocommit", LEGACY) == LEGACY
        try:
            if legacy and conn.isolation_level is not None and not conn.in_transaction:
                conn.execute(BEGIN[conn.isolation_level.upper()])
                began = True
            conn.execute("SAVEPOINT swf_pool")
            try:
                yield
                conn.execute("RELEASE swf_pool")
            except BaseException:
                if conn.in_transaction:  # (SQLite may have rolled back already: a full disk)
                    conn.execute("ROLLBACK TO swf_pool")
                    conn.execute("RELEASE swf_pool")
                if began and conn.in_transaction:  # it was ours, and it holds nothing now
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = translate(exc, self.description, self.target.path)
            raise error from error.__cause__
