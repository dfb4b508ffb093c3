"""Migrations: the migrated schema is the Go library's contract plus swf-pool's indexes."""

from __future__ import annotations

import dataclasses
import sqlite3

import psycopg
import pytest

from swf_pool import Client, MigrationError, SchemaNotReady
from swf_pool import migrate as migrations
from swf_pool.backends import open_backend
from swf_pool.models import RunRecord

from .helpers import sql

# The contract (../shared/CONTRACT.md): column -> (PostgreSQL type, nullable)
CONTRACT = {
    "workflow_run": {
        "id": ("uuid", False),
        "type": ("text", False),
        "payload": ("jsonb", False),
        "status": ("text", False),
        "priority": ("integer", False),
        "run_at": ("timestamp with time zone", False),
        "idempotency_key": ("text", True),
        "attempt": ("integer", False),
        "max_attempts": ("integer", False),
        "leased_by": ("text", True),
        "lease_until": ("timestamp with time zone", True),
        "last_error": ("text", True),
        "result": ("jsonb", True),
        "created_at": ("timestamp with time zone", False),
        "updated_at": ("timestamp with time zone", False),
        "deleted_at": ("timestamp with time zone", True),
    },
    "workflow_event": {
        "id": ("bigint", False),
        "workflow_id": ("uuid", False),
        "event_type": ("text", False),
        "data": ("jsonb", True),
        "created_at": ("timestamp with time zone", False),
    },
    "workflow_registry": {
        "id": ("uuid", False),
        "workflow_name": ("text", False),
        "intent_type": ("text", False),
        "runtime": ("text", False),
        "is_enabled": ("boolean", False),
        "description": ("text", True),
        "created_at": ("timestamp with time zone", False),
        "updated_at": ("timestamp with time zone", False),
        "deleted_at": ("timestamp with time zone", True),
    },
    "workflow_schedule": {
        "id": ("uuid", False),
        "type": ("text", False),
        "payload": ("jsonb", False),
        "schedule": ("text", False),
        "timezone": ("text", False),
        "next_run_at": ("timestamp with time zone", False),
        "last_run_at": ("timestamp with time zone", True),
        "enabled": ("boolean", False),
        "priority": ("integer", False),
        "max_attempts": ("integer", False),
        "created_at": ("timestamp with time zone", False),
        "updated_at": ("timestamp with time zone", False),
        "deleted_at": ("timestamp with time zone", True),
    },
}
# swf-pool's additive columns (migration 0003)
ADDITIVE = {
    "workflow_schedule": {
        "missed_policy": ("text", False),
        "catch_up_limit": ("integer", False),
        "last_error": ("text", True),
    },
}
OUR_INDEXES = {
    "swf_run_pending_idx",
    "swf_run_leased_idx",
    "swf_run_type_created_idx",
    "swf_run_pending_due_idx",
}


def pg_columns(dsn: str) -> dict[str, dict[str, tuple[str, bool]]]:
    rows = sql(
        dsn,
        "SELECT table_name, column_name, data_type, is_nullable "
        "FROM information_schema.columns WHERE table_schema = 'workflow'",
    )
    out: dict[str, dict[str, tuple[str, bool]]] = {}
    for row in rows:
        out.setdefault(row["table_name"], {})[row["column_name"]] = (
            row["data_type"],
            row["is_nullable"] == "YES",
        )
    return out


def test_postgres_schema_matches_the_contract(postgres_dsn: str) -> None:
    columns = pg_columns(postgres_dsn)
    for table, expected in CONTRACT.items():
        assert columns[table] == {**expected, **ADDITIVE.get(table, {})}, table
    indexes = {
        r["indexname"]: r["indexdef"]
        for r in sql(
            postgres_dsn, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'workflow'"
        )
    }
    assert set(indexes) >= OUR_INDEXES
    assert (
        "WHERE ((status = 'pending'::text) AND (deleted_at IS NULL))"
        in indexes["swf_run_pending_idx"]
    )
    [options] = sql(postgres_dsn, "SELECT reloptions FROM pg_class WHERE relname = 'workflow_run'")
    assert {"fillfactor=80", "autovacuum_vacuum_scale_factor=0.01"} <= set(options["reloptions"])


def test_code_reads_every_contract_column() -> None:
    read = {f.name for f in dataclasses.fields(RunRecord)}
    assert read == set(CONTRACT["workflow_run"]) - {"deleted_at"}


def test_sqlite_schema_has_the_contract_columns(sqlite_dsn: str) -> None:
    for table, contract in CONTRACT.items():
        expected = {**contract, **ADDITIVE.get(table, {})}
        rows = sql(sqlite_dsn, f"PRAGMA table_info({table})")
        assert {r["name"] for r in rows} == set(expected), table
        nullable = {r["name"]: not r["notnull"] and not r["pk"] for r in rows}
        assert nullable == {name: null for name, (_, null) in expected.items()}, table
    names = {
        r["name"] for r in sql(sqlite_dsn, "SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    assert names >= OUR_INDEXES


def test_up_down_up_and_status(pg_empty: str) -> None:
    backend = open_backend(pg_empty)
    try:
        assert [applied for _, applied in migrations.status(backend)] == [False] * 9
        assert [m.version for m in migrations.up(backend)] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
        assert migrations.up(backend) == []
        assert [applied for _, applied in migrations.status(backend)] == [True] * 9
        assert [m.version for m in migrations.down(backend, steps=9)] == [9, 8, 7, 6, 5, 4, 3, 2, 1]
        assert "workflow_run" not in pg_columns(pg_empty)
        migrations.up(backend)
        assert pg_columns(pg_empty)["workflow_run"] == CONTRACT["workflow_run"]
        # goose's own table records the versions, so goose sees the same state
        versions = sql(pg_empty, "SELECT version_id FROM workflow.goose_db_version ORDER BY id")
        assert [r["version_id"] for r in versions] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    finally:
        backend.close()


def test_unmigrated_database_is_refused_until_migrated(pg_empty: str, tmp_path: object) -> None:
    for dsn in (pg_empty + " schema=elsewhere", f"sqlite:///{tmp_path}/new.db"):
        with pytest.raises(SchemaNotReady, match="swf-pool migrate up"):
            Client(dsn)
        Client(dsn, migrate=True).close()
        Client(dsn).close()


def test_a_go_created_database_is_adopted(pg_empty: str) -> None:
    """The Go library's AutoMigrate creates the tables without goose's table; we adopt them."""
    go_ddl = migrations.migrations("postgres")[0].up
    with psycopg.connect(pg_empty, autocommit=True) as conn:
        conn.execute(b"CREATE SCHEMA workflow; SET search_path TO workflow;" + go_ddl.encode())
        conn.execute("INSERT INTO workflow.workflow_run (type, payload) VALUES ('go.v1', '{}')")
    with Client(pg_empty, migrate=True) as client:
        [run] = client.list()
        assert run.type == "go.v1"


def test_sqlite_migration_failure_rolls_back(tmp_path: object) -> None:
    path = f"{tmp_path}/broken.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE workflow_event (unrelated TEXT)")  # blocks index creation
    db.commit()
    db.close()
    with pytest.raises(MigrationError, match="migration 1"):
        Client(f"sqlite:///{path}", migrate=True)
    rows = sql(f"sqlite:///{path}", "SELECT name FROM sqlite_master WHERE name = 'workflow_run'")
    assert rows == []
