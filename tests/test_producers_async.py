"""`AsyncClient` under asyncio, against the real databases."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from swf_pool import (
    AsyncClient,
    Client,
    ConfigError,
    EventType,
    InvalidConnection,
    RunAlreadyFinished,
    RunNotFound,
    RunNotRetryable,
    ScheduleNotFound,
    Status,
    ValidationError,
)
from swf_pool.dsn import PostgresTarget, parse_dsn

from .helpers import count, sql


def test_the_whole_api_under_asyncio(dsn: str) -> None:
    async def main() -> None:
        async with AsyncClient(dsn) as client:
            run = await client.submit("a.v1", {"n": 1}, priority=5, idempotency_key="k")
            again = await client.submit("a.v1", {"n": 2}, idempotency_key="k")
            assert run.created and (again.id, again.created) == (run.id, False)
            many = await client.submit_many([{"type": "b.v1"}, {"type": "b.v1", "run_in": 60}])
            assert [s.created for s in many] == [True, True]
            got = await client.get(run.id)
            assert got is not None and (got.payload, got.priority) == ({"n": 1}, 5)
            assert await client.get("not-a-uuid") is None
            listed = await client.list(type="b.v1")
            assert {r.id for r in listed} == {s.id for s in many}
            assert [e.event_type for e in await client.events(run.id)] == [EventType.CREATED]
            await client.cancel(run.id)
            with pytest.raises(RunAlreadyFinished):
                await client.cancel(run.id)
            with pytest.raises(RunNotFound):
                await client.cancel("00000000-0000-0000-0000-000000000000")
            with pytest.raises(ValidationError):
                await client.submit("")
            await client.retry(run.id)
            with pytest.raises(RunNotRetryable):
                await client.retry(run.id)
            await client.cancel(many[0].id)
            assert await client.retry_many(status="cancelled") == 1
            stats = await client.stats()
            assert stats.totals().pending == 3
            assert await client.table_rows() == 3
            assert await client.throughput(5) == []
            assert await client.prune(timedelta(days=1)) == 0

            schedule_id = await client.schedule("c.v1", cron="0 * * * *", timezone="UTC")
            assert [s.id for s in await client.schedules.list()] == [schedule_id]
            paused = await client.schedules.pause(schedule_id)
            assert not paused.enabled
            updated = await client.schedules.update(schedule_id, cron="30 * * * *")
            assert updated.cron == "30 * * * *"
            assert (await client.schedules.resume(schedule_id)).enabled
            await client.schedules.delete(schedule_id)
            assert await client.schedules.get(schedule_id) is None
            with pytest.raises(ScheduleNotFound):
                await client.schedules.delete(schedule_id)

    asyncio.run(main())


def test_fifty_concurrent_submits(dsn: str) -> None:
    async def main() -> list[str]:
        async with AsyncClient(dsn) as client:
            done = await asyncio.gather(*(client.submit("a.v1", {"i": i}) for i in range(50)))
            return [s.id for s in done]

    ids = asyncio.run(main())
    assert len(set(ids)) == 50 and count(dsn) == 50


def test_a_closed_client_says_so(dsn: str) -> None:
    async def main() -> None:
        client = AsyncClient(dsn)
        with pytest.raises(ConfigError):
            await client.get("00000000-0000-0000-0000-000000000000")
        await client.open()
        await client.close()
        with pytest.raises(ConfigError):
            await client.wait("00000000-0000-0000-0000-000000000000")

    asyncio.run(main())


def test_submit_in_the_callers_async_transaction(postgres_dsn: str) -> None:
    target = parse_dsn(postgres_dsn)
    assert isinstance(target, PostgresTarget)

    async def main() -> tuple[str, str]:
        async with (
            AsyncClient(postgres_dsn) as client,
            await psycopg.AsyncConnection.connect(target.conninfo) as conn,
        ):
            kept = await client.submit("a.v1", conn=conn)
            assert await client.get(kept.id) is None
            await conn.commit()
            dropped = await client.submit("a.v1", conn=conn)
            await client.schedule("a.v1", cron="0 * * * *", conn=conn)
            await conn.rollback()
            # (a synchronous connection would block the loop)
            with pytest.raises(InvalidConnection), psycopg.connect(target.conninfo) as sync:
                await client.submit("a.v1", conn=sync)
            return kept.id, dropped.id

    kept, dropped = asyncio.run(main())
    with Client(postgres_dsn) as client:
        assert client.get(kept) is not None and client.get(dropped) is None
        assert client.schedules.list() == []
        with pytest.raises(InvalidConnection):

            async def async_conn() -> None:
                async with await psycopg.AsyncConnection.connect(target.conninfo) as conn:
                    client.submit("a.v1", conn=conn)

            asyncio.run(async_conn())


def test_submit_in_a_sqlite_transaction_from_async_code(sqlite_dsn: str) -> None:
    path = sqlite_dsn.removeprefix("sqlite://")

    async def main() -> list[str]:
        async with AsyncClient(sqlite_dsn) as client:
            conn = sqlite3.connect(path)
            try:
                kept = await client.submit("a.v1", conn=conn)
                conn.commit()
                dropped = await client.submit("a.v1", conn=conn)
                conn.rollback()
            finally:
                conn.close()
            return [kept.id, dropped.id]

    kept, dropped = asyncio.run(main())
    assert [row["id"] for row in sql(sqlite_dsn, "SELECT id FROM workflow_run")] == [kept]
    assert dropped != kept


def test_a_wait_returns_the_finished_run(dsn: str) -> None:
    async def main() -> Any:
        async with AsyncClient(dsn) as client:
            run = await client.submit("a.v1")
            waiting = asyncio.create_task(client.wait(run.id, timeout=30))
            await client.cancel(run.id)
            return await waiting

    finished = asyncio.run(main())
    assert finished.status is Status.CANCELLED
