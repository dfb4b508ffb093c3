"""The fleet on PostgreSQL: the pools' rows and the type controls (`postgres_fleet.sql`).

The claim honours the controls inside `swf_claimable` (migration 0009); a pool's row is
renewed by its heartbeat statement (`heartbeat_params` fills its part).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from .. import queries
from ..fleet import FORGET_AFTER_BEATS, LOST_AFTER_BEATS, ControlChange, PoolMember, TypeControl

Q = queries.load("postgres_fleet")
T = TypeVar("T")
NO_POOL = dict.fromkeys(PoolMember.COLUMNS)  # a heartbeat that renews no pool's row


def heartbeat_params(pool: PoolMember | None) -> dict[str, Any]:
    return {**(NO_POOL if pool is None else pool.params()), "forget_after": FORGET_AFTER_BEATS}


class PostgresFleet:
    """The fleet's operations, mixed into `PostgresBackend`, which runs them (`_retried`)."""

    def _retried(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        raise NotImplementedError

    def _fleet(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        def work(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            cursor = conn.execute(Q[name], params)
            return cursor.fetchall() if cursor.description else []

        return self._retried(work)

    def join_pool(self, member: PoolMember) -> None:
        self._fleet("join_pool", member.params())

    def leave_pool(self, pool_id: str) -> None:
        self._fleet("leave_pool", {"pool_id": pool_id})

    def pools(self) -> list[PoolMember]:
        ages = {"lost_after": LOST_AFTER_BEATS, "forget_after": FORGET_AFTER_BEATS}
        return [PoolMember.from_row(row) for row in self._fleet("list_pools", ages)]

    def type_controls(self) -> list[TypeControl]:
        return [TypeControl.from_row(row) for row in self._fleet("type_controls", {})]

    def control_type(self, change: ControlChange) -> TypeControl:
        [row] = self._fleet("control_type", change.params())
        return TypeControl.from_row(row)
