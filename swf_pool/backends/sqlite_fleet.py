"""The fleet on SQLite: the pools' rows, the type controls, and the claim's choice of pending
runs when some of the types it asks for are paused or limited (`sqlite_fleet.sql`).

SQLite has one writer: the claim's transaction holds the whole database, so the leases it
counts and the tokens it spends cannot change under it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Any

from .. import codec, queries
from ..fleet import (
    BURST_SECONDS,
    FORGET_AFTER_BEATS,
    LOST_AFTER_BEATS,
    ControlChange,
    PoolMember,
    TypeControl,
)
from ..gotime import parse_time
from ..models import DUE_SINCE_SECONDS, NextDue
from .sqlite_file import SqliteFile
from .sqlite_rows import format_time, now_text

Q = queries.load("sqlite_fleet")


def beat(db: sqlite3.Connection, member: PoolMember, now: str) -> None:
    """The heartbeat's part: renew this pool's row, forget pools long gone."""
    db.execute(Q["pool_beat"], {**member.params(), "now": now})
    db.execute(Q["forget_pools"], {"now": now, "forget_after": FORGET_AFTER_BEATS})


class SqliteFleet(SqliteFile):
    """The fleet's operations, mixed into `SqliteBackend`."""

    def join_pool(self, member: PoolMember) -> None:
        with self._tx() as db:
            db.execute(Q["join_pool"], {**member.params(), "now": now_text()})

    def leave_pool(self, pool_id: str) -> None:
        with self._tx() as db:
            db.execute(Q["leave_pool"], {"pool_id": pool_id})

    def pools(self) -> list[PoolMember]:
        params = {
            "now": now_text(),
            "lost_after": LOST_AFTER_BEATS,
            "forget_after": FORGET_AFTER_BEATS,
        }
        with self._tx("DEFERRED") as db:
            rows = [dict(row) for row in db.execute(Q["list_pools"], params)]
        return [PoolMember.from_row(_times(row, "started_at", "last_seen")) for row in rows]

    def type_controls(self) -> list[TypeControl]:
        with self._tx("DEFERRED") as db:
            return [TypeControl.from_row(dict(row)) for row in db.execute(Q["type_controls"])]

    def control_type(self, change: ControlChange) -> TypeControl:
        with self._tx() as db:
            params = {**change.params(), "now": now_text()}
            row = db.execute(Q["control_type"], params).fetchone()
        return TypeControl.from_row(dict(row))


def pending(
    db: sqlite3.Connection, match: dict[str, Any], limit: int, moment: datetime
) -> list[dict[str, Any]] | None:
    """The pending runs a claim may take (id, priority, created_at), in claim order,
    honouring the type controls; None when none of the types asked for is paused or limited
    (the plain claim then serves). Tokens are spent for all of them (a rescue that goes first
    leaves a rate-limited type under its limit, never over)."""
    held = [dict(row) for row in db.execute(Q["held_types"], match)]
    if not held:
        return None
    now = match["now"]
    names = [row["type"] for row in held]
    found = _free(db, match, limit, names)
    spent: dict[str, float] = {}
    for control in held:
        allowance, tokens = _allowance(db, control, limit, moment)
        if tokens is not None:
            spent[control["type"]] = tokens
        if allowance > 0:
            params = {"type": control["type"], "now": now, "limit": allowance}
            found += [dict(row) for row in db.execute(Q["pending_of_type"], params)]
    found.sort(key=lambda row: (row["priority"], row["created_at"]))
    taken = found[:limit]
    for name, tokens in spent.items():
        left = tokens - sum(1 for row in taken if row["type"] == name)
        db.execute(Q["spend_tokens"], {"type": name, "tokens": left, "now": now})
    return taken


def _free(
    db: sqlite3.Connection, match: dict[str, Any], limit: int, held: list[str]
) -> list[dict[str, Any]]:
    """Pending runs of the types that are neither paused nor limited: type by type where the
    claim names its types (a paused type's backlog is not walked), else by prefix."""
    types = codec.decode(match["types"])
    if codec.decode(match["prefixes"]):
        params = {**match, "held": codec.encode(held), "limit": limit}
        return [dict(row) for row in db.execute(Q["pending_free"], params)]
    found: list[dict[str, Any]] = []
    for name in types:
        if name not in held:
            params = {"type": name, "now": match["now"], "limit": limit}
            found += [dict(row) for row in db.execute(Q["pending_of_type"], params)]
    return found


def next_due(db: sqlite3.Connection, match: dict[str, Any], moment: datetime) -> NextDue:
    """When a run of ours comes due next (see PostgreSQL's `next_due`): the paused types and
    those at a limit are left out; a rate-limited type is due with its next token, a limited
    type with a place or a token free now at once."""
    blocked, held_back, token_at, ready = [], False, [], []
    for row in db.execute(Q["held_types"], match).fetchall():
        control = dict(row)
        if control["paused"]:
            blocked.append(control["type"])
            continue
        allowance, tokens = _allowance(db, control, 1, moment)
        waits = db.execute(Q["waiting_of_type"], {"type": control["type"], "now": match["now"]})
        due, waiting = waits.fetchone()
        if allowance > 0:  # a place or a token since the claim: due now, if a run waits
            ready += [moment] if due else []
            continue
        blocked.append(control["type"])
        if tokens is None or tokens >= 1:  # at its concurrency limit
            held_back = held_back or bool(due)
        elif waiting:
            per_second = control["rate_limit"] / control["rate_seconds"]
            token_at.append(moment + timedelta(seconds=(1.0 - tokens) / per_second))
    since = format_time(moment - timedelta(seconds=DUE_SINCE_SECONDS))
    params = {**match, "blocked": codec.encode(blocked), "since": since}
    [text] = db.execute(Q["next_due"], params).fetchone()
    try:
        free = parse_time(text)
    except ValueError:  # a run_at in no known form sorts after every date: never due
        free = None
    at = min([*ready, *token_at, *([free] if free else [])], default=None)
    return NextDue(at, held_back, bool(token_at))


def _allowance(
    db: sqlite3.Connection, control: dict[str, Any], limit: int, moment: datetime
) -> tuple[int, float | None]:
    """How many runs of this type the claim may take, and its tokens now (None: no rate)."""
    if control["paused"]:
        return 0, None
    allowance = limit
    if control["concurrency"] is not None:
        [leased] = db.execute(Q["leased_count"], {"type": control["type"]}).fetchone()
        allowance = min(allowance, control["concurrency"] - leased)
    tokens = None
    if control["rate_limit"] is not None:
        per_second = control["rate_limit"] / control["rate_seconds"]
        refilled = parse_time(control["refilled_at"])
        elapsed = max(0.0, (moment - refilled).total_seconds()) if refilled else 0.0
        cap = max(1.0, BURST_SECONDS * per_second)
        tokens = min(cap, control["tokens"] + per_second * elapsed)
        allowance = min(allowance, int(tokens))
    return allowance, tokens


def _times(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    for column in columns:
        row[column] = parse_time(row[column])
    return row
