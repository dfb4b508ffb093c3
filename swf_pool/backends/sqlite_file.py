"""The SQLite file of one backend: one connection, serialised by a lock; each call is a
transaction (`BEGIN IMMEDIATE` for writes, so several processes can share the file, WAL
mode, each waiting its turn up to the busy timeout)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..dsn import SqliteTarget
from ..errors import ClientClosed, ConnectError, SchemaNotReady
from .sqlite_rows import Q, decode_row, translate

BUSY_TIMEOUT_SECONDS = 30.0


class SqliteFile:
    def __init__(self, target: SqliteTarget, *, create: bool = True) -> None:
        self.target = target
        self.description = f"sqlite {target.path}"
        self._lock = threading.RLock()
        self.closed = False
        if not create and target.path != ":memory:" and not os.path.exists(target.path):
            raise SchemaNotReady(
                f"no SQLite database at {target.path!r}: check the path, or create it with "
                "`swf-pool migrate up` (or --auto-migrate)"
            )
        try:
            self._db = sqlite3.connect(
                target.path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            if target.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            # LIKE patterns are type prefixes: case matters, as on PostgreSQL.
            self._db.execute("PRAGMA case_sensitive_like = ON")
        except sqlite3.Error as exc:
            raise ConnectError(f"cannot open SQLite database {target.path!r}: {exc}") from None
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self.closed = True

    @contextmanager
    def _tx(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self.closed:
                raise ClientClosed
            try:
                self._db.execute(f"BEGIN {mode}")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    # (after an I/O error or a full disk SQLite may have rolled back already)
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                error = translate(exc, self.description, self.target.path)
                raise error from error.__cause__

    def _rows(
        self, name: str, params: dict[str, Any], raw_json: bool = False
    ) -> list[dict[str, Any]]:
        with self._tx("DEFERRED") as db:
            return [decode_row(row, raw_json) for row in db.execute(Q[name], params)]
