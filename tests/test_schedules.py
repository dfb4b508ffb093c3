"""Cron schedules: validation, DST-correct fire times, the ticker, on both backends."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from swf_pool import (
    Client,
    EventType,
    InvalidSchedule,
    MissedPolicy,
    ScheduleNotFound,
    Ticker,
    ValidationError,
)
from swf_pool.schedules import next_fire, upcoming

from .helpers import count, sql, wait_until


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "zone", "after", "expected"),
    [
        # Europe/Berlin springs forward 2026-03-29 02:00 -> 03:00: 02:30 fires once, at 03:30
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 27, 12),
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)],
        ),
        # ... and falls back 2026-10-25 03:00 -> 02:00: 02:30 exists twice, fires once
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 10, 23, 12),
            [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        # America/New_York: 2026-03-08 02:00 -> 03:00 and 2026-11-01 02:00 -> 01:00
        (
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 7, 12),
            [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)],
        ),
        (
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12),
            [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)],
        ),
        (
            "0 9 * * 1",
            "UTC",
            utc(2026, 11, 28),
            [utc(2026, 11, 30, 9), utc(2026, 12, 7, 9), utc(2026, 12, 14, 9)],
        ),
        (
            "@daily",
            "Asia/Kolkata",
            utc(2026, 1, 1),
            [utc(2026, 1, 1, 18, 30), utc(2026, 1, 2, 18, 30), utc(2026, 1, 3, 18, 30)],
        ),
    ],
)
def test_fire_times_across_daylight_saving(
    cron: str, zone: str, after: datetime, expected: list[datetime]
) -> None:
    assert upcoming(cron, ZoneInfo(zone), after, 3) == expected


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"cron": "61 * * * *"}, InvalidSchedule, "invalid cron expression"),
        ({"cron": "* * * * * *"}, InvalidSchedule, "expected 5 fields"),
        ({"cron": "@reboot"}, InvalidSchedule, "unknown cron descriptor"),
        ({"cron": ""}, InvalidSchedule, "non-empty"),
        ({"cron": "0 9 * * 1", "timezone": "Mars/Olympus"}, InvalidSchedule, "unknown time zone"),
        (
            {"cron": "0 9 * * 1", "timezone": "../../etc/passwd"},
            InvalidSchedule,
            "unknown time zone",
        ),
        ({"cron": "0 9 * * 1", "missed": "sometimes"}, ValidationError, "missed must be"),
        ({"cron": "0 9 * * 1", "catch_up_limit": 0}, ValidationError, "catch_up_limit"),
        ({"cron": "0 9 * * 1", "priority": "high"}, ValidationError, "priority"),
    ],
)
def test_bad_schedules_are_typed_errors_and_write_nothing(
    client: Client, dsn: str, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        client.schedule("report.v1", {}, **kwargs)
    assert count(dsn, "workflow_schedule") == 0


def test_schedule_crud(client: Client) -> None:
    schedule_id = client.schedule(
        "report.v1",
        {"k": 1},
        cron="0 9 * * 1",
        timezone="Europe/Berlin",
        priority=5,
        max_attempts=2,
    )
    got = client.schedules.get(schedule_id)
    assert got is not None
    assert (
        got.type,
        got.payload,
        got.cron,
        got.timezone,
        got.priority,
        got.max_attempts,
        got.enabled,
        got.missed_policy,
    ) == ("report.v1", {"k": 1}, "0 9 * * 1", "Europe/Berlin", 5, 2, True, MissedPolicy.SKIP)
    assert got.next_run_at.astimezone(ZoneInfo("Europe/Berlin")).hour == 9
    assert not client.schedules.pause(schedule_id).enabled
    assert client.schedules.resume(schedule_id).enabled
    changed = client.schedules.update(schedule_id, cron="@hourly", payload=None)
    assert (changed.cron, changed.payload) == ("0 * * * *", None)  # as the Go parser takes it
    with pytest.raises(InvalidSchedule):
        client.schedules.update(schedule_id, timezone="Nowhere/Land")
    with pytest.raises(ValidationError, match="unknown schedule field"):
        client.schedules.update(schedule_id, colour="red")
    assert [s.id for s in client.schedules.list()] == [schedule_id]
    client.schedules.delete(schedule_id)
    assert client.schedules.get(schedule_id) is None and client.schedules.list() == []
    for action in (client.schedules.pause, client.schedules.resume, client.schedules.delete):
        with pytest.raises(ScheduleNotFound):
            action(schedule_id)
    with pytest.raises(ScheduleNotFound):
        client.schedules.pause("not-a-uuid")


def set_next(dsn: str, schedule_id: str, when: datetime) -> None:
    """Put a schedule's next fire where a test wants it."""
    if dsn.startswith("sqlite"):
        sql(
            dsn,
            "UPDATE workflow_schedule SET next_run_at = ? WHERE id = ?",
            (when.strftime("%Y-%m-%d %H:%M:%S.%f"), schedule_id),
        )
    else:
        sql(dsn, "UPDATE workflow_schedule SET next_run_at = %s WHERE id = %s", (when, schedule_id))


def test_a_tick_fires_each_due_time_once(client: Client, dsn: str) -> None:
    schedule_id = client.schedule("tick.v1", {"x": 1}, cron="*/5 * * * *", priority=7)
    start = utc(2030, 1, 1, 10, 0)
    set_next(dsn, schedule_id, start)
    ticker = Ticker(client)
    assert ticker.tick(start - timedelta(seconds=1)) == 0
    assert ticker.tick(start) == 1
    assert ticker.tick(start) == 0  # nothing due any more
    assert ticker.tick(start + timedelta(minutes=4)) == 0
    assert ticker.tick(start + timedelta(minutes=5)) == 1
    runs = client.list(type="tick.v1")
    assert sorted(r.idempotency_key or "" for r in runs) == [
        f"schedule:{schedule_id}:{int(start.timestamp())}",
        f"schedule:{schedule_id}:{int(start.timestamp()) + 300}",
    ]
    assert {(r.payload["x"], r.priority) for r in runs} == {(1, 7)}
    created = client.events(runs[0].id)[0]
    assert created.event_type is EventType.CREATED
    assert created.data["schedule_id"] == schedule_id


def test_daylight_saving_days_fire_once_each(client: Client, dsn: str) -> None:
    schedule_id = client.schedule("dst.v1", cron="30 2 * * *", timezone="Europe/Berlin")
    ticker = Ticker(client)
    moment = utc(2026, 3, 27, 12)
    set_next(dsn, schedule_id, next_fire("30 2 * * *", ZoneInfo("Europe/Berlin"), moment))
    while moment < utc(2026, 3, 31, 12):  # every 10 minutes across the change
        ticker.tick(moment)
        moment += timedelta(minutes=10)
    fired = sorted(
        int((r.idempotency_key or "").rsplit(":", 1)[1]) for r in client.list(type="dst.v1")
    )
    # one run a day; on the 29th 02:30 does not exist and the run comes at 03:30 CEST
    assert [datetime.fromtimestamp(t, UTC) for t in fired] == [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
        utc(2026, 3, 31, 0, 30),
    ]


def test_the_repeated_hour_fires_once(client: Client, dsn: str) -> None:
    schedule_id = client.schedule("fold.v1", cron="30 1 * * *", timezone="America/New_York")
    ticker = Ticker(client)
    moment = utc(2026, 10, 31, 12)
    set_next(dsn, schedule_id, next_fire("30 1 * * *", ZoneInfo("America/New_York"), moment))
    while moment < utc(2026, 11, 2, 12):
        ticker.tick(moment)
        moment += timedelta(minutes=10)
    fired = sorted(
        int((r.idempotency_key or "").rsplit(":", 1)[1]) for r in client.list(type="fold.v1")
    )
    # 01:30 happens twice on 2026-11-01 (EDT, then EST): one run, at the first
    assert [datetime.fromtimestamp(t, UTC) for t in fired] == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]


@pytest.mark.parametrize(("missed", "expected"), [("skip", 1), ("catch_up", 3)])
def test_missed_fires(client: Client, dsn: str, missed: str, expected: int) -> None:
    schedule_id = client.schedule("missed.v1", cron="*/5 * * * *", missed=missed, catch_up_limit=3)
    start = utc(2030, 1, 1, 10, 0)
    set_next(dsn, schedule_id, start)
    ticker = Ticker(client)
    assert ticker.tick(start + timedelta(hours=1, minutes=2)) == expected  # down for an hour
    schedule = client.schedules.get(schedule_id)
    assert schedule is not None and schedule.next_run_at == utc(2030, 1, 1, 11, 5)


def test_a_broken_row_is_disabled_and_never_starves_the_others(client: Client, dsn: str) -> None:
    good = client.schedule("ok.v1", cron="* * * * *")
    bad = client.schedule("bad.v1", cron="* * * * *")
    sql(dsn, "UPDATE workflow_schedule SET schedule = 'not a cron', timezone = 'Gone/Zone'")
    sql(dsn, "UPDATE workflow_schedule SET schedule = '* * * * *' WHERE type = 'ok.v1'")
    sql(dsn, "UPDATE workflow_schedule SET timezone = 'UTC' WHERE type = 'ok.v1'")
    now = utc(2030, 1, 1)
    set_next(dsn, good, now)
    set_next(dsn, bad, now - timedelta(minutes=1))  # due first
    assert Ticker(client, batch=1).tick(now) == 1
    broken = client.schedules.get(bad)
    assert broken is not None and not broken.enabled
    assert broken.last_error is not None and "Gone/Zone" in broken.last_error
    assert [r.type for r in client.list()] == ["ok.v1"]


def test_a_cron_that_never_fires_is_refused_or_disabled(client: Client, dsn: str) -> None:
    """February 30th passes croniter's syntax check but has no fire time."""
    with pytest.raises(InvalidSchedule, match="never fires"):
        client.schedule("feb30.v1", cron="0 0 30 2 *")
    assert count(dsn, "workflow_schedule") == 0
    good = client.schedule("ok.v1", cron="* * * * *")
    bad = client.schedule("feb30.v1", cron="* * * * *")
    sql(dsn, "UPDATE workflow_schedule SET schedule = '0 0 30 2 *' WHERE type = 'feb30.v1'")
    now = utc(2030, 1, 1)
    set_next(dsn, good, now)
    set_next(dsn, bad, now - timedelta(minutes=1))
    assert Ticker(client).tick(now) == 1
    broken = client.schedules.get(bad)
    assert broken is not None and not broken.enabled and "never fires" in str(broken.last_error)


def test_four_tickers_fire_two_hundred_schedules_exactly_once(dsn: str) -> None:
    now = utc(2030, 1, 1)
    with Client(dsn) as client:
        ids = [client.schedule("many.v1", {"n": i}, cron="0 0 * * *") for i in range(200)]
        for schedule_id in ids:
            set_next(dsn, schedule_id, now)
    created: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def tick() -> None:
        try:
            with Client(dsn) as own:
                barrier.wait()
                created.append(Ticker(own, batch=20).tick(now))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(created) == 200
    assert count(dsn) == 200


def test_a_sleeping_ticker_wakes_when_a_schedule_changes(postgres_dsn: str) -> None:
    from swf_pool.ticker import TickerThread

    with Client(postgres_dsn) as client, TickerThread(client) as thread:
        assert thread.ticker.max_sleep >= 15
        schedule_id = client.schedule("wake.v1", cron="0 0 1 1 *")  # next year
        # due now, and re-enabled: the NOTIFY wakes the ticker long before its 15 s sleep
        sql(
            postgres_dsn,
            "UPDATE workflow_schedule SET next_run_at = now(), enabled = true WHERE id = %s",
            (schedule_id,),
        )
        wait_until(lambda: count(postgres_dsn) == 1, timeout=5)


def test_the_pool_runs_the_ticker(dsn: str) -> None:
    from swf_pool import Pool, Status

    with Client(dsn) as client:
        schedule_id = client.schedule("t.echo", {"from": "cron"}, cron="0 0 1 1 *")
        set_next(dsn, schedule_id, datetime.now(UTC) - timedelta(seconds=1))
        pool = Pool(client, "tests.apps:registry", processes=1, schedules=True)
        thread = threading.Thread(target=pool.run, daemon=True)
        thread.start()
        try:
            runs = wait_until(
                lambda: [r for r in client.list(type="t.echo") if r.status is Status.SUCCEEDED],
                timeout=20,
            )
        finally:
            pool.request_stop()
            thread.join(30)
        assert runs[0].result["payload"] == {"from": "cron"}


def test_schedule_cli(sqlite_dsn: str) -> None:
    from .test_cli import cli

    out = cli(
        "schedule",
        "add",
        "report.v1",
        '{"a": 1}',
        "--cron",
        "30 2 * * *",
        "--timezone",
        "America/New_York",
        "--dsn",
        sqlite_dsn,
    )
    assert out.returncode == 0, out.stderr
    schedule_id = out.stdout.split()[0]
    assert out.stdout.count("  next ") == 3 and "EST" in out.stdout and "UTC)" in out.stdout
    assert "paused" in cli("schedule", "pause", schedule_id, "--dsn", sqlite_dsn).stdout
    assert "enabled" in cli("schedule", "resume", schedule_id, "--dsn", sqlite_dsn).stdout
    out = cli("schedule", "update", schedule_id, "--cron", "@hourly", "--dsn", sqlite_dsn)
    assert "'0 * * * *'" in out.stdout
    out = cli("schedule", "update", schedule_id, "--dsn", sqlite_dsn)  # nothing to change
    assert out.returncode == 2 and "give one or more of --cron" in out.stderr
    assert cli("schedule", "rm", schedule_id, "--dsn", sqlite_dsn).returncode == 0
    assert cli("schedule", "list", "--dsn", sqlite_dsn).stdout.strip() == "no schedules"
    out = cli("schedule", "show", schedule_id, "--dsn", sqlite_dsn)
    assert out.returncode == 1 and "not found" in out.stderr
    out = cli("schedule", "add", "x", "--cron", "* * *", "--dsn", sqlite_dsn)
    assert out.returncode == 1 and "invalid cron expression" in out.stderr
