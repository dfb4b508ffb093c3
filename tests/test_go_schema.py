"""What the Go library needs from the shared database (../shared/CONTRACT.md): its NOT NULL
columns, its indexes by name and definition, and cron expressions its parser accepts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from swf_pool import Client, InvalidSchedule, Ticker
from swf_pool import migrate as migrations
from swf_pool.backends import Backend, open_backend
from swf_pool.schedules import next_fire, upcoming

from .helpers import count, sql
from .test_schedules import set_next

# -- cron: stored as the Go parser (robfig/cron v3, 5 fields, no descriptors) accepts ----------

# robfig's own expansion of each descriptor it knows
GO_FIELDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def stored_cron(dsn: str, schedule_id: str) -> str:
    """The raw `schedule` column, as the Go library reads it."""
    rows = sql(dsn, "SELECT id, schedule FROM workflow_schedule")
    return {str(r["id"]): str(r["schedule"]) for r in rows}[schedule_id]


@pytest.mark.parametrize("descriptor", sorted(GO_FIELDS))
def test_a_descriptor_is_stored_as_its_five_fields(
    client: Client, dsn: str, descriptor: str
) -> None:
    before = datetime.now(UTC)
    schedule_id = client.schedule("described.v1", cron=descriptor, timezone="Europe/Berlin")
    after = datetime.now(UTC)
    assert stored_cron(dsn, schedule_id) == GO_FIELDS[descriptor]
    schedule = client.schedules.get(schedule_id)
    assert schedule is not None and schedule.cron == GO_FIELDS[descriptor]
    # the first fire is the descriptor's (the clock may cross a fire time during the call)
    zone = ZoneInfo("Europe/Berlin")
    assert schedule.next_run_at in {
        next_fire(descriptor, zone, before),
        next_fire(descriptor, zone, after),
    }
    # ... and so is every later one, across both daylight-saving changes of 2026
    for start in (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)):
        stored = upcoming(GO_FIELDS[descriptor], zone, start, 40)
        assert stored == upcoming(descriptor, zone, start, 40)  # croniter reads the descriptor


def test_updating_to_a_descriptor_stores_five_fields(client: Client, dsn: str) -> None:
    schedule_id = client.schedule("described.v1", cron="0 9 * * 1")
    assert client.schedules.update(schedule_id, cron="@weekly").cron == "0 0 * * 0"
    assert stored_cron(dsn, schedule_id) == "0 0 * * 0"
    with pytest.raises(InvalidSchedule, match=re.escape("'@every 1h'")):
        client.schedules.update(schedule_id, cron="@every 1h")
    assert stored_cron(dsn, schedule_id) == "0 0 * * 0"


def test_the_weekly_descriptor_fires_on_sunday_midnight() -> None:
    """robfig's @weekly: Sunday 00:00 in the schedule's zone."""
    zone = ZoneInfo("America/New_York")
    fires = upcoming(GO_FIELDS["@weekly"], zone, datetime(2026, 6, 1, tzinfo=UTC), 2)
    assert [f.astimezone(zone).strftime("%a %H:%M") for f in fires] == ["Sun 00:00"] * 2
    assert (fires[1] - fires[0]).days == 7


@pytest.mark.parametrize(
    "cron",
    [
        "@every 5m",  # robfig knows it, the Go library's parser refuses every descriptor
        "@reboot",
        "@HOURLY",
        "0 0 * * 7",  # croniter takes 7 for Sunday, robfig's day of week is 0-6
        "0 0 * * 0-7",
        "0 0 L * *",  # croniter's last day of the month
        "0 0 1W * *",
        "0 0 * * 5#2",  # croniter's second Friday
        "0 22-2 * * *",  # croniter wraps the range around midnight
        "*/0 * * * *",
        "1,,2 * * * *",
        "0 0 * * * *",  # seconds
        "TZ=UTC 0 0 * * *",
    ],
)
def test_what_the_go_parser_refuses_is_refused(client: Client, dsn: str, cron: str) -> None:
    with pytest.raises(InvalidSchedule, match=re.escape(repr(" ".join(cron.split())))):
        client.schedule("refused.v1", cron=cron)
    assert count(dsn, "workflow_schedule") == 0


@pytest.mark.parametrize(
    ("cron", "minutes"),
    [
        ("5/15 * * * *", [5, 20, 35, 50]),  # a value with a step runs to the field's end
        ("*/20 * ? * MON-FRI", [0, 20, 40]),
        ("0,30 * * jan-dec sun-sat", [0, 30]),
        ("05 * * * *", [5]),
    ],
)
def test_what_the_go_parser_accepts_is_stored_as_written(
    client: Client, dsn: str, cron: str, minutes: list[int]
) -> None:
    schedule_id = client.schedule("accepted.v1", cron=cron)
    assert stored_cron(dsn, schedule_id) == cron
    fires = upcoming(cron, ZoneInfo("UTC"), datetime(2026, 6, 1, 9, 59, tzinfo=UTC), 10)
    assert sorted({f.minute for f in fires}) == minutes


def test_a_descriptor_through_the_cli_is_stored_as_five_fields(sqlite_dsn: str) -> None:
    from .test_cli import cli

    out = cli("schedule", "add", "report.v1", "--cron", "@daily", "--dsn", sqlite_dsn)
    assert out.returncode == 0, out.stderr
    assert stored_cron(sqlite_dsn, out.stdout.split()[0]) == "0 0 * * *"
    out = cli("schedule", "add", "report.v1", "--cron", "@every 5m", "--dsn", sqlite_dsn)
    assert out.returncode == 1 and "'@every 5m'" in out.stderr


@pytest.mark.parametrize("legacy", ["@hourly", "0 * * * 7"])
def test_a_row_written_before_keeps_firing(client: Client, dsn: str, legacy: str) -> None:
    """A descriptor or a croniter-only form stored by an earlier version is not disabled."""
    schedule_id = client.schedule("legacy.v1", cron="0 * * * *")
    sql(dsn, f"UPDATE workflow_schedule SET schedule = '{legacy}'")  # noqa: S608
    due = datetime(2030, 1, 6, 10, tzinfo=UTC)  # a Sunday
    set_next(dsn, schedule_id, due)
    assert Ticker(client).tick(due) == 1
    schedule = client.schedules.get(schedule_id)
    assert schedule is not None and schedule.enabled and schedule.last_error is None
    assert schedule.next_run_at == datetime(2030, 1, 6, 11, tzinfo=UTC)


# -- schema: the Go library's NOT NULL columns and indexes ----------------------------------


@dataclass(frozen=True)
class GoIndex:
    table: str
    columns: tuple[str, ...]
    definition: str  # the Go library's, as CONTRACT.md gives it (PostgreSQL)
    partial: bool


GO_INDEXES = {
    "idx_workflow_run_claim": GoIndex(
        "workflow_run",
        ("status", "run_at", "priority", "created_at"),
        "(status, run_at, priority, created_at) WHERE status = 'pending'",
        True,
    ),
    "idx_workflow_run_type_prefix": GoIndex(
        "workflow_run",
        ("type", "status", "run_at"),
        "(type text_pattern_ops, status, run_at) WHERE status = 'pending'",
        True,
    ),
    "idx_workflow_run_idempotency": GoIndex(
        "workflow_run",
        ("idempotency_key",),
        "(idempotency_key) WHERE idempotency_key IS NOT NULL",
        True,
    ),
    "idx_workflow_run_type_status": GoIndex(
        "workflow_run", ("type", "status", "created_at"), "(type, status, created_at DESC)", False
    ),
    "idx_workflow_run_deleted_at": GoIndex(
        "workflow_run", ("deleted_at",), "(deleted_at) WHERE deleted_at IS NULL", True
    ),
    "idx_workflow_event_workflow_id": GoIndex(
        "workflow_event",
        ("workflow_id", "created_at"),
        "(workflow_id, created_at DESC)",
        False,
    ),
    "idx_workflow_event_type": GoIndex(
        "workflow_event", ("event_type", "created_at"), "(event_type, created_at DESC)", False
    ),
    "idx_workflow_registry_runtime": GoIndex(
        "workflow_registry", ("runtime", "is_enabled"), "(runtime, is_enabled)", False
    ),
    "idx_workflow_registry_deleted_at": GoIndex(
        "workflow_registry", ("deleted_at",), "(deleted_at) WHERE deleted_at IS NULL", True
    ),
    "idx_workflow_schedule_next_run": GoIndex(
        "workflow_schedule",
        ("next_run_at",),
        "(next_run_at) WHERE enabled AND deleted_at IS NULL",
        True,
    ),
    "idx_workflow_schedule_type": GoIndex("workflow_schedule", ("type",), "(type)", False),
}
# the eight that 0001 lacked (0008 adds them)
ADDED = set(GO_INDEXES) - {
    "idx_workflow_event_workflow_id",
    "idx_workflow_event_type",
    "idx_workflow_schedule_next_run",
}

# every column CONTRACT.md declares NOT NULL (primary keys included)
GO_NOT_NULL = {
    "workflow_run": {
        "id", "type", "payload", "status", "priority", "run_at", "attempt", "max_attempts",
        "created_at", "updated_at",
    },
    "workflow_event": {"id", "workflow_id", "event_type"},
    "workflow_registry": {
        "id", "workflow_name", "intent_type", "runtime", "is_enabled", "created_at", "updated_at",
    },
    "workflow_schedule": {
        "id", "type", "payload", "schedule", "timezone", "next_run_at", "enabled", "priority",
        "max_attempts", "created_at", "updated_at",
    },
}  # fmt: skip
# the five that 0001 left nullable (Go's defaults: true, 100, 3, 'workflow', true)
LEFT_NULLABLE = [
    ("workflow_schedule", "enabled"),
    ("workflow_schedule", "priority"),
    ("workflow_schedule", "max_attempts"),
    ("workflow_registry", "intent_type"),
    ("workflow_registry", "is_enabled"),
]


def pg_not_null(dsn: str) -> dict[str, set[str]]:
    rows = sql(
        dsn,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'workflow' AND is_nullable = 'NO'",
    )
    out: dict[str, set[str]] = {}
    for row in rows:
        out.setdefault(row["table_name"], set()).add(row["column_name"])
    return out


def pg_indexes(dsn: str) -> dict[str, str]:
    """Index name -> PostgreSQL's own rendering of its definition."""
    rows = sql(dsn, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'workflow'")
    return {r["indexname"]: r["indexdef"] for r in rows}


def go_ddl() -> bytes:
    """What the Go library's migrations leave (CONTRACT.md): 0001's tables with Go's NOT NULLs,
    and every index of the contract's table."""
    tables = migrations.migrations("postgres")[0].up
    not_null = "".join(
        f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL;"
        for table, column in LEFT_NULLABLE
    )
    indexes = "".join(
        f"CREATE INDEX IF NOT EXISTS {name} ON {index.table} {index.definition};"
        for name, index in GO_INDEXES.items()
    )
    schema = "CREATE SCHEMA workflow; SET search_path TO workflow;"
    return f"{schema} {tables} {not_null} {indexes}".encode()


@pytest.fixture
def go_migrated(pg_empty: str) -> str:
    """A database that the Go library created (no goose table, every Go index)."""
    with psycopg.connect(pg_empty, autocommit=True) as conn:
        conn.execute(go_ddl())
    return pg_empty


@pytest.fixture
def pg_backend(postgres_dsn: str) -> Iterator[Backend]:
    backend = open_backend(postgres_dsn)
    yield backend
    backend.close()


def test_postgres_has_every_go_not_null_column(postgres_dsn: str) -> None:
    not_null = pg_not_null(postgres_dsn)
    for table, columns in GO_NOT_NULL.items():
        assert columns <= not_null[table], table


def test_postgres_has_every_go_index_as_go_defines_it(postgres_dsn: str, go_migrated: str) -> None:
    ours, go = pg_indexes(postgres_dsn), pg_indexes(go_migrated)
    for name, index in GO_INDEXES.items():
        assert ours[name] == go[name], name  # the server's rendering of both definitions
        assert f" ON workflow.{index.table} USING btree (" in ours[name]
        assert (" WHERE " in ours[name]) is index.partial
    assert "WHERE (status = 'pending'::text)" in ours["idx_workflow_run_claim"]
    assert "(type text_pattern_ops, status, run_at)" in ours["idx_workflow_run_type_prefix"]


def test_a_go_migrated_database_ends_with_the_same_indexes(
    postgres_dsn: str, go_migrated: str
) -> None:
    Client(go_migrated, migrate=True).close()
    assert pg_indexes(go_migrated) == pg_indexes(postgres_dsn)
    assert pg_not_null(go_migrated) == pg_not_null(postgres_dsn)
    # down leaves the Go library's indexes where the Go library created them
    backend = open_backend(go_migrated)
    try:
        assert [m.version for m in migrations.down(backend, steps=2)] == [9, 8]
        assert set(GO_INDEXES) <= set(pg_indexes(go_migrated))
        migrations.up(backend)
    finally:
        backend.close()
    assert pg_indexes(go_migrated) == pg_indexes(postgres_dsn)


def test_postgres_down_then_up(postgres_dsn: str, pg_backend: Backend) -> None:
    migrated = pg_indexes(postgres_dsn)
    assert [m.version for m in migrations.down(pg_backend, steps=2)] == [9, 8]
    assert not ADDED & set(pg_indexes(postgres_dsn))  # the indexes 0008 created are gone
    for table, columns in GO_NOT_NULL.items():  # the NOT NULLs stay: they are Go's schema
        assert columns <= pg_not_null(postgres_dsn)[table]
    assert [m.version for m in migrations.up(pg_backend)] == [8, 9]
    assert pg_indexes(postgres_dsn) == migrated
    with Client(postgres_dsn) as client:  # ready: every migration applied
        client.schedule("after.v1", cron="@hourly")


def at_version_7(backend: Backend) -> None:
    for migration in migrations.migrations(backend.kind):
        if migration.version <= 7:
            backend.apply_migration(migration, up=True)


def insert_nulls(dsn: str) -> None:
    """Rows that the version-7 schema lets in: NULLs where the Go library has NOT NULL (a
    hand-written INSERT, another program), beside rows whose own values must stay."""
    for statement in (
        "INSERT INTO workflow_schedule (id, type, schedule, next_run_at, enabled, priority, "
        "max_attempts) VALUES ('00000000-0000-7000-8000-000000000001', 'null.v1', '@hourly', "
        "'2030-01-01 00:00:00', NULL, NULL, NULL)",
        "INSERT INTO workflow_schedule (id, type, schedule, next_run_at, enabled, priority, "
        "max_attempts) VALUES ('00000000-0000-7000-8000-000000000002', 'kept.v1', "
        "'*/5 * * * *', '2030-01-01 00:00:00', FALSE, 7, 9)",
        "INSERT INTO workflow_registry (id, workflow_name, runtime, intent_type, is_enabled) "
        "VALUES ('00000000-0000-7000-8000-000000000003', 'null.v1', 'python', NULL, NULL)",
        "INSERT INTO workflow_registry (id, workflow_name, runtime, intent_type, is_enabled) "
        "VALUES ('00000000-0000-7000-8000-000000000004', 'kept.v1', 'go', 'intent', FALSE)",
    ):
        sql(dsn, statement)


def check_upgraded(dsn: str) -> None:
    rows = sql(dsn, "SELECT type, schedule, enabled, priority, max_attempts FROM workflow_schedule")
    by_type = {r["type"]: r for r in rows}
    assert len(rows) == 2
    assert (bool(by_type["kept.v1"]["enabled"]), by_type["kept.v1"]["priority"]) == (False, 7)
    assert (by_type["kept.v1"]["max_attempts"], by_type["kept.v1"]["schedule"]) == (
        9,
        "*/5 * * * *",
    )
    [filled] = [r for t, r in by_type.items() if t != "kept.v1"]
    assert (bool(filled["enabled"]), filled["priority"], filled["max_attempts"]) == (True, 100, 3)
    assert filled["schedule"] == "0 * * * *"  # the Go parser refuses "@hourly"
    rows = sql(dsn, "SELECT workflow_name, intent_type, is_enabled FROM workflow_registry")
    registry = {r["workflow_name"]: (r["intent_type"], bool(r["is_enabled"])) for r in rows}
    assert registry == {"null.v1": ("workflow", True), "kept.v1": ("intent", False)}


def upgrade_from_7(dsn: str) -> None:
    backend = open_backend(dsn)
    try:
        at_version_7(backend)
        insert_nulls(dsn)
        assert [m.version for m in migrations.up(backend)] == [8, 9]
        check_upgraded(dsn)
        assert [m.version for m in migrations.down(backend, steps=2)] == [9, 8]
        assert [m.version for m in migrations.up(backend)] == [8, 9]
        check_upgraded(dsn)
    finally:
        backend.close()
    with Client(dsn) as client:  # the Go library's ListSchedules would scan these rows
        assert {s.type for s in client.schedules.list()} >= {"kept.v1"}
        assert all(s.priority is not None for s in client.schedules.list())


def test_postgres_at_version_7_with_nulls_upgrades(pg_empty: str) -> None:
    upgrade_from_7(pg_empty)
    not_null = pg_not_null(pg_empty)
    for table, columns in GO_NOT_NULL.items():
        assert columns <= not_null[table], table


def test_sqlite_at_version_7_with_nulls_upgrades(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path}/seven.db"
    upgrade_from_7(dsn)
    check_sqlite_schema(dsn)


def sqlite_not_null(dsn: str, table: str) -> set[str]:
    rows = sql(dsn, f"PRAGMA table_info({table})")
    return {r["name"] for r in rows if r["notnull"] or r["pk"]}


def check_sqlite_schema(dsn: str) -> None:
    for table, columns in GO_NOT_NULL.items():
        assert columns <= sqlite_not_null(dsn, table), table
    for name, index in GO_INDEXES.items():
        listed = {r["name"]: r for r in sql(dsn, f"PRAGMA index_list({index.table})")}
        assert name in listed, name
        assert bool(listed[name]["partial"]) is index.partial, name
        indexed = tuple(r["name"] for r in sql(dsn, f"PRAGMA index_info({name})"))
        assert indexed == index.columns, name


def test_sqlite_has_every_go_not_null_column_and_index(sqlite_dsn: str) -> None:
    check_sqlite_schema(sqlite_dsn)
    # the rebuilt tables keep swf-pool's columns and their checks
    with pytest.raises(Exception, match="CHECK constraint failed"):
        sql(
            sqlite_dsn,
            "INSERT INTO workflow_schedule (id, type, schedule, next_run_at, "
            "missed_policy) VALUES ('x', 't', '* * * * *', '2030-01-01', 'sometimes')",
        )
    with pytest.raises(Exception, match="NOT NULL constraint failed"):
        sql(
            sqlite_dsn,
            "INSERT INTO workflow_schedule (id, type, schedule, next_run_at, "
            "priority) VALUES ('x', 't', '* * * * *', '2030-01-01', NULL)",
        )


def test_sqlite_down_then_up(sqlite_dsn: str) -> None:
    backend = open_backend(sqlite_dsn)
    try:
        assert [m.version for m in migrations.down(backend, steps=2)] == [9, 8]
        assert [m.version for m in migrations.up(backend)] == [8, 9]
    finally:
        backend.close()
    check_sqlite_schema(sqlite_dsn)
    with Client(sqlite_dsn) as client:
        schedule_id = client.schedule("after.v1", cron="@hourly")
        assert stored_cron(sqlite_dsn, schedule_id) == "0 * * * *"
