"""The fleet on PostgreSQL: the pools' rows and the type controls (`postgres_fleet.sql`).

The claim honours the controls inside `swf_claimable` (migration 0009); a pool's row is
renewed by its heartbeat statement. Each function takes `execute`, which runs one statement
on a pooled connection and returns its rows (none for a statement that returns nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import queries
from ..fleet import FORGET_AFTER_BEATS, LOST_AFTER_BEATS, ControlChange, PoolMember, TypeControl

Q = queries.load("postgres_fleet")
Execute = Callable[[str, dict[str, Any]], list[dict[str, Any]]]


def join_pool(execute: Execute, member: PoolMember) -> None:
    execute(Q["join_pool"], member.params())


def leave_pool(execute: Execute, pool_id: str) -> None:
    execute(Q["leave_pool"], {"pool_id": pool_id})


def pools(execute: Execute) -> list[PoolMember]:
    ages = {"lost_after": LOST_AFTER_BEATS, "forget_after": FORGET_AFTER_BEATS}
    return [PoolMember.from_row(row) for row in execute(Q["list_pools"], ages)]


def type_controls(execute: Execute) -> list[TypeControl]:
    return [TypeControl.from_row(row) for row in execute(Q["type_controls"], {})]


def control_type(execute: Execute, change: ControlChange) -> TypeControl:
    [row] = execute(Q["control_type"], change.params())
    return TypeControl.from_row(row)
